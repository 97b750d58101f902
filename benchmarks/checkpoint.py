"""What a checkpoint costs at the paper's scale: the runner state of humanoid_u_maze at Table 2 sizes.

    python benchmarks/checkpoint.py                          # both methods, each in a fresh process
    python benchmarks/checkpoint.py --max-replay-size 4000   # a smaller buffer

Methods, each writing to --dir (default: a temporary folder on this disk):
  orbax    the scripts' Checkpoints (orbax-checkpoint's CheckpointManager): save() copies the state off the devices
           and returns, its threads write it; wait() waits for the write; restore() reads it back onto the state's
           devices
  npz      the scripts before orbax: a host copy of the state (the devices' parts of every array), np.savez
           streamed into a file array by array with fsync; read back with np.load and put on the devices
Each reports the seconds training pauses for (orbax: until save() returns; npz: the host copy, the writer thread
doing the rest), the seconds until the checkpoint is on disk, the seconds to read it back onto the devices, and
the peak resident memory above the state while writing and while reading (above what was resident before).
The state is filled with random numbers (zeros would flatter a compressing writer).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ["orbax", "npz"]


def rss_gib(field):  # VmRSS (now) or VmHWM (peak) of this process
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 2**20


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS: the peak from here on (Linux 4.0 and later)
        f.write("5")
    return rss_gib("VmRSS")


def humanoid_state(max_replay_size):
    """A humanoid_u_maze runner state at Table 2 sizes, on the device, filled with random numbers."""
    import jax

    import crl_resnet as crl

    args = crl.resolve_args(crl.Args(env_id="humanoid_u_maze", max_replay_size=max_replay_size))
    env = crl.GoalEnv(args.env_id, fixed_goals=True)
    shapes = jax.eval_shape(crl.make_train(args, env)[0], jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    fill = lambda s: (
        rng.random(s.shape, dtype=np.float32) if s.dtype == np.float32 else np.zeros(s.shape, s.dtype)
    ).astype(s.dtype)
    return jax.tree.map(lambda s: jax.device_put(fill(s)), shapes), crl


def measure(method, max_replay_size, directory):
    import jax

    rs, crl = humanoid_state(max_replay_size)
    size = sum(x.nbytes for x in jax.tree.leaves(rs))
    base = reset_peak()
    start = time.time()
    if method == "orbax":
        checkpoints = crl.Checkpoints(directory)
        checkpoints.save(1, rs, improved=False, best_score=0.0, metrics={"epoch": 1, crl.STEPS: 0})
        pause_s = time.time() - start
        checkpoints.wait()
    else:
        leaves = jax.tree_util.tree_flatten_with_path(rs)[0]
        host = {jax.tree_util.keystr(path): np.asarray(jax.device_get(leaf)) for path, leaf in leaves}
        pause_s = time.time() - start
        with open(os.path.join(directory, "checkpoint_last.npz"), "wb") as f:
            np.savez(f, **host)
            f.flush()
            os.fsync(f.fileno())
        del host
    write_s, write_peak = time.time() - start, rss_gib("VmHWM") - base
    base = reset_peak()
    start = time.time()
    if method == "orbax":
        jax.block_until_ready(crl.Checkpoints(directory).read(1, rs)[0])
    else:
        with np.load(os.path.join(directory, "checkpoint_last.npz")) as saved:
            jax.block_until_ready([jax.device_put(saved[jax.tree_util.keystr(path)]) for path, _ in leaves])
    read_s, read_peak = time.time() - start, rss_gib("VmHWM") - base
    result = {"method": method, "gb": round(size / 1e9, 2), "pause_s": round(pause_s, 2)}
    result |= {"write_s": round(write_s, 2), "read_s": round(read_s, 2)}
    result |= {"write_peak_rss_above_state_gib": round(write_peak, 2), "read_peak_rss_gib": round(read_peak, 2)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--max-replay-size", type=int, default=10_000)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a single method, in this process
    cli = parser.parse_args()
    if cli.one:
        measure(cli.one, cli.max_replay_size, cli.dir)
        sys.exit(0)
    print(
        f"humanoid_u_maze runner state, Table 2 sizes, --max-replay-size {cli.max_replay_size}; {os.cpu_count()} cores"
    )
    for method in cli.methods:
        directory = tempfile.mkdtemp(dir=cli.dir)
        command = [sys.executable, __file__, "--one", method, "--dir", directory]
        subprocess.run([*command, "--max-replay-size", str(cli.max_replay_size)], check=False)
        shutil.rmtree(directory, ignore_errors=True)
