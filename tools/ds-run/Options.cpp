//===- Options.cpp - helpers shared by ds-run's modes ---------------------===//

#include "ds/tools/ds-run/Options.h"

#include "ds/interpreter/Partitioned.h"
#include "ds/support/SafeTensors.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/WithColor.h"

#include <random>

using namespace mlir;

namespace ds::run {

int fail(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "ds-run") << message << "\n";
  return 1;
}

absl::Status writeJson(const std::string &path, llvm::json::Value value) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", value) << "\n";
  return ds::writeFileAtomically(path, text);
}

std::optional<std::string>
parsePrompts(const RunOptions &opts, std::vector<std::vector<int64_t>> &seqs) {
  if (opts.prompts.empty() && opts.promptTexts.empty())
    return std::string(
        "--generate needs at least one --prompt or --prompt-text");
  for (const std::string &p : opts.prompts) {
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
  for (const std::string &text : opts.promptTexts) {
    if (!opts.tokenizer)
      return std::string("--prompt-text needs a tokenizer (--tokenizer)");
    absl::StatusOr<std::vector<int32_t>> ids = opts.tokenizer->encode(text);
    if (!ids.ok())
      return "--prompt-text: " + std::string(ids.status().message());
    if (ids->empty())
      return std::string("--prompt-text encodes to no tokens");
    seqs.emplace_back(ids->begin(), ids->end());
  }
  return std::nullopt;
}

void printSequences(const std::vector<std::vector<int64_t>> &prompts,
                    const std::vector<std::vector<int64_t>> &generated,
                    const std::vector<rt::FinishReason> &reasons,
                    const tok::Tokenizer *tokenizer) {
  auto list = [](const std::vector<int64_t> &ids) {
    return llvm::join(
        llvm::map_range(ids, [](int64_t v) { return std::to_string(v); }),
        ", ");
  };
  for (size_t i = 0; i < prompts.size(); ++i) {
    llvm::outs() << "sequence " << i << ": prompt [" << list(prompts[i])
                 << "] -> generated [" << list(generated[i]) << "]";
    // Only a stop is worth a word: the length is what was asked for.
    if (i < reasons.size() && reasons[i] != rt::FinishReason::kLength)
      llvm::outs() << " (" << rt::finishReasonName(reasons[i]) << ")";
    llvm::outs() << "\n";
  }
  if (!tokenizer)
    return;
  auto text = [&](const std::vector<int64_t> &ids) -> std::string {
    absl::StatusOr<std::string> t = tokenizer->decode(
        std::vector<int32_t>(ids.begin(), ids.end()), /*skipSpecialTokens=*/
        false);
    std::string out;
    llvm::raw_string_ostream os(out);
    os << llvm::json::Value(
        t.ok() ? *t : "<" + std::string(t.status().message()) + ">");
    return out;
  };
  for (size_t i = 0; i < prompts.size(); ++i)
    llvm::outs() << "text " << i << ": " << text(prompts[i]) << " -> "
                 << text(generated[i]) << "\n";
}

namespace {
HostTensor generated(const RunOptions &opts, RankedTensorType type,
                     std::mt19937_64 &rng) {
  std::vector<int64_t> shape;
  for (int64_t d : type.getShape())
    shape.push_back(ShapedType::isDynamic(d) ? opts.dynSize : d);
  if (isa<FloatType>(type.getElementType())) {
    HostTensor t(DType::F32, shape);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t i = 0; i < t.numElements(); ++i)
      t.data<float>()[i] = normal(rng);
    return t;
  }
  HostTensor t(DType::I64, shape);
  std::uniform_int_distribution<int64_t> uniform(
      0, std::max<int64_t>(0, opts.intMax - 1));
  for (int64_t i = 0; i < t.numElements(); ++i)
    t.data<int64_t>()[i] = uniform(rng);
  return t;
}

/// `x.npy`, or `file.safetensors:name` for one tensor of a safetensors file.
absl::StatusOr<HostTensor> readInput(const std::string &spec) {
  size_t colon = spec.rfind(".safetensors:");
  if (colon == std::string::npos)
    return ds::readNpy(spec);
  std::string path = spec.substr(0, colon + 12);
  std::string name = spec.substr(colon + 13);
  absl::StatusOr<std::unique_ptr<ds::SafeTensorsFile>> file =
      ds::SafeTensorsFile::open(path);
  if (!file.ok())
    return file.status();
  const ds::TensorView *view = (*file)->find(name);
  if (!view)
    return absl::NotFoundError(path + ": no tensor '" + name + "'");
  HostTensor t(view->dtype, view->shape);
  if (view->numBytes)
    std::memcpy(t.bytes.data(), view->data, view->numBytes);
  return t;
}
} // namespace

std::optional<std::string> buildArguments(const RunOptions &opts,
                                          func::FuncOp fn,
                                          std::vector<HostTensor> &args) {
  if (opts.inputs.size() > fn.getNumArguments())
    return ("@" + opts.function + " takes " + Twine(fn.getNumArguments()) +
            " arguments, " + Twine(opts.inputs.size()) + " files given")
        .str();
  for (const std::string &spec : opts.inputs) {
    absl::StatusOr<HostTensor> t = readInput(spec);
    if (!t.ok())
      return std::string(t.status().message());
    args.push_back(std::move(*t));
  }
  std::mt19937_64 rng(opts.seed);
  for (unsigned i = args.size(); i < fn.getNumArguments(); ++i) {
    if (!isa<RankedTensorType>(fn.getArgumentTypes()[i]))
      return ("argument " + Twine(i) + " is not a ranked tensor").str();
    // The whole value, also for a partitioned module's function.
    RankedTensorType type = ds::wholeArgumentType(fn, i);
    args.push_back(generated(opts, type, rng));
  }
  return std::nullopt;
}

double relativeError(const HostTensor &a, const HostTensor &b) {
  double err = 0, mag = 0;
  const float *x = a.data<float>(), *y = b.data<float>();
  for (int64_t i = 0; i < b.numElements(); ++i) {
    err = std::max(err, static_cast<double>(std::abs(x[i] - y[i])));
    mag = std::max(mag, static_cast<double>(std::abs(y[i])));
  }
  return mag > 0 ? err / mag : err;
}

std::vector<int64_t> moduleEosTokens(ModuleOp module) {
  auto info = module->getAttrOfType<DictionaryAttr>("ds.model");
  if (!info)
    return {};
  auto eos = info.getAs<DenseI64ArrayAttr>("eos_token_ids");
  if (!eos)
    return {};
  return std::vector<int64_t>(eos.asArrayRef().begin(), eos.asArrayRef().end());
}

} // namespace ds::run
