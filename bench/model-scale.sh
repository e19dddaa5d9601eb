#!/usr/bin/env bash
# Import, optimize and compile time and peak RSS against model size: the
# structure of DeepSeek-V3 (256 routed experts, 3 dense layers first) at
# tiny widths, at 16 and 61 layers (ds-make-tiny-model --layers --experts,
# 8 shards with an index), so that growth with the model shows.
#
#   bench/model-scale.sh [BUILD_DIR]     (default: build)
#
# Prints one line per step and size; the ratios at the end should stay near
# the ratio of the sizes (3.8x) if everything is linear.
set -euo pipefail
build="${1:-build}"
bin="$build/bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
measure() { # label command...
  /usr/bin/time -o "$work/time" -f "%e %M" "${@:2}" >/dev/null 2>&1
  echo "$1 $(tail -1 "$work/time")"
}
declare -A secs
for layers in 16 61; do
  m="$work/v3-$layers"
  "$bin/ds-make-tiny-model" --arch deepseek_v3 --out "$m" --layers "$layers" \
    --experts 256 --shards 8 --seed 1
  size=$(du -sm "$m" | cut -f1)
  while read -r step t kb; do
    secs[$step-$layers]=$t
    printf "%-8s %2d layers (%4d MB checkpoint): %6.2f s, peak RSS %5d MB\n" \
      "$step" "$layers" "$size" "$t" $((kb / 1024))
  done < <(
    measure import "$bin/ds-translate" --import-hf "$m" -o "$m.mlir"
    measure optimize "$bin/ds-opt" "$m.mlir" \
      --pass-pipeline="builtin.module(ds-optimize{quantize=int8 weights=$m quantized-weights=$m-q.safetensors})" \
      -o "$m.opt.mlir"
    measure compile "$bin/ds-compile" "$m" --optimize quantize=int8 \
      --max-cache-len 64 -o "$m.dsa"
  )
done
for step in import optimize compile; do
  awk -v a="${secs[$step-16]}" -v b="${secs[$step-61]}" -v s="$step" \
    'BEGIN { printf "%-8s 61 / 16 layers: %.1fx (layers: 3.8x)\n", s, (a > 0 ? b / a : 0) }'
done
