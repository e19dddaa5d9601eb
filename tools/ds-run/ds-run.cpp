//===- ds-run.cpp - run ds functions through the reference interpreter ----===//
//
//   ds-run FILE.mlir [--weights DIR] [--function NAME] [--input X.npy]...
//          [--seed N] [--dyn-size K] [--int-max M] [--output-dir DIR]
//     Runs one function. Arguments come from .npy files in order; the rest
//     are generated from the seed (dynamic dims = K, floats ~ N(0, 1),
//     integers uniform in [0, M)). Results go to DIR/result<i>.npy, or are
//     summarized on stdout.
//
//   ds-run FILE.mlir --weights DIR --generate N --prompt 1,2,3 [--prompt ...]
//          [--dump-dir DIR]
//     Greedy generation with an imported model: @prefill on the prompts (one
//     sequence each, equal lengths), then @decode one token at a time with
//     the KV caches. Prints the generated tokens; --dump-dir writes
//     prefill_logits.npy [B, S, V], decode_logits.npy [N-1, B, V] and
//     tokens.npy [B, S+N].
//
//   --calibrate FILE.json   records the absolute maximum of every GEMM input
//     (by weight name) over the run: static activation scales for
//     ds-quantize calibration=FILE.json.
//   --reference REF.mlir [--report FILE.json]   runs REF (e.g. the module
//     before ds-quantize) in lockstep on the same inputs (the same tokens
//     when generating) and reports the relative L2 error of the outputs and
//     of each layer's hidden state (ops located at "model.layers.N").
//
//   --backend jit | artifact=FILE.dsa   runs the model on the compiled CPU
//     code instead of the interpreter: `jit` compiles FILE.mlir in process
//     (ORC), `artifact=` loads a ds-compile artifact. With --generate the
//     prompts may differ in length (each sequence gets its own KV cache
//     slot); prefill computes the logits of each prompt's last position
//     only (--all-logits: every position), on --kernel-threads workers
//     (default: every core). --check runs the interpreter on FILE.mlir in
//     lockstep and fails when any logits differ by more than --check-tolerance
//     (relative to the largest reference logit) or a generated token differs.
//
//===----------------------------------------------------------------------===//

#include "codegen/Compiler.h"
#include "dialects/DS/IR/DSOps.h"
#include "dialects/InitAllDialects.h"
#include "ds/rt/Batcher.h"
#include "ds/rt/ThreadPool.h"
#include "interpreter/Interpreter.h"

#include "ds/support/HostTensor.h"
#include "ds/support/SafeTensors.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/WithColor.h"

#include <chrono>
#include <deque>
#include <future>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <thread>

using namespace mlir;
namespace cl = llvm::cl;
using ::ds::DType;
using ::ds::HostTensor;

namespace {

cl::opt<std::string> inputFile(cl::Positional, cl::desc("<module.mlir>"),
                               cl::Required);
cl::opt<std::string> weightsDir("weights",
                                cl::desc("Checkpoint directory or file"));
cl::opt<std::string> function("function", cl::desc("Function to run"),
                              cl::init("main"));
cl::list<std::string> inputs(
    "input",
    cl::desc("Argument from a .npy file or FILE.safetensors:TENSOR_NAME"));
cl::opt<uint64_t> seed("seed", cl::desc("Seed for generated arguments"),
                       cl::init(0));
cl::opt<int64_t> dynSize("dyn-size",
                         cl::desc("Size of dynamic dims of generated args"),
                         cl::init(2));
cl::opt<int64_t> intMax("int-max",
                        cl::desc("Generated integers are in [0, int-max)"),
                        cl::init(16));
cl::opt<std::string> outputDir("output-dir",
                               cl::desc("Write results as .npy files here"));
cl::opt<int64_t> generate("generate",
                          cl::desc("Greedy-generate this many tokens"),
                          cl::init(0));
cl::list<std::string> prompts("prompt",
                              cl::desc("Comma-separated prompt token ids"));
cl::opt<std::string> dumpDir("dump-dir",
                             cl::desc("With --generate: write logits here"));
cl::opt<std::string> calibrate(
    "calibrate",
    cl::desc("Write the absolute maximum of every GEMM input (JSON)"));
cl::opt<std::string> referenceFile(
    "reference",
    cl::desc("Run this module (e.g. before quantization) on the same inputs "
             "and report the error against it"));
cl::opt<bool> forceRouting(
    "force-routing",
    cl::desc("With --reference: impose the reference's expert choices, so "
             "that the error measures rounding, not changed routing"),
    cl::init(false));
cl::opt<std::string> reportFile("report",
                                cl::desc("With --reference: write the error "
                                         "report here (JSON)"));
cl::opt<std::string>
    backend("backend",
            cl::desc("interpreter (default), jit, or artifact=FILE.dsa"),
            cl::init("interpreter"));
cl::opt<bool> check("check",
                    cl::desc("With --backend: compare with the interpreter"),
                    cl::init(false));
cl::opt<int> kernelThreads(
    "kernel-threads",
    cl::desc("With --backend: kernel worker threads besides the caller for "
             "prefill, decode and single runs (-1: one less than the cores)"),
    cl::init(-1));
cl::opt<bool> allLogits(
    "all-logits",
    cl::desc("With --backend and --generate: compute the logits of every "
             "prompt position (default: the last only, which is all "
             "generation needs; scoring needs all)"),
    cl::init(false));
cl::opt<double> checkTolerance(
    "check-tolerance",
    cl::desc("Largest |compiled - interpreter| / max |interpreter| allowed"),
    cl::init(1e-4));
cl::opt<int64_t> serve(
    "serve",
    cl::desc("With --backend and --generate: then serve this many concurrent "
             "requests (the prompts, round robin) through the dynamic batcher "
             "and compare every answer with the sequential generation"),
    cl::init(0));
cl::opt<int64_t> maxBatch("max-batch", cl::desc("Batcher max_batch_size"),
                          cl::init(32));
cl::opt<int64_t> serveThreads(
    "serve-threads",
    cl::desc("With --serve: the batcher's kernel worker threads besides its "
             "scheduler (-1: one less than the cores)"),
    cl::init(-1));
cl::opt<std::string> profileRouting(
    "profile-routing",
    cl::desc("Count how often each MoE layer selects each expert over the "
             "whole run and write the profile as JSON"));

/// Writes `value` as indented JSON through a temporary file.
absl::Status writeJson(const std::string &path, llvm::json::Value value) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", value) << "\n";
  return ::ds::writeFileAtomically(path, text);
}

