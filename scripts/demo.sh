#!/usr/bin/env bash
# The main job: set everything up and build ds, then run the end-to-end demo
# on a built-in tiny DeepSeek-V3 model:
#   1. ds-make-tiny-model writes a random checkpoint with real tensor names
#      (MLA, YaRN, grouped sigmoid routing, a shared expert);
#   2. ds-translate imports it into ds IR (@prefill and @decode);
#   3. ds-opt shows one MoE block decomposed into router / dispatch /
#      grouped matmul / combine steps;
#   4. ds-run greedy-generates through the reference interpreter with a KV
#      cache and prints the tokens.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ds_setup

bin="$DS_BUILD_DIR/bin"
work="$DS_BUILD_DIR/demo"
rm -rf "$work"
mkdir -p "$work"

ds_log "ds-make-tiny-model --arch deepseek_v3 --out $work/model --seed 0"
"$bin/ds-make-tiny-model" --arch deepseek_v3 --out "$work/model" --seed 0
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

ds_log "ds-run: greedy generation with prefill + decode against the KV cache"
"$bin/ds-run" "$work/model.mlir" --weights "$work/model" --generate 8 \
  --prompt 1,17,42,7,99 --prompt 3,3,8,200,12
