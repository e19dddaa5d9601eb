//===- DSOps.cpp - ds operations ------------------------------------------===//
//
// Shape inference, verification, folders and canonicalization patterns of the
// ds operations. Shape rules live in each op's inferReturnTypes so that the
// builders, the parser-time verifier and the passes share one definition;
// every rule failure names the op and the operand at fault.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/support/KVScale.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/TypeUtilities.h"

#include <cmath>

using namespace mlir;
using namespace ds;

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

namespace {
/// Emits "'ds.<op>' op <message>" at the op's location, when one is given.
class ShapeError {
public:
  ShapeError(std::optional<Location> loc, StringRef opName)
      : loc(loc), opName(opName) {}

  template <typename... Args> LogicalResult operator()(Args &&...args) const {
    return emitOptionalError(loc, "'ds.", opName, "' op ",
                             std::forward<Args>(args)...);
  }

private:
  std::optional<Location> loc;
  StringRef opName;
};
} // namespace

static constexpr int64_t kDynamic = ShapedType::kDynamic;

static bool isDyn(int64_t d) { return ShapedType::isDynamic(d); }

static bool compatible(int64_t a, int64_t b) {
  return isDyn(a) || isDyn(b) || a == b;
}

/// The more static of two compatible sizes.
static int64_t merge(int64_t a, int64_t b) { return isDyn(a) ? b : a; }

static int64_t mulDims(int64_t a, int64_t b) {
  return isDyn(a) || isDyn(b) ? kDynamic : a * b;
}

/// The tensor type of `v`, or a !ds.qtensor's logical tensor type: shape
/// rules see quantized weights and activations as what they stand for.
static RankedTensorType rankedType(Value v) {
  return getLogicalTensorType(v.getType());
}

static std::string dimStr(int64_t d) {
  return isDyn(d) ? std::string("?") : std::to_string(d);
}

/// Inference can run while parsing, before attributes are verified and moved
/// into properties: fetch a required attribute from the properties or the
/// parsed attribute dictionary, or report it missing.
template <typename AttrT, typename AdaptorT>
static FailureOr<AttrT> requireAttr(const ShapeError &error, AdaptorT &adaptor,
                                    Attribute attr, StringRef name) {
  if (!attr && adaptor.getAttributes())
    attr = adaptor.getAttributes().get(name);
  if (auto typed = dyn_cast_or_null<AttrT>(attr))
    return typed;
  return error("requires attribute '", name, "'");
}

/// Checks that `t` has rank `rank` (or at least `rank` when `atLeast`).
static LogicalResult checkRank(const ShapeError &error, StringRef what,
                               RankedTensorType t, int64_t rank,
                               bool atLeast = false) {
  if (atLeast ? t.getRank() >= rank : t.getRank() == rank)
    return success();
  return error(what, " must have rank ", atLeast ? "at least " : "", rank,
               ", got ", t);
}

/// Checks that dimension `i` of `a` and dimension `j` of `b` can be equal.
static LogicalResult checkDim(const ShapeError &error, StringRef aName,
                              RankedTensorType a, int64_t i, StringRef bName,
                              RankedTensorType b, int64_t j) {
  if (compatible(a.getDimSize(i), b.getDimSize(j)))
    return success();
  return error(aName, " dimension ", i, " (", dimStr(a.getDimSize(i)),
               ") does not match ", bName, " dimension ", j, " (",
               dimStr(b.getDimSize(j)), ")");
}

static LogicalResult checkWeightElement(const ShapeError &error, StringRef what,
                                        RankedTensorType t) {
  if (isa<FloatType>(t.getElementType()))
    return success();
  return error(what, " must have a floating-point element type, got ", t);
}

static LogicalResult checkSameElement(const ShapeError &error, StringRef aName,
                                      RankedTensorType a, StringRef bName,
                                      RankedTensorType b) {
  if (a.getElementType() == b.getElementType())
    return success();
  return error(aName, " and ", bName, " must have the same element type, got ",
               a.getElementType(), " and ", b.getElementType());
}

/// Result types are compatible when they have the same element types and
/// shapes that could be equal: a written type may be more static than the
/// inferred one.
static bool areCompatibleTensorTypes(TypeRange lhs, TypeRange rhs) {
  if (lhs.size() != rhs.size())
    return false;
  for (auto [l, r] : llvm::zip(lhs, rhs)) {
    if (l == r)
      continue;
    auto lt = dyn_cast<RankedTensorType>(l);
    auto rt = dyn_cast<RankedTensorType>(r);
    if (!lt || !rt || lt.getElementType() != rt.getElementType() ||
        failed(verifyCompatibleShape(lt, rt)))
      return false;
  }
  return true;
}

#define DS_COMPATIBLE_RETURN_TYPES(OP)                                         \
  bool OP::isCompatibleReturnTypes(TypeRange l, TypeRange r) {                 \
    return areCompatibleTensorTypes(l, r);                                     \
  }

DS_COMPATIBLE_RETURN_TYPES(EmbeddingOp)
DS_COMPATIBLE_RETURN_TYPES(RMSNormOp)
DS_COMPATIBLE_RETURN_TYPES(LinearOp)
DS_COMPATIBLE_RETURN_TYPES(SwiGLUOp)
DS_COMPATIBLE_RETURN_TYPES(ActivationOp)
DS_COMPATIBLE_RETURN_TYPES(MulOp)
DS_COMPATIBLE_RETURN_TYPES(SplitHeadsOp)
DS_COMPATIBLE_RETURN_TYPES(MergeHeadsOp)
DS_COMPATIBLE_RETURN_TYPES(SplitOp)
DS_COMPATIBLE_RETURN_TYPES(RopeOp)
DS_COMPATIBLE_RETURN_TYPES(AttentionOp)
DS_COMPATIBLE_RETURN_TYPES(MLAAttentionOp)
DS_COMPATIBLE_RETURN_TYPES(CacheUpdateOp)
DS_COMPATIBLE_RETURN_TYPES(RouterOp)
DS_COMPATIBLE_RETURN_TYPES(MoEDispatchOp)
DS_COMPATIBLE_RETURN_TYPES(GroupedMatmulOp)
DS_COMPATIBLE_RETURN_TYPES(MoECombineOp)
DS_COMPATIBLE_RETURN_TYPES(MoEOp)
DS_COMPATIBLE_RETURN_TYPES(FusedLinearOp)
DS_COMPATIBLE_RETURN_TYPES(FusedRouterOp)
DS_COMPATIBLE_RETURN_TYPES(FusedMoEOp)
DS_COMPATIBLE_RETURN_TYPES(DequantizeOp)

#undef DS_COMPATIBLE_RETURN_TYPES

/// `silu` (a bare keyword) for an activation attribute in op syntax.
static ParseResult parseActivationKind(OpAsmParser &parser,
                                       ActivationAttr &kind) {
  SMLoc loc = parser.getCurrentLocation();
  StringRef keyword;
  if (parser.parseKeyword(&keyword))
    return failure();
  std::optional<Activation> value = symbolizeActivation(keyword);
  if (!value)
    return parser.emitError(loc, "unknown activation '") << keyword << "'";
  kind = ActivationAttr::get(parser.getContext(), *value);
  return success();
}

static void printActivationKind(OpAsmPrinter &printer, Operation *,
                                ActivationAttr kind) {
  printer << stringifyActivation(kind.getValue());
}

