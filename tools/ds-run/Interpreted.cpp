//===- Interpreted.cpp - ds-run on the reference interpreter --------------===//

#include "ds/tools/ds-run/Interpreted.h"

#include "ds/interpreter/Partitioned.h"
#include "ds/support/SafeTensors.h"

#include "llvm/Support/FileSystem.h"

namespace ds::run {

namespace {
int64_t argmax(const float *v, int64_t n) {
  return std::max_element(v, v + n) - v;
}
} // namespace

int runOnce(const RunOptions &opts, ModuleOp module, ds::Interpreter &interp,
            ds::Interpreter *ref, Report &report) {
  const std::string &function = opts.function, &outputDir = opts.outputDir;
  auto fn = module.lookupSymbol<func::FuncOp>(function);
  if (!fn)
    return fail("no function @" + function + " in " + opts.inputFile);
  std::vector<HostTensor> args;
  if (std::optional<std::string> error = buildArguments(opts, fn, args))
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
      if (absl::Status s = ds::writeNpy(
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

int runGenerate(const RunOptions &opts, ModuleOp module,
                ds::Interpreter &interp, ds::Interpreter *ref, Report &report) {
  const std::string &dumpDir = opts.dumpDir;
  auto prefill = module.lookupSymbol<func::FuncOp>("prefill");
  if (!prefill || !module.lookupSymbol<func::FuncOp>("decode"))
    return fail(opts.inputFile + " has no @prefill and @decode (import a model "
                                 "with ds-translate --import-hf)");
  std::vector<std::vector<int64_t>> seqs;
  if (std::optional<std::string> error = parsePrompts(opts, seqs))
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
  std::vector<HostTensor> refArgs = args;
  // Whole caches, also for a partitioned module (whose caches may have
  // more heads than the reference's: KV heads repeated for tp).
  auto addCaches = [&](func::FuncOp f, std::vector<HostTensor> &to) {
    for (unsigned i = 2; i < f.getNumArguments(); ++i) {
      RankedTensorType type = ds::wholeArgumentType(f, i);
      std::vector<int64_t> shape(type.getShape());
      shape[0] = b;
      to.push_back(HostTensor(DType::F32, shape));
    }
  };
  addCaches(prefill, args);
  // The reference runs first on the same tokens, with caches of its own (its
  // routing decisions can be imposed).
  FailureOr<std::vector<HostTensor>> refOut;
  if (ref) {
    auto refPrefill = ref->getModule().lookupSymbol<func::FuncOp>("prefill");
    if (!refPrefill)
      return fail("the reference has no @prefill");
    addCaches(refPrefill, refArgs);
    if (failed(refOut = ref->run("prefill", refArgs)))
      return 1;
  }
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
  // Each sequence chooses its tokens (sampling, stop tokens, EOS) as the
  // runtime does; a stopped sequence still fills its batch row, unread.
  std::vector<int64_t> eos = moduleEosTokens(module);
  std::vector<std::unique_ptr<rt::SequenceDecoder>> decoders;
  rt::GenerationOptions options = opts.generation;
  options.maxNewTokens = opts.generate;
  for (const auto &seq : seqs)
    decoders.push_back(std::make_unique<rt::SequenceDecoder>(
        seq, options, nullptr, eos, vocab));
  bool running = false;
  auto pick = [&](const HostTensor &logits, int64_t rowsPerSeq) {
    running = false;
    for (int64_t i = 0; i < b; ++i)
      if (!decoders[i]->finished())
        running |= decoders[i]->advance(logits.data<float>() +
                                        ((i + 1) * rowsPerSeq - 1) * vocab);
  };
  auto tokensOf = [&](int64_t i) -> const std::vector<int64_t> & {
    return decoders[i]->result().tokens;
  };
  pick(prefillLogits, s);
  int64_t steps = 1;
  for (; running && steps < opts.generate; ++steps) {
    std::vector<int64_t> tok, pos;
    for (int64_t i = 0; i < b; ++i) {
      const std::vector<int64_t> &t = tokensOf(i);
      tok.push_back(t.empty() ? seqs[i].back() : t.back());
      pos.push_back(s + steps - 1);
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
  std::vector<std::vector<int64_t>> generatedIds;
  std::vector<rt::FinishReason> reasons;
  for (int64_t i = 0; i < b; ++i) {
    generatedIds.push_back(tokensOf(i));
    reasons.push_back(decoders[i]->result().finishReason);
  }
  printSequences(seqs, generatedIds, reasons, opts.tokenizer.get());
  if (!dumpDir.empty()) {
    if (std::error_code ec = llvm::sys::fs::create_directories(dumpDir))
      return fail(dumpDir + ": " + ec.message());
    // Sequences that stopped early are padded with -1.
    std::vector<int64_t> all;
    for (int64_t i = 0; i < b; ++i) {
      all.insert(all.end(), seqs[i].begin(), seqs[i].end());
      all.insert(all.end(), generatedIds[i].begin(), generatedIds[i].end());
      all.insert(all.end(), steps - generatedIds[i].size(), int64_t{-1});
    }
    for (auto [name, tensor] :
         {std::pair<std::string, HostTensor>{"prefill_logits", prefillLogits},
          {"decode_logits",
           HostTensor::fromFloats({steps - 1, b, vocab}, decodeLogits)},
          {"tokens", HostTensor::fromInts({b, s + steps}, all)}})
      if (absl::Status st = ds::writeNpy(dumpDir + "/" + name + ".npy", tensor);
          !st.ok())
        return fail(std::string(st.message()));
  }
  return 0;
}

} // namespace ds::run
