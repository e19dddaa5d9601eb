//===- WeightRewriter.cpp - compile-time weight transformations
//------------===//

#include "ds/passes/Utils/WeightRewriter.h"

#include "ds/support/SafeTensors.h"
#include "mlir/IR/Threading.h"

#include <algorithm>
#include <atomic>
#include <optional>

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/FileSystem.h"

#include <set>
#include <utility>

using namespace mlir;
using namespace ds;

StringRef ds::weightCategoryName(WeightCategory c) {
  switch (c) {
  case WeightCategory::Linear:
    return "linear";
  case WeightCategory::Experts:
    return "experts";
  case WeightCategory::LmHead:
    return "lm_head";
  case WeightCategory::Router:
    return "router";
  }
  return "";
}

std::string ds::stacklessName(std::string name) {
  for (size_t p; (p = name.find('*')) != std::string::npos;)
    name.replace(p, 1, "{e}");
  return name;
}

/// A dense GEMM's category from what uses its result.
static WeightCategory denseCategory(Operation *op) {
  for (Operation *user : op->getResult(0).getUsers()) {
    if (isa<RouterOp>(user))
      return WeightCategory::Router;
    if (isa<func::ReturnOp>(user))
      return WeightCategory::LmHead;
  }
  return WeightCategory::Linear;
}

SmallVector<std::pair<OpOperand *, WeightCategory>>
ds::getGemmWeights(Operation *op) {
  SmallVector<std::pair<OpOperand *, WeightCategory>> out;
  if (auto l = dyn_cast<LinearOp>(op))
    out.push_back({&l.getWeightMutable(), denseCategory(op)});
  else if (auto f = dyn_cast<FusedLinearOp>(op))
    out.push_back({&f.getWeightMutable(), denseCategory(op)});
  else if (auto a = dyn_cast<MLAAttentionOp>(op))
    out.push_back({&a.getKvBMutable(), WeightCategory::Linear});
  else if (auto r = dyn_cast<FusedRouterOp>(op))
    out.push_back({&r.getWeightMutable(), WeightCategory::Router});
  else if (auto g = dyn_cast<GroupedMatmulOp>(op))
    out.push_back({&g.getWeightMutable(), WeightCategory::Experts});
  else if (auto m = dyn_cast<FusedMoEOp>(op)) {
    out.push_back({&m.getGateUpMutable(), WeightCategory::Experts});
    out.push_back({&m.getDownMutable(), WeightCategory::Experts});
  } else if (auto m = dyn_cast<MoEOp>(op)) {
    out.push_back({&m.getExpertGateMutable(), WeightCategory::Experts});
    out.push_back({&m.getExpertUpMutable(), WeightCategory::Experts});
    out.push_back({&m.getExpertDownMutable(), WeightCategory::Experts});
    for (MutableOperandRange range :
         {m.getSharedGateMutable(), m.getSharedUpMutable(),
          m.getSharedDownMutable()})
      if (range.size() == 1)
        out.push_back({&range[0], WeightCategory::Linear});
    out.push_back({&m.getRouterWeightMutable(), WeightCategory::Router});
  }
  return out;
}