/// Per routing site (named by mlir::ds::getRoutingSiteName), selections per
/// expert.
struct RoutingProfile {
  /// Names are cached: computing one walks the function.
  const std::string &key(Operation *op) {
    auto it = names.find(op);
    if (it == names.end())
      it = names.try_emplace(op, mlir::ds::getRoutingSiteName(op)).first;
    return it->second;
  }
  llvm::DenseMap<Operation *, std::string> names;

  struct Site {
    int64_t tokens = 0, topK = 0;
    std::vector<int64_t> counts;
  };
  std::map<std::string, Site> sites;

  void record(Operation *op, const mlir::ds::Tensor &indices, int64_t experts) {
    Site &site = sites[key(op)];
    site.counts.resize(experts, 0);
    site.topK = indices.shape.back();
    site.tokens += indices.numElements() / site.topK;
    for (int64_t e : indices.i)
      ++site.counts[e];
  }

  absl::Status write(const std::string &path) const {
    llvm::json::Array layers;
    for (const auto &[name, site] : sites)
      layers.push_back(llvm::json::Object{
          {"name", name},
          {"num_experts", static_cast<int64_t>(site.counts.size())},
          {"top_k", site.topK},
          {"tokens", site.tokens},
          {"counts", llvm::json::Array(site.counts)}});
    return writeJson(path, llvm::json::Object{{"format", "ds-routing-profile"},
                                              {"version", 1},
                                              {"layers", std::move(layers)}});
  }
};

/// Sum of squared differences and of squared reference values.
struct ErrorSum {
  double diff2 = 0, ref2 = 0, maxAbs = 0;
  void add(const float *a, const float *ref, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      double d = double(a[i]) - double(ref[i]);
      diff2 += d * d;
      ref2 += double(ref[i]) * ref[i];
      maxAbs = std::max(maxAbs, std::fabs(d));
    }
  }
  double rel() const { return ref2 > 0 ? std::sqrt(diff2 / ref2) : 0.0; }
};

/// Keeps each decoder layer's output. The residual stream starts at the
/// embedding output; an update is an add that takes the current stream value
/// and gives one of its shape (arith.addf, a ds.fused_linear residual
/// epilogue, a ds.fused_elementwise holding the add). Every layer updates it
/// twice (attention, then MLP/MoE), so the (2n+2)-th update is layer n's
/// output. Following the stream (rather than locations, which a text round
/// trip drops) pairs the layers of any two forms of one model.
struct LayerCapture {
  SmallVector<int64_t> hidden;
  Value stream;
  int64_t updates = 0;
  std::map<std::string, std::vector<float>> layers;
  void observe(Value v, const mlir::ds::Tensor &t) {
    Operation *op = v.getDefiningOp();
    if (!op || t.isInt)
      return;
    if (isa<mlir::ds::EmbeddingOp>(op)) {
      hidden = t.shape;
      stream = v;
      return;
    }
    auto fused = dyn_cast<mlir::ds::FusedLinearOp>(op);
    bool add = isa<arith::AddFOp, mlir::ds::FusedElementwiseOp>(op) ||
               (fused && fused.getResidual() == stream);
    if (!add || !stream || t.shape != hidden ||
        !llvm::is_contained(op->getOperands(), stream))
      return;
    stream = v;
    if (++updates % 2 == 0)
      layers[llvm::formatv("layers.{0:d2}", updates / 2 - 1).str()] = t.f;
  }
  void reset() {
    layers.clear();
    updates = 0;
    stream = Value();
  }
};

/// The experts a routing op can select (empty: all), by which its indices
/// are numbered.
ArrayRef<int64_t> keptExperts(Operation *op) {
  if (auto r = dyn_cast<mlir::ds::RouterOp>(op))
    return r.getRouting().getKept();
  if (auto r = dyn_cast<mlir::ds::FusedRouterOp>(op))
    return r.getRouting().getKept();
  if (auto m = dyn_cast<mlir::ds::MoEOp>(op))
    return m.getRouting().getKept();
  return {};
}

/// The error of a run against its reference run.
struct Report {
  std::map<std::string, ErrorSum> outputs, layers;
  int64_t agree = 0, total = 0;
  LayerCapture mine, ref;
  /// The reference's routing decisions of the current step, in order.
  std::deque<mlir::ds::Tensor> refRouting;
  mlir::ds::Tensor imposed;
  int64_t decisions = 0, changed = 0;

  /// Set when an imposed expert is pruned from this module.
  std::string imposeError;

