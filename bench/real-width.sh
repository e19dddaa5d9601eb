#!/usr/bin/env bash
# Real layer widths at the limit of this machine: checkpoints written by
# transformers with the widths of Mixtral 8x7B, Qwen3-30B-A3B and DeepSeek-V3
# and fewer layers / experts (bench/real_width.py says which), in bf16, then
# imported, compiled and run by ds. Benchmark-only; nothing here runs in the
# tests.
#
#   bench/real-width.sh [ARCH ...]    (default: mixtral; also qwen3_moe,
#                                      deepseek_v3)
#
# Per model: the checkpoint's size; import, and compile with int8, int4 g32
# and w4a8 g32 (FP8 too for DeepSeek-V3): time and peak RSS (/usr/bin/time)
# beside the largest tensor of the checkpoint; the artifact's size and load
# time (cold: its pages dropped from the page cache first; warm); decode
# tokens/s at batch 1 and 32 on every core (ds-bench --only model, 32
# tokens per sequence) against the weight-streaming roofline (the weight
# bytes a step reads, at the stream rate measured there); then, for int8,
# the check against the interpreter: the artifact generates 2 tokens after
# a 4-token prompt and its logits are compared with the interpreter's
# running the same int8 module (ds-run --check). The interpreter reads each
# weight from the checkpoint when an op needs it (its f32 weights would not
# fit beside the compiled model), so the check takes minutes.
#
# Environment: DS_BENCH_VENV (default build/bench-venv, shared with the other
# benchmarks), DS_REAL_WIDTH_DIR (default build/real-width: about 6 GB per
# model and its artifacts).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${DS_BUILD_DIR:-$root/build}"
venv="${DS_BENCH_VENV:-$build/bench-venv}"
work="${DS_REAL_WIDTH_DIR:-$build/real-width}"
archs=("$@")
[[ ${#archs[@]} -gt 0 ]] || archs=(mixtral)
for tool in ds-translate ds-compile ds-run ds-bench; do
  [[ -x "$build/bin/$tool" ]] || { echo "real-width.sh: build $tool first (scripts/demo.sh builds it)" >&2; exit 1; }
done
source "$root/bench/venv.sh"
bench_venv "$venv" "import torch, transformers, safetensors" \
  torch numpy transformers safetensors
mkdir -p "$work"
measure() { # label command...: prints "label: S s, peak RSS M MB"
  /usr/bin/time -o "$work/time" -f "%e %M" "${@:2}" >/dev/null 2>"$work/err" ||
    { echo "$1: failed"; tail -3 "$work/err"; return 1; }
  read -r secs kb < <(tail -1 "$work/time")
  printf "  %-22s %8.1f s, peak RSS %6d MB\n" "$1:" "$secs" $((kb / 1024))
}
for arch in "${archs[@]}"; do
  m="$work/$arch"
  [[ -f "$m/config.json" ]] || "$venv/bin/python" "$root/bench/real_width.py" "$arch" "$m"
  echo "== $arch: $(du -sh "$m" | cut -f1) checkpoint (bf16) in $m"
  measure import "$build/bin/ds-translate" --import-hf "$m" --max-cache-len 256 -o "$m.mlir"
  schemes=("int8" "int4 group-size=32" "w4a8 group-size=32")
  [[ "$arch" == deepseek_v3 ]] && schemes+=("fp8")
  "$venv/bin/python" - "$m" <<'PY'
import json, os, sys
from safetensors import safe_open
d = sys.argv[1]
best = (0, "")
for f in sorted(os.listdir(d)):
    if f.endswith(".safetensors"):
        with safe_open(os.path.join(d, f), "np") as st:
            for k in st.keys():
                n = 1
                for x in st.get_slice(k).get_shape():
                    n *= x
                best = max(best, (n, k))
print(f"  largest tensor: {best[1]}, {best[0] * 2 / 2**20:.0f} MB in bf16, "
      f"{best[0] * 4 / 2**20:.0f} MB in f32")
PY
  for q in "${schemes[@]}"; do
    name="${q%% *}"
    measure "compile $name" "$build/bin/ds-compile" "$m" --optimize "quantize=$q" \
      --max-cache-len 256 -o "$m-$name.dsa" || continue
    for b in 1 32; do
      out=$("$build/bin/ds-bench" --model "$m-$name.dsa" --only model --threads "$(nproc)" \
        --gen 32 --batch $b)
      rate=$(awk '/^model-rate/ { print $2 }' <<<"$out")
      [[ $b == 1 ]] && echo "  $name $(grep '^load' <<<"$out" | sed 's/^load [^:]*: /load: /')"
      printf "  %-22s %8s artifact, decode %.1f tok/s (batch %d, every core)\n" \
        "$name:" "$(du -h "$m-$name.dsa" | cut -f1)" "$rate" "$b"
      grep '^decode roofline' <<<"$out" | sed 's/^/    /'
    done
  done
  if [[ -f "$m-int8.dsa" ]]; then
    "$build/bin/ds-opt" "$m.mlir" --pass-pipeline="builtin.module(ds-optimize{quantize=int8 weights=$m quantized-weights=$m-q8.safetensors})" -o "$m-q8.mlir"
    start=$(date +%s)
    if "$build/bin/ds-run" "$m-q8.mlir" --weights "$m" --backend "artifact=$m-int8.dsa" \
        --generate 2 --prompt 1,2,3,4 --check --stream-weights > "$work/check" 2>&1; then
      echo "  int8 vs interpreter:   $(grep '^check:' "$work/check") ($(( $(date +%s) - start )) s)"
    else
      echo "  int8 vs interpreter: FAILED"; tail -3 "$work/check"
    fi
    rm -f "$m-q8.safetensors"
  fi
done
