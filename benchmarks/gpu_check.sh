#!/usr/bin/env bash
# benchmarks/gpu_check.py on a bare CUDA-JAX machine (jax, flax, optax there; brax, mujoco, mujoco-mjx, tyro not):
#   bash benchmarks/gpu_check.sh OUT [gpu_check.py flags]
# installs the Python 3.12 wheels in .whl/ (benchmarks/gpu_wheels.sh downloads them) into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check_out}"
shift || true
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p "$out"
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
