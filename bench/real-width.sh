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
# and w4a8 g32 (FP8 too for DeepSeek-V3): time and peak RSS (/usr/bin/time);
# the artifact's size; decode tokens/s at batch 1 on every core
# (ds-bench --only model, 32 tokens after a 16-token prompt). No interpreter
# check: the interpreter holds every weight as f32 (12-16 GB here) beside the
# compiled model, more than a 24 GB machine has; lit checks compiled code
# against the interpreter on the tiny models of every family.
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
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
if ! "$venv/bin/python" -c "import torch, transformers, safetensors" 2>/dev/null; then
  "$venv/bin/pip" install -q torch numpy transformers safetensors
fi
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
  for q in "${schemes[@]}"; do
    name="${q%% *}"
    measure "compile $name" "$build/bin/ds-compile" "$m" --optimize "quantize=$q" \
      --max-cache-len 256 -o "$m-$name.dsa" || continue
    rate=$("$build/bin/ds-bench" --model "$m-$name.dsa" --only model --threads "$(nproc)" \
      --prompt-len 16 --gen 32 | awk '/^model-rate/ { print $2 }')
    printf "  %-22s %8s artifact, decode %.1f tok/s (batch 1, every core)\n" \
      "$name:" "$(du -h "$m-$name.dsa" | cut -f1)" "$rate"
  done
done
