//===- DSTypes.cpp - ds types
//----------------------------------------------===//

#include "ds/dialects/DS/IR/DSTypes.h"
#include "ds/dialects/DS/IR/DSAttrs.h"
#include "ds/dialects/DS/IR/DSDialect.h"
#include "ds/dialects/DS/IR/DSQuant.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>

using namespace mlir;
using namespace ds;

#define GET_TYPEDEF_CLASSES
#include "ds/dialects/DS/IR/DSTypes.cpp.inc"

void DSDialect::registerTypes() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "ds/dialects/DS/IR/DSTypes.cpp.inc"
      >();
}

std::optional<ds::QStorage> ds::getQStorage(Type storage) {
  if (isa<Float8E4M3FNType>(storage))
    return ds::QStorage::F8E4M3;
  auto it = dyn_cast<IntegerType>(storage);
  if (!it)
    return std::nullopt;
  bool isUnsigned = it.isUnsigned();
  if (it.getWidth() == 8)
    return isUnsigned ? ds::QStorage::U8 : ds::QStorage::I8;
  if (it.getWidth() == 4)
    return isUnsigned ? ds::QStorage::U4 : ds::QStorage::I4;
  return std::nullopt;
}

RankedTensorType ds::getLogicalTensorType(Type type) {
  if (auto q = dyn_cast<QTensorType>(type))
    return q.getLogicalType();
  if (auto s = dyn_cast<Sparse24Type>(type))
    return s.getLogicalType();
  return dyn_cast<RankedTensorType>(type);
}

//===----------------------------------------------------------------------===//
// QTensorType
//===----------------------------------------------------------------------===//

LogicalResult QTensorType::verify(function_ref<InFlightDiagnostic()> emitError,
                                  ArrayRef<int64_t> shape, Type storageType,
                                  FloatType expressedType,
                                  ArrayRef<int64_t> block) {
  if (!getQStorage(storageType))
    return emitError() << "storage type must be i8, ui8, i4, ui4 or "
                          "f8E4M3FN, got "
                       << storageType;
  if (!expressedType.isF32() && !expressedType.isBF16() &&
      !expressedType.isF16())
    return emitError() << "expressed type must be f32, bf16 or f16, got "
                       << expressedType;
  if (block.size() != shape.size())
    return emitError() << "block has " << block.size()
                       << " entries but the shape has rank " << shape.size();
  for (int64_t d : shape)
    if (d < 0 && !ShapedType::isDynamic(d))
      return emitError() << "dimensions must not be negative";
  for (int64_t b : block)
    if (b < 0)
      return emitError() << "block extents must be >= 0 (0: whole axis), got "
                         << b;
  return success();
}

Type QTensorType::parse(AsmParser &parser) {
  SMLoc loc = parser.getCurrentLocation();
  SmallVector<int64_t> shape, block;
  Type storage, expressed;
  if (parser.parseLess() ||
      parser.parseDimensionList(shape, /*allowDynamic=*/true,
                                /*withTrailingX=*/true) ||
      parser.parseType(storage) || parser.parseComma() ||
      parser.parseType(expressed) || parser.parseComma() ||
      parser.parseKeyword("block") || parser.parseEqual() ||
      parser.parseCommaSeparatedList(
          AsmParser::Delimiter::Square,
          [&] { return parser.parseInteger(block.emplace_back()); }) ||
      parser.parseGreater())
    return {};
  auto floatType = dyn_cast<FloatType>(expressed);
  if (!floatType) {
    parser.emitError(loc, "expressed type must be a float type, got ")
        << expressed;
    return {};
  }
  return getChecked([&] { return parser.emitError(loc); }, parser.getContext(),
                    shape, storage, floatType, block);
}

