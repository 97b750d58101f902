#!/usr/bin/env bash
# benchmarks/gpu_check.py on a bare CUDA-JAX machine without network (jax, flax, optax there; brax, mujoco,
# mujoco-mjx, tyro, jinja2 not): copy the repo there with .whl/ (benchmarks/gpu_wheels.sh fills it), then
#   bash benchmarks/gpu_check.sh OUT [gpu_check.py flags]
# installs .whl/ into $GPU_CHECK_SITE (default /tmp/site), refuses a machine where JAX has no GPU (unless --dry-run)
# and runs the check (at most 8 minutes): OUT/gpu_check.jsonl, OUT/gpu_check.md and OUT/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check_out}"
shift || true
site="${GPU_CHECK_SITE:-/tmp/site}"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! failed=$(python3 -c "import brax, jinja2, mujoco.mjx, tyro" 2>&1); then
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "gpu_check.sh: .whl/ is installed but an import still fails: $(tail -n 1 <<<"$failed")"
  else
    echo "gpu_check.sh: brax, mujoco-mjx, tyro or jinja2 is missing and .whl/ is absent: run benchmarks/gpu_wheels.sh where pip has network and copy .whl/ here"
  fi
  exit 1
fi
case " $* " in
*" --dry-run "*) ;;
*)
  platform=$(python3 -c "import jax; print(jax.default_backend())" 2>/dev/null) || platform="none (import jax failed)"
  if [ "$platform" != gpu ]; then
    echo "gpu_check.sh: JAX runs on $platform here, not a GPU (is its CUDA plugin installed?); --dry-run rehearses on a CPU"
    exit 1
  fi
  ;;
esac
mkdir -p "$out"
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
