//===- Sparsify24.cpp - 2:4 semi-structured magnitude pruning
//--------------===//
//
// Replaces targeted GEMM weights by !ds.sparse24 params whose compressed
// values and metadata are computed from the checkpoint now.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/passes/Passes.h"
#include "ds/passes/Utils/WeightRewriter.h"

#include "ds/support/Quant.h"

#include <cstring>

namespace ds {
#define GEN_PASS_DEF_SPARSIFY24PASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

struct Sparsify24Pass : public ds::impl::Sparsify24PassBase<Sparsify24Pass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    WeightRewriter rw;
    if (failed(rw.init(module, "ds-sparsify-24", targets, {"linear", "experts"},
                       exclude, weightsPath, outputPath)))
      return signalPassFailure();
    SmallVector<Operation *> gemms;
    module.walk([&](Operation *op) {
      if (!getGemmWeights(op).empty())
        gemms.push_back(op);
    });
    for (Operation *op : gemms)
      for (auto [operand, category] : getGemmWeights(op)) {
        FailureOr<Value> sparse = sparsify(rw, op, operand->get(), category);
        if (failed(sparse))
          return signalPassFailure();
        if (*sparse)
          operand->set(*sparse);
      }
    if (failed(rw.finish(module)))
      return signalPassFailure();
  }

  FailureOr<Value> sparsify(WeightRewriter &rw, Operation *user, Value weight,
                            WeightCategory c) {
    std::optional<WeightSources> sources = rw.select(user, weight, c);
    if (!sources)
      return Value();
    auto type = cast<RankedTensorType>(weight.getType());
    int64_t k = type.getShape().back();
    if (k <= 0 || k % 4 != 0) {
      user->emitWarning() << "ds-sparsify-24: leaves a weight with " << k
                          << " input channels (not a multiple of 4) dense";
      return Value();
    }
    auto element = cast<FloatType>(type.getElementType());
    ds::DType dtype = element.isBF16()  ? ds::DType::BF16
                      : element.isF16() ? ds::DType::F16
                                        : ds::DType::F32;
    std::string base = stacklessName(sources->key());
    NewParamNames names{base + ":values", "", "", base + ":meta"};
    std::vector<int64_t> valuesShape(type.getShape()),
        metaShape(type.getShape());
    valuesShape.back() = k / 2;
    metaShape.back() = (k / 4 + 1) / 2;
    auto encode = [=](const WeightReader &reader,
                      EncodedSink &sink) -> LogicalResult {
      // Row by row: any slices of rows, each written into its place.
      FailureOr<size_t> valuesAt =
          sink.reserve(names.values, dtype, valuesShape);
      FailureOr<size_t> metaAt =
          sink.reserve(names.meta, ds::DType::U8, metaShape);
      if (failed(valuesAt) || failed(metaAt))
        return failure();
      const size_t size = ds::dtypeSize(dtype);
      return reader.forEachSlice(
          reader.rows(), 1,
          [&](int64_t first, int64_t rows, const float *x) -> LogicalResult {
            ds::Sparse24 s = ds::compress24(x, rows, k);
            std::vector<uint8_t> bytes(s.values.size() * size);
            for (size_t i = 0; i < s.values.size(); ++i) {
              if (dtype == ds::DType::F32) {
                std::memcpy(&bytes[4 * i], &s.values[i], 4);
                continue;
              }
              uint16_t bits = dtype == ds::DType::BF16
                                  ? ds::floatToBF16(s.values[i])
                                  : ds::floatToHalf(s.values[i]);
              std::memcpy(&bytes[2 * i], &bits, 2);
            }
            if (failed(sink.write(*valuesAt, first * (k / 2) * size,
                                  bytes.data(), bytes.size())))
              return failure();
            return sink.write(*metaAt, first * metaShape.back(), s.meta.data(),
                              s.meta.size());
          });
    };
    return rw.materialize(
        user, weight, *sources,
        Sparse24Type::get(&getContext(), type.getShape(), element), names,
        encode);
  }
};

} // namespace
