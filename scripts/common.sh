#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh and scripts/test.sh: installs the Debian
# packages ds needs (only those missing), then configures and builds ds with
# clang-22 + lld + ccache into $DS_BUILD_DIR (default: build/).
#
# Environment:
#   DS_BUILD_DIR   build directory (default <repo>/build)
#   DS_SANITIZE=1  build with ASan + UBSan (default build dir build-asan/)
#   DS_JOBS        parallel build jobs (default: nproc)
set -euo pipefail

DS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${DS_SANITIZE:-0}" == 1 ]]; then
  DS_BUILD_DIR="${DS_BUILD_DIR:-$DS_ROOT/build-asan}"
  # ds is instrumented but Debian's libMLIR/libLLVM are not: LLVM's inline
  # BumpPtrAllocator code poisons arena memory in our objects that the
  # uninstrumented library then touches. Manual poisoning is switched off so
  # that only real errors in ds code are reported.
  export ASAN_OPTIONS="${ASAN_OPTIONS:-allow_user_poisoning=0}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
else
  DS_BUILD_DIR="${DS_BUILD_DIR:-$DS_ROOT/build}"
fi
DS_JOBS="${DS_JOBS:-$(nproc)}"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
# Paths under the checkout are hashed relative to it, so that a clone in
# another folder (CI's) hits the cache a previous build filled.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$DS_ROOT}"

DS_APT_PACKAGES=(
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools clang-22 lld-22
  clang-format-22 libclang-rt-22-dev cmake ninja-build ccache libgtest-dev libabsl-dev
  libdnnl-dev
  nlohmann-json3-dev git openmpi-bin libopenmpi-dev
  libpcre2-dev libutf8proc-dev pkg-config
  python3 python3-numpy python3-venv
)

ds_log() { printf '== %s\n' "$*" >&2; }

ds_install_packages() {
  local missing=()
  for p in "${DS_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  ds_log "installing: ${missing[*]}"
  local sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q -o DPkg::Lock::Timeout=900 "${missing[@]}"
}

ds_configure() {
  local san=OFF
  [[ "${DS_SANITIZE:-0}" == 1 ]] && san=ON
  if [[ ! -f "$DS_BUILD_DIR/build.ninja" ]]; then
    ds_log "configuring $DS_BUILD_DIR"
  fi
  cmake -S "$DS_ROOT" -B "$DS_BUILD_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    -DLLVM_USE_LINKER=lld \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit \
    -DDS_ENABLE_SANITIZERS="$san" "$@" >/dev/null
}

ds_build() {
  ds_log "building ($DS_JOBS jobs)"
  cmake --build "$DS_BUILD_DIR" -j "$DS_JOBS"
}

ds_setup() {
  ds_install_packages
  ds_configure "$@"
  ds_build
}