/// `[[0], [], [1, 2]]`: the grid axes each dimension of a sharded param is
/// split over.
static ParseResult parseSplitAxes(OpAsmParser &parser,
                                  shard::GridAxesArrayAttr &axes) {
  SmallVector<shard::GridAxesAttr> dims;
  auto parseDim = [&]() -> ParseResult {
    SmallVector<int16_t> list;
    if (parser.parseCommaSeparatedList(OpAsmParser::Delimiter::Square,
                                       [&]() -> ParseResult {
                                         int16_t axis;
                                         if (parser.parseInteger(axis))
                                           return failure();
                                         list.push_back(axis);
                                         return success();
                                       }))
      return failure();
    dims.push_back(DenseI16ArrayAttr::get(parser.getContext(), list));
    return success();
  };
  if (parser.parseCommaSeparatedList(OpAsmParser::Delimiter::Square, parseDim))
    return failure();
  axes = shard::GridAxesArrayAttr::get(parser.getContext(), dims);
  return success();
}

static void printSplitAxes(OpAsmPrinter &printer, Operation *,
                           shard::GridAxesArrayAttr axes) {
  printer << "[";
  llvm::interleaveComma(axes.getAxes(), printer, [&](shard::GridAxesAttr dim) {
    printer << "[";
    llvm::interleaveComma(dim.asArrayRef(), printer);
    printer << "]";
  });
  printer << "]";
}

//===----------------------------------------------------------------------===//
// ParamOp
//===----------------------------------------------------------------------===//

LogicalResult ParamOp::verify() {
  if (getName().empty())
    return emitOpError("needs a non-empty weight name");
  if (static_cast<bool>(getGridAttr()) != static_cast<bool>(getSplitAxesAttr()))
    return emitOpError("a sharded weight needs both its grid and its split "
                       "axes");
  if (getSplitAxesAttr()) {
    auto logical = getLogicalTensorType(getType());
    if (static_cast<int64_t>(getSplitAxesAttr().size()) > logical.getRank())
      return emitOpError() << "has split axes for " << getSplitAxesAttr().size()
                           << " dimensions, the weight has rank "
                           << logical.getRank();
    llvm::SmallDenseSet<int16_t> seen;
    for (shard::GridAxesAttr dim : getSplitAxesAttr().getAxes())
      for (int16_t axis : dim.asArrayRef())
        if (axis < 0 || !seen.insert(axis).second)
          return emitOpError() << "splits over grid axis " << axis
                               << ", which is negative or used twice";
    if (!isa<RankedTensorType>(getType()))
      return emitOpError("only plain tensor weights can be sharded (quantize "
                         "or sparsify before partitioning is not supported)");
  }
  auto qtype = dyn_cast<QTensorType>(getType());
  if (!qtype && (getScales() || getZeroPoints()))
    return emitOpError("scales and zero_points belong to !ds.qtensor weights");
  bool sparse = isa<Sparse24Type>(getType());
  if (sparse != static_cast<bool>(getMeta()))
    return emitOpError(sparse
                           ? "a 2:4 sparse weight needs the name of its meta "
                             "indices"
                           : "meta belongs to !ds.sparse24 weights");
  if (sparse && getMeta()->count('*') != getName().count('*'))
    return emitOpError("the meta name needs the same '*' placeholder as the "
                       "weight name");
  if (sparse && getSelect() && !getName().contains('*'))
    return emitOpError("select on a sparse weight needs a stacked name");
  if (qtype) {
    if (!getScales())
      return emitOpError("a quantized weight needs the name of its scales");
    if (static_cast<bool>(getZeroPoints()) != qtype.hasZeroPoint())
      return emitOpError(qtype.hasZeroPoint()
                             ? "unsigned storage needs zero_points"
                             : "zero_points need unsigned storage (ui4, ui8)");
    size_t stars = getName().count('*');
    for (std::optional<StringRef> extra : {getScales(), getZeroPoints()})
      if (extra && extra->count('*') != stars)
        return emitOpError("scales and zero_points names need the same '*' "
                           "placeholder as the weight name");
    if (stars && qtype.getRank() >= 1 && qtype.getBlock()[0] != 1)
      return emitOpError("a stacked quantized weight needs block extent 1 "
                         "along the expert axis");
    if (getSelect() && !stars)
      return emitOpError("select on a quantized weight needs a stacked name");
  }
  auto type = getLogicalTensorType(getType());
  if (!type.hasStaticShape())
    return emitOpError("weight type must have a static shape, got ") << type;
  Type element = type.getElementType();
  if (!isa<FloatType, IntegerType>(element))
    return emitOpError("weight element type must be a float or integer, got ")
           << element;
  size_t stars = getName().count('*');
  if (stars > 1)
    return emitOpError("weight name may hold at most one '*' expert "
                       "placeholder, got '")
           << getName() << "'";
  if (stars == 1 && type.getRank() < 2)
    return emitOpError("stacked weight '")
           << getName() << "' needs a leading expert dimension and rank >= 2";
  if (std::optional<ArrayRef<int64_t>> select = getSelect()) {
    // A shard split along the slices holds a block of the selected ones.
    const bool splitSlices = getSplitAxesAttr() &&
                             !getSplitAxesAttr().getAxes().empty() &&
                             !getSplitAxesAttr().getAxes()[0].empty();
    const int64_t slices = static_cast<int64_t>(select->size());
    if (type.getRank() < 1 ||
        (splitSlices
             ? type.getDimSize(0) <= 0 || slices % type.getDimSize(0) != 0
             : type.getDimSize(0) != slices))
      return emitOpError("select lists ")
             << select->size() << " slices but the leading dimension is "
             << (type.getRank() ? type.getDimSize(0) : 0);
    for (int64_t i : *select)
      if (i < 0)
        return emitOpError("select indices must not be negative, got ") << i;
  }
  return success();
}

std::string ParamOp::expertName(StringRef pattern, int64_t e) {
  auto [prefix, suffix] = pattern.split('*');
  return (prefix + Twine(e) + suffix).str();
}

std::optional<WeightSources> ds::getWeightSources(Value weight) {
  WeightSources sources;
  if (auto param = weight.getDefiningOp<ParamOp>()) {
    sources.params.push_back(param);
    return sources;
  }
  auto concat = weight.getDefiningOp<tensor::ConcatOp>();
  if (!concat)
    return std::nullopt;
  sources.axis = concat.getDim();
  for (Value v : concat.getInputs()) {
    auto param = v.getDefiningOp<ParamOp>();
    if (!param)
      return std::nullopt;
    sources.params.push_back(param);
  }
  return sources;
}

std::string WeightSources::key() const {
  std::string key;
  for (ParamOp p : params) {
    if (!key.empty())
      key += "+";
    key += p.getName().str();
    if (std::optional<ArrayRef<int64_t>> select = p.getSelect()) {
      key += "[";
      llvm::raw_string_ostream os(key);
      llvm::interleave(*select, os, ",");
      key += "]";
    }
  }
  return key;
}

std::string ds::getRoutingSiteName(Operation *op) {
  if (auto name = dyn_cast<NameLoc>(op->getLoc()))
    return name.getName().str();
  Operation *scope = op;
  while (scope->getParentOp() &&
         !scope->hasTrait<OpTrait::IsIsolatedFromAbove>())
    scope = scope->getParentOp();
  int64_t ordinal = 0, found = -1;
  scope->walk([&](Operation *o) {
    if (!isa<RouterOp, FusedRouterOp, MoEOp>(o))
      return;
    if (o == op)
      found = ordinal;
    ++ordinal;
  });
  return "moe." + std::to_string(found);
}

