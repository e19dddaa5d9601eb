//===- GeneratedSteps.cpp - kernels the compiler generated ----------------===//
//
// A generated kernel takes one MLIR memref descriptor per argument
// (operands, then weights, then the result) through MLIR's C interface:
// allocated and aligned pointers, offset, sizes, strides.
//
//===----------------------------------------------------------------------===//

#include "Steps.h"

namespace ds::rt::cpu {

absl::Status checkElementwise(const ShapeView &v) {
  const Step &s = v.step;
  const auto &flags = s.as<steps::Elementwise>().broadcast;
  const auto &out = v.of(s.results[0]);
  size_t flag = 0;
  for (int32_t in : s.operands) {
    const auto &is = v.of(in);
    if (is.size() > out.size())
      return v.bad("elementwise input rank");
    size_t offset = out.size() - is.size();
    for (size_t a = 0; a < is.size(); ++a, ++flag) {
      bool broadcast = flag < flags.size() && flags[flag];
      if (broadcast ? is[a] != 1 : is[a] != out[offset + a])
        return v.bad("elementwise input " + std::to_string(a));
    }
  }
  if (flag != flags.size())
    return v.bad("elementwise broadcast flags");
  return absl::OkStatus();
}

absl::Status checkGenerated(const ShapeView &v) {
  const Step &s = v.step;
  // RMSNorm (x; weight; y).
  if (v.weightCount(s.weights[0]) != v.last(s.operands[0]) ||
      v.of(s.results[0]) != v.of(s.operands[0]))
    return v.bad("rms_norm weight or output");
  return absl::OkStatus();
}

absl::Status runGenerated(StepContext &c, GeneratedState &state) {
  const Step &s = c.step;
  const Model &m = c.model;
  auto &args = state.args;
  args.clear();
  for (int32_t o : s.operands)
    args.emplace_back(c.ptr(o), &c.shape(o));
  for (int32_t w : s.weights)
    args.emplace_back(const_cast<void *>(m.weightData(w)),
                      &m.plan().weights[w].shape);
  args.emplace_back(c.ptr(s.results[0]), &c.shape(s.results[0]));
  size_t words = 0;
  for (const auto &a : args)
    words += 3 + 2 * a.second->size();
  state.words.resize(words);
  state.pointers.resize(args.size());
  int64_t *at = state.words.data();
  for (size_t k = 0; k < args.size(); ++k) {
    const std::vector<int64_t> &shape = *args[k].second;
    size_t r = shape.size();
    auto ptr = reinterpret_cast<int64_t>(args[k].first);
    at[0] = ptr;
    at[1] = ptr;
    at[2] = 0;
    int64_t stride = 1;
    for (size_t i = r; i-- > 0;) {
      at[3 + i] = shape[i];
      at[3 + r + i] = stride;
      stride *= shape[i];
    }
    state.pointers[k] = at;
    at += 3 + 2 * r;
  }
  m.kernel(s.kernel)(state.pointers.data());
  return absl::OkStatus();
}

} // namespace ds::rt::cpu
