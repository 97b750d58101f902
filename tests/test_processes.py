"""One run over several processes (jax.distributed on 127.0.0.1): the numbers of one process over the same devices,
process 0 alone writing the run's files, every process its shards of the checkpoints, stop signals agreed on, a dead
process named in one line by the others."""

import json
import signal
import socket
import subprocess
import sys
import time

import flax.serialization
import jax
import numpy as np
import pytest
from conftest import ROOT, popen, run_script
from test_cli import check_in_process
from test_scaling import trained_params

import crl_resnet as crl

FLAGS = ["--env-id", "point_u_maze", "--num-envs", "16", "--num-eval-envs", "16", "--num-seeds", "2"]
FLAGS += ["--total-env-steps", str(16 * 100 + 8 * 4 * 16 * 50), "--num-epochs", "8", "--unroll-length", "50"]
FLAGS += ["--batch-size", "32", "--num-sgd-batches-per-training-step", "4", "--max-replay-size", "400"]
FLAGS += ["--min-replay-size", "100", "--width", "32"]
ONE_DEVICE_EACH = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*flags, cwd, processes=2, before_main=""):
    """crl_resnet.py as `processes` processes on this machine, one CPU device each, process 0 the coordinator;
    before_main: Python run in each process after importing the script (as crl) and before main()."""
    cwd.mkdir(parents=True, exist_ok=True)
    where = ["--coordinator-address", f"127.0.0.1:{free_port()}", "--num-processes", str(processes)]
    env = {**{k: v for k, v in __import__("os").environ.items() if k != "PYTHONUNBUFFERED"}, **ONE_DEVICE_EACH}
    code = f"import sys\nsys.path.insert(0, {ROOT!r})\nimport crl_resnet as crl\n{before_main}\ncrl.main()"
    command = [sys.executable, "-c", code, *flags, *where]
    return [
        popen(
            [*command, "--process-id", str(i)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]


def finish(processes, timeout=300):
    outs = [p.communicate(timeout=timeout) for p in processes]
    for p, (out, err) in zip(processes, outs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


def epochs_logged(run_dir):
    path = run_dir / "metrics.jsonl"
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()] if path.exists() else []


def final_params(run_dir):
    return flax.serialization.msgpack_restore((run_dir / "final.msgpack").read_bytes())


def assert_close(a, b, rtol=1e-3, atol=1e-4):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def stopped_two_process_run(cwd):
    """The run of FLAGS on two processes, SIGTERMed at process 1 alone once process 0 has logged its first epoch:
    (process 0's output, the run directory, the epoch both stopped after)."""
    two = launch(*FLAGS, cwd=cwd)
    deadline = time.time() + 300
    while not list(cwd.glob("runs/*/metrics.jsonl")):  # process 0 has logged its first epoch
        assert all(p.poll() is None for p in two) and time.time() < deadline, "no epoch logged"
        time.sleep(0.005)
    two[1].send_signal(signal.SIGTERM)
    out, _ = finish(two)
    [run_dir] = (cwd / "runs").iterdir()
    return out, run_dir, epochs_logged(run_dir)[-1]


def flags_as_args():
    return crl.resolve_args(crl.tyro.cli(crl.Args, args=FLAGS))


def checkpoint_networks(run_dir, epoch):
    """The networks in run_dir's checkpoint of `epoch`, read here: one process, one device."""
    args = flags_as_args()
    init = crl.make_train(args, crl.GoalEnv(args.env_id, args.episode_length))[0]
    shapes = jax.eval_shape(jax.vmap(lambda s: init(jax.random.PRNGKey(s))), np.arange(2))
    return crl.checkpoint_params(crl.Checkpoints(str(run_dir)).read(epoch, shapes)[0])


@pytest.mark.long
def test_two_processes_train_what_one_device_trains_and_stop_together(tmp_path):
    """Two processes of one CPU device each, the data split over them. A SIGTERM to process 1 alone stops both
    after the same epoch k, its checkpoint whole (each process wrote its shards), and process 0 alone writes the run's
    files; the checkpoint, read here (one process, one device), holds the parameters of one device training both
    seeds for k epochs."""
    out, run_dir, k = stopped_two_process_run(tmp_path)
    assert 1 <= k < 8 and epochs_logged(run_dir) == list(range(1, k + 1)), epochs_logged(run_dir)
    assert (
        out.splitlines()[-1]
        == f"stopped by SIGTERM to process 1 after epoch {k}: continue with --resume runs/{run_dir.name}"
    )
    assert max(crl.checkpoint_epochs(str(run_dir))) == k
    shards = {p.name for p in (run_dir / "checkpoints" / str(k) / "state").iterdir() if p.name.startswith("ocdbt")}
    assert shards == {"ocdbt.process_0", "ocdbt.process_1"}, shards
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "args.json",
        "checkpoint_best.msgpack",
        "checkpoints",
        "metrics.jsonl",
    ], "process 0 alone writes the run's files"
    assert_close(checkpoint_networks(run_dir, k), trained_params(flags_as_args(), [1, 2], k))


@pytest.mark.slow  # two processes compile again; the default suite stops them together (above)
def test_a_two_process_run_resumes_to_the_parameters_of_one_device_and_one_process_evaluates_it(tmp_path):
    """The stopped two-process run resumed on two processes ends with the parameters of one device training both
    seeds; its last checkpoint (two parts) is evaluated by one process of one device."""
    _, run_dir, k = stopped_two_process_run(tmp_path)
    resumed = launch("--resume", f"runs/{run_dir.name}", cwd=tmp_path)
    out, _ = finish(resumed)
    assert f"resumed runs/{run_dir.name} after epoch {k}" in out, out[-2000:]
    assert "2 cpu device(s) in 2 process(es), split by data" in out, out[-2000:]
    assert epochs_logged(run_dir) == list(range(1, 9))
    assert_close(final_params(run_dir), trained_params(flags_as_args(), [1, 2]))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == [4, 5, 6, 7, 8] and len(summary["score_per_seed"]) == 2
    evaluated = run_script(
        "crl_resnet.py",
        "--evaluate",
        str(run_dir),
        "--checkpoint",
        "last",
        cwd=tmp_path,
        env=ONE_DEVICE_EACH,
        timeout=300,
    )
    assert evaluated.returncode == 0 and "last parameters (epoch 8)" in evaluated.stdout, evaluated.stderr[-3000:]


def test_launch_flags_are_checked_before_anything_starts(tmp_path, capsys, monkeypatch):
    """jax.distributed must start before JAX does: importing a script and reading its flags starts nothing."""
    code = "import sys; sys.argv = ['x']; from jax._src import xla_bridge"
    code += "; import crl_resnet, crl_mlp, sac_her, gcbc, crl_offline"
    code += "; crl_resnet.parse_args(); print(bool(xla_bridge._backends))"
    result = run_script("-c", code, cwd=ROOT, timeout=120)
    assert result.stdout.strip() == "False", result.stderr[-2000:]
    line = check_in_process(crl, ["--process-id", "1"], capsys, monkeypatch)
    assert line == "error: --process-id needs --coordinator-address HOST:PORT (process 0's), with the other of the two"
    where = ["--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"]
    line = check_in_process(crl, where, capsys, monkeypatch)
    assert line == "error: --process-id must be in [0, 1] (--num-processes), got 2"
    # an odd --num-envs cannot be split over 2 devices, nor 3 seeds: one line before compiling
    two = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = run_script("crl_resnet.py", *FLAGS, "--num-envs", "15", cwd=tmp_path, env=two, timeout=120)
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "error: --num-envs must be a multiple of the 2 devices, got 15"
    ]
    result = run_script(
        "crl_resnet.py", *FLAGS, "--num-seeds", "3", "--devices-split", "seeds", cwd=tmp_path, env=two, timeout=120
    )
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "error: --num-seeds must be a multiple of the 2 devices with --devices-split seeds, got 3"
    ]


