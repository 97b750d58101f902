"""sac_her.py and gcbc.py end to end: bad input, a tiny run that renders, logs offline and resumes, learning."""

import importlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import flax.serialization
import jax
import numpy as np
import pytest
from conftest import ROOT, popen, run_script
from test_cli import check_in_process
from test_training import random_policy_success

SIBLINGS = ["sac_her.py", "gcbc.py"]
TINY = ["--env-id", "point_u_maze", "--num-envs", "16", "--num-eval-envs", "16", "--total-env-steps", "24000"]
TINY += ["--num-epochs", "3", "--unroll-length", "50", "--batch-size", "64", "--num-sgd-batches-per-training-step"]
TINY += ["4", "--max-replay-size", "400", "--min-replay-size", "100", "--width", "32"]


def start(script, *flags, cwd):
    command = [sys.executable, os.path.join(ROOT, script), *flags]
    return popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def one_line_error(script, *flags):
    result = run_script(script, *flags, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


BAD = {
    "sac_her.py": [
        (["--relabel-ratio", "1.5"], "--relabel-ratio must be in [0, 1]"),
        (["--tau", "0"], "--tau must be in (0, 1]"),
        (["--critic-num-blocks", "0"], "--critic-num-blocks must be >= 1"),
        (["--alpha-lr", "0"], "--alpha-lr must be > 0"),
    ],
    "gcbc.py": [(["--actor-lr", "0"], "--actor-lr must be > 0")],
}
SHARED_BAD = [
    (["--env-id", "nope"], "--env-id 'nope' is unknown"),
    (["--num-blocks", "0"], "--num-blocks must be >= 1"),
    (["--batch-size", "100000"], "--batch-size must be <= the 1600 transitions sampled per training step"),
    (["--min-replay-size", "500"], "--min-replay-size must be <= --max-replay-size, got 500"),
    (["--resume", "runs/does_not_exist"], "--resume runs/does_not_exist is not a run directory"),
]


@pytest.mark.parametrize("script", SIBLINGS)
def test_bad_input_is_a_one_line_error(script, capsys, monkeypatch):
    module = importlib.import_module(script.removesuffix(".py"))
    for flags, phrase in SHARED_BAD + BAD[script]:
        line = check_in_process(module, [*TINY, *flags], capsys, monkeypatch)
        assert line is not None and phrase in line, line
    assert phrase in one_line_error(script, *TINY, *flags), "and through the script's entry point"


def tiny_run(script, tmp_path):
    """A 3-epoch run; checks what it wrote and returns its directory (rendering and wandb are RUN PLUMBING, the
    same in every script: tests/test_training.py runs them)."""
    (tmp_path / "a").mkdir()
    full = start(script, *TINY, cwd=tmp_path / "a")
    err = full.communicate(timeout=600)[1]
    assert full.returncode == 0, err
    [run_a] = list((tmp_path / "a" / "runs").iterdir())
    assert run_a.name.startswith(f"point_u_maze__{script[:-3]}__1__")
    logged = [json.loads(line) for line in (run_a / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in logged] == [1, 2, 3]
    keys = ["training/sps", "training/env_steps", "training/walltime", "losses/actor_loss", "eval/success"]
    keys += ["eval/time_near_goal", "eval/dist_to_goal"]
    keys += ["losses/critic_loss", "losses/alpha"] if script == "sac_her.py" else []
    for m in logged:
        assert all(np.isfinite(m[k]) for k in keys), m
    assert {p.name for p in run_a.glob("*.msgpack")} == {"checkpoint_best.msgpack", "final.msgpack"}
    assert sorted(importlib.import_module(script.removesuffix(".py")).checkpoint_epochs(str(run_a))) == [2, 3], (
        "the last two epochs' checkpoints"
    )
    saved = flax.serialization.msgpack_restore((run_a / "final.msgpack").read_bytes())
    assert set(saved) == ({"actor", "critic"} if script == "sac_her.py" else {"actor"})
    return run_a


@pytest.mark.long
@pytest.mark.parametrize("script", SIBLINGS)
def test_tiny_run_writes_metrics_and_checkpoints_and_is_evaluated_again(script, tmp_path, monkeypatch):
    run_a = tiny_run(script, tmp_path)
    module = importlib.import_module(script.removesuffix(".py"))
    for checkpoint in ["last"]:  # the shared --evaluate path, reading this script's own runner state
        argv = [script, "--evaluate", str(run_a), "--checkpoint", checkpoint, "--num-eval-envs", "8"]
        monkeypatch.setattr(sys, "argv", argv)
        module.main()
        saved = json.loads((run_a / f"evaluation__point_u_maze_eval__{checkpoint}.json").read_text())
        assert saved["episodes_per_seed"] == 8 and 0 <= saved["metrics"]["eval/success"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("script", SIBLINGS)
def test_killed_run_resumes_to_the_same_parameters(script, tmp_path):
    """crl_resnet.py's resume test (default suite) covers the shared MAIN; this checks each RunnerState round-trips."""
    run_a = tiny_run(script, tmp_path)
    (tmp_path / "b").mkdir()
    killed = start(script, *TINY, cwd=tmp_path / "b")
    run_b = None
    deadline = time.time() + 300
    while killed.poll() is None:  # kill it as soon as the first epoch is checkpointed
        assert time.time() < deadline, "no checkpoint within 5 minutes"
        runs = list((tmp_path / "b" / "runs").glob("*")) if (tmp_path / "b" / "runs").exists() else []
        if runs and importlib.import_module(script.removesuffix(".py")).checkpoint_epochs(str(runs[0])):
            run_b = runs[0]
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    killed.communicate(timeout=300)
    assert run_b is not None and killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = start(script, "--resume", str(run_b), cwd=tmp_path / "b")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resumed" in out, err
    a, b = [flax.serialization.msgpack_restore((run / "final.msgpack").read_bytes()) for run in (run_a, run_b)]
    jax.tree.map(np.testing.assert_array_equal, a, b)


LEARN = ["--env-id", "point_u_maze", "--num-envs", "256", "--num-eval-envs", "256", "--batch-size", "256"]
LEARN += ["--unroll-length", "100", "--num-sgd-batches-per-training-step", "50", "--max-replay-size", "4000"]
LEARN += ["--min-replay-size", "100", "--width", "64", "--num-blocks", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("script,budget,target", [("sac_her.py", 5_000_000, 0.4), ("gcbc.py", 5_000_000, 0.25)])
def test_baseline_learns_point_u_maze_above_random(script, budget, target, tmp_path):
    """The CRL learning test's configuration and budget (tests/test_training.py), for each baseline."""
    flags = LEARN + ["--total-env-steps", str(budget), "--num-epochs", "6", "--seed", "2"]
    flags += ["--eval-env-id", "point_u_maze"]  # every goal cell: the far ones alone are too hard at this budget
    result = run_script(script, *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [run] = list((tmp_path / "runs").iterdir())
    metrics = [json.loads(line) for line in pathlib.Path(run, "metrics.jsonl").read_text().splitlines()]
    trained = max(m["eval/success"] for m in metrics[-3:])
    random = random_policy_success("point_u_maze")
    print(
        f"\n{script} point_u_maze eval/success: random {random:.3f}, curve {[round(m['eval/success'], 2) for m in metrics]}"
    )
    assert trained >= target and trained > random + 0.2
