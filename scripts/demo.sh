#!/usr/bin/env bash
# The main job: set everything up, build ds, and run ds-opt over the example
# DeepSeek-V3 decoder layer, printing it canonicalized, then with its MoE
# block decomposed into router / dispatch / grouped matmul / combine steps.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ds_setup

example="$DS_ROOT/test/lit/examples/deepseek_v3_layer.mlir"
ds_log "ds-opt --canonicalize $example"
"$DS_BUILD_DIR/bin/ds-opt" --canonicalize "$example"
ds_log "ds-opt --ds-decompose-moe --canonicalize --cse $example"
"$DS_BUILD_DIR/bin/ds-opt" --ds-decompose-moe --canonicalize --cse "$example"