  /// `indices` of routing op `op` in global expert numbering.
  static mlir::ds::Tensor toGlobal(Operation *op,
                                   const mlir::ds::Tensor &indices) {
    mlir::ds::Tensor global = indices;
    if (ArrayRef<int64_t> kept = keptExperts(op); !kept.empty())
      for (int64_t &e : global.i)
        e = kept[e];
    return global;
  }
  void recordReference(Operation *op, const mlir::ds::Tensor &indices) {
    refRouting.push_back(toGlobal(op, indices));
  }
  /// The reference's decision in `op`'s numbering.
  const mlir::ds::Tensor *impose(Operation *op) {
    if (!forceRouting || refRouting.empty())
      return nullptr;
    imposed = refRouting.front();
    if (ArrayRef<int64_t> kept = keptExperts(op); !kept.empty())
      for (int64_t &e : imposed.i) {
        const int64_t *it = llvm::lower_bound(kept, e);
        if (it == kept.end() || *it != e) {
          imposeError = "--force-routing: the reference selects expert " +
                        std::to_string(e) + ", which this module has pruned";
          return nullptr;
        }
        e = it - kept.begin();
      }
    return &imposed;
  }
  /// Counts tokens whose set of experts differs from the reference's.
  void compareRouting(Operation *op, const mlir::ds::Tensor &local) {
    if (refRouting.empty())
      return;
    mlir::ds::Tensor indices = toGlobal(op, local);
    const mlir::ds::Tensor &r = refRouting.front();
    int64_t k = indices.shape.back();
    if (r.numElements() == indices.numElements())
      for (int64_t t = 0; t < indices.numElements() / k; ++t) {
        std::vector<int64_t> a(indices.i.begin() + t * k,
                               indices.i.begin() + (t + 1) * k),
            b(r.i.begin() + t * k, r.i.begin() + (t + 1) * k);
        llvm::sort(a);
        llvm::sort(b);
        ++decisions;
        changed += a != b;
      }
    refRouting.pop_front();
  }

  /// False when the two outputs' shapes differ.
  bool addOutput(const std::string &name, const HostTensor &a,
                 const HostTensor &r) {
    if (a.shape != r.shape)
      return false;
    std::vector<float> x = a.toFloats(), y = r.toFloats();
    outputs[name].add(x.data(), y.data(), x.size());
    return true;
  }
  /// After one pair of runs: compare and forget the captured layers.
  void addLayers() {
    for (auto &[name, v] : mine.layers) {
      auto it = ref.layers.find(name);
      if (it != ref.layers.end() && it->second.size() == v.size())
        layers[name].add(v.data(), it->second.data(), v.size());
    }
    mine.reset();
    ref.reset();
  }
  absl::Status write(const std::string &path) const {
    auto entry = [](const ErrorSum &e) {
      return llvm::json::Object{{"rel_l2", e.rel()}, {"max_abs", e.maxAbs}};
    };
    llvm::json::Object outs, lays;
    for (const auto &[name, e] : outputs)
      outs[name] = entry(e);
    llvm::json::Array layerList;
    for (const auto &[name, e] : layers) {
      llvm::json::Object o = entry(e);
      o["name"] = name;
      layerList.push_back(std::move(o));
    }
    llvm::json::Object root{{"format", "ds-error-report"},
                            {"version", 1},
                            {"reference", referenceFile.getValue()},
                            {"outputs", std::move(outs)},
                            {"layers", std::move(layerList)}};
    if (total)
      root["top1_agreement"] = double(agree) / double(total);
    root["routing"] = llvm::json::Object{{"forced", forceRouting.getValue()},
                                         {"decisions", decisions},
                                         {"changed", changed}};
    return writeJson(path, std::move(root));
  }
  void print() const {
    for (const auto &[name, e] : outputs)
      llvm::outs() << "error vs reference: " << name << " relative L2 "
                   << llvm::format("%.3e", e.rel()) << ", max abs "
                   << llvm::format("%.3e", e.maxAbs) << "\n";
    if (total)
      llvm::outs() << "error vs reference: greedy tokens agree " << agree << "/"
                   << total << "\n";
    llvm::outs() << "error vs reference: "
                 << (forceRouting ? "routing imposed; " : "")
                 << "token routings that differ " << changed << "/" << decisions
                 << "\n";
  }
};

/// Absolute maxima of GEMM inputs, by weight param name.
struct Calibration {
  std::map<std::string, float> absmax;
  void record(Value weight, const mlir::ds::Tensor &input) {
    std::optional<mlir::ds::WeightSources> sources =
        mlir::ds::getWeightSources(weight);
    if (!sources)
      return;
    float m = 0.0f;
    for (float v : input.f)
      m = std::max(m, std::fabs(v));
    for (mlir::ds::ParamOp p : sources->params) {
      float &slot = absmax[p.getName().str()];
      slot = std::max(slot, m);
    }
  }
  absl::Status write(const std::string &path) const {
    llvm::json::Object inputs;
    for (const auto &[name, m] : absmax)
      inputs[name] = double(m);
    return writeJson(path,
                     llvm::json::Object{{"format", "ds-activation-ranges"},
                                        {"version", 1},
                                        {"gemm_inputs", std::move(inputs)}});
  }
};

int fail(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "ds-run") << message << "\n";
  return 1;
}

int64_t argmax(const float *v, int64_t n) {
  return std::max_element(v, v + n) - v;
}

HostTensor generated(RankedTensorType type, std::mt19937_64 &rng) {
  std::vector<int64_t> shape;
  for (int64_t d : type.getShape())
    shape.push_back(ShapedType::isDynamic(d) ? dynSize : d);
  if (isa<FloatType>(type.getElementType())) {
    HostTensor t(DType::F32, shape);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t i = 0; i < t.numElements(); ++i)
      t.data<float>()[i] = normal(rng);
    return t;
  }
  HostTensor t(DType::I64, shape);
  std::uniform_int_distribution<int64_t> uniform(
      0, std::max<int64_t>(0, intMax - 1));
  for (int64_t i = 0; i < t.numElements(); ++i)
    t.data<int64_t>()[i] = uniform(rng);
  return t;
}

/// `x.npy`, or `file.safetensors:name` for one tensor of a safetensors file.
absl::StatusOr<HostTensor> readInput(const std::string &spec) {
  size_t colon = spec.rfind(".safetensors:");
  if (colon == std::string::npos)
    return ::ds::readNpy(spec);
  std::string path = spec.substr(0, colon + 12);
  std::string name = spec.substr(colon + 13);
  absl::StatusOr<std::unique_ptr<::ds::SafeTensorsFile>> file =
      ::ds::SafeTensorsFile::open(path);
  if (!file.ok())
    return file.status();
  const ::ds::TensorView *view = (*file)->find(name);
  if (!view)
    return absl::NotFoundError(path + ": no tensor '" + name + "'");
  HostTensor t(view->dtype, view->shape);
  if (view->numBytes)
    std::memcpy(t.bytes.data(), view->data, view->numBytes);
  return t;
}