//===----------------------------------------------------------------------===//
// EmbeddingOp
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto table = rankedType(adaptor.getTable());
  auto ids = rankedType(adaptor.getIds());
  if (failed(checkRank(error, "table", table, 2)) ||
      failed(checkWeightElement(error, "table", table)))
    return failure();
  if (static_cast<bool>(adaptor.getProperties().vocab_grid) !=
      static_cast<bool>(adaptor.getProperties().vocab_grid_axes))
    return error("vocab_grid and vocab_grid_axes go together");
  SmallVector<int64_t> shape(ids.getShape());
  shape.push_back(table.getDimSize(1));
  results.push_back(RankedTensorType::get(shape, table.getElementType()));
  return success();
}

//===----------------------------------------------------------------------===//
// RMSNormOp
//===----------------------------------------------------------------------===//

LogicalResult RMSNormOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  auto weight = rankedType(adaptor.getWeight());
  if (failed(checkRank(error, "input", input, 1, /*atLeast=*/true)) ||
      failed(checkRank(error, "weight", weight, 1)) ||
      failed(checkWeightElement(error, "weight", weight)) ||
      failed(checkDim(error, "weight", weight, 0, "input", input,
                      input.getRank() - 1)))
    return failure();
  results.push_back(input);
  return success();
}

LogicalResult RMSNormOp::verify() {
  if (!(getEpsilon().convertToDouble() > 0.0))
    return emitOpError("epsilon must be positive, got ")
           << getEpsilon().convertToDouble();
  return success();
}

//===----------------------------------------------------------------------===//
// LinearOp
//===----------------------------------------------------------------------===//

/// The shape rules shared by ds.linear and ds.fused_linear: input [..., K],
/// weight [N, K], optional bias [N]; returns the [..., N] GEMM result type.
static FailureOr<RankedTensorType> inferLinearResult(const ShapeError &error,
                                                     RankedTensorType input,
                                                     RankedTensorType weight,
                                                     Value biasValue) {
  if (failed(checkRank(error, "input", input, 1, /*atLeast=*/true)) ||
      failed(checkRank(error, "weight", weight, 2)) ||
      failed(checkWeightElement(error, "weight", weight)) ||
      failed(checkDim(error, "weight", weight, 1, "input", input,
                      input.getRank() - 1)))
    return failure();
  if (biasValue) {
    auto bias = rankedType(biasValue);
    if (failed(checkRank(error, "bias", bias, 1)) ||
        failed(checkWeightElement(error, "bias", bias)) ||
        failed(checkDim(error, "bias", bias, 0, "weight", weight, 0)))
      return failure();
  }
  SmallVector<int64_t> shape(input.getShape().drop_back());
  shape.push_back(weight.getDimSize(0));
  return RankedTensorType::get(shape, input.getElementType());
}

LogicalResult LinearOp::inferReturnTypes(MLIRContext *,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  FailureOr<RankedTensorType> result =
      inferLinearResult(error, rankedType(adaptor.getInput()),
                        rankedType(adaptor.getWeight()), adaptor.getBias());
  if (failed(result))
    return failure();
  results.push_back(*result);
  return success();
}

namespace {
/// A bias that is a zero splat adds nothing: drop it.
struct DropZeroBias : OpRewritePattern<LinearOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LinearOp op,
                                PatternRewriter &rewriter) const override {
    if (!op.getBias() || !matchPattern(op.getBias(), m_AnyZeroFloat()))
      return failure();
    rewriter.modifyOpInPlace(op, [&] { op.getBiasMutable().clear(); });
    return success();
  }
};
} // namespace

void LinearOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                           MLIRContext *context) {
  patterns.add<DropZeroBias>(context);
}

//===----------------------------------------------------------------------===//
// SwiGLUOp, ActivationOp, MulOp
//===----------------------------------------------------------------------===//

LogicalResult SwiGLUOp::inferReturnTypes(MLIRContext *, std::optional<Location>,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &results) {
  // AllTypesMatch<["gate", "up"]> already made both operands one type.
  results.push_back(adaptor.getGate().getType());
  return success();
}

LogicalResult ActivationOp::inferReturnTypes(MLIRContext *,
                                             std::optional<Location>,
                                             Adaptor adaptor,
                                             SmallVectorImpl<Type> &results) {
  results.push_back(adaptor.getInput().getType());
  return success();
}

LogicalResult MulOp::inferReturnTypes(MLIRContext *,
                                      std::optional<Location> loc,
                                      Adaptor adaptor,
                                      SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto lhs = rankedType(adaptor.getLhs());
  auto rhs = rankedType(adaptor.getRhs());
  if (failed(checkSameElement(error, "lhs", lhs, "rhs", rhs)))
    return failure();
  if (lhs.getRank() != rhs.getRank())
    return error("operands must have the same rank, got ", lhs, " and ", rhs);
  SmallVector<int64_t> shape;
  for (int64_t i = 0, e = lhs.getRank(); i < e; ++i) {
    int64_t a = lhs.getDimSize(i), b = rhs.getDimSize(i);
    if (a == 1)
      shape.push_back(b);
    else if (b == 1)
      shape.push_back(a);
    else if (compatible(a, b))
      shape.push_back(merge(a, b));
    else
      return error("dimension ", i, " cannot broadcast: ", a, " vs ", b);
  }
  results.push_back(RankedTensorType::get(shape, lhs.getElementType()));
  return success();
}

OpFoldResult MulOp::fold(FoldAdaptor adaptor) {
  // x * 1 == x when the product has x's type.
  auto isOne = [](Attribute attr) {
    auto splat = dyn_cast_or_null<SplatElementsAttr>(attr);
    return splat && isa<FloatType>(splat.getElementType()) &&
           splat.getSplatValue<APFloat>().isExactlyValue(1.0);
  };
  if (isOne(adaptor.getRhs()) && getLhs().getType() == getType())
    return getLhs();
  if (isOne(adaptor.getLhs()) && getRhs().getType() == getType())
    return getRhs();
  return {};
}

//===----------------------------------------------------------------------===//
// SplitHeadsOp, MergeHeadsOp
//===----------------------------------------------------------------------===//

LogicalResult SplitHeadsOp::inferReturnTypes(MLIRContext *,
                                             std::optional<Location> loc,
                                             Adaptor adaptor,
                                             SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  auto headsAttr = requireAttr<IntegerAttr>(
      error, adaptor, adaptor.getProperties().num_heads, "num_heads");
  if (failed(headsAttr))
    return failure();
  int64_t heads = headsAttr->getInt();
  if (failed(checkRank(error, "input", input, 1, /*atLeast=*/true)))
    return failure();
  if (heads <= 0)
    return error("num_heads must be positive, got ", heads);
  int64_t last = input.getShape().back();
  if (!isDyn(last) && last % heads != 0)
    return error("last dimension ", last, " is not divisible by ", heads,
                 " heads");
  SmallVector<int64_t> shape(input.getShape().drop_back());
  shape.push_back(heads);
  shape.push_back(isDyn(last) ? kDynamic : last / heads);
  results.push_back(RankedTensorType::get(shape, input.getElementType()));
  return success();
}

OpFoldResult SplitHeadsOp::fold(FoldAdaptor) {
  if (auto merge = getInput().getDefiningOp<MergeHeadsOp>())
    if (merge.getInput().getType() == getType())
      return merge.getInput();
  return {};
}

