//===- DSAttrs.cpp - ds attributes ----------------------------------------===//
//
// Parsing, printing and verification of #ds.rope and #ds.routing, and the
// RoPE frequency computation (Hugging Face's default, linear and YaRN rules)
// shared by every consumer of the attribute.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSAttrs.h"
#include "ds/dialects/DS/IR/DSDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

using namespace mlir;
using namespace ds;

#include "ds/dialects/DS/IR/DSEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "ds/dialects/DS/IR/DSAttrs.cpp.inc"

void DSDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "ds/dialects/DS/IR/DSAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// Parameter parsing helpers
//===----------------------------------------------------------------------===//

FailureOr<llvm::APFloat> ds::parseF64Param(AsmParser &parser) {
  // Integer literals are accepted too (`theta = 10000`).
  bool negative = succeeded(parser.parseOptionalMinus());
  double value;
  uint64_t integer;
  OptionalParseResult parsedInt = parser.parseOptionalInteger(integer);
  if (parsedInt.has_value()) {
    if (failed(*parsedInt))
      return failure();
    value = static_cast<double>(integer);
  } else if (parser.parseFloat(value)) {
    return failure();
  }
  return llvm::APFloat(negative ? -value : value);
}

void ds::printF64Param(AsmPrinter &printer, const llvm::APFloat &value) {
  // The shortest decimal that parses back to the same double, always with a
  // '.' or an exponent so that it reads as a float.
  double v = value.convertToDouble();
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.1f", v);
    printer << buf;
    return;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v)
      break;
  }
  // MLIR float literals need a '.' before any exponent: 1e-20 -> 1.0e-20.
  StringRef str(buf);
  if (str.contains('.') || str.contains_insensitive("inf") ||
      str.contains_insensitive("nan")) {
    printer << str;
    return;
  }
  auto [mantissa, exponent] = str.split('e');
  printer << mantissa << ".0";
  if (!exponent.empty())
    printer << "e" << exponent;
}

FailureOr<bool> ds::parseBoolParam(AsmParser &parser) {
  if (succeeded(parser.parseOptionalKeyword("true")))
    return true;
  if (succeeded(parser.parseOptionalKeyword("false")))
    return false;
  return parser.emitError(parser.getCurrentLocation(),
                          "expected 'true' or 'false'");
}

FailureOr<SmallVector<int64_t>> ds::parseI64ListParam(AsmParser &parser) {
  SmallVector<int64_t> values;
  if (parser.parseCommaSeparatedList(AsmParser::Delimiter::Square, [&] {
        int64_t v;
        if (parser.parseInteger(v))
          return failure();
        values.push_back(v);
        return success();
      }))
    return failure();
  return values;
}

void ds::printI64ListParam(AsmPrinter &printer, ArrayRef<int64_t> values) {
  printer << "[";
  llvm::interleaveComma(values, printer);
  printer << "]";
}

//===----------------------------------------------------------------------===//
// RopeAttr
//===----------------------------------------------------------------------===//

LogicalResult RopeAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               int64_t dim, llvm::APFloat theta,
                               RopeStyle style, RopeScaling scaling,
                               llvm::APFloat factor,
                               int64_t originalMaxPosition,
                               llvm::APFloat betaFast, llvm::APFloat betaSlow,
                               llvm::APFloat mscale, llvm::APFloat mscaleAllDim,
                               llvm::APFloat attentionFactor, bool truncate) {
  if (dim <= 0 || dim % 2 != 0)
    return emitError() << "rope dim must be positive and even, got " << dim;
  if (!(theta.convertToDouble() > 1.0))
    return emitError() << "rope theta must be greater than 1, got "
                       << theta.convertToDouble();
  if (!(factor.convertToDouble() > 0.0))
    return emitError() << "rope factor must be positive, got "
                       << factor.convertToDouble();
  if (scaling == RopeScaling::yarn) {
    if (originalMaxPosition <= 0)
      return emitError()
             << "yarn scaling needs a positive original_max_position";
    if (!(betaFast.convertToDouble() > 0.0) ||
        !(betaSlow.convertToDouble() > 0.0))
      return emitError() << "yarn beta_fast and beta_slow must be positive";
  }
  if (attentionFactor.convertToDouble() < 0.0)
    return emitError() << "rope attention_factor must not be negative";
  return success();
}

