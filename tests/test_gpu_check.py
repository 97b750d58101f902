"""benchmarks/gpu_check.py, the prepared GPU run, keeps working: its --dry-run runs the stages at tiny sizes, a stage
that overruns its limit is stopped and the next one runs, and gpu_check.sh refuses what cannot measure a GPU."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, run_script


def dry_run(out, *stages, limit="humanoid-64=1"):
    command = ["--dry-run", "--out", str(out), "--stages", *stages, "--limit", limit]
    result = run_script(os.path.join("benchmarks", "gpu_check.py"), *command)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in (out / "gpu_check.jsonl").read_text().splitlines()]


@pytest.mark.long
def test_gpu_check_dry_run_stops_a_stage_that_overruns_its_limit_and_goes_on(tmp_path):
    """humanoid-64 gets a 1-second limit, which its compile overruns: it is stopped, the next stage runs."""
    rows = dry_run(tmp_path / "out", "devices", "humanoid-64", "ant-1024")
    checks = [row["check"] for row in rows]
    assert checks[0] == "devices" and rows[0]["jax"] and rows[0]["mujoco-mjx"]
    stopped = [row for row in rows if "stopped_after_s" in row]
    assert [row["check"] for row in stopped] == ["humanoid-64"] and stopped[0]["reason"] == "stage limit 1 s"
    assert checks.index("humanoid-64") < checks.index("epoch point_u_maze depth 8/4"), "the next stage ran after it"
    assert not [row for row in rows if "error" in row or "skipped" in row], rows
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert table.count("\n") == len(rows) + 2, "the table has a row per result"


@pytest.mark.slow
def test_gpu_check_dry_run_runs_each_stages_code_path(tmp_path):
    """Each stage's code path once (arm-solver, an MJX compile of minutes here, runs in benchmarks/gpu_rehearsal.sh)."""
    stages = ["devices", "ant-4", "humanoid-64", "ant-1024", "humanoid-4", "resets", "scan-unroll", "bfloat16"]
    rows = dry_run(tmp_path / "out", *stages)
    checks = [row["check"] for row in rows]
    assert not [row for row in rows if "error" in row or "skipped" in row], rows
    epochs = [row for row in rows if row["check"].startswith("epoch ")]
    assert len(epochs) == 5 and all(row["env_steps_per_s"] > 0 for row in epochs)
    assert all(row["conditionals"] == 0 and row["unknown_trip_whiles"] == 0 for row in epochs)
    for variant in ["depth 8/4", "--scan-unroll 4", "--compute-dtype bfloat16"]:
        assert any(variant in row["check"] for row in epochs), variant
    assert any(c.startswith("critic logits") for c in checks) and any(c.startswith("checkpoint (") for c in checks)
    assert sum(c.startswith("resets ") for c in checks) == 2


def test_gpu_check_on_a_machine_without_a_gpu_says_so_in_one_line_and_fails(tmp_path):
    command = ["--out", str(tmp_path), "--stages", "devices", "ant-4"]
    result = run_script(os.path.join("benchmarks", "gpu_check.py"), *command, timeout=300)
    assert result.returncode == 1
    assert "gpu_check: JAX runs on cpu, not a GPU" in result.stdout
    assert [json.loads(line)["check"] for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()] == [
        "devices"
    ]


def shell_check(tmp_path, python_dir, *flags):
    """benchmarks/gpu_check.sh run from a copy of the repo without .whl/, with `python3` from python_dir."""
    shutil.copytree(os.path.join(ROOT, "benchmarks"), tmp_path / "repo" / "benchmarks")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{python_dir}:/usr/bin:/bin"
    script = tmp_path / "repo" / "benchmarks" / "gpu_check.sh"
    command = ["bash", script, str(tmp_path / "out"), *flags]
    return subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)


def test_gpu_check_sh_without_wheels_for_missing_imports_says_what_to_carry(tmp_path):
    bare = tmp_path / "bare"  # a python3 that has none of brax, mujoco-mjx, tyro (the GPU image's situation)
    bare.mkdir()
    os.symlink(getattr(sys, "_base_executable", sys.executable), bare / "python3")
    if subprocess.run([bare / "python3", "-c", "import brax"], check=False, capture_output=True).returncode == 0:
        pytest.skip("the base interpreter has brax installed")
    result = shell_check(tmp_path, bare)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines() == [
        (
            "gpu_check.sh: brax, mujoco-mjx, tyro or jinja2 is missing and .whl/ is absent: run "
            "benchmarks/gpu_wheels.sh where pip has network and copy .whl/ here"
        )
    ]


def test_gpu_check_sh_refuses_a_machine_where_jax_has_no_gpu(tmp_path):
    result = shell_check(tmp_path, os.path.dirname(sys.executable))
    assert result.returncode == 1
    assert result.stdout.strip().splitlines() == [
        "gpu_check.sh: JAX runs on cpu here, not a GPU (is its CUDA plugin installed?); --dry-run rehearses on a CPU"
    ]
    assert not (tmp_path / "out").exists(), "nothing ran"
