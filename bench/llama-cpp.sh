#!/usr/bin/env bash
# Whole-model prefill and decode, ds against llama.cpp (the CPU engine ds is
# judged against), on one Mixtral-shaped checkpoint at three precisions.
# Benchmark-only; nothing here runs in the tests.
#
#   bench/llama-cpp.sh [--threads "1 2"] [--runs 5] [--prompt 128] [--gen 64]
#
# 1. A virtual environment ($DS_BENCH_VENV, default build/bench-venv, shared
#    with bench/moe-torch.sh) with PyTorch, transformers and sentencepiece.
# 2. llama.cpp from the llama.cpp that PyPI's llama-cpp-python source
#    package vendors ($DS_LLAMA_CPP_VERSION, default 0.3.36), built natively
#    (-DGGML_NATIVE=ON) in $DS_LLAMA_DIR (default build/llama-cpp).
# 3. A Mixtral-shaped checkpoint written by transformers (hidden 1024, 8
#    experts x 2816, top-2, 4 layers, 16 / 8 heads, vocab 32000, f32,
#    random weights) with a sentencepiece tokenizer (bench/llama_cpp_peer.py),
#    converted by the vendored convert_hf_to_gguf.py to F32 and quantized by
#    llama-quantize to Q8_0 and Q4_0 (llama-quantize's defaults: Q4_0 keeps
#    the output head in Q6_K).
# 4. ds artifacts of the same checkpoint: f32, int8 and int4 (group 32, as
#    Q4_0's blocks; the output head in int4 too, ds-quantize's default),
#    weight-only as ds runs them by default; and w8a8 / w4a8 (g32), which
#    quantize the activations to int8 per token for integer dot products,
#    as llama.cpp's Q8_0 / Q4_0 do (per block of 32 there).
# 5. For each pair and thread count, llama-bench (pp PROMPT, tg GEN) and
#    ds-bench --only model (the same shapes, one sequence) alternate RUNS
#    times; the table has medians and the ds / llama.cpp ratio per run pair.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${DS_BUILD_DIR:-$root/build}"
venv="${DS_BENCH_VENV:-$build/bench-venv}"
work="${DS_LLAMA_DIR:-$build/llama-cpp}"
version="${DS_LLAMA_CPP_VERSION:-0.3.36}"
threads="1 2" runs=5 prompt=128 gen=64
while [[ $# -gt 0 ]]; do
  case "$1" in
  --threads) threads="$2"; shift 2 ;;
  --runs) runs="$2"; shift 2 ;;
  --prompt) prompt="$2"; shift 2 ;;
  --gen) gen="$2"; shift 2 ;;
  *) echo "usage: bench/llama-cpp.sh [--threads \"1 2\"] [--runs N] [--prompt N] [--gen N]" >&2
     exit 2 ;;
  esac
done
for tool in ds-bench ds-compile; do
  [[ -x "$build/bin/$tool" ]] || { echo "llama-cpp.sh: build $tool first (scripts/demo.sh builds it)" >&2; exit 1; }
done

source "$root/bench/venv.sh"
bench_venv "$venv" "import torch, transformers, sentencepiece, safetensors, yaml, tqdm, requests" \
  torch numpy transformers sentencepiece safetensors pyyaml tqdm requests
py="$venv/bin/python"

src="$work/llama_cpp_python-$version/vendor/llama.cpp"
if [[ ! -f "$src/CMakeLists.txt" ]]; then
  mkdir -p "$work"
  "$venv/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
  tar xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
fi
# The system's default compiler (GCC on Debian, with its OpenMP, which ggml
# uses for its threads when it finds it), as llama.cpp users build it.
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
ninja -C "$work/build" llama-bench llama-quantize >/dev/null
bin="$work/build/bin"

model="$work/mixtral"
[[ -f "$model/model.safetensors" ]] || "$py" "$root/bench/llama_cpp_peer.py" write-model "$model"
if [[ ! -f "$work/mixtral-f32.gguf" ]]; then
  PYTHONPATH="$src/gguf-py" "$py" "$src/convert_hf_to_gguf.py" "$model" \
    --outtype f32 --outfile "$work/mixtral-f32.gguf" >/dev/null 2>&1
fi
for q in Q8_0 Q4_0; do
  [[ -f "$work/mixtral-$q.gguf" ]] ||
    "$bin/llama-quantize" "$work/mixtral-f32.gguf" "$work/mixtral-$q.gguf" "$q" >/dev/null 2>&1
done
cache_len=$(( prompt > gen ? prompt : gen ))
compile() { # name optimize-options (always: the artifacts follow this ds)
  "$build/bin/ds-compile" "$model" --optimize "$2" --max-cache-len "$cache_len" \
    -o "$work/mixtral-$1.dsa" >/dev/null
}
compile f32 ""
compile int8 "quantize=int8"
compile int4 "quantize=int4 group-size=32"
compile w8a8 "quantize=w8a8"
compile w4a8 "quantize=w4a8 group-size=32"

# shellcheck disable=SC2086
"$py" "$root/bench/llama_cpp_peer.py" compare \
  --llama-bench "$bin/llama-bench" --ds-bench "$build/bin/ds-bench" \
  --threads $threads --runs "$runs" --prompt "$prompt" --gen "$gen" \
  --pair "f32 vs F32" "$work/mixtral-f32.gguf" "$work/mixtral-f32.dsa" \
  --pair "int8 vs Q8_0" "$work/mixtral-Q8_0.gguf" "$work/mixtral-int8.dsa" \
  --pair "int4 g32 vs Q4_0" "$work/mixtral-Q4_0.gguf" "$work/mixtral-int4.dsa" \
  --pair "w8a8 vs Q8_0" "$work/mixtral-Q8_0.gguf" "$work/mixtral-w8a8.dsa" \
  --pair "w4a8 g32 vs Q4_0" "$work/mixtral-Q4_0.gguf" "$work/mixtral-w4a8.dsa"
