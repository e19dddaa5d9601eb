//===- WeightRewriter.cpp - compile-time weight transformations
//------------===//

#include "ds/passes/Utils/WeightRewriter.h"

#include "ds/support/SafeTensors.h"
#include "mlir/IR/Threading.h"

#include <algorithm>
#include <cstring>
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
    if (p.isSharded()) {
      user->emitWarning() << passName << ": leaves the sharded weight '"
                          << p.getName()
                          << "' as it is (rewriting the weights of a "
                             "partitioned module is not supported yet)";
      return std::nullopt;
    }
  for (ParamOp p : sources->params)
    for (llvm::Regex &re : excludes)
      if (re.match(p.getName()))
        return std::nullopt;
  return sources;
}

//===----------------------------------------------------------------------===//
// EncodedSink
//===----------------------------------------------------------------------===//

LogicalResult EncodedSink::add(ds::TensorToWrite t) {
  if (!direct) {
    buffered.push_back(std::move(t));
    return success();
  }
  if (absl::Status st = direct->add(t); !st.ok()) {
    error = std::string(st.message());
    return failure();
  }
  return success();
}

FailureOr<size_t> EncodedSink::reserve(const std::string &name, ds::DType dtype,
                                       const std::vector<int64_t> &shape) {
  if (!direct) {
    uint64_t elements = 1;
    for (int64_t d : shape)
      elements *= static_cast<uint64_t>(std::max<int64_t>(d, 0));
    buffered.push_back({name, dtype, shape,
                        std::vector<uint8_t>(elements * ds::dtypeSize(dtype))});
    reserved.push_back(buffered.size() - 1);
    return reserved.size() - 1;
  }
  absl::StatusOr<size_t> index = direct->reserve(name, dtype, shape);
  if (!index.ok()) {
    error = std::string(index.status().message());
    return failure();
  }
  reserved.push_back(*index);
  return reserved.size() - 1;
}

LogicalResult EncodedSink::write(size_t index, uint64_t offset,
                                 const void *data, uint64_t size) {
  if (index >= reserved.size())
    return failure();
  if (!direct) {
    std::vector<uint8_t> &bytes = buffered[reserved[index]].bytes;
    if (offset + size > bytes.size())
      return failure();
    std::memcpy(bytes.data() + offset, data, size);
    return success();
  }
  // The writer records the failure; finish() reports it.
  return success(direct->writeAt(reserved[index], offset, data, size).ok());
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
    jobs.push_back({sources, std::move(encode)});
  OpBuilder b(user);
  auto attr = [&](const std::string &s) {
    return s.empty() ? StringAttr() : b.getStringAttr(s);
  };
  return ParamOp::create(
             b, weight.getLoc(), type, b.getStringAttr(names.values),
             DenseI64ArrayAttr(), attr(names.scales), attr(names.zeroPoints),
             attr(names.meta), FlatSymbolRefAttr(), shard::GridAxesArrayAttr())
      .getResult();
}

LogicalResult WeightRewriter::finish(ModuleOp module) {
  Location loc = module.getLoc();
  SmallString<256> absolute(outputPath);
  if (!jobs.empty())
    if (std::error_code ec = llvm::sys::fs::make_absolute(absolute))
      return emitError(loc)
             << passName << ": " << outputPath << ": " << ec.message();
  // Small weights (a few MB) are encoded a few per thread at a time in
  // parallel (each job reads its params and writes only its own sink; the
  // IR is not changed meanwhile); each chunk's tensors go to the file in
  // the order the weights were met and are freed before the next chunk, so
  // memory stays at a few small weights per thread whatever the model's
  // size, and the file does not depend on the threads. A large weight (a
  // real-width expert stack is GBs in f32: Mixtral 8x7B's fused
  // [8, 28672, 4096] is 3.8 GB) is encoded alone: its encoder reads and
  // encodes it slice by slice over the threads, and its tensors are written
  // to the file part by part, so neither its f32 values nor its encoding are
  // ever whole in memory.
  const size_t threads =
      std::max<size_t>(1, module.getContext()->isMultithreadingEnabled()
                              ? module.getContext()->getNumThreads()
                              : 1);
  const size_t maxJobs = 4 * threads;
  // Larger than this in f32: encoded alone, streamed. Small enough that
  // the many-expert test models' stacks take this path too.
  constexpr uint64_t kStreamBytes = uint64_t{4} << 20;
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
  auto fail = [&](const EncodedSink &sink) -> LogicalResult {
    if (!sink.error.empty())
      return emitError(loc) << passName << ": " << sink.error;
    return failure(); // the loader or the encoder said why
  };
  for (size_t begin = 0, end = 0; begin < jobs.size(); begin = end) {
    const uint64_t bytes = f32Bytes(jobs[begin]);
    end = begin + 1;
    if (bytes > kStreamBytes) {
      EncodedSink sink(&*writer);
      WeightReader reader(jobs[begin].sources, *loader);
      if (failed(jobs[begin].encode(reader, sink)))
        return fail(sink);
      if (progress)
        progress->advance(1, bytes);
      continue;
    }
    while (end < jobs.size() && end - begin < maxJobs &&
           f32Bytes(jobs[end]) <= kStreamBytes)
      ++end;
    std::vector<EncodedSink> sinks(end - begin, EncodedSink(nullptr));
    std::vector<char> ok(end - begin, 1);
    mlir::parallelFor(module.getContext(), begin, end, [&](size_t i) {
      WeightReader reader(jobs[i].sources, *loader);
      if (failed(jobs[i].encode(reader, sinks[i - begin]))) {
        ok[i - begin] = 0;
        return;
      }
      if (progress)
        progress->advance(1, f32Bytes(jobs[i]));
    });
    for (size_t i = 0; i < sinks.size(); ++i) {
      if (!ok[i])
        return fail(sinks[i]);
      for (const ds::TensorToWrite &w : sinks[i].buffered)
        if (absl::Status st = writer->add(w); !st.ok())
          return emitError(loc)
                 << passName << ": " << std::string(st.message());
      sinks[i].buffered.clear();
      sinks[i].buffered.shrink_to_fit();
    }
  }
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
