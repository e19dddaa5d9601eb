#!/usr/bin/env bash
# The main job: set everything up and build ds, then run the end-to-end demo
# on a built-in tiny DeepSeek-V3 model:
#   1. ds-make-tiny-model writes a random checkpoint with real tensor names
#      (MLA, YaRN, grouped sigmoid routing, a shared expert);
#   2. ds-translate imports it into ds IR (@prefill and @decode);
#   3. ds-opt shows one MoE block decomposed into router / dispatch /
#      grouped matmul / combine steps;
#   4. ds-opt runs the default pipeline, ds-optimize with fusion and int8
#      weight-only quantization (weights quantized now, written beside the
#      model);
#   5. ds-run greedy-generates with the optimized model through the reference
#      interpreter with a KV cache, prints the tokens, and reports the error
#      against the unoptimized model run in lockstep on the same tokens;
#   6. ds-run --backend jit compiles the optimized module (fusion + int8)
#      in process (generated kernels through ORC, packed weights), generates
#      (prompts of different lengths, each in its own KV cache slot), checks
#      every logits tensor against the interpreter, then serves a burst of
#      concurrent requests through the dynamic batcher and prints
#      throughput, latency and agreement with the checked generation;
#   7. ds-compile turns the model into one artifact (plan, generated
#      kernels, packed weights), which the compiler-free runtime loads and
#      runs the same way.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ds_setup

bin="$DS_BUILD_DIR/bin"
work="$DS_BUILD_DIR/demo"
rm -rf "$work"
mkdir -p "$work"

ds_log "ds-make-tiny-model --arch deepseek_v3 --out $work/model --seed 0 --init-std 0.02"
"$bin/ds-make-tiny-model" --arch deepseek_v3 --out "$work/model" --seed 0 \
  --init-std 0.02
ls -l "$work/model"

ds_log "ds-translate --import-hf $work/model -o $work/model.mlir"
"$bin/ds-translate" --import-hf "$work/model" --max-cache-len 64 --progress \
  -o "$work/model.mlir"
echo "$(grep -c 'ds\.' "$work/model.mlir") ds ops; the first MoE layer:"
grep -m1 -A3 'ds.moe ' "$work/model.mlir" | cut -c1-200

ds_log "ds-opt --ds-decompose-moe --canonicalize --cse (layer 1's MoE block)"
"$bin/ds-opt" --ds-decompose-moe --canonicalize --cse "$work/model.mlir" \
  -o "$work/decomposed.mlir"
grep -m1 -B1 -A9 'ds.router' "$work/decomposed.mlir" | cut -c1-160

ds_log "ds-opt ds-optimize{quantize=int8}: fusion + int8 weight-only"
"$bin/ds-opt" "$work/model.mlir" --mlir-timing -o "$work/optimized.mlir" \
  --pass-pipeline="builtin.module(ds-optimize{quantize=int8 weights=$work/model quantized-weights=$work/int8.safetensors})" \
  2>&1 | grep -E 'Total|Pass'
echo "fused kernels: $(grep -c 'ds.fused_' "$work/optimized.mlir"), int8 weights: $(grep -c 'ds.param .*xi8' "$work/optimized.mlir")"
grep -m1 'ds.fused_moe' "$work/optimized.mlir" | cut -c1-220

ds_log "ds-run: greedy generation (prefill + decode against the KV cache), error vs the unoptimized model"
"$bin/ds-run" "$work/optimized.mlir" --weights "$work/model" --generate 8 \
  --prompt 1,17,42,7,99 --prompt 3,3,8,200,12 \
  --reference "$work/model.mlir" --report "$work/error-report.json"
echo "per-layer error report: $work/error-report.json"

ds_log "ds-run --prompt-text: text in, text out through the model's tokenizer.json (the tiny model's is byte-level: one token a byte; its weights are random)"
"$bin/ds-run" "$work/optimized.mlir" --weights "$work/model" --backend jit \
  --generate 8 --prompt-text "Mixture of experts" --check

ds_log "ds-run --backend jit: JIT-compiled CPU code, checked against the interpreter, then 64 concurrent requests through the batcher"
"$bin/ds-run" "$work/optimized.mlir" --weights "$work/model" --backend jit \
  --generate 8 --prompt 1,17,42,7,99 --prompt 3,3,8,200,12,5,77 --prompt 250 \
  --check --serve 64

ds_log "ds-compile: fusion + int8 -> one artifact (plan, generated kernels, packed weights)"
"$bin/ds-compile" "$work/model" --optimize "quantize=int8" --max-cache-len 64 \
  -o "$work/model.dsa"

ds_log "ds-run --backend artifact: the artifact on the runtime alone, checked against the interpreter, then 64 concurrent requests through the batcher"
"$bin/ds-run" "$work/optimized.mlir" --weights "$work/model" \
  --backend "artifact=$work/model.dsa" --generate 8 \
  --prompt 1,17,42,7,99 --prompt 3,3,8,200,12,5,77 --prompt 250 \
  --check --serve 64
