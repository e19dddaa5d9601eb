//===- ConfigFuzzer.cpp - libFuzzer target for config.json parsing --------===//
//
// Feeds arbitrary text to the Hugging Face config parser; every input must
// end in a parsed config or an error, never a crash.
//
//   build/test/fuzz/ds-fuzz-config -max_total_time=60 CORPUS_DIR
//
//===----------------------------------------------------------------------===//

#include "ds/frontends/HF/ModelConfig.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  llvm::Expected<ds::hf::ModelConfig> config =
      ds::hf::parseModelConfig(text, "fuzz/config.json");
  if (!config)
    llvm::consumeError(config.takeError());
  else
    (void)config->attentionScale();
  return 0;
}
