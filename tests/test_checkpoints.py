"""Runs survive what clusters do: SIGTERM, kills between two files, re-submission without a checkpoint, full disks.
Checkpoints are orbax's (runs/NAME/checkpoints/{epoch}); these tests hold the scripts to what they promise of them."""

import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time

import flax.serialization
import jax
import numpy as np
import pytest
from conftest import ROOT, popen, run_script

import crl_resnet as crl

FLAGS = ["--env-id", "point_u_maze", "--num-envs", "16", "--num-eval-envs", "16", "--total-env-steps", "200000"]
FLAGS += ["--num-epochs", "8", "--unroll-length", "100", "--batch-size", "64", "--max-replay-size", "600"]
FLAGS += ["--num-sgd-batches-per-training-step", "8", "--min-replay-size", "100", "--width", "32"]
FLAGS += ["--train-goals", "fixed"]  # the paper's protocol: each environment's first state is checkpointed too


def start(*flags, cwd):
    """crl_resnet.py in cwd, its stdout a pipe and block-buffered, as in a cluster job's redirected log."""
    os.makedirs(cwd, exist_ok=True)
    script = os.path.join(ROOT, "crl_resnet.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return popen([sys.executable, script, *flags], cwd=cwd, stdout=subprocess.PIPE, text=True, env=env)


def the_run(cwd):
    [run_dir] = (pathlib.Path(cwd) / "runs").iterdir()
    return run_dir


def epochs_logged(run_dir):
    path = pathlib.Path(run_dir, "metrics.jsonl")
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()] if path.exists() else []


def checkpoint_epoch(run_dir):
    """The epoch of the newest whole checkpoint."""
    return max(crl.checkpoint_epochs(str(run_dir)), default=None)


def final_params(run_dir):
    return flax.serialization.msgpack_restore(pathlib.Path(run_dir, "final.msgpack").read_bytes())


def start_killed_between_checkpoint_and_metrics(*flags, cwd, epoch):
    """crl_resnet.py, SIGKILLed by itself once epoch `epoch`'s checkpoint is whole, just before its metrics line is
    written: the moment a kill between the two files would come."""
    os.makedirs(cwd, exist_ok=True)
    code = f"""
import os, signal, sys, time
sys.path.insert(0, {ROOT!r})
sys.argv = ["crl_resnet.py", *{list(flags)!r}]
import crl_resnet as crl
append = crl.RunLog.append
def killed_before_the_metrics_line(log, epoch, metrics):
    if epoch == {epoch}:
        while {epoch} not in crl.checkpoint_epochs(log.run_dir):  # orbax commits it on its own thread
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGKILL)
    append(log, epoch, metrics)
crl.RunLog.append = killed_before_the_metrics_line
crl.main()
"""
    return popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, text=True)


def wait_for_first_epoch(process, cwd):
    deadline = time.time() + 300
    while not (list(pathlib.Path(cwd).glob("runs/*/metrics.jsonl")) and epochs_logged(the_run(cwd))):
        assert process.poll() is None, "the run ended before its first epoch was logged"
        assert time.time() < deadline, "no epoch logged within 5 minutes"
        time.sleep(0.005)


def stop_after_first_epoch(process, cwd, signals=(signal.SIGTERM,)):
    """Sends signals[0] once the run has logged its first epoch, and each further one once the run has said it is
    stopping; returns its stdout."""
    wait_for_first_epoch(process, cwd)
    process.send_signal(signals[0])
    out = []

    def read_until_it_says_it_stops():
        while not any(" again stops at once" in line for line in out) and (line := process.stdout.readline()):
            out.append(line)

    for stop in signals[1:]:
        reader = threading.Thread(target=read_until_it_says_it_stops)
        reader.start()
        reader.join(timeout=300)
        assert not reader.is_alive(), "the run never said it was stopping"
        process.send_signal(stop)
    return "".join(out) + process.communicate(timeout=300)[0]


def logged_without_timings(run_dir):
    timing = ("training/sps", "training/walltime", "training/epoch_sps")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in timing} for x in lines]


