//===- ds-make-tiny-model.cpp - write a small random HF checkpoint --------===//
//
//   ds-make-tiny-model --arch
//   deepseek_v3|deepseek_v2|mixtral|qwen2_moe|qwen3_moe
//                      --out DIR [--seed N] [--fused-experts] [--shards N]
//                      [--dtype F32|BF16|F16]
//
//===----------------------------------------------------------------------===//

#include "ds/frontends/HF/TinyModel.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/WithColor.h"

namespace cl = llvm::cl;

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::OptionCategory category("ds-make-tiny-model options");
  cl::opt<std::string> arch("arch", cl::desc("Model family"), cl::Required,
                            cl::cat(category));
  cl::opt<std::string> out("out", cl::desc("Output directory"), cl::Required,
                           cl::cat(category));
  cl::opt<uint64_t> seed("seed", cl::desc("Random seed"), cl::init(0),
                         cl::cat(category));
  cl::opt<bool> fused("fused-experts",
                      cl::desc("Write experts as fused gate_up_proj/down_proj"),
                      cl::init(false), cl::cat(category));
  cl::opt<int> shards("shards", cl::desc("Number of safetensors shards"),
                      cl::init(1), cl::cat(category));
  cl::opt<std::string> dtype("dtype", cl::desc("F32, BF16 or F16"),
                             cl::init("F32"), cl::cat(category));
  cl::opt<float> initStd(
      "init-std",
      cl::desc("Initialize projections, experts and embeddings N(0, s^2) like "
               "Hugging Face's initializer_range (default: 1/sqrt(fan_in))"),
      cl::init(0.0f), cl::cat(category));
  cl::opt<bool> fp8("fp8",
                    cl::desc("DeepSeek: write projections and experts as FP8 "
                             "e4m3 with weight_scale_inv block scales"),
                    cl::init(false), cl::cat(category));
  cl::opt<int64_t> layers(
      "layers", cl::desc("Decoder layers (default: the family's 2 or 3)"),
      cl::init(0), cl::cat(category));
  cl::opt<int64_t> experts(
      "experts",
      cl::desc("Routed experts (default 8; DeepSeek: a multiple of 4)"),
      cl::init(0), cl::cat(category));
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(argc, argv,
                              "ds-make-tiny-model: tiny random checkpoints\n");
  ds::hf::TinyModelOptions options{arch,  out,     seed, fused,  shards,
                                   dtype, initStd, fp8,  layers, experts};
  if (layers < 0 || layers > 1024 || experts < 0 || experts > 1024) {
    llvm::WithColor::error(llvm::errs(), "ds-make-tiny-model")
        << "--layers and --experts must be in [0, 1024]\n";
    return 1;
  }
  if (llvm::Error e = ds::hf::writeTinyModel(options)) {
    llvm::WithColor::error(llvm::errs(), "ds-make-tiny-model")
        << llvm::toString(std::move(e)) << "\n";
    return 1;
  }
  return 0;
}