LogicalResult WeightRewriter::init(ModuleOp module, StringRef name,
                                   ArrayRef<std::string> targetList,
                                   ArrayRef<std::string> defaults,
                                   ArrayRef<std::string> exclude,
                                   StringRef weightsPath, StringRef output) {
  passName = name.str();
  outputPath = output.str();
  Location loc = module.getLoc();
  for (const std::string &t : targetList.empty() ? defaults : targetList) {
    if (t != "linear" && t != "experts" && t != "lm_head" && t != "router")
      return emitError(loc) << passName << ": unknown target '" << t
                            << "' (linear, experts, lm_head, router)";
    targets.insert(t);
  }
  for (const std::string &pattern : exclude) {
    llvm::Regex re(pattern);
    std::string error;
    if (!re.isValid(error))
      return emitError(loc) << passName << ": bad exclude pattern '" << pattern
                            << "': " << error;
    excludes.push_back(std::move(re));
  }
  if (weightsPath.empty() || outputPath.empty())
    return emitError(loc) << passName
                          << " needs weights=<checkpoint> to read the "
                             "original weights and output=<file.safetensors> "
                             "to write the new ones";
  std::string error;
  // Weights an earlier pass wrote (ds.weight_files) are found too.
  FailureOr<std::unique_ptr<ds::Checkpoint>> ckpt =
      openModuleCheckpoint(module, weightsPath.str(), error);
  if (failed(ckpt))
    return emitError(loc) << passName << ": " << error;
  checkpoint = std::move(*ckpt);
  // Writing over a file the weights come from would lose them.
  for (const auto &file : checkpoint->files())
    if (llvm::sys::fs::equivalent(file->path(), outputPath))
      return emitError(loc) << passName << ": output " << outputPath
                            << " is one of the files the weights are read "
                               "from";
  loader = std::make_unique<CheckpointWeights>(
      *checkpoint, CheckpointWeights::Caching::Stream);
  // How many weights a pass rewrites is known only as it goes (targets,
  // excludes, stacked experts): a count and a rate, no estimate.
  progress = std::make_unique<ds::Progress>(passName + ": weights rewritten",
                                            /*total=*/0);
  return success();
}

std::optional<WeightSources>
WeightRewriter::select(Operation *user, Value weight, WeightCategory c) {
  if (!weight || !isTargeted(c))
    return std::nullopt;
  auto type = dyn_cast<RankedTensorType>(weight.getType());
  if (!type || !isa<FloatType>(type.getElementType()))
    return std::nullopt; // already quantized or sparse, or not a float
  std::optional<WeightSources> sources = getWeightSources(weight);
  if (!sources) {
    user->emitWarning() << passName << ": leaves a " << weightCategoryName(c)
                        << " weight that is not a ds.param (or a concat of "
                           "them) as it is";
    return std::nullopt;
  }
  for (ParamOp p : sources->params)
    for (llvm::Regex &re : excludes)
      if (re.match(p.getName()))
        return std::nullopt;
  return sources;
}

FailureOr<Tensor> WeightRewriter::evaluate(const WeightSources &sources) {
  // Parts of known shapes are copied into the result as each is loaded,
  // then freed: the parts are never all in memory beside the result (a
  // real-width fused expert stack is GBs in f32).
  const int64_t axis = sources.axis;
  int64_t total = 0;
  bool shaped = sources.params.size() > 1;
  for (ParamOp p : sources.params) {
    RankedTensorType t = getLogicalTensorType(p.getType());
    shaped = shaped && t && t.hasStaticShape() && axis < t.getRank();
    if (shaped)
      total += t.getDimSize(axis);
  }
  if (shaped) {
    Tensor out;
    int64_t offset = 0;
    bool first = true;
    for (ParamOp p : sources.params) {
      FailureOr<Tensor> part = loader->load(p);
      if (failed(part))
        return failure();
      if (std::exchange(first, false)) {
        SmallVector<int64_t> shape = part->shape;
        shape[axis] = total;
        out = Tensor::floats(shape);
      }
      if (!concatenateInto(out, *part, axis, offset))
        return p.emitError("a concatenated weight's part has shape ")
               << llvm::make_range(part->shape.begin(), part->shape.end())
               << ", unlike its type";
      offset += part->shape[axis];
    }
    return out;
  }
  SmallVector<Tensor> parts;
  for (ParamOp p : sources.params) {
    FailureOr<Tensor> t = loader->load(p);
    if (failed(t))
      return failure();
    parts.push_back(std::move(*t));
  }
  if (parts.size() == 1)
    return parts.front();
  SmallVector<const Tensor *> ptrs;
  for (const Tensor &t : parts)
    ptrs.push_back(&t);
  return concatenate(ptrs, sources.axis);
}

FailureOr<Value> WeightRewriter::materialize(Operation *user, Value weight,
                                             const WeightSources &sources,
                                             Type type,
                                             const NewParamNames &names,
                                             Encoder encode) {
  std::string key;
  llvm::raw_string_ostream os(key);
  os << names.values << " " << type;
  if (done.insert(key).second)
    jobs.push_back({sources, std::move(encode), {}});
  OpBuilder b(user);
  auto attr = [&](const std::string &s) {
    return s.empty() ? StringAttr() : b.getStringAttr(s);
  };
  return ParamOp::create(b, weight.getLoc(), type,
                         b.getStringAttr(names.values), DenseI64ArrayAttr(),
                         attr(names.scales), attr(names.zeroPoints),
                         attr(names.meta))
      .getResult();
}