@pytest.mark.long
def test_sigterm_ends_the_epoch_checkpointed_and_every_kind_of_resume_ends_where_an_unstopped_run_ends(tmp_path):
    """SIGTERM mid-run: exit 0 after the epoch under way, checkpointed. Resumed, as is a run SIGKILLed between
    its checkpoint and its metrics line, each ends with the parameters and metrics of the run left alone, every
    epoch logged once."""
    full = start(*FLAGS, cwd=tmp_path / "full")
    wait_for_first_epoch(full, tmp_path / "full")  # compiled: the runs below load its programs from JAX's cache
    stopped = start(*FLAGS, cwd=tmp_path / "stopped")
    killed = start_killed_between_checkpoint_and_metrics(*FLAGS, cwd=tmp_path / "killed", epoch=2)
    out = stop_after_first_epoch(stopped, tmp_path / "stopped")
    assert stopped.returncode == 0 and "stopped by SIGTERM after epoch" in out.splitlines()[-1], out[-2000:]
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    full.communicate(timeout=300)
    assert full.returncode == 0
    run_full, run_stopped, run_killed = (the_run(tmp_path / name) for name in ["full", "stopped", "killed"])
    k = checkpoint_epoch(run_stopped)
    assert 1 <= k < 8 and epochs_logged(run_stopped) == list(range(1, k + 1)), (k, epochs_logged(run_stopped))
    assert json.loads((run_stopped / "args.json").read_text())["train_goals"] == "fixed"
    assert out.splitlines()[-1].endswith(
        f"after epoch {k}: continue with --resume {run_stopped.relative_to(tmp_path / 'stopped')}"
    )
    assert not list(run_stopped.glob("**/*tmp*")) and not (run_stopped / "final.msgpack").exists()
    assert sorted(crl.checkpoint_epochs(str(run_stopped))) == ([k - 1, k] if k > 1 else [1]), "the last two kept"
    # killed between the files: the checkpoint of epoch 2, metrics up to epoch 1
    assert checkpoint_epoch(run_killed) == 2 and epochs_logged(run_killed) == [1]

    resumed = [start("--resume", str(the_run(tmp_path / name)), cwd=tmp_path / name) for name in ["stopped", "killed"]]
    for process, run_dir, epoch in zip(resumed, [run_stopped, run_killed], [k, 2]):
        out = process.communicate(timeout=300)[0]
        assert process.returncode == 0 and f"resumed {run_dir} after epoch {epoch}" in out, out[-2000:]
    for run_dir in [run_stopped, run_killed]:
        assert epochs_logged(run_dir) == list(range(1, 9))
        jax.tree.map(np.testing.assert_array_equal, final_params(run_dir), final_params(run_full))
        assert logged_without_timings(run_dir) == logged_without_timings(run_full), "every metric but the timings"


