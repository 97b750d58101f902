"""Every lab of docs/course runs as written, at a cut-down size: each ```bash block of a lab page is run by bash in a
scratch folder, with `python` a shell function that appends small sizes to every training command (the last of a
flag wins), so a lab never breaks silently. Labs 1 and 2 run in the default suite (half a minute each); the
others, over a minute each or compiling a brax robot or making an OGBench dataset, are `slow`."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
from conftest import ROOT

COURSE = pathlib.Path(ROOT, "docs", "course")
SMALL = "--num-envs 8 --num-eval-envs 8 --unroll-length 10 --batch-size 16 --num-sgd-batches-per-training-step 2"
SMALL += " --episode-length 40 --min-replay-size 40 --max-replay-size 100 --width 16 --scan-unroll 1"
TRAIN = f"{SMALL} --total-env-steps 1000 --num-epochs 2"
PY = sys.executable  # the interpreter running the tests, whatever `python` is on PATH
SHIM = f"""
python() {{
  local script=$1
  case "$script" in
    *crl_resnet.py|*crl_mlp.py|*sac_her.py|*gcbc.py|*eval_stitching.py)
      if [[ " $* " == *" --evaluate "* ]]; then {PY} "$@" --num-eval-envs 8
      else {PY} "$@" {TRAIN}; fi ;;
    *crl_offline.py) {PY} "$@" --total-gradient-steps 40 --num-epochs 2 --num-eval-episodes 1 --width 16 ;;
    *random_policy.py) {PY} "$@" --seeds 1 --num-eval-envs 8 ;;
    *) {PY} "$@" ;;
  esac
}}
export -f python  # scripts a lab runs (tools/offline_depth_sweep.sh) get the small sizes too
set -euo pipefail
"""
SLOW = {"lab3_residual.md", "lab5_stitching.md"}  # over a minute each at this size
SLOW |= {"lab4_depth.md", "lab6_robot.md", "lab7_offline.md", "lab8_paper_scale.md"}  # brax robots, OGBench data


def blocks(page):
    return re.findall(r"```bash\n(.*?)```", page.read_text(), re.DOTALL)


def labs():
    return [
        pytest.param(p.name, marks=pytest.mark.slow) if p.name in SLOW else p.name
        for p in sorted(COURSE.glob("lab*.md"))
    ]


@pytest.mark.parametrize("lab", labs())
def test_the_lab_runs_as_written_at_a_small_size(lab, tmp_path):
    for name in ["crl_resnet.py", "crl_mlp.py", "sac_her.py", "gcbc.py", "eval_stitching.py", "crl_offline.py"]:
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    for folder in ["tools", "tests", "benchmarks"]:
        os.symlink(os.path.join(ROOT, folder), tmp_path / folder)
    code = blocks(COURSE / lab)
    assert code, f"{lab} has no bash block"
    script = SHIM + "\n".join(code).replace("\\\n", "")
    script = script.replace("python -m pytest", f"{PY} -m pytest -p no:cacheprovider -n 0")
    # lab 2 grades a student's copy: here the answers are the original's bodies
    script = re.sub(r"(python tools/make_exercise.py .*\n)", r"\1cp crl_resnet.py exercises/crl_resnet.py\n", script)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    assert result.returncode == 0, f"{lab}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
