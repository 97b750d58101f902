"""benchmarks/gpu_rehearsal.sh, run before any GPU call, passes: the GPU image's software (Python 3.12, jax 0.11.2)
with the carried wheels runs gpu_check's dry run and a tiny run of each robot family. Slow (about 20 minutes) and
needs pip's network the first time (it builds .rehearsal/venv)."""

import os
import subprocess

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_the_gpu_rehearsal_passes_every_step(tmp_path):
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "benchmarks", "gpu_rehearsal.sh"), str(tmp_path / "out")],
        check=False,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (tmp_path / "out" / "rehearsal.md").read_text().splitlines()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in table if line.startswith("| ")}
    for step in ["gpu_check", "point_u_maze", "ant_big_maze", "humanoid_u_maze", "arm_push_easy"]:
        assert rows[step][0] == "0", (step, rows[step])
    assert "none failed" in rows["gpu_check"][2]
    assert "render.html" in rows["ant_big_maze"][2] and "score" in rows["arm_push_easy"][2]
    assert "jax 0.11.2" in table[-1] and "python 3.12" in table[-1]
