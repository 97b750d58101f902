"""benchmarks/gpu_check.py, the prepared GPU run, keeps working: its --dry-run runs every check at tiny sizes."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_gpu_check_dry_run_runs_every_check_and_writes_its_results(tmp_path):
    out = tmp_path / "out"
    script = os.path.join(ROOT, "benchmarks", "gpu_check.py")
    result = subprocess.run(
        [sys.executable, script, "--dry-run", "--out", str(out), "--budget-s", "3600"],  # a slow machine skips none
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "gpu_check.jsonl").read_text().splitlines()]
    checks = [row["check"] for row in rows]
    assert checks[0] == "devices" and rows[0]["jax"]
    assert not [row for row in rows if "error" in row or "skipped" in row], rows
    epochs = [row for row in rows if row["check"].startswith("epoch ")]
    assert len(epochs) == 6 and all(row["conditionals"] == 0 and row["env_steps_per_s"] > 0 for row in epochs)
    for variant in ["depth 8/4", "--scan-unroll 4", "--compute-dtype bfloat16", "--num-seeds 2"]:
        assert any(variant in row["check"] for row in epochs), variant
    assert any(c.startswith("critic logits") for c in checks) and any(c.startswith("checkpoint_last") for c in checks)
    assert sum(c.startswith("resets ") for c in checks) == 2
    table = (out / "gpu_check.md").read_text()
    assert table.count("\n") == len(rows) + 2, "the table has a row per result"