LogicalResult MergeHeadsOp::inferReturnTypes(MLIRContext *,
                                             std::optional<Location> loc,
                                             Adaptor adaptor,
                                             SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  if (failed(checkRank(error, "input", input, 2, /*atLeast=*/true)))
    return failure();
  ArrayRef<int64_t> s = input.getShape();
  SmallVector<int64_t> shape(s.drop_back(2));
  shape.push_back(mulDims(s[s.size() - 2], s.back()));
  results.push_back(RankedTensorType::get(shape, input.getElementType()));
  return success();
}

OpFoldResult MergeHeadsOp::fold(FoldAdaptor) {
  if (auto split = getInput().getDefiningOp<SplitHeadsOp>())
    if (split.getInput().getType() == getType())
      return split.getInput();
  return {};
}

//===----------------------------------------------------------------------===//
// SplitOp
//===----------------------------------------------------------------------===//

LogicalResult SplitOp::inferReturnTypes(MLIRContext *,
                                        std::optional<Location> loc,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  auto axisAttr = requireAttr<IntegerAttr>(
      error, adaptor, adaptor.getProperties().axis, "axis");
  auto sizesAttr = requireAttr<DenseI64ArrayAttr>(
      error, adaptor, adaptor.getProperties().sizes, "sizes");
  if (failed(axisAttr) || failed(sizesAttr))
    return failure();
  int64_t axis = axisAttr->getInt();
  ArrayRef<int64_t> sizes = sizesAttr->asArrayRef();
  if (axis < 0 || axis >= input.getRank())
    return error("axis ", axis, " is out of range for ", input);
  if (sizes.empty())
    return error("needs at least one size");
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s <= 0)
      return error("sizes must be positive, got ", s);
    total += s;
  }
  int64_t dim = input.getDimSize(axis);
  if (!isDyn(dim) && total != dim)
    return error("sizes add up to ", total, " but axis ", axis, " has size ",
                 dim);
  for (int64_t s : sizes) {
    SmallVector<int64_t> shape(input.getShape());
    shape[axis] = s;
    results.push_back(RankedTensorType::get(shape, input.getElementType()));
  }
  return success();
}

LogicalResult SplitOp::fold(FoldAdaptor,
                            SmallVectorImpl<OpFoldResult> &results) {
  if (getNumResults() == 1 && getResult(0).getType() == getInput().getType()) {
    results.push_back(getInput());
    return success();
  }
  return failure();
}

namespace {
/// split(concat(a, b, ...)) along the same axis with matching sizes is
/// (a, b, ...).
struct FoldSplitOfConcat : OpRewritePattern<SplitOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(SplitOp op,
                                PatternRewriter &rewriter) const override {
    auto concat = op.getInput().getDefiningOp<tensor::ConcatOp>();
    if (!concat || concat.getDim() != op.getAxis() ||
        concat.getInputs().size() != op.getNumResults())
      return failure();
    SmallVector<Value> replacements;
    for (auto [piece, result] :
         llvm::zip(concat.getInputs(), op.getResults())) {
      if (piece.getType() != result.getType())
        return failure();
      replacements.push_back(piece);
    }
    rewriter.replaceOp(op, replacements);
    return success();
  }
};
} // namespace

void SplitOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                          MLIRContext *context) {
  patterns.add<FoldSplitOfConcat>(context);
}

//===----------------------------------------------------------------------===//
// RopeOp
//===----------------------------------------------------------------------===//

/// Checks `positions` is [B, S] and matches the first two dims of `x`.
static LogicalResult checkPositions(const ShapeError &error, StringRef xName,
                                    RankedTensorType x,
                                    RankedTensorType positions) {
  if (failed(checkRank(error, "positions", positions, 2)) ||
      failed(checkDim(error, "positions", positions, 0, xName, x, 0)) ||
      failed(checkDim(error, "positions", positions, 1, xName, x, 1)))
    return failure();
  return success();
}

LogicalResult RopeOp::inferReturnTypes(MLIRContext *,
                                       std::optional<Location> loc,
                                       Adaptor adaptor,
                                       SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  auto positions = rankedType(adaptor.getPositions());
  if (input.getRank() != 3 && input.getRank() != 4)
    return error("input must be [B, S, D] or [B, S, heads, D], got ", input);
  if (failed(checkPositions(error, "input", input, positions)))
    return failure();
  int64_t d = input.getShape().back();
  auto rope = requireAttr<RopeAttr>(error, adaptor,
                                    adaptor.getProperties().rope, "rope");
  if (failed(rope))
    return failure();
  int64_t ropeDim = rope->getDim();
  if (!isDyn(d) && ropeDim > d)
    return error("rope dim ", ropeDim, " exceeds the head dimension ", d);
  results.push_back(input);
  return success();
}

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

LogicalResult AttentionOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto q = rankedType(adaptor.getQ());
  auto k = rankedType(adaptor.getK());
  auto v = rankedType(adaptor.getV());
  auto positions = rankedType(adaptor.getPositions());
  if (failed(checkRank(error, "q", q, 4)) ||
      failed(checkRank(error, "k", k, 4)) ||
      failed(checkRank(error, "v", v, 4)) ||
      failed(checkSameElement(error, "k", k, "v", v)) ||
      failed(checkPositions(error, "q", q, positions)) ||
      failed(checkDim(error, "k", k, 0, "q", q, 0)) ||
      failed(checkDim(error, "v", v, 0, "q", q, 0)) ||
      failed(checkDim(error, "v", v, 1, "k", k, 1)) ||
      failed(checkDim(error, "v", v, 2, "k", k, 2)) ||
      failed(checkDim(error, "k", k, 3, "q", q, 3)))
    return failure();
  int64_t hq = q.getDimSize(2), hkv = k.getDimSize(2);
  if (!isDyn(hq) && !isDyn(hkv) && hq % hkv != 0)
    return error("query heads (", hq,
                 ") must be a multiple of key/value heads (", hkv, ")");
  results.push_back(RankedTensorType::get(
      {merge(q.getDimSize(0), merge(k.getDimSize(0), v.getDimSize(0))),
       q.getDimSize(1), hq, v.getDimSize(3)},
      q.getElementType()));
  return success();
}

/// An e4m3 KV cache's scale: present exactly when `cache` (a value of an
/// op reading or writing a cache) is f8E4M3FN, and then a positive, finite
/// power of two; when the cache comes from a ds.cache_update, the scale it
/// wrote with.
static LogicalResult verifyCacheScale(Operation *op, Value cache,
                                      std::optional<APFloat> scale,
                                      StringRef name) {
  Type elt = cast<ShapedType>(cache.getType()).getElementType();
  bool e4m3 = isa<Float8E4M3FNType>(elt);
  if (isa<FloatType>(elt) && cast<FloatType>(elt).getWidth() == 8 && !e4m3)
    return op->emitOpError("KV caches of 8-bit floats are f8E4M3FN, not ")
           << elt;
  if (!e4m3) {
    if (scale)
      return op->emitOpError(name)
             << " is for f8E4M3FN caches only; this one is " << elt;
    return success();
  }
  if (!scale)
    return op->emitOpError("an f8E4M3FN cache needs its ")
           << name << " (the power of two its elements are multiplied by)";
  double s = scale->convertToDouble();
  if (!ds::isPowerOfTwoScale(s))
    return op->emitOpError(name)
           << " must be a positive power of two, got " << s;
  if (auto update = cache.getDefiningOp<CacheUpdateOp>())
    if (update.getKvScale() && update.getKvScale()->convertToDouble() != s)
      return op->emitOpError(name) << " " << s << " differs from the kv_scale "
                                   << update.getKvScale()->convertToDouble()
                                   << " its cache was written with";
  return success();
}