/// The arguments of `fn`: the --input files in order, then values generated
/// from --seed; an error message when they do not fit.
std::optional<std::string> buildArguments(func::FuncOp fn,
                                          std::vector<HostTensor> &args) {
  if (inputs.size() > fn.getNumArguments())
    return ("@" + function + " takes " + Twine(fn.getNumArguments()) +
            " arguments, " + Twine(inputs.size()) + " files given")
        .str();
  for (const std::string &spec : inputs) {
    absl::StatusOr<HostTensor> t = readInput(spec);
    if (!t.ok())
      return std::string(t.status().message());
    args.push_back(std::move(*t));
  }
  std::mt19937_64 rng(seed);
  for (unsigned i = args.size(); i < fn.getNumArguments(); ++i) {
    auto type = dyn_cast<RankedTensorType>(fn.getArgumentTypes()[i]);
    if (!type)
      return ("argument " + Twine(i) + " is not a ranked tensor").str();
    args.push_back(generated(type, rng));
  }
  return std::nullopt;
}

int runOnce(ModuleOp module, mlir::ds::Interpreter &interp,
            mlir::ds::Interpreter *ref, Report &report) {
  auto fn = module.lookupSymbol<func::FuncOp>(function);
  if (!fn)
    return fail("no function @" + function + " in " + inputFile);
  std::vector<HostTensor> args;
  if (std::optional<std::string> error = buildArguments(fn, args))
    return fail(*error);
  // The reference runs first: its routing decisions can be imposed.
  FailureOr<std::vector<HostTensor>> expected;
  if (ref && failed(expected = ref->run(function, args)))
    return 1;
  FailureOr<std::vector<HostTensor>> results = interp.run(function, args);
  if (failed(results))
    return 1;
  if (ref) {
    if (!report.imposeError.empty())
      return fail(report.imposeError);
    if (results->size() != expected->size())
      return fail("the reference returns " + Twine(expected->size()) +
                  " results, @" + function + " " + Twine(results->size()));
    for (size_t i = 0; i < results->size(); ++i)
      if (!report.addOutput("result" + std::to_string(i), (*results)[i],
                            (*expected)[i]))
        return fail("result " + Twine(i) + " is " +
                    (*results)[i].shapeString() + ", the reference's " +
                    (*expected)[i].shapeString());
    report.addLayers();
  }
  if (!outputDir.empty()) {
    if (std::error_code ec = llvm::sys::fs::create_directories(outputDir))
      return fail(outputDir + ": " + ec.message());
    for (auto [i, r] : llvm::enumerate(*results))
      if (absl::Status s = ::ds::writeNpy(
              outputDir + "/result" + std::to_string(i) + ".npy", r);
          !s.ok())
        return fail(std::string(s.message()));
    return 0;
  }
  for (auto [i, r] : llvm::enumerate(*results)) {
    llvm::outs() << "result " << i << ": " << r.shapeString() << " ";
    std::vector<float> v = r.toFloats();
    double sum = 0;
    for (float x : v)
      sum += x;
    llvm::outs() << "sum=" << llvm::format("%.6g", sum) << " [";
    for (size_t j = 0; j < std::min<size_t>(v.size(), 8); ++j)
      llvm::outs() << (j ? ", " : "") << llvm::format("%.6g", v[j]);
    llvm::outs() << (v.size() > 8 ? ", ...]\n" : "]\n");
  }
  return 0;
}

/// "sequence i: prompt [...] -> generated [...]" for every sequence.
void printSequences(const std::vector<std::vector<int64_t>> &prompts,
                    const std::vector<std::vector<int64_t>> &generated) {
  auto list = [](const std::vector<int64_t> &ids) {
    return llvm::join(
        llvm::map_range(ids, [](int64_t v) { return std::to_string(v); }),
        ", ");
  };
  for (size_t i = 0; i < prompts.size(); ++i)
    llvm::outs() << "sequence " << i << ": prompt [" << list(prompts[i])
                 << "] -> generated [" << list(generated[i]) << "]\n";
}

/// The --prompt token lists; an error message when one is malformed.
std::optional<std::string>
parsePrompts(std::vector<std::vector<int64_t>> &seqs) {
  if (prompts.empty())
    return std::string("--generate needs at least one --prompt");
  for (const std::string &p : prompts) {
    std::vector<int64_t> ids;
    SmallVector<StringRef> parts;
    StringRef(p).split(parts, ',', -1, false);
    for (StringRef part : parts) {
      int64_t id;
      if (part.trim().getAsInteger(10, id))
        return ("bad token id '" + part + "' in --prompt").str();
      ids.push_back(id);
    }
    if (ids.empty())
      return std::string("empty --prompt");
    seqs.push_back(std::move(ids));
  }
  return std::nullopt;
}