LogicalResult WeightRewriter::finish(ModuleOp module) {
  Location loc = module.getLoc();
  SmallString<256> absolute(outputPath);
  if (!jobs.empty())
    if (std::error_code ec = llvm::sys::fs::make_absolute(absolute))
      return emitError(loc)
             << passName << ": " << outputPath << ": " << ec.message();
  // Every new weight, a few per thread at a time evaluated in parallel
  // (each job reads its params and writes only its own output; the IR is
  // not changed meanwhile); each chunk's outputs go to the file in the
  // order the weights were met and are freed before the next chunk, so
  // memory stays at a few weights per thread (or one large one) whatever the
  // model's size, and the file does not depend on the threads.
  // A chunk is also bounded in bytes: real-width expert stacks are GBs in
  // f32 each (Mixtral 8x7B's [8, 14336, 4096]: 1.9 GB), and 8 of them at
  // once took 15 GB. A weight larger than the budget is a chunk of its own.
  const size_t threads =
      std::max<size_t>(1, module.getContext()->isMultithreadingEnabled()
                              ? module.getContext()->getNumThreads()
                              : 1);
  const size_t maxJobs = 4 * threads;
  constexpr uint64_t kChunkBytes = uint64_t{1} << 30; // f32 values in flight
  auto f32Bytes = [](const Job &job) {
    uint64_t bytes = 0;
    for (ParamOp p : job.sources.params)
      if (auto t = getLogicalTensorType(p.getType()); t && t.hasStaticShape())
        bytes += static_cast<uint64_t>(t.getNumElements()) * sizeof(float);
    return bytes;
  };
  std::optional<ds::SafeTensorsWriter> writer;
  if (!jobs.empty())
    writer.emplace(absolute.str().str());
  std::atomic<bool> ok{true};
  for (size_t begin = 0, end = 0; begin < jobs.size() && ok; begin = end) {
    uint64_t bytes = f32Bytes(jobs[begin]);
    end = begin + 1;
    while (end < jobs.size() && end - begin < maxJobs &&
           bytes + f32Bytes(jobs[end]) <= kChunkBytes)
      bytes += f32Bytes(jobs[end++]);
    mlir::parallelFor(module.getContext(), begin, end, [&](size_t i) {
      Job &job = jobs[i];
      FailureOr<Tensor> t = evaluate(job.sources);
      if (failed(t) || failed(job.encode(*t, job.out))) {
        ok = false;
        return;
      }
      if (progress)
        progress->advance(1, t->f.size() * sizeof(float));
    });
    if (!ok)
      break;
    for (size_t i = begin; i < end; ++i) {
      for (const ds::TensorToWrite &w : jobs[i].out)
        if (absl::Status st = writer->add(w); !st.ok())
          return emitError(loc)
                 << passName << ": " << std::string(st.message());
      jobs[i].out.clear();
      jobs[i].out.shrink_to_fit();
    }
  }
  if (!ok)
    return failure();
  const bool wrote = writer && writer->size() > 0;
  if (wrote)
    if (absl::Status st = writer->finish({{"format", "ds-" + passName}});
        !st.ok())
      return emitError(loc) << passName << ": " << std::string(st.message());
  writer.reset();
  jobs.clear();
  progress.reset();

  bool erased = true;
  while (erased) {
    erased = false;
    module.walk([&](Operation *op) {
      if (isa<ParamOp, tensor::ConcatOp>(op) && op->use_empty()) {
        op->erase();
        erased = true;
      }
    });
  }
  if (!wrote)
    return success();
  SmallVector<Attribute> files;
  if (auto existing = module->getAttrOfType<ArrayAttr>("ds.weight_files"))
    files.append(existing.begin(), existing.end());
  files.push_back(StringAttr::get(module.getContext(), absolute));
  module->setAttr("ds.weight_files",
                  ArrayAttr::get(module.getContext(), files));
  return success();
}
