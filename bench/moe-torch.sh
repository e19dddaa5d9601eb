#!/usr/bin/env bash
# The MoE layer's PyTorch peer for ds-bench section 1: creates a virtual
# environment with PyTorch from PyPI (benchmark-only; nothing at run time
# needs Python) in $DS_BENCH_VENV (default build/bench-venv), then runs
# ../shared/baselines/moe_torch.py, the layer ds-bench times (same math:
# hidden 1024, 8 experts top-2 softmax renormalized + a shared expert,
# SwiGLU 1408, f32), with 1 thread and with every core.
#   bench/moe-torch.sh [moe_torch.py options]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DS_BENCH_VENV:-$root/build/bench-venv}"
script="${DS_MOE_TORCH:-$root/../shared/baselines/moe_torch.py}"
source "$root/bench/venv.sh"
bench_venv "$venv" "import torch, numpy" torch numpy
[[ -f "$script" ]] || { echo "moe-torch.sh: $script not found" >&2; exit 1; }
exec "$venv/bin/python" "$script" "$@"