/// YaRN's magnitude correction `0.1 m ln(s) + 1` (1 when s <= 1).
static double yarnGetMscale(double scale, double mscale) {
  if (scale <= 1.0)
    return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

double RopeAttr::getAttentionScaling() const {
  if (getScaling() != RopeScaling::yarn)
    return 1.0;
  double given = getAttentionFactor().convertToDouble();
  if (given > 0.0)
    return given;
  double f = getFactor().convertToDouble();
  double m = getMscale().convertToDouble();
  double mAll = getMscaleAllDim().convertToDouble();
  if (m != 0.0 && mAll != 0.0)
    return yarnGetMscale(f, m) / yarnGetMscale(f, mAll);
  return yarnGetMscale(f, 1.0);
}

SmallVector<float> RopeAttr::computeInvFreq() const {
  int64_t d = getDim();
  float theta = static_cast<float>(getTheta().convertToDouble());
  SmallVector<float> base(d / 2);
  // torch: 1.0 / (base ** (arange(0, d, 2).float() / d)), all in f32.
  for (int64_t j = 0; j < d / 2; ++j) {
    float exponent = static_cast<float>(2 * j) / static_cast<float>(d);
    base[j] = 1.0f / std::pow(theta, exponent);
  }
  double f = getFactor().convertToDouble();
  switch (getScaling()) {
  case RopeScaling::none:
    return base;
  case RopeScaling::linear:
    for (float &v : base)
      v = static_cast<float>(v / f);
    return base;
  case RopeScaling::yarn:
    break;
  }
  double l0 = static_cast<double>(getOriginalMaxPosition());
  double th = getTheta().convertToDouble();
  auto correctionDim = [&](double rotations) {
    return (d * std::log(l0 / (rotations * 2.0 * M_PI))) / (2.0 * std::log(th));
  };
  double low = correctionDim(getBetaFast().convertToDouble());
  double high = correctionDim(getBetaSlow().convertToDouble());
  if (getTruncate()) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(d - 1));
  if (low == high)
    high += 0.001;
  SmallVector<float> out(d / 2);
  for (int64_t j = 0; j < d / 2; ++j) {
    float ramp =
        static_cast<float>((static_cast<double>(j) - low) / (high - low));
    ramp = std::min(std::max(ramp, 0.0f), 1.0f);
    float extrapolation = 1.0f - ramp;
    float interp = base[j] / static_cast<float>(f);
    out[j] = interp * (1.0f - extrapolation) + base[j] * extrapolation;
  }
  return out;
}

//===----------------------------------------------------------------------===//
// RoutingAttr
//===----------------------------------------------------------------------===//

LogicalResult RoutingAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                  int64_t numExperts, int64_t topK,
                                  ScoringFunc scoring, int64_t nGroup,
                                  int64_t topkGroup, GroupScore groupScore,
                                  bool normTopkProb, llvm::APFloat normEpsilon,
                                  llvm::APFloat routedScalingFactor,
                                  ArrayRef<int64_t> kept,
                                  ArrayRef<int64_t> slots) {
  if (numExperts <= 0)
    return emitError() << "routing num_experts must be positive, got "
                       << numExperts;
  if (topK <= 0 || topK > numExperts)
    return emitError() << "routing top_k must be in [1, num_experts = "
                       << numExperts << "], got " << topK;
  if (nGroup <= 0 || numExperts % nGroup != 0)
    return emitError() << "routing n_group must be positive and divide "
                          "num_experts = "
                       << numExperts << ", got " << nGroup;
  if (topkGroup <= 0 || topkGroup > nGroup)
    return emitError() << "routing topk_group must be in [1, n_group = "
                       << nGroup << "], got " << topkGroup;
  int64_t perGroup = numExperts / nGroup;
  if (topK > topkGroup * perGroup)
    return emitError() << "routing top_k = " << topK
                       << " exceeds the experts in the kept groups ("
                       << topkGroup * perGroup << ")";
  if (nGroup > 1 && groupScore == GroupScore::top2_sum && perGroup < 2)
    return emitError() << "routing group_score top2_sum needs at least two "
                          "experts per group";
  if (normEpsilon.convertToDouble() < 0.0)
    return emitError() << "routing norm_epsilon must not be negative";
  if (!(routedScalingFactor.convertToDouble() > 0.0))
    return emitError() << "routing routed_scaling_factor must be positive";
  if (!kept.empty()) {
    for (size_t i = 0; i < kept.size(); ++i)
      if (kept[i] < 0 || kept[i] >= numExperts ||
          (i > 0 && kept[i] <= kept[i - 1]))
        return emitError() << "routing kept experts must be ascending and in "
                              "[0, "
                           << numExperts << ")";
    if (static_cast<int64_t>(kept.size()) < topK)
      return emitError() << "routing keeps " << kept.size()
                         << " experts, fewer than top_k = " << topK;
  }
  if (!slots.empty()) {
    const int64_t selectable =
        kept.empty() ? numExperts : static_cast<int64_t>(kept.size());
    if (static_cast<int64_t>(slots.size()) < selectable)
      return emitError() << "routing has " << slots.size()
                         << " slots, fewer than its " << selectable
                         << " selectable experts";
    std::vector<bool> placed(selectable, false);
    for (int64_t e : slots) {
      if (e < 0 || e >= selectable)
        return emitError() << "routing slots must hold experts in [0, "
                           << selectable << "), got " << e;
      placed[e] = true;
    }
    for (int64_t e = 0; e < selectable; ++e)
      if (!placed[e])
        return emitError() << "routing slots hold no copy of expert " << e;
  }
  return success();
}