LogicalResult AttentionOp::verify() {
  if (!(getScale().convertToDouble() > 0.0))
    return emitOpError("scale must be positive, got ")
           << getScale().convertToDouble();
  if (failed(verifyCacheScale(*this, getK(), getKScale(), "k_scale")) ||
      failed(verifyCacheScale(*this, getV(), getVScale(), "v_scale")))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// MLAAttentionOp
//===----------------------------------------------------------------------===//

LogicalResult MLAAttentionOp::inferReturnTypes(MLIRContext *,
                                               std::optional<Location> loc,
                                               Adaptor adaptor,
                                               SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto qNope = rankedType(adaptor.getQNope());
  auto qPe = rankedType(adaptor.getQPe());
  auto cKv = rankedType(adaptor.getCKv());
  auto kPe = rankedType(adaptor.getKPe());
  auto kvB = rankedType(adaptor.getKvB());
  auto positions = rankedType(adaptor.getPositions());
  if (failed(checkRank(error, "q_nope", qNope, 4)) ||
      failed(checkRank(error, "q_pe", qPe, 4)) ||
      failed(checkRank(error, "c_kv", cKv, 3)) ||
      failed(checkRank(error, "k_pe", kPe, 3)) ||
      failed(checkRank(error, "kv_b", kvB, 2)) ||
      failed(checkWeightElement(error, "kv_b", kvB)) ||
      failed(checkSameElement(error, "q_nope", qNope, "q_pe", qPe)) ||
      failed(checkSameElement(error, "c_kv", cKv, "k_pe", kPe)) ||
      failed(checkPositions(error, "q_nope", qNope, positions)))
    return failure();
  for (int64_t i = 0; i < 3; ++i)
    if (failed(checkDim(error, "q_pe", qPe, i, "q_nope", qNope, i)))
      return failure();
  if (failed(checkDim(error, "c_kv", cKv, 0, "q_nope", qNope, 0)) ||
      failed(checkDim(error, "k_pe", kPe, 0, "q_nope", qNope, 0)) ||
      failed(checkDim(error, "k_pe", kPe, 1, "c_kv", cKv, 1)) ||
      failed(checkDim(error, "k_pe", kPe, 2, "q_pe", qPe, 3)) ||
      failed(checkDim(error, "kv_b", kvB, 1, "c_kv", cKv, 2)))
    return failure();
  int64_t heads = merge(qNope.getDimSize(2), qPe.getDimSize(2));
  int64_t dn = qNope.getDimSize(3);
  int64_t rows = kvB.getDimSize(0);
  if (isDyn(heads) || isDyn(dn))
    return error("q_nope must have static heads and head dims, got ", qNope);
  if (rows % heads != 0 || rows / heads <= dn)
    return error("kv_b rows (", rows, ") must be heads (", heads,
                 ") x (qk_nope_head_dim (", dn, ") + v_head_dim)");
  results.push_back(RankedTensorType::get(
      {merge(qNope.getDimSize(0), merge(cKv.getDimSize(0), kPe.getDimSize(0))),
       qNope.getDimSize(1), heads, rows / heads - dn},
      qNope.getElementType()));
  return success();
}

LogicalResult MLAAttentionOp::verify() {
  if (!(getScale().convertToDouble() > 0.0))
    return emitOpError("scale must be positive, got ")
           << getScale().convertToDouble();
  if (failed(verifyCacheScale(*this, getCKv(), getCKvScale(), "c_kv_scale")) ||
      failed(verifyCacheScale(*this, getKPe(), getKPeScale(), "k_pe_scale")))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// CacheUpdateOp
//===----------------------------------------------------------------------===//

LogicalResult CacheUpdateOp::inferReturnTypes(MLIRContext *,
                                              std::optional<Location> loc,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto cache = rankedType(adaptor.getCache());
  auto update = rankedType(adaptor.getUpdate());
  auto positions = rankedType(adaptor.getPositions());
  if (failed(checkRank(error, "cache", cache, 2, /*atLeast=*/true)))
    return failure();
  if (update.getRank() != cache.getRank())
    return error("update must have the cache's rank ", cache.getRank(),
                 ", got ", update);
  if (failed(checkPositions(error, "update", update, positions)) ||
      failed(checkDim(error, "update", update, 0, "cache", cache, 0)))
    return failure();
  for (int64_t i = 2; i < cache.getRank(); ++i)
    if (failed(checkDim(error, "update", update, i, "cache", cache, i)))
      return failure();
  results.push_back(cache);
  return success();
}

std::optional<double> ds::getKVCacheScale(Value v) {
  auto of = [](std::optional<APFloat> s) -> std::optional<double> {
    if (s)
      return s->convertToDouble();
    return std::nullopt;
  };
  if (auto update = v.getDefiningOp<CacheUpdateOp>())
    return of(update.getKvScale());
  for (OpOperand &use : v.getUses()) {
    Operation *user = use.getOwner();
    if (auto update = dyn_cast<CacheUpdateOp>(user);
        update && use.get() == update.getCache())
      return of(update.getKvScale());
    if (auto att = dyn_cast<AttentionOp>(user))
      return of(use.get() == att.getK() ? att.getKScale() : att.getVScale());
    if (auto mla = dyn_cast<MLAAttentionOp>(user))
      return of(use.get() == mla.getCKv() ? mla.getCKvScale()
                                          : mla.getKPeScale());
  }
  return std::nullopt;
}

LogicalResult CacheUpdateOp::verify() {
  return verifyCacheScale(*this, getCache(), getKvScale(), "kv_scale");
}

//===----------------------------------------------------------------------===//
// RouterOp
//===----------------------------------------------------------------------===//

LogicalResult RouterOp::inferReturnTypes(MLIRContext *context,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto logits = rankedType(adaptor.getLogits());
  auto routingOr = requireAttr<RoutingAttr>(
      error, adaptor, adaptor.getProperties().routing, "routing");
  if (failed(routingOr))
    return failure();
  RoutingAttr routing = *routingOr;
  if (failed(checkRank(error, "logits", logits, 2)))
    return failure();
  int64_t e = logits.getDimSize(1);
  if (!isDyn(e) && e != routing.getNumExperts())
    return error("logits have ", e, " experts but the routing has ",
                 routing.getNumExperts());
  if (Value biasValue = adaptor.getBias()) {
    auto bias = rankedType(biasValue);
    if (failed(checkRank(error, "bias", bias, 1)))
      return failure();
    if (!compatible(bias.getDimSize(0), routing.getNumExperts()))
      return error("bias has ", bias.getDimSize(0),
                   " entries but the routing has ", routing.getNumExperts(),
                   " experts");
  }
  SmallVector<int64_t> shape = {logits.getDimSize(0), routing.getTopK()};
  results.push_back(RankedTensorType::get(shape, Float32Type::get(context)));
  results.push_back(
      RankedTensorType::get(shape, IntegerType::get(context, 32)));
  return success();
}

//===----------------------------------------------------------------------===//
// MoEDispatchOp, GroupedMatmulOp, MoECombineOp
//===----------------------------------------------------------------------===//

LogicalResult MoEDispatchOp::inferReturnTypes(MLIRContext *context,
                                              std::optional<Location> loc,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  auto indices = rankedType(adaptor.getIndices());
  auto numExperts = requireAttr<IntegerAttr>(
      error, adaptor, adaptor.getProperties().num_experts, "num_experts");
  if (failed(numExperts))
    return failure();
  if (failed(checkRank(error, "input", input, 2)) ||
      failed(checkRank(error, "indices", indices, 2)) ||
      failed(checkDim(error, "indices", indices, 0, "input", input, 0)))
    return failure();
  int64_t rows = mulDims(merge(input.getDimSize(0), indices.getDimSize(0)),
                         indices.getDimSize(1));
  auto i64 = IntegerType::get(context, 64);
  results.push_back(RankedTensorType::get({rows, input.getDimSize(1)},
                                          input.getElementType()));
  results.push_back(RankedTensorType::get({numExperts->getInt() + 1}, i64));
  results.push_back(RankedTensorType::get({rows}, i64));
  return success();
}

LogicalResult
GroupedMatmulOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                  Adaptor adaptor,
                                  SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  auto weight = rankedType(adaptor.getWeight());
  auto offsets = rankedType(adaptor.getOffsets());
  if (failed(checkRank(error, "input", input, 2)) ||
      failed(checkRank(error, "weight", weight, 3)) ||
      failed(checkWeightElement(error, "weight", weight)) ||
      failed(checkRank(error, "offsets", offsets, 1)) ||
      failed(checkDim(error, "weight", weight, 2, "input", input, 1)))
    return failure();
  int64_t e = weight.getDimSize(0);
  if (!compatible(offsets.getDimSize(0), isDyn(e) ? kDynamic : e + 1))
    return error("offsets must have num_experts + 1 = ", dimStr(e + 1),
                 " entries, got ", offsets);
  results.push_back(RankedTensorType::get(
      {input.getDimSize(0), weight.getDimSize(1)}, input.getElementType()));
  return success();
}

LogicalResult MoECombineOp::inferReturnTypes(MLIRContext *,
                                             std::optional<Location> loc,
                                             Adaptor adaptor,
                                             SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto expertOut = rankedType(adaptor.getExpertOut());
  auto weights = rankedType(adaptor.getWeights());
  auto rows = rankedType(adaptor.getRows());
  if (failed(checkRank(error, "expert_out", expertOut, 2)) ||
      failed(checkRank(error, "weights", weights, 2)) ||
      failed(checkRank(error, "rows", rows, 1)) ||
      failed(checkDim(error, "rows", rows, 0, "expert_out", expertOut, 0)))
    return failure();
  int64_t expected = mulDims(weights.getDimSize(0), weights.getDimSize(1));
  if (!compatible(expected, expertOut.getDimSize(0)))
    return error("expert_out has ", expertOut.getDimSize(0),
                 " rows but weights select ", expected, " (tokens x top_k)");
  results.push_back(
      RankedTensorType::get({weights.getDimSize(0), expertOut.getDimSize(1)},
                            expertOut.getElementType()));
  return success();
}

//===----------------------------------------------------------------------===//
// MoEOp
//===----------------------------------------------------------------------===//

LogicalResult MoEOp::inferReturnTypes(MLIRContext *,
                                      std::optional<Location> loc,
                                      Adaptor adaptor,
                                      SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  auto router = rankedType(adaptor.getRouterWeight());
  auto gate = rankedType(adaptor.getExpertGate());
  auto up = rankedType(adaptor.getExpertUp());
  auto down = rankedType(adaptor.getExpertDown());
  auto routing = requireAttr<RoutingAttr>(
      error, adaptor, adaptor.getProperties().routing, "routing");
  if (failed(routing))
    return failure();
  int64_t numExperts = routing->getNumExperts();
  if (failed(checkRank(error, "input", input, 1, /*atLeast=*/true)))
    return failure();
  int64_t h = input.getRank() - 1;
  for (auto [name, t] :
       {std::pair<StringRef, RankedTensorType>{"router_weight", router},
        {"expert_gate", gate},
        {"expert_up", up},
        {"expert_down", down}})
    if (failed(checkWeightElement(error, name, t)))
      return failure();
  if (failed(checkRank(error, "router_weight", router, 2)) ||
      failed(checkDim(error, "router_weight", router, 1, "input", input, h)) ||
      failed(checkRank(error, "expert_gate", gate, 3)) ||
      failed(checkRank(error, "expert_up", up, 3)) ||
      failed(checkRank(error, "expert_down", down, 3)) ||
      failed(checkDim(error, "expert_gate", gate, 2, "input", input, h)) ||
      failed(checkDim(error, "expert_up", up, 1, "expert_gate", gate, 1)) ||
      failed(checkDim(error, "expert_up", up, 2, "input", input, h)) ||
      failed(checkDim(error, "expert_down", down, 1, "input", input, h)) ||
      failed(checkDim(error, "expert_down", down, 2, "expert_gate", gate, 1)))
    return failure();
  if (!compatible(router.getDimSize(0), numExperts))
    return error("router_weight has ", router.getDimSize(0),
                 " experts but the routing has ", numExperts);
  // After pruning only the kept experts have weights; with expert
  // parallelism, a block of them.
  int64_t routed = routing->getNumSlots();
  bool block = static_cast<bool>(adaptor.getProperties().expert_grid);
  if (block != static_cast<bool>(adaptor.getProperties().expert_grid_axes))
    return error("expert_grid and expert_grid_axes go together");
  if (adaptor.getProperties().all_to_all && !block)
    return error("all_to_all needs a block of experts (expert_grid)");
  for (auto [name, t] :
       {std::pair<StringRef, RankedTensorType>{"expert_gate", gate},
        {"expert_up", up},
        {"expert_down", down}}) {
    if (block && !ShapedType::isDynamic(t.getDimSize(0)) &&
        t.getDimSize(0) > 0 && routed % t.getDimSize(0) == 0)
      continue;
    if (!compatible(t.getDimSize(0), routed))
      return error(name, " has ", t.getDimSize(0), " experts but the routing ",
                   block ? "keeps a multiple of them, " : "keeps ", routed);
  }
  if (Value biasValue = adaptor.getScoreBias()) {
    auto bias = rankedType(biasValue);
    if (failed(checkRank(error, "score_bias", bias, 1)) ||
        !compatible(bias.getDimSize(0), numExperts))
      return error("score_bias must be [", numExperts, "], got ", bias);
  }
  bool anyShared = adaptor.getSharedGate() || adaptor.getSharedUp() ||
                   adaptor.getSharedDown();
  bool allShared = adaptor.getSharedGate() && adaptor.getSharedUp() &&
                   adaptor.getSharedDown();
  if (anyShared && !allShared)
    return error("shared expert needs all of shared_gate, shared_up and "
                 "shared_down");
  if (adaptor.getSharedExpertGate() && !allShared)
    return error("shared_expert_gate needs a shared expert");
  if (allShared) {
    auto sGate = rankedType(adaptor.getSharedGate());
    auto sUp = rankedType(adaptor.getSharedUp());
    auto sDown = rankedType(adaptor.getSharedDown());
    if (failed(checkRank(error, "shared_gate", sGate, 2)) ||
        failed(checkRank(error, "shared_up", sUp, 2)) ||
        failed(checkRank(error, "shared_down", sDown, 2)) ||
        failed(checkWeightElement(error, "shared_gate", sGate)) ||
        failed(checkWeightElement(error, "shared_up", sUp)) ||
        failed(checkWeightElement(error, "shared_down", sDown)) ||
        failed(checkDim(error, "shared_gate", sGate, 1, "input", input, h)) ||
        failed(checkDim(error, "shared_up", sUp, 0, "shared_gate", sGate, 0)) ||
        failed(checkDim(error, "shared_up", sUp, 1, "input", input, h)) ||
        failed(checkDim(error, "shared_down", sDown, 0, "input", input, h)) ||
        failed(
            checkDim(error, "shared_down", sDown, 1, "shared_gate", sGate, 0)))
      return failure();
  }
  if (Value sgValue = adaptor.getSharedExpertGate()) {
    auto sg = rankedType(sgValue);
    if (sg.getRank() != 2 || !compatible(sg.getDimSize(0), 1) ||
        !compatible(sg.getDimSize(1), input.getDimSize(h)))
      return error("shared_expert_gate must be [1, ",
                   dimStr(input.getDimSize(h)), "], got ", sg);
  }
  results.push_back(input);
  return success();
}

//===----------------------------------------------------------------------===//
// FusedLinearOp
//===----------------------------------------------------------------------===//

LogicalResult FusedLinearOp::inferReturnTypes(MLIRContext *,
                                              std::optional<Location> loc,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  auto weight = rankedType(adaptor.getWeight());
  FailureOr<RankedTensorType> gemm =
      inferLinearResult(error, input, weight, adaptor.getBias());
  if (failed(gemm))
    return failure();
  if (Value normValue = adaptor.getNormWeight()) {
    auto norm = rankedType(normValue);
    if (failed(checkRank(error, "norm_weight", norm, 1)) ||
        failed(checkWeightElement(error, "norm_weight", norm)) ||
        failed(checkDim(error, "norm_weight", norm, 0, "input", input,
                        input.getRank() - 1)))
      return failure();
  }
  // Parsing may run before the unit attribute reaches the properties.
  bool gated =
      adaptor.getProperties().gated ||
      (adaptor.getAttributes() && adaptor.getAttributes().get("gated"));
  int64_t n = weight.getDimSize(0);
  if (gated && !isDyn(n) && n % 2 != 0)
    return error("gated epilogue needs an even output width, got ", n);
  SmallVector<int64_t> shape(input.getShape().drop_back());
  shape.push_back(gated && !isDyn(n) ? n / 2 : n);
  auto resultType = RankedTensorType::get(shape, input.getElementType());
  if (Value residualValue = adaptor.getResidual()) {
    auto residual = rankedType(residualValue);
    if (residual.getElementType() != input.getElementType() ||
        failed(verifyCompatibleShape(residual, resultType)))
      return error("residual ", residual, " does not match the result ",
                   resultType);
  }
  results.push_back(resultType);
  return success();
}

LogicalResult FusedLinearOp::verify() {
  if (getGated() && !getActivation())
    return emitOpError("gated epilogue needs an activation");
  if (static_cast<bool>(getNormWeight()) != getNormEpsilon().has_value())
    return emitOpError("norm_weight and norm_epsilon go together");
  if (getNormEpsilon() && !(getNormEpsilon()->convertToDouble() > 0.0))
    return emitOpError("norm_epsilon must be positive");
  return success();
}

//===----------------------------------------------------------------------===//
// FusedRouterOp
//===----------------------------------------------------------------------===//

LogicalResult FusedRouterOp::inferReturnTypes(MLIRContext *context,
                                              std::optional<Location> loc,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  auto weight = rankedType(adaptor.getWeight());
  auto routing = requireAttr<RoutingAttr>(
      error, adaptor, adaptor.getProperties().routing, "routing");
  if (failed(routing) || failed(checkRank(error, "input", input, 2)) ||
      failed(checkRank(error, "weight", weight, 2)) ||
      failed(checkWeightElement(error, "weight", weight)) ||
      failed(checkDim(error, "weight", weight, 1, "input", input, 1)))
    return failure();
  int64_t e = routing->getNumExperts();
  if (!compatible(weight.getDimSize(0), e))
    return error("weight has ", weight.getDimSize(0),
                 " experts but the routing has ", e);
  if (Value biasValue = adaptor.getBias()) {
    auto bias = rankedType(biasValue);
    if (bias.getRank() != 1 || !compatible(bias.getDimSize(0), e))
      return error("bias must be [", e, "], got ", bias);
  }
  SmallVector<int64_t> shape = {input.getDimSize(0), routing->getTopK()};
  results.push_back(RankedTensorType::get(shape, Float32Type::get(context)));
  results.push_back(
      RankedTensorType::get(shape, IntegerType::get(context, 32)));
  return success();
}

//===----------------------------------------------------------------------===//
// FusedMoEOp
//===----------------------------------------------------------------------===//

LogicalResult FusedMoEOp::inferReturnTypes(MLIRContext *,
                                           std::optional<Location> loc,
                                           Adaptor adaptor,
                                           SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  auto weights = rankedType(adaptor.getWeights());
  auto indices = rankedType(adaptor.getIndices());
  auto gateUp = rankedType(adaptor.getGateUp());
  auto down = rankedType(adaptor.getDown());
  if (failed(checkRank(error, "input", input, 2)) ||
      failed(checkRank(error, "weights", weights, 2)) ||
      failed(checkRank(error, "indices", indices, 2)) ||
      failed(checkRank(error, "gate_up", gateUp, 3)) ||
      failed(checkRank(error, "down", down, 3)) ||
      failed(checkWeightElement(error, "gate_up", gateUp)) ||
      failed(checkWeightElement(error, "down", down)) ||
      failed(checkDim(error, "weights", weights, 0, "input", input, 0)) ||
      failed(checkDim(error, "indices", indices, 0, "input", input, 0)) ||
      failed(checkDim(error, "indices", indices, 1, "weights", weights, 1)) ||
      failed(checkDim(error, "gate_up", gateUp, 2, "input", input, 1)) ||
      failed(checkDim(error, "down", down, 0, "gate_up", gateUp, 0)) ||
      failed(checkDim(error, "down", down, 1, "input", input, 1)))
    return failure();
  if (static_cast<bool>(adaptor.getProperties().expert_grid) !=
      static_cast<bool>(adaptor.getProperties().expert_grid_axes))
    return error("expert_grid and expert_grid_axes go together");
  if (adaptor.getProperties().all_to_all &&
      !adaptor.getProperties().expert_grid)
    return error("all_to_all needs a block of experts (expert_grid)");
  int64_t twoI = gateUp.getDimSize(1);
  if (!isDyn(twoI) &&
      (twoI % 2 != 0 || !compatible(down.getDimSize(2), twoI / 2)))
    return error("gate_up rows (", twoI,
                 ") must be twice the down projection's width (",
                 dimStr(down.getDimSize(2)), ")");
  results.push_back(input);
  return success();
}

//===----------------------------------------------------------------------===//
// FusedElementwiseOp
//===----------------------------------------------------------------------===//

LogicalResult FusedElementwiseOp::verify() {
  auto result = cast<RankedTensorType>(getType());
  if (getInputs().empty())
    return emitOpError("needs at least one input");
  for (auto [i, input] : llvm::enumerate(getInputs())) {
    auto type = cast<RankedTensorType>(input.getType());
    if (type.getRank() != result.getRank())
      return emitOpError("input ") << i << " has rank " << type.getRank()
                                   << ", the result " << result.getRank();
    for (int64_t d = 0; d < result.getRank(); ++d) {
      int64_t a = type.getDimSize(d), r = result.getDimSize(d);
      if (!compatible(a, r) && a != 1)
        return emitOpError("input ")
               << i << " dimension " << d << " (" << dimStr(a)
               << ") neither matches the result's (" << dimStr(r)
               << ") nor broadcasts (1)";
    }
  }
  return success();
}

LogicalResult FusedElementwiseOp::verifyRegions() {
  Block &body = getBody().front();
  if (body.getNumArguments() != getInputs().size())
    return emitOpError("body has ")
           << body.getNumArguments() << " arguments for " << getInputs().size()
           << " inputs";
  for (auto [i, arg, input] : llvm::enumerate(body.getArguments(), getInputs()))
    if (arg.getType() != getElementTypeOrSelf(input.getType()))
      return emitOpError("body argument ")
             << i << " must be " << getElementTypeOrSelf(input.getType())
             << ", got " << arg.getType();
  auto yield = body.empty() ? YieldOp() : dyn_cast<YieldOp>(&body.back());
  if (!yield)
    return emitOpError("body must end in ds.yield");
  if (yield.getValue().getType() != getElementTypeOrSelf(getType()))
    return emitOpError("body yields ")
           << yield.getValue().getType() << " for a result of "
           << getElementTypeOrSelf(getType());
  for (Operation &op : body.without_terminator()) {
    Dialect *dialect = op.getDialect();
    StringRef ns = dialect ? dialect->getNamespace() : "";
    if ((ns != "arith" && ns != "math") || op.getNumRegions() ||
        llvm::any_of(op.getResultTypes(),
                     [](Type t) { return !t.isIntOrIndexOrFloat(); }))
      return op.emitOpError("is not a scalar arith or math op; a "
                            "ds.fused_elementwise body holds only those");
  }
  return success();
}

//===----------------------------------------------------------------------===//
// ConcatWeightsOp
//===----------------------------------------------------------------------===//

LogicalResult
ConcatWeightsOp::inferReturnTypes(MLIRContext *context,
                                  std::optional<Location> loc, Adaptor adaptor,
                                  SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto axisAttr = requireAttr<IntegerAttr>(
      error, adaptor, adaptor.getProperties().axis, "axis");
  if (failed(axisAttr))
    return failure();
  ValueRange inputs = adaptor.getInputs();
  if (inputs.empty())
    return error("needs at least one input");
  Type first = inputs.front().getType();
  auto firstQ = dyn_cast<QTensorType>(first);
  auto firstS = dyn_cast<Sparse24Type>(first);
  if (!firstQ && !firstS)
    return error("joins !ds.qtensor or !ds.sparse24 weights (use "
                 "tensor.concat for tensors), got ",
                 first);
  RankedTensorType logical = getLogicalTensorType(first);
  int64_t rank = logical.getRank(), axis = axisAttr->getInt();
  if (axis < 0 || axis >= rank)
    return error("axis ", axis, " is outside the rank ", rank);
  if (firstS && axis == rank - 1)
    return error("2:4 weights cannot be joined along their last axis");
  SmallVector<int64_t> shape(logical.getShape());
  shape[axis] = 0;
  for (Value v : inputs) {
    Type t = v.getType();
    auto q = dyn_cast<QTensorType>(t);
    auto s = dyn_cast<Sparse24Type>(t);
    bool same = firstQ
                    ? q && q.getStorageType() == firstQ.getStorageType() &&
                          q.getExpressedType() == firstQ.getExpressedType() &&
                          q.getBlock() == firstQ.getBlock()
                    : s && s.getElementType() == firstS.getElementType();
    RankedTensorType l = getLogicalTensorType(t);
    if (!same || l.getRank() != rank)
      return error("inputs must have one kind, storage and block, got ", first,
                   " and ", t);
    for (int64_t d = 0; d < rank; ++d)
      if (d != axis && l.getDimSize(d) != logical.getDimSize(d))
        return error("inputs differ in dimension ", d, ": ", first, " and ", t);
    if (firstQ) {
      int64_t block = firstQ.getBlock()[axis], size = l.getDimSize(axis);
      if (block == 0 || (block > 1 && size % block != 0))
        return error("a block (", block, " along axis ", axis,
                     ") would straddle inputs of size ", size);
    }
    shape[axis] += l.getDimSize(axis);
  }
  if (firstQ)
    results.push_back(QTensorType::get(context, shape, firstQ.getStorageType(),
                                       firstQ.getExpressedType(),
                                       firstQ.getBlock()));
  else
    results.push_back(
        Sparse24Type::get(context, shape, firstS.getElementType()));
  return success();
}

bool ds::canConcatWeights(ValueRange weights, int64_t axis) {
  if (weights.empty())
    return false;
  MLIRContext *context = weights.front().getContext();
  ConcatWeightsOp::Properties props;
  props.axis = IntegerAttr::get(IntegerType::get(context, 64), axis);
  SmallVector<Type> inferred;
  return succeeded(ConcatWeightsOp::inferReturnTypes(
      context, std::nullopt, weights, DictionaryAttr(), &props, RegionRange(),
      inferred));
}

bool ConcatWeightsOp::isCompatibleReturnTypes(TypeRange l, TypeRange r) {
  return l == r;
}

//===----------------------------------------------------------------------===//
// QuantizeOp, DequantizeOp
//===----------------------------------------------------------------------===//

LogicalResult QuantizeOp::inferReturnTypes(MLIRContext *,
                                           std::optional<Location> loc,
                                           Adaptor adaptor,
                                           SmallVectorImpl<Type> &results) {
  ShapeError error(loc, getOperationName().drop_front(3));
  auto input = rankedType(adaptor.getInput());
  auto scheme = requireAttr<ActQuantAttr>(
      error, adaptor, adaptor.getProperties().scheme, "scheme");
  if (failed(scheme) || failed(checkRank(error, "input", input, 1, true)))
    return failure();
  Type element = input.getElementType();
  if (!element.isF32() && !element.isBF16() && !element.isF16())
    return error("input must be f32, bf16 or f16, got ", input);
  results.push_back(scheme->getQuantizedType(input));
  return success();
}

bool QuantizeOp::isCompatibleReturnTypes(TypeRange l, TypeRange r) {
  if (l.size() != 1 || r.size() != 1)
    return false;
  auto lt = dyn_cast<QTensorType>(l[0]), rt = dyn_cast<QTensorType>(r[0]);
  return lt && rt && lt.getStorageType() == rt.getStorageType() &&
         lt.getExpressedType() == rt.getExpressedType() &&
         lt.getBlock() == rt.getBlock() &&
         succeeded(verifyCompatibleShape(lt.getShape(), rt.getShape()));
}

LogicalResult DequantizeOp::inferReturnTypes(MLIRContext *,
                                             std::optional<Location>,
                                             Adaptor adaptor,
                                             SmallVectorImpl<Type> &results) {
  results.push_back(rankedType(adaptor.getInput()));
  return success();
}

//===----------------------------------------------------------------------===//
// TableGen'd definitions
//===----------------------------------------------------------------------===//

#define GET_OP_CLASSES
#include "ds/dialects/DS/IR/DSOps.cpp.inc"