int runGenerate(ModuleOp module, mlir::ds::Interpreter &interp,
                mlir::ds::Interpreter *ref, Report &report) {
  auto prefill = module.lookupSymbol<func::FuncOp>("prefill");
  if (!prefill || !module.lookupSymbol<func::FuncOp>("decode"))
    return fail(inputFile + " has no @prefill and @decode (import a model "
                            "with ds-translate --import-hf)");
  std::vector<std::vector<int64_t>> seqs;
  if (std::optional<std::string> error = parsePrompts(seqs))
    return fail(*error);
  for (const auto &ids : seqs)
    if (ids.size() != seqs[0].size())
      return fail("prompts must have equal lengths");
  int64_t b = seqs.size(), s = seqs[0].size();
  std::vector<HostTensor> args(2);
  std::vector<int64_t> tokens, positions;
  for (auto &seq : seqs)
    for (int64_t i = 0; i < s; ++i) {
      tokens.push_back(seq[i]);
      positions.push_back(i);
    }
  args[0] = HostTensor::fromInts({b, s}, tokens);
  args[1] = HostTensor::fromInts({b, s}, positions);
  for (Type t : prefill.getArgumentTypes().drop_front(2)) {
    auto type = cast<RankedTensorType>(t);
    std::vector<int64_t> shape(type.getShape());
    shape[0] = b;
    args.push_back(HostTensor(DType::F32, shape));
  }
  // The reference runs first on the same tokens, with caches of its own (its
  // routing decisions can be imposed).
  FailureOr<std::vector<HostTensor>> refOut;
  if (ref && failed(refOut = ref->run("prefill", args)))
    return 1;
  FailureOr<std::vector<HostTensor>> out = interp.run("prefill", args);
  if (failed(out))
    return 1;
  // False (after a message) when the reference's logits do not line up.
  auto compare = [&](const std::string &name, int64_t rowsPerSeq) {
    if (!report.imposeError.empty()) {
      fail(report.imposeError);
      return false;
    }
    const HostTensor &a = (*out)[0], &r = (*refOut)[0];
    if (!report.addOutput(name, a, r)) {
      fail(name + " are " + a.shapeString() + ", the reference's " +
           r.shapeString());
      return false;
    }
    report.addLayers();
    int64_t v = a.shape.back();
    for (int64_t i = 0; i < static_cast<int64_t>(a.shape[0]); ++i) {
      int64_t row = (i + 1) * rowsPerSeq - 1;
      report.agree += argmax(a.data<float>() + row * v, v) ==
                      argmax(r.data<float>() + row * v, v);
      ++report.total;
    }
    return true;
  };
  if (ref && !compare("prefill_logits", args[0].shape[1]))
    return 1;
  int64_t vocab = (*out)[0].shape.back();
  HostTensor prefillLogits = (*out)[0];
  std::vector<float> decodeLogits;
  std::vector<std::vector<int64_t>> generatedIds(b);
  auto pick = [&](const HostTensor &logits, int64_t rowsPerSeq) {
    for (int64_t i = 0; i < b; ++i)
      generatedIds[i].push_back(argmax(
          logits.data<float>() + ((i + 1) * rowsPerSeq - 1) * vocab, vocab));
  };
  pick(prefillLogits, s);
  for (int64_t step = 1; step < generate; ++step) {
    std::vector<int64_t> tok, pos;
    for (int64_t i = 0; i < b; ++i) {
      tok.push_back(generatedIds[i].back());
      pos.push_back(s + step - 1);
    }
    std::vector<HostTensor> dargs = {HostTensor::fromInts({b, 1}, tok),
                                     HostTensor::fromInts({b, 1}, pos)};
    if (ref) {
      std::vector<HostTensor> refArgs = dargs;
      for (size_t c = 1; c < refOut->size(); ++c)
        refArgs.push_back(std::move((*refOut)[c]));
      if (failed(refOut = ref->run("decode", refArgs)))
        return 1;
    }
    for (size_t c = 1; c < out->size(); ++c)
      dargs.push_back(std::move((*out)[c]));
    out = interp.run("decode", dargs);
    if (failed(out))
      return 1;
    if (ref && !compare("decode_logits", 1))
      return 1;
    const float *l = (*out)[0].data<float>();
    decodeLogits.insert(decodeLogits.end(), l, l + b * vocab);
    pick((*out)[0], 1);
  }
  printSequences(seqs, generatedIds);
  if (!dumpDir.empty()) {
    if (std::error_code ec = llvm::sys::fs::create_directories(dumpDir))
      return fail(dumpDir + ": " + ec.message());
    std::vector<int64_t> all;
    for (int64_t i = 0; i < b; ++i) {
      all.insert(all.end(), seqs[i].begin(), seqs[i].end());
      all.insert(all.end(), generatedIds[i].begin(), generatedIds[i].end());
    }
    for (auto [name, tensor] :
         {std::pair<std::string, HostTensor>{"prefill_logits", prefillLogits},
          {"decode_logits",
           HostTensor::fromFloats({generate - 1, b, vocab}, decodeLogits)},
          {"tokens", HostTensor::fromInts({b, s + generate}, all)}})
      if (absl::Status st =
              ::ds::writeNpy(dumpDir + "/" + name + ".npy", tensor);
          !st.ok())
        return fail(std::string(st.message()));
  }
  return 0;
}

/// Max |a - b| / max |b| over two equal-shaped f32 tensors.
double relativeError(const HostTensor &a, const HostTensor &b) {
  double err = 0, mag = 0;
  const float *x = a.data<float>(), *y = b.data<float>();
  for (int64_t i = 0; i < b.numElements(); ++i) {
    err = std::max(err, static_cast<double>(std::abs(x[i] - y[i])));
    mag = std::max(mag, static_cast<double>(std::abs(y[i])));
  }
  return mag > 0 ? err / mag : err;
}

/// The kernel workers of compiled runs (--kernel-threads), or null for none.
std::unique_ptr<::ds::rt::ThreadPool> makeWorkers() {
  int n = kernelThreads >= 0
              ? kernelThreads
              : static_cast<int>(std::thread::hardware_concurrency()) - 1;
  if (n <= 0)
    return nullptr;
  return std::make_unique<::ds::rt::ThreadPool>(static_cast<unsigned>(n));
}