@pytest.mark.slow  # two more runs of the one above
def test_a_resubmitted_run_without_a_checkpoint_starts_afresh_and_a_second_signal_stops_at_once(tmp_path):
    """A re-submitted job killed before its first checkpoint starts afresh in its directory and ends where a run
    left alone ends. Ctrl-C does what SIGTERM does; a second signal (here SIGTERM) ends the process at once (the
    default handler), keeping what is written."""
    full = start(*FLAGS, cwd=tmp_path / "full")
    wait_for_first_epoch(full, tmp_path / "full")
    twice = start(*FLAGS, cwd=tmp_path / "twice")
    out_twice = stop_after_first_epoch(twice, tmp_path / "twice", (signal.SIGINT, signal.SIGTERM))
    full.communicate(timeout=300)
    run_full = the_run(tmp_path / "full")
    never = tmp_path / "never" / "runs" / "never"  # args.json and an old metrics line, no checkpoint
    never.mkdir(parents=True)
    shutil.copy(run_full / "args.json", never / "args.json")
    (never / "metrics.jsonl").write_text((run_full / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    afresh = start("--resume", str(never), cwd=tmp_path / "never")
    out_afresh = afresh.communicate(timeout=300)[0]
    assert afresh.returncode == 0 and "no checkpoint yet: starting it afresh" in out_afresh, out_afresh[-2000:]
    assert epochs_logged(never) == list(range(1, 9))
    jax.tree.map(np.testing.assert_array_equal, final_params(never), final_params(run_full))
    assert logged_without_timings(never) == logged_without_timings(run_full)

    run_twice = the_run(tmp_path / "twice")
    assert "SIGINT: stopping once this epoch is written; SIGINT again stops at once" in out_twice, out_twice[-2000:]
    assert twice.returncode == -signal.SIGTERM, out_twice[-2000:]
    k, logged = checkpoint_epoch(run_twice) or 0, epochs_logged(run_twice)  # the line may precede its checkpoint
    assert logged == list(range(1, len(logged) + 1)) and k <= len(logged) <= k + 1, (k, logged)
    assert not list(run_twice.glob("*.tmp")) and not (run_twice / "final.msgpack").exists()


def test_a_run_without_a_checkpoint_yet_starts_afresh_with_an_empty_metrics_file(tmp_path):
    """What a re-submitted job killed before its first checkpoint finds (end to end in -m slow)."""
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert crl.Checkpoints(str(tmp_path)).restore(None) is None
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def tiny_run(tmp_path):
    """An in-process RunLog and Checkpoints over a real (tiny) runner state, as main() builds them."""
    args = crl.Args(env_id="point_u_maze", num_envs=8, num_eval_envs=8, total_env_steps=8 * 100 + 8 * 100)
    args = crl.dataclasses.replace(args, num_epochs=1, unroll_length=100, batch_size=16, max_replay_size=300)
    args = crl.resolve_args(crl.dataclasses.replace(args, min_replay_size=100, width=8, episode_length=100))
    init = crl.make_train(args, crl.GoalEnv(args.env_id))[0]
    rs = jax.vmap(lambda s: init(jax.random.PRNGKey(s)))(jax.numpy.arange(1))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stop = crl.types.SimpleNamespace(received=None, run_dir=str(run_dir))  # StopSignals without its handlers
    log = crl.RunLog(args, str(run_dir), stop, wandb=None, epoch=0, env_steps=0, total=10**6)
    return args, rs, run_dir, log, crl.Checkpoints(str(run_dir))


def end_epoch(log, checkpoints, epoch, metrics, rs, best_score=-np.inf):
    """What main() does at the end of an epoch: waits for the last checkpoint, checks, checkpoints, logs the line."""
    checkpoints.wait()
    log.check(epoch, metrics)
    improved = metrics["eval/time_near_goal"] > best_score
    best_score = max(best_score, metrics["eval/time_near_goal"])
    checkpoints.save(epoch, rs, improved=improved, best_score=best_score, metrics=metrics)
    log.append(epoch, metrics)


def metrics(epoch, score):
    logged = {"epoch": epoch, "eval/time_near_goal": score, "eval/success": 0.5, "losses/critic_loss": 1.0}
    return logged | {"training/env_steps": 1000 * epoch, "training/sps": 1.0}


def errors(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def test_a_failed_write_is_a_one_line_error_that_keeps_the_last_checkpoint(tmp_path, capsys):
    """Epoch 2's checkpoint cannot be written (a file-size limit fails the write as a full disk would): the next
    epoch's end is one line with the file system's reason, exit 1; epoch 1's checkpoint is whole and resumes, and a
    resumed run drops epoch 2's metrics line and the partial checkpoint."""
    _, rs, run_dir, log, checkpoints = tiny_run(tmp_path)
    end_epoch(log, checkpoints, 1, metrics(1, 5.0), rs)
    checkpoints.wait()
    limit, previous = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limit[1]))  # the buffer's shards are larger
    try:
        end_epoch(log, checkpoints, 2, metrics(2, 1.0), rs, best_score=5.0)
        with pytest.raises(SystemExit) as stop:
            end_epoch(log, checkpoints, 3, metrics(3, 1.0), rs, best_score=5.0)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    assert stop.value.code == 1
    [line] = errors(capsys)
    assert line == f"error: cannot write {run_dir}/checkpoints/2: File too large; the checkpoint of epoch 1 is whole"
    assert checkpoint_epoch(run_dir) == 1 and epochs_logged(run_dir) == [1, 2]
    _, epoch, best_score = crl.Checkpoints(str(run_dir)).restore(rs)
    assert (epoch, best_score) == (1, 5.0) and epochs_logged(run_dir) == [1]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1"], "the partial checkpoint is gone"


def test_a_non_finite_loss_stops_before_its_epoch_is_written_and_the_last_good_checkpoint_resumes(tmp_path, capsys):
    _, rs, run_dir, log, checkpoints = tiny_run(tmp_path)
    end_epoch(log, checkpoints, 1, metrics(1, 5.0), rs)
    with pytest.raises(SystemExit) as stop:
        end_epoch(log, checkpoints, 2, metrics(2, 6.0) | {"losses/critic_loss": float("nan")}, rs, best_score=5.0)
    assert stop.value.code == 1
    [line] = errors(capsys)
    assert "losses/critic_loss is not finite in epoch 2" in line and "checkpoint (epoch 1)" in line, line
    assert checkpoint_epoch(run_dir) == 1 and epochs_logged(run_dir) == [1]
    restored, epoch, best_score = crl.Checkpoints(str(run_dir)).restore(rs)
    assert (epoch, best_score) == (1, 5.0)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(rs))