@pytest.mark.long
def test_a_killed_process_ends_the_others_in_one_line_and_the_run_resumes_on_one_process(tmp_path):
    """SIGKILL to process 1 once process 0 has logged epoch 2: process 0 stops within two minutes, exit 1, with one
    line (which process, the last whole checkpoint, how to resume) and no traceback; nothing written is lost:
    --resume on one process finishes the run with the parameters of one device training both seeds."""
    heartbeat = 15  # seconds of silence before jax.distributed takes process 1 for dead (the scripts': 60)
    two = launch(*FLAGS, cwd=tmp_path, before_main=f"crl.HEARTBEAT_S = {heartbeat}")
    deadline = time.time() + 300
    while len(epochs_logged(next(iter((tmp_path / "runs").glob("*")), tmp_path))) < 2:
        assert all(p.poll() is None for p in two) and time.time() < deadline, "no second epoch logged"
        time.sleep(0.005)
    two[1].kill()
    killed = time.time()
    _, err = two[0].communicate(timeout=180)
    assert two[0].returncode == 1 and time.time() - killed < 120, (time.time() - killed, err[-3000:])
    [run_dir] = (tmp_path / "runs").iterdir()
    k = max(crl.checkpoint_epochs(str(run_dir)))
    said = [line for line in err.splitlines() if line.startswith("error") or "Traceback" in line]
    resume = f"continue with --resume runs/{run_dir.name} (on any number of processes)"
    said_k = f"error: process 1 stopped answering; run stopped, its last whole checkpoint is epoch {k}: {resume}"
    assert said == [said_k], err[-3000:]
    assert epochs_logged(run_dir)[:k] == list(range(1, k + 1))
    resumed = run_script("crl_resnet.py", "--resume", f"runs/{run_dir.name}", cwd=tmp_path, env=ONE_DEVICE_EACH)
    assert resumed.returncode == 0 and f"after epoch {k}" in resumed.stdout, resumed.stderr[-3000:]
    assert "1 cpu device(s) in 1 process(es)" in resumed.stdout
    assert epochs_logged(run_dir) == list(range(1, 9))
    assert_close(final_params(run_dir), trained_params(flags_as_args(), [1, 2]))