/// Greedy generation on compiled code: prefill each prompt in its own cache
/// slot (prompts may differ in length), then decode all sequences as one
/// batch per step. With `interp`, the interpreter runs the same tokens in
/// lockstep and every logits tensor is compared.
int runGenerateCompiled(std::shared_ptr<const ::ds::rt::Model> model,
                        ModuleOp module, mlir::ds::Interpreter *interp) {
  namespace rt = ::ds::rt;
  std::vector<std::vector<int64_t>> seqs;
  if (std::optional<std::string> error = parsePrompts(seqs))
    return fail(*error);
  int64_t b = seqs.size();
  auto cache = rt::KVCache::create(model->plan(), b);
  if (!cache.ok())
    return fail(std::string(cache.status().message()));
  std::unique_ptr<rt::ThreadPool> workers = makeWorkers();
  rt::Executor exec(model, workers.get());
  double worst = 0;
  int64_t compared = 0, tokenMismatches = 0;
  // Interpreter caches, per sequence ([1, L, ...] each).
  std::vector<std::vector<HostTensor>> refCaches(b);
  auto checkAgainst = [&](const std::string &fn, int64_t seq,
                          const HostTensor &tokens, const HostTensor &pos,
                          const HostTensor &logits) -> bool {
    if (!interp)
      return true;
    std::vector<HostTensor> args{tokens, pos};
    if (refCaches[seq].empty()) {
      auto f = module.lookupSymbol<func::FuncOp>(fn);
      for (Type t : f.getArgumentTypes().drop_front(2)) {
        auto type = cast<RankedTensorType>(t);
        std::vector<int64_t> shape(type.getShape());
        shape[0] = 1;
        refCaches[seq].push_back(HostTensor(DType::F32, shape));
      }
    }
    for (HostTensor &c : refCaches[seq])
      args.push_back(std::move(c));
    FailureOr<std::vector<HostTensor>> out = interp->run(fn, args);
    if (failed(out))
      return false;
    refCaches[seq].assign(std::make_move_iterator(out->begin() + 1),
                          std::make_move_iterator(out->end()));
    HostTensor ref = (*out)[0];
    if (logits.shape.size() == 2 && ref.shape.size() == 3 &&
        logits.shape[0] == 1 && ref.shape[0] == 1 &&
        logits.shape[1] == ref.shape[2]) {
      // Only the last position's logits were computed: compare that row.
      int64_t v = ref.shape[2], s = ref.shape[1];
      ref = HostTensor::fromFloats(
          {1, v}, std::vector<float>(ref.data<float>() + (s - 1) * v,
                                     ref.data<float>() + s * v));
    }
    if (ref.shape != logits.shape) {
      fail(fn + " logits are " + logits.shapeString() + ", the interpreter's " +
           ref.shapeString());
      return false;
    }
    worst = std::max(worst, relativeError(logits, ref));
    ++compared;
    return true;
  };
  std::vector<std::vector<int64_t>> generatedIds(b);
  int64_t vocab = model->plan().vocabSize;
  for (int64_t i = 0; i < b; ++i) {
    int64_t len = seqs[i].size();
    std::vector<int64_t> pos(len);
    std::iota(pos.begin(), pos.end(), 0);
    HostTensor tokens = HostTensor::fromInts({1, len}, seqs[i]);
    HostTensor positions = HostTensor::fromInts({1, len}, pos);
    // The last position's logits only, unless all were asked for.
    std::vector<int64_t> last{len - 1};
    auto out = exec.run("prefill", {&tokens, &positions}, &*cache, {i},
                        allLogits ? nullptr : &last);
    if (!out.ok())
      return fail(std::string(out.status().message()));
    const HostTensor &logits = (*out)[0];
    vocab = logits.shape.back();
    if (!checkAgainst("prefill", i, tokens, positions, logits))
      return 1;
    generatedIds[i].push_back(argmax(
        logits.data<float>() + (allLogits ? len - 1 : 0) * vocab, vocab));
  }
  for (int64_t step = 1; step < generate; ++step) {
    std::vector<int64_t> tok, pos, slots;
    for (int64_t i = 0; i < b; ++i) {
      tok.push_back(generatedIds[i].back());
      pos.push_back(static_cast<int64_t>(seqs[i].size()) + step - 1);
      slots.push_back(i);
    }
    HostTensor tokens = HostTensor::fromInts({b, 1}, tok);
    HostTensor positions = HostTensor::fromInts({b, 1}, pos);
    auto out = exec.run("decode", {&tokens, &positions}, &*cache, slots);
    if (!out.ok())
      return fail(std::string(out.status().message()));
    const HostTensor &logits = (*out)[0];
    for (int64_t i = 0; i < b; ++i) {
      int64_t next = argmax(logits.data<float>() + i * vocab, vocab);
      if (interp) {
        HostTensor row = HostTensor::fromFloats(
            {1, 1, vocab},
            std::vector<float>(logits.data<float>() + i * vocab,
                               logits.data<float>() + (i + 1) * vocab));
        HostTensor t1 = HostTensor::fromInts({1, 1}, {tok[i]});
        HostTensor p1 = HostTensor::fromInts({1, 1}, {pos[i]});
        size_t before = compared;
        if (!checkAgainst("decode", i, t1, p1, row))
          return 1;
        (void)before;
      }
      generatedIds[i].push_back(next);
    }
  }
  printSequences(seqs, generatedIds);
  if (interp) {
    llvm::outs() << llvm::formatv(
        "check: {0} logits tensors against the interpreter, max relative "
        "error {1:e2} (tolerance {2:e1})\n",
        compared, worst, checkTolerance.getValue());
    if (!(worst <= checkTolerance))
      return fail("compiled code differs from the interpreter by more than "
                  "the tolerance");
  }
  (void)tokenMismatches;
  if (serve > 0) {
    rt::BatcherOptions options;
    options.maxBatchSize = maxBatch;
    options.maxQueue = std::max<int64_t>(serve, 1);
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    options.threads = serveThreads >= 0
                          ? static_cast<unsigned>(serveThreads.getValue())
                          : cores - 1;
    auto batcher = rt::Batcher::create(model, options);
    if (!batcher.ok())
      return fail(std::string(batcher.status().message()));
    std::vector<rt::Batcher::Result> answers(serve);
    // A burst: every submitter is ready before the first request goes in.
    std::promise<void> go;
    std::shared_future<void> ready = go.get_future().share();
    std::vector<std::thread> submitters;
    for (int64_t r = 0; r < serve; ++r)
      submitters.emplace_back([&, r] {
        ready.wait();
        answers[r] = (*batcher)->submit(seqs[r % b], generate).get();
      });
    auto start = std::chrono::steady_clock::now();
    go.set_value();
    for (std::thread &t : submitters)
      t.join();
    double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    int64_t agree = 0, tokens = 0;
    for (int64_t r = 0; r < serve; ++r) {
      if (!answers[r].ok())
        return fail("request " + std::to_string(r) + ": " +
                    std::string(answers[r].status().message()));
      tokens += answers[r]->size();
      agree += *answers[r] == generatedIds[r % b];
    }
    rt::BatcherStats st = (*batcher)->stats();
    double mean = 0;
    for (size_t i = 0; i < st.batchHistogram.size(); ++i)
      mean += static_cast<double>(i) * st.batchHistogram[i];
    mean /= std::max<int64_t>(st.steps, 1);
    llvm::outs() << llvm::formatv(
        "served {0} concurrent requests through the batcher in {1:f3} s: "
        "{2:f0} "
        "generated tokens/s, {3} steps, mean batch {4:f1} sequences, latency "
        "p50 {5:f2} ms p90 {6:f2} ms p99 {7:f2} ms\n",
        serve.getValue(), secs, tokens / secs, st.steps, mean, st.p50Ms,
        st.p90Ms, st.p99Ms);
    llvm::outs() << "batched answers equal to the sequential"
                 << (interp ? ", interpreter-checked" : "")
                 << " generation: " << agree << "/" << serve << "\n";
    if (agree != serve)
      return fail("batched generation differs from sequential generation");
  }
  return 0;
}