def test_a_non_finite_first_epoch_leaves_no_checkpoint(tmp_path, capsys):
    _, rs, run_dir, log, checkpoints = tiny_run(tmp_path)
    with pytest.raises(SystemExit):
        end_epoch(log, checkpoints, 1, metrics(1, 5.0) | {"losses/actor_loss": float("inf")}, rs)
    [line] = errors(capsys)
    assert "losses/actor_loss is not finite in epoch 1" in line and "no checkpoint had been written yet" in line
    assert checkpoint_epoch(run_dir) is None and not (run_dir / "metrics.jsonl").exists(), "nothing of it written"


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, capsys, monkeypatch):
    path = tmp_path / "file"
    path.write_bytes(b"old")

    def full_disk(_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # the new bytes are written, not yet on disk
    with pytest.raises(SystemExit) as stop:
        crl.write_atomic(str(path), b"the new")
    assert stop.value.code == 1 and path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"error: cannot write {path}: No space left on device; the file there before is intact"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "another state"])
def test_a_damaged_checkpoint_is_a_one_line_error(tmp_path, capsys, damage):
    _, rs, run_dir, log, checkpoints = tiny_run(tmp_path)
    end_epoch(log, checkpoints, 1, metrics(1, 5.0), rs)
    checkpoints.wait()
    log.close()
    capsys.readouterr()  # the run's progress bar
    stored = [f for f in (run_dir / "checkpoints" / "1" / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert stored, "orbax's data files"
    for f in stored if damage != "another state" else []:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2] if damage == "truncated" else b"not a checkpoint")
    other = rs.replace(log_alpha=rs.log_alpha[:, None]) if damage == "another state" else rs
    with pytest.raises(SystemExit) as stop:
        crl.Checkpoints(str(run_dir)).restore(other)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: cannot read {run_dir}/checkpoints/1 as this run's checkpoint: "), err


def test_an_unwritable_run_directory_is_a_one_line_error(tmp_path):
    (tmp_path / "runs").write_text("a file where the runs directory should be")
    result = run_script("crl_resnet.py", *FLAGS, cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert "cannot create the run directory runs/" in line, line


def test_a_kill_between_the_checkpoint_and_checkpoint_best_is_repaired_on_resume(tmp_path):
    """checkpoint_best is written once its epoch's checkpoint is whole; if the run dies in between, resuming writes it."""
    _, rs, run_dir, log, checkpoints = tiny_run(tmp_path)
    end_epoch(log, checkpoints, 1, metrics(1, 5.0), rs)
    checkpoints.manager.wait_until_finished()  # the checkpoint is whole; its checkpoint_best comes at the next wait()
    assert not (run_dir / "checkpoint_best.msgpack").exists()
    fresh = jax.tree.map(lambda x: x + 1 if x.dtype.kind == "f" else x, rs)
    restored, epoch, best_score = crl.Checkpoints(str(run_dir)).restore(fresh)
    assert (epoch, best_score) == (1, 5.0)
    best = flax.serialization.msgpack_restore((run_dir / "checkpoint_best.msgpack").read_bytes())
    jax.tree.map(np.testing.assert_array_equal, best, jax.device_get(crl.checkpoint_params(rs)))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(rs))