@pytest.mark.slow  # 2 processes compile again, and the stop waits for jax.distributed to give up on a process
def test_a_write_that_fails_on_one_process_stops_every_process_with_one_line(tmp_path):
    """Process 1 cannot write its shards (a file-size limit, as a full disk): each process stops with one line and
    exit 1 once orbax gives up waiting for the shards (WRITE_TIMEOUT_S, here 30 s; 20 minutes in a run), and no
    checkpoint of that epoch counts as whole."""
    fsize = "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    fsize += "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, -1)) if sys.argv[-1] == '1' else None"
    processes = launch(*FLAGS, cwd=tmp_path, before_main=f"crl.HEARTBEAT_S, crl.WRITE_TIMEOUT_S = 15, 30\n{fsize}")
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [1, 1], errors
    [run_dir] = (tmp_path / "runs").iterdir()
    for err in errors:
        lines = [x.strip() for x in err.splitlines() if "error" in x or "Traceback" in x]
        assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {run_dir}/checkpoints/1: "), err[-3000:]
    assert crl.checkpoint_epochs(str(run_dir)) == []


@pytest.mark.slow  # the default suite trains the data split on 2 processes (above)
def test_the_seeds_split_trains_what_one_device_trains(tmp_path):
    """One process with two CPU devices, --devices-split seeds: each seed on a device of its own, the parameters of
    one device training both."""
    (tmp_path / "one").mkdir()
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    one = run_script("crl_resnet.py", *FLAGS, "--devices-split", "seeds", cwd=tmp_path / "one", env=env)
    assert one.returncode == 0 and "2 cpu device(s) in 1 process(es), split by seeds" in one.stdout, one.stderr[-3000:]
    [run_one] = (tmp_path / "one" / "runs").iterdir()
    assert_close(final_params(run_one), trained_params(flags_as_args(), [1, 2]))