void QTensorType::print(AsmPrinter &printer) const {
  printer << "<";
  for (int64_t d : getShape())
    printer << (ShapedType::isDynamic(d) ? std::string("?") : std::to_string(d))
            << "x";
  printer << getStorageType() << ", " << getExpressedType() << ", block = [";
  llvm::interleaveComma(getBlock(), printer);
  printer << "]>";
}

RankedTensorType QTensorType::getLogicalType() const {
  return RankedTensorType::get(getShape(), getExpressedType());
}

ds::QScheme ds::getQScheme(QTensorType type) {
  ds::QScheme scheme;
  scheme.storage = *getQStorage(type.getStorageType());
  scheme.block.assign(type.getBlock().begin(), type.getBlock().end());
  return scheme;
}

bool QTensorType::hasZeroPoint() const {
  return ds::isUnsigned(*getQStorage(getStorageType()));
}

//===----------------------------------------------------------------------===//
// ActQuantAttr
//===----------------------------------------------------------------------===//

LogicalResult ActQuantAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                   Type storageType, int64_t group,
                                   llvm::APFloat scale) {
  std::optional<ds::QStorage> storage = getQStorage(storageType);
  if (!storage ||
      (*storage != ds::QStorage::I8 && *storage != ds::QStorage::F8E4M3))
    return emitError() << "activations are quantized to i8 or f8E4M3FN, got "
                       << storageType;
  if (group < 0)
    return emitError() << "group must be >= 0 (0: per token), got " << group;
  double s = scale.convertToDouble();
  if (!(s >= 0.0) || std::isinf(s))
    return emitError() << "scale must be a finite value >= 0 (0: dynamic)";
  if (s > 0.0 && group != 0)
    return emitError() << "a static scale covers the whole tensor; group "
                          "must be 0";
  return success();
}

QTensorType ActQuantAttr::getQuantizedType(RankedTensorType input) const {
  SmallVector<int64_t> block(input.getRank(), isStatic() ? 0 : 1);
  if (!block.empty())
    block.back() = getGroup();
  return QTensorType::get(input.getContext(), input.getShape(),
                          getStorageType(),
                          cast<FloatType>(input.getElementType()), block);
}

//===----------------------------------------------------------------------===//
// Sparse24Type
//===----------------------------------------------------------------------===//

LogicalResult Sparse24Type::verify(function_ref<InFlightDiagnostic()> emitError,
                                   ArrayRef<int64_t> shape,
                                   FloatType elementType) {
  if (shape.empty())
    return emitError() << "a 2:4 sparse tensor needs rank >= 1";
  for (int64_t d : shape)
    if (d < 0)
      return emitError() << "a 2:4 sparse weight has a static shape";
  if (shape.back() <= 0 || shape.back() % 4 != 0)
    return emitError() << "the last dimension (" << shape.back()
                       << ") must be a positive multiple of 4";
  if (!elementType.isF32() && !elementType.isBF16() && !elementType.isF16())
    return emitError() << "element type must be f32, bf16 or f16, got "
                       << elementType;
  return success();
}

Type Sparse24Type::parse(AsmParser &parser) {
  SMLoc loc = parser.getCurrentLocation();
  SmallVector<int64_t> shape;
  Type element;
  if (parser.parseLess() ||
      parser.parseDimensionList(shape, /*allowDynamic=*/true,
                                /*withTrailingX=*/true) ||
      parser.parseType(element) || parser.parseGreater())
    return {};
  auto floatType = dyn_cast<FloatType>(element);
  if (!floatType) {
    parser.emitError(loc, "element type must be a float type, got ") << element;
    return {};
  }
  return getChecked([&] { return parser.emitError(loc); }, parser.getContext(),
                    shape, floatType);
}

void Sparse24Type::print(AsmPrinter &printer) const {
  printer << "<";
  for (int64_t d : getShape())
    printer << d << "x";
  printer << getElementType() << ">";
}

RankedTensorType Sparse24Type::getLogicalType() const {
  return RankedTensorType::get(getShape(), getElementType());
}