def test_a_checkpoint_cut_off_by_a_kill_is_not_one(tmp_path):
    """What a kill during a write leaves (orbax writes into a temporary folder and moves it into place once whole):
    the epoch before is resumed, and the partial folder is removed."""
    _, rs, run_dir, log, checkpoints = tiny_run(tmp_path)
    end_epoch(log, checkpoints, 1, metrics(1, 5.0), rs)
    checkpoints.wait()
    partial = run_dir / "checkpoints" / "2.orbax-checkpoint-tmp"
    shutil.copytree(run_dir / "checkpoints" / "1", partial)
    (partial / "state" / "manifest.ocdbt").unlink(missing_ok=True)
    assert checkpoint_epoch(run_dir) == 1
    assert crl.Checkpoints(str(run_dir)).restore(rs)[1] == 1 and not partial.exists()


@pytest.mark.slow  # the default suite reads on one device a checkpoint two processes wrote (test_processes.py)
def test_a_checkpoint_written_over_two_devices_is_read_on_one(tmp_path):
    """Two CPU devices split each seed's data (each holds half the environments and buffer); one device, here, reads
    the last checkpoint whole: its networks are the run's final ones."""
    two = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    flags = [*FLAGS, "--num-epochs", "2", "--total-env-steps", str(16 * 100 + 2 * 16 * 100), "--num-seeds", "2"]
    result = run_script("crl_resnet.py", *flags, cwd=tmp_path, env=two, timeout=600)
    assert result.returncode == 0 and "2 cpu device(s)" in result.stdout, result.stderr[-2000:]
    [run_dir] = (tmp_path / "runs").iterdir()
    args = crl.resolve_args(crl.tyro.cli(crl.Args, args=flags))
    init = crl.make_train(args, crl.GoalEnv(args.env_id, args.episode_length, fixed_goals=True))[0]
    shapes = jax.eval_shape(jax.vmap(lambda s: init(jax.random.PRNGKey(s))), np.arange(2))
    state, meta = crl.Checkpoints(str(run_dir)).read(2, shapes)
    assert json.loads(meta["metrics"])["epoch"] == 2
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(crl.checkpoint_params(state)), final_params(run_dir))


def test_evaluating_the_last_checkpoint_of_a_run_still_training_leaves_its_writes_alone(tmp_path):
    """--evaluate --checkpoint last reads the newest whole checkpoint without touching the one orbax is writing (a
    reader that cleaned orbax's temporary folders would fail the training run's next write)."""
    _, rs, run_dir, log, checkpoints = tiny_run(tmp_path)
    end_epoch(log, checkpoints, 1, metrics(1, 5.0), rs)
    checkpoints.wait()
    writing = run_dir / "checkpoints" / "2.orbax-checkpoint-tmp"  # what a write under way looks like
    shutil.copytree(run_dir / "checkpoints" / "1", writing)
    actor, epoch = crl.load_saved_actor(str(run_dir), "last", jax.eval_shape(lambda: rs.actor_params))
    assert epoch == 1 and writing.exists()
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(actor), jax.device_get(rs.actor_params))


def test_arrays_without_elements_come_back_empty_of_their_shape(tmp_path):
    """MJX's physics state holds arrays with no elements (the arm's activations, say), which orbax does not write:
    a checkpoint leaves them out and reading puts them back, so an arm run checkpoints and resumes."""
    rs = {"act": jax.numpy.zeros((2, 0)), "qpos": jax.numpy.arange(6.0).reshape(2, 3), "n": jax.numpy.int32(3)}
    checkpoints = crl.Checkpoints(str(tmp_path))
    checkpoints.save(1, rs, improved=False, best_score=0.0, metrics={"epoch": 1, "training/env_steps": 1})
    checkpoints.wait()
    state, meta = crl.Checkpoints(str(tmp_path), write=False).read(1, jax.eval_shape(lambda: rs))
    assert state["act"].shape == (2, 0) and meta["best_score"] == 0.0
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), jax.device_get(rs))


def test_a_run_checkpointed_before_orbax_is_a_one_line_error_that_keeps_its_metrics(tmp_path, capsys):
    """A run made by the scripts before orbax (checkpoint_last.npz) is not started afresh over its metrics: one line
    says to finish it with the version that made it."""
    (tmp_path / "checkpoint_last.npz").write_bytes(b"an older version's checkpoint")
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(SystemExit) as stop:
        crl.Checkpoints(str(tmp_path)).restore(None)
    assert stop.value.code == 1 and (tmp_path / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} was checkpointed before these scripts used orbax")