/// One function on compiled code, on the same arguments runOnce builds
/// (files, then seeded random values; cache arguments become the initial
/// contents of KV cache slots 0..B-1); with `interp`, compared result by
/// result (caches included) with the interpreter.
int runOnceCompiled(std::shared_ptr<const ::ds::rt::Model> model,
                    ModuleOp module, mlir::ds::Interpreter *interp) {
  namespace rt = ::ds::rt;
  auto fn = module.lookupSymbol<func::FuncOp>(function);
  const rt::FunctionPlan *plan = model->plan().find(function);
  if (!fn || !plan)
    return fail("no function @" + function);
  std::vector<HostTensor> args;
  if (std::optional<std::string> error = buildArguments(fn, args))
    return fail(*error);
  // Arguments the plan takes as inputs; the others are caches, in order.
  std::vector<const HostTensor *> ptrs;
  std::vector<const HostTensor *> cacheArgs;
  for (unsigned i = 0; i < args.size(); ++i) {
    bool isInput = llvm::any_of(plan->inputs, [&](int32_t v) {
      return plan->values[v].index == static_cast<int32_t>(i);
    });
    (isInput ? ptrs : cacheArgs).push_back(&args[i]);
  }
  std::optional<rt::KVCache> cache;
  std::vector<int64_t> slots;
  if (!cacheArgs.empty()) {
    int64_t b = cacheArgs[0]->shape[0];
    auto c = rt::KVCache::create(model->plan(), std::max<int64_t>(b, 1));
    if (!c.ok())
      return fail(std::string(c.status().message()));
    cache = std::move(*c);
    for (size_t i = 0; i < cacheArgs.size(); ++i) {
      const HostTensor &t = *cacheArgs[i];
      if (t.dtype != DType::F32 || t.shape[0] != b ||
          t.numElements() != b * cache->slotSize(i))
        return fail("cache argument " + Twine(i) +
                    " does not fit the model's "
                    "cache " +
                    Twine(i));
      std::copy_n(t.data<float>(), t.numElements(), cache->data(i));
    }
    for (int64_t i = 0; i < b; ++i)
      slots.push_back(i);
  }
  std::unique_ptr<rt::ThreadPool> workers = makeWorkers();
  rt::Executor exec(model, workers.get());
  auto results = exec.run(function, ptrs, cache ? &*cache : nullptr, slots);
  if (!results.ok())
    return fail(std::string(results.status().message()));
  // Every result of the function: outputs, and caches read back.
  std::vector<HostTensor> all;
  size_t nextOutput = 0;
  for (int32_t o : plan->outputs) {
    int32_t base = o;
    while (plan->values[base].kind == rt::ValueInfo::Kind::Alias)
      base = plan->values[base].index;
    if (plan->values[base].kind == rt::ValueInfo::Kind::Cache) {
      int32_t c = plan->values[base].index;
      const HostTensor &shapeFrom = *cacheArgs[c];
      HostTensor t(DType::F32, shapeFrom.shape);
      std::copy_n(cache->data(c), t.numElements(), t.data<float>());
      all.push_back(std::move(t));
    } else {
      all.push_back(std::move((*results)[nextOutput++]));
    }
  }
  double worst = 0;
  if (interp) {
    FailureOr<std::vector<HostTensor>> expected = interp->run(function, args);
    if (failed(expected))
      return 1;
    if (expected->size() != all.size())
      return fail("result counts differ");
    for (size_t i = 0; i < all.size(); ++i) {
      const HostTensor &a = all[i], &b = (*expected)[i];
      if (a.shape != b.shape)
        return fail("result " + Twine(i) + " is " + a.shapeString() +
                    ", the interpreter's " + b.shapeString());
      if (a.dtype == DType::F32)
        worst = std::max(worst, relativeError(a, b));
      else if (a.toInts() != b.toInts())
        return fail("integer result " + Twine(i) + " differs");
    }
  }
  for (auto [i, r] : llvm::enumerate(all)) {
    std::vector<float> v = r.toFloats();
    double sum = 0;
    for (float x : v)
      sum += x;
    llvm::outs() << "result " << i << ": " << r.shapeString()
                 << " sum=" << llvm::format("%.6g", sum) << "\n";
  }
  if (interp) {
    llvm::outs() << llvm::formatv(
        "check: {0} results against the interpreter, max relative error "
        "{1:e2} (tolerance {2:e1})\n",
        all.size(), worst, checkTolerance.getValue());
    if (!(worst <= checkTolerance))
      return fail("compiled code differs from the interpreter by more than "
                  "the tolerance");
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::ParseCommandLineOptions(argc, argv,
                              "ds-run: the ds reference interpreter\n");
  DialectRegistry registry;
  mlir::ds::registerAllDialects(registry);
  MLIRContext context(registry);
  context.loadAllAvailableDialects();
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  std::string error;
  std::unique_ptr<llvm::MemoryBuffer> buffer = openInputFile(inputFile, &error);
  if (!buffer)
    return fail(error);
  sourceMgr.AddNewSourceBuffer(std::move(buffer), SMLoc());
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return 1;
  llvm::SourceMgr refSourceMgr;
  OwningOpRef<ModuleOp> refModule;
  if (!referenceFile.empty()) {
    std::unique_ptr<llvm::MemoryBuffer> refBuffer =
        openInputFile(referenceFile, &error);
    if (!refBuffer)
      return fail(error);
    refSourceMgr.AddNewSourceBuffer(std::move(refBuffer), SMLoc());
    refModule = parseSourceFile<ModuleOp>(refSourceMgr, &context);
    if (!refModule)
      return 1;
  } else if (!reportFile.empty() || forceRouting) {
    return fail(Twine(forceRouting ? "--force-routing" : "--report") +
                " needs --reference");
  }
  std::unique_ptr<::ds::Checkpoint> checkpoint, refCheckpoint;
  std::unique_ptr<mlir::ds::CheckpointWeights> weights, refWeights;
  if (!weightsDir.empty()) {
    FailureOr<std::unique_ptr<::ds::Checkpoint>> c =
        mlir::ds::openModuleCheckpoint(*module, weightsDir, error);
    if (failed(c))
      return fail(error);
    checkpoint = std::move(*c);
    weights = std::make_unique<mlir::ds::CheckpointWeights>(*checkpoint);
    if (refModule) {
      c = mlir::ds::openModuleCheckpoint(*refModule, weightsDir, error);
      if (failed(c))
        return fail(error);
      refCheckpoint = std::move(*c);
      refWeights =
          std::make_unique<mlir::ds::CheckpointWeights>(*refCheckpoint);
    }
  }
  mlir::ds::Interpreter interp(*module, weights.get());
  if (backend != "interpreter") {
    std::shared_ptr<const ::ds::rt::Model> model;
    if (backend == "jit") {
      if (!checkpoint)
        return fail("--backend jit needs --weights");
      auto jit = mlir::ds::jitModule(*module, *checkpoint);
      if (failed(jit))
        return 1;
      model = *jit;
    } else if (backend == "cached") {
      auto start = std::chrono::steady_clock::now();
      bool hit = false;
      mlir::ds::CompileOptions options;
      auto compiled =
          mlir::ds::compileCached(inputFile, weightsDir, options, &hit);
      if (!compiled.ok())
        return fail(std::string(compiled.status().message()));
      llvm::outs() << llvm::formatv(
          "compile cache: {0} ({1:f1} ms)\n", hit ? "hit" : "miss, compiled",
          std::chrono::duration<double, std::milli>(
              std::chrono::steady_clock::now() - start)
              .count());
      model = *compiled;
    } else if (StringRef(backend).starts_with("artifact=")) {
      auto loaded =
          ::ds::rt::Model::load(StringRef(backend).drop_front(9).str());
      if (!loaded.ok())
        return fail(std::string(loaded.status().message()));
      model = *loaded;
    } else {
      return fail("--backend must be interpreter, jit, cached or "
                  "artifact=FILE");
    }
    if (check && !weights)
      return fail("--check needs --weights");
    if (generate <= 0)
      return runOnceCompiled(model, *module, check ? &interp : nullptr);
    return runGenerateCompiled(model, *module, check ? &interp : nullptr);
  }
  std::unique_ptr<mlir::ds::Interpreter> refInterp;
  Report report;
  if (refModule) {
    refInterp =
        std::make_unique<mlir::ds::Interpreter>(*refModule, refWeights.get());
    interp.setValueObserver(
        [&](Value v, const mlir::ds::Tensor &t) { report.mine.observe(v, t); });
    refInterp->setValueObserver(
        [&](Value v, const mlir::ds::Tensor &t) { report.ref.observe(v, t); });
    refInterp->setRoutingObserver(
        [&](Operation *op, const mlir::ds::Tensor &indices, int64_t) {
          report.recordReference(op, indices);
        });
    interp.setRoutingOverride([&](Operation *op) { return report.impose(op); });
  }
  Calibration calibration;
  if (!calibrate.empty())
    interp.setGemmInputObserver(
        [&](Operation *, Value weight, const mlir::ds::Tensor &input) {
          calibration.record(weight, input);
        });
  RoutingProfile profile;
  if (!profileRouting.empty() || refInterp)
    interp.setRoutingObserver(
        [&](Operation *op, const mlir::ds::Tensor &indices, int64_t experts) {
          if (!profileRouting.empty())
            profile.record(op, indices, experts);
          if (refInterp)
            report.compareRouting(op, indices);
        });
  int rc = generate > 0 ? runGenerate(*module, interp, refInterp.get(), report)
                        : runOnce(*module, interp, refInterp.get(), report);
  if (rc == 0 && refInterp) {
    report.print();
    if (!reportFile.empty())
      if (absl::Status s = report.write(reportFile); !s.ok())
        return fail(std::string(s.message()));
  }
  if (rc == 0 && !calibrate.empty())
    if (absl::Status s = calibration.write(calibrate); !s.ok())
      return fail(std::string(s.message()));
  if (rc == 0 && !profileRouting.empty())
    if (absl::Status s = profile.write(profileRouting); !s.ok())
      return fail(std::string(s.message()));
  return rc;
}
