#!/usr/bin/env bash
# Run this before any call on the GPU machine: it rehearses benchmarks/gpu_check.sh on this CPU against that
# machine's software, so that the GPU's minutes are not spent on an import or compile error.
#   bash benchmarks/gpu_rehearsal.sh [OUT]        # about 20 minutes on 2 CPU cores; needs pip's network once
# 1. builds .rehearsal/venv: Python 3.12 ($PYTHON312, python3.12 or pyenv's) with what the GPU image holds and
#    nothing else: jax and jaxlib 0.11.2 (the CPU build here), numpy 2.5.2, flax, optax, orbax-checkpoint, chex,
#    tqdm and matplotlib at the versions pip resolves with them;
# 2. fills .whl/ with benchmarks/gpu_wheels.sh if it is empty, then runs `gpu_check.sh OUT/check --dry-run`,
#    which installs the wheels with --no-deps into .rehearsal/site exactly as on the GPU machine;
# 3. trains one tiny crl_resnet.py run of each robot family (point, ant with --render, humanoid, arm) in it.
# Ends with a table of every step (OUT/rehearsal.md) and exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-.rehearsal/out}")
root=$PWD
python312=""
for candidate in ${PYTHON312:-} python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do # the first that runs
  if "$candidate" -c "import sys; assert sys.version_info[:2] == (3, 12)" 2>/dev/null; then
    python312=$candidate
    break
  fi
done
[ -n "$python312" ] || { echo "gpu_rehearsal.sh: no Python 3.12 found (set PYTHON312)"; exit 1; }
image="jax==0.11.2 jaxlib==0.11.2 numpy==2.5.2 flax optax orbax-checkpoint chex tqdm matplotlib"
venv=.rehearsal/venv
if [ "$(cat $venv/image 2>/dev/null)" != "$image" ]; then
  rm -rf $venv .rehearsal/site
  "$python312" -m venv $venv && $venv/bin/python -m pip install -q $image || { echo "gpu_rehearsal.sh: venv failed"; exit 1; }
  echo "$image" >$venv/image
fi
compgen -G ".whl/*.whl" >/dev/null || bash benchmarks/gpu_wheels.sh >/dev/null || { echo "gpu_rehearsal.sh: .whl failed"; exit 1; }
rm -rf "$out" && mkdir -p "$out/runs"
export PATH=$root/$venv/bin:$PATH PYTHONNOUSERSITE=1 GPU_CHECK_SITE=$root/.rehearsal/site
unset PYTHONPATH
results=()
step() { # name, command...: runs it, logs it to OUT/NAME.log, records its exit code and time
  local name=$1 start=$SECONDS
  shift
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  results+=("$name|$rc|$((SECONDS - start))")
  echo "$name: exit $rc in $((SECONDS - start)) s (log: $out/$name.log)"
}
step gpu_check bash benchmarks/gpu_check.sh "$out/check" --dry-run
export PYTHONPATH=$GPU_CHECK_SITE # what gpu_check.sh installed, as on the GPU machine
tiny="--num-envs 8 --num-eval-envs 8 --episode-length 100 --total-env-steps 1600 --num-epochs 1 --unroll-length 50"
tiny+=" --batch-size 32 --num-sgd-batches-per-training-step 2 --max-replay-size 300 --min-replay-size 100 --width 16"
cd "$out/runs"
for run in "point_u_maze" "ant_big_maze --render" "humanoid_u_maze" "arm_push_easy"; do
  # shellcheck disable=SC2086 # the flags are words
  step "${run%% *}" python3 "$root/crl_resnet.py" --env-id $run $tiny --exp-name rehearsal
done
cd "$root"
python3 - "$out" "${results[@]}" <<'PY'
import glob, json, os, sys

out, rows = sys.argv[1], [r.split("|") for r in sys.argv[2:]]
jsonl = os.path.join(out, "check", "gpu_check.jsonl")
checks = [json.loads(line) for line in open(jsonl)] if os.path.exists(jsonl) else []
bad = [c["check"] for c in checks if {"error", "skipped", "stopped_after_s"} & set(c)]
lines = ["| step | exit code | s | result |", "|---|---|---|---|"]
for name, rc, seconds in rows:
    if name == "gpu_check":
        result = f"{len(checks)} rows, " + (f"failed: {', '.join(bad)}" if bad else "none failed")
    else:
        run = (glob.glob(os.path.join(out, "runs", "runs", f"{name}__rehearsal__*")) + [""])[0]
        summary = os.path.join(run, "summary.json")
        result = "no summary.json"
        if os.path.exists(summary):
            with open(summary) as f:
                result = ", ".join(f"{k} {v}" for k, v in json.load(f).items() if k in ("env_steps", "score", "success"))
        if os.path.exists(os.path.join(run, "render.html")):
            result += ", render.html"
    lines.append(f"| {name} | {rc} | {seconds} | {result} |")
devices = next((c for c in checks if c["check"] == "devices"), {})
names = ["python", "jax", "jaxlib", "flax", "optax", "numpy", "brax", "mujoco", "mujoco-mjx", "tyro"]
lines += ["", "versions: " + ", ".join(f"{k} {devices[k]}" for k in names if k in devices)]
with open(os.path.join(out, "rehearsal.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if bad or any(rc != "0" for _, rc, _ in rows) else 0)
PY
