//===- I8DotLayout.h - the W8A8 packed weight layout ------------*- C++ -*-===//
//
// Shared by the packer and the two W8A8 kernels (AVX-512 VNNI and AVX2):
// panels of kPanel columns, each `quads` groups of 4 k x kPanel columns of
// int8 (the vpdpbusd operand order), then one f32 scale and one int32
// column sum per column of every panel.
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

} // namespace ds::rt::kernels

#endif // DS_RT_KERNELS_I8DOTLAYOUT_H
