//===- I8DotLayout.h - the W8A8 packed weight layout ------------*- C++ -*-===//
//
// Shared by the packers and the integer dot-product kernels (AVX-512 VNNI
// and AVX2). W8A8: panels of kPanel columns, each `quads` groups of 4 k x
// kPanel columns of int8 (the vpdpbusd operand order), then one f32 scale
// and one int32 column sum per column of every panel. W4A8: below.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_KERNELS_I8DOTLAYOUT_H
#define DS_RT_KERNELS_I8DOTLAYOUT_H

#include "DotTiles.h"
#include "ds/rt/Kernels.h"

#include <algorithm>

namespace ds::rt::kernels {

struct I8DotLayout {
  int64_t panels, quads, panelBytes;
  const int8_t *base;
  const float *scales;
  const int32_t *sums;

  explicit I8DotLayout(const PackedWeight &w)
      : panels((w.n + kPanel - 1) / kPanel), quads((w.k + 3) / 4),
        panelBytes(quads * kPanel * 4),
        base(static_cast<const int8_t *>(w.data)),
        scales(reinterpret_cast<const float *>(base + panels * panelBytes)),
        sums(reinterpret_cast<const int32_t *>(scales + panels * kPanel)) {}
};

/// W4A8 (WeightFormat::I4Dot): per panel, per K group of `group` (a
/// multiple of 8), group / 8 vectors of 64 bytes: byte 4 c + i holds column
/// c's weight at k0 + i (+ 8, so 0..15) in its low nibble and at k0 + 4 + i
/// in its high nibble (k0 = 8 t within the group): the two nibble planes
/// are vpdpbusd's unsigned operand for 4 k each. K past the weight's
/// holds 8 (zero). Then f16 scales [panels][groups][16].
struct I4DotLayout {
  int64_t panels, groups, group, panelBytes;
  const uint8_t *base;
  const uint16_t *scales;

  explicit I4DotLayout(const PackedWeight &w)
      : panels((w.n + kPanel - 1) / kPanel),
        groups((w.k + w.group - 1) / w.group), group(w.group),
        panelBytes(groups * w.group * (kPanel / 2)),
        base(static_cast<const uint8_t *>(w.data)),
        scales(reinterpret_cast<const uint16_t *>(base + panels * panelBytes)) {
  }
  /// Activation row length: K padded to whole groups.
  int64_t paddedK() const { return groups * group; }
};

} // namespace ds::rt::kernels

#endif // DS_RT_KERNELS_I8DOTLAYOUT_H
