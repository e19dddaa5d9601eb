#!/usr/bin/env bash
# Set everything up and run every test suite:
#   1. lit + FileCheck suites (test/lit) and GoogleTest binaries (as lit tests),
#   2. the runtime configured, built and tested with DS_BUILD_COMPILER=OFF,
#   3. the runtime built with ASan + UBSan, its tests run on compiled
#      artifacts (AVX-512 and AVX2 paths), and built with TSan, its batcher,
#      session and C API tests run on a compiled artifact,
#   4. install + an out-of-tree plugin built with find_package(DS) and loaded
#      into the installed ds-opt.
# Ends with one line "N passed, N failed". DS_SANITIZE=1 runs it all under
# ASan + UBSan (in build-asan/).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
set +e
ds_setup || { echo "tests: 0 passed, 1 failed"; exit 1; }

passed=0
failed=0
count_lit() { # $1: lit output file
  local p f
  p=$(grep -Eo '^ *Passed *: *[0-9]+' "$1" | grep -Eo '[0-9]+' | tail -1)
  f=$(grep -Eo '^ *(Failed|Unresolved|Timed Out|Unexpectedly Passed) *: *[0-9]+' "$1" |
    grep -Eo '[0-9]+$' | awk '{s += $1} END {print s + 0}')
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
}
step() { # name, command...: one pass/fail entry
  local name=$1
  shift
  ds_log "$name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $name"
  fi
}

# Test-only Python packages from PyPI (nothing at run time needs Python):
# `tokenizers` and `transformers` (with jinja2), the references of the
# tokenizer's and the chat templates' exactness tests.
test_venv() {
  local venv="$DS_BUILD_DIR/test-venv"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv" || return 1
  "$venv/bin/python" -c "import tokenizers, transformers, jinja2" 2>/dev/null ||
    "$venv/bin/pip" install -q "tokenizers==0.23.3" "transformers==5.25.0" \
      "jinja2==3.1.6"
}
step "test virtual environment (tokenizers, transformers from PyPI)" test_venv

log=$(mktemp)
ds_log "lit suites"
/usr/lib/llvm-22/bin/lit -sv "$DS_BUILD_DIR/test/lit" "$DS_BUILD_DIR/test/unit" | tee "$log"
count_lit "$log"

runtime_only() {
  local dir="$DS_BUILD_DIR/runtime-only"
  cmake -S "$DS_ROOT" -B "$dir" -G Ninja -DDS_BUILD_COMPILER=OFF \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_INSTALL_PREFIX="$dir/install" >/dev/null &&
    cmake --build "$dir" -j "$DS_JOBS" >/dev/null &&
    # Nothing of LLVM/MLIR was looked for, and nothing links it.
    ! grep -qE '^(MLIR_DIR|LLVM_DIR):' "$dir/CMakeCache.txt" &&
    ! ldd "$dir/lib/libds_runtime.so" | grep -qiE 'libMLIR|libLLVM' &&
    ctest --test-dir "$dir" --output-on-failure
}
step "runtime builds and passes with DS_BUILD_COMPILER=OFF" runtime_only

# A runtime-only build with a sanitizer ($1: its name and build folder,
# $2: its CMake option), then an artifact of a tiny DeepSeek-V3 (int8) for
# the tests that need a compiled model. Prints the artifact folder.
sanitized_runtime() {
  local dir="$DS_BUILD_DIR/runtime-$1" art="$DS_BUILD_DIR/runtime-$1/art"
  cmake -S "$DS_ROOT" -B "$dir" -G Ninja -DDS_BUILD_COMPILER=OFF "-D$2=ON" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null &&
    cmake --build "$dir" -j "$DS_JOBS" --target ds-runtime-tests >/dev/null &&
    rm -rf "$art" && mkdir -p "$art" &&
    "$DS_BUILD_DIR/bin/ds-make-tiny-model" --arch deepseek_v3 --out "$art/m" \
      --seed 3 --init-std 0.02 >/dev/null &&
    "$DS_BUILD_DIR/bin/ds-compile" "$art/m" --optimize "quantize=int8" \
      --max-cache-len 32 -o "$art/m.dsa" >/dev/null
}

# The runtime built with ASan + UBSan (runtime-only, so it costs minutes,
# not a second compiler build) runs its unit tests, then the batcher,
# session and GEMM tests on a compiled artifact, on the AVX-512 path (where
# the CPU has it) and with the AVX2 kernels forced (on f16 KV caches): batch
# invariance must hold bit for bit whatever the compiler's instrumentation
# does to the code.
runtime_sanitized() {
  local dir="$DS_BUILD_DIR/runtime-asan" art="$DS_BUILD_DIR/runtime-asan/art"
  local env=(ASAN_OPTIONS="${ASAN_OPTIONS:-allow_user_poisoning=0}"
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}")
  sanitized_runtime asan DS_ENABLE_SANITIZERS &&
    DS_CPU_AVX2=1 "$DS_BUILD_DIR/bin/ds-compile" "$art/m" \
      --optimize "quantize=int8 kv-cache=f16" \
      --max-cache-len 32 -o "$art/avx2.dsa" >/dev/null &&
    env "${env[@]}" DS_TEST_ARTIFACT="$art/m.dsa" \
      "$dir/unittests/ds-runtime-tests" --gtest_brief=1 &&
    env "${env[@]}" DS_CPU_AVX2=1 DS_TEST_ARTIFACT="$art/avx2.dsa" \
      "$dir/unittests/ds-runtime-tests" --gtest_brief=1 \
      --gtest_filter="Session*:Gemm*:Batcher*"
}

# The runtime built with ThreadSanitizer: the batcher's stress tests
# (64 submitter threads, cancellation of 100 of 1000 requests, streaming),
# sessions split over worker threads and the C API, on a compiled artifact.
runtime_tsan() {
  local dir="$DS_BUILD_DIR/runtime-tsan" art="$DS_BUILD_DIR/runtime-tsan/art"
  sanitized_runtime tsan DS_ENABLE_TSAN &&
    env TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1}" \
      DS_TEST_ARTIFACT="$art/m.dsa" "$dir/unittests/ds-runtime-tests" \
      --gtest_brief=1 --gtest_filter="Batcher*:Session*:CApi*:ThreadPool*:MoEExperts*"
}

if [[ "${DS_SANITIZE:-0}" != 1 ]]; then
  step "runtime under ASan + UBSan: unit tests, batch invariance on AVX-512 and AVX2" runtime_sanitized
  step "runtime under ThreadSanitizer: batcher, cancellation, sessions, C API" runtime_tsan
fi

out_of_tree_plugin() {
  local prefix="$DS_BUILD_DIR/install" pdir="$DS_BUILD_DIR/plugin-out-of-tree"
  cmake --install "$DS_BUILD_DIR" --prefix "$prefix" >/dev/null &&
    cmake -S "$DS_ROOT/examples/plugin" -B "$pdir" -G Ninja \
      -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
      -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_PREFIX_PATH="$prefix" >/dev/null &&
    cmake --build "$pdir" >/dev/null &&
    "$prefix/bin/ds-opt" --load-pass-plugin="$pdir/DSExamplePlugin.so" \
      --pass-pipeline='builtin.module(ds-example-report-moe)' \
      "$DS_ROOT/test/lit/examples/mixtral_layer.mlir" -o /dev/null 2>&1 |
    grep -q "routes 2 of 8 experts (softmax)"
}
step "out-of-tree plugin builds against the installed package" out_of_tree_plugin

rm -f "$log"
echo
echo "tests: $passed passed, $failed failed"
[[ $failed == 0 ]]
