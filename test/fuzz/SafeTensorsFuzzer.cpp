//===- SafeTensorsFuzzer.cpp - libFuzzer target for the reader -----------===//
//
// Feeds arbitrary bytes to the safetensors validator and, when it accepts
// them, reads the first and last element of every tensor: anything the
// validator lets through must be safe to read.
//
//   build/test/fuzz/ds-fuzz-safetensors -max_total_time=60 CORPUS_DIR
//
//===----------------------------------------------------------------------===//

#include "ds/support/SafeTensors.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  auto file = ds::SafeTensorsFile::fromBuffer(data, size, "fuzz.safetensors");
  if (!file.ok())
    return 0;
  volatile float sink = 0;
  for (const ds::TensorView &t : (*file)->tensors()) {
    int64_t n = t.numElements();
    if (n > 0)
      sink = sink + t.floatAt(0) + t.floatAt(n - 1);
  }
  return 0;
}
