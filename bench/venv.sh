# Sourced by the benchmark scripts: the virtual environment they share
# ($DS_BENCH_VENV, default build/bench-venv) with the PyPI packages each
# needs. Benchmark-only; nothing at run time needs Python.
#
#   bench_venv DIR "import a, b" PACKAGE...
#     creates DIR if it is missing, then installs PACKAGE... unless the
#     import already works there.
bench_venv() {
  local venv=$1 check=$2
  shift 2
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
  fi
  "$venv/bin/python" -c "$check" 2>/dev/null || "$venv/bin/pip" install -q "$@"
}
