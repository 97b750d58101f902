"""What checkpoint_last costs at the paper's scale: the runner state of humanoid_u_maze at Table 2 sizes.

    python benchmarks/checkpoint.py                          # every method, each in a fresh process
    python benchmarks/checkpoint.py --max-replay-size 8000   # a smaller buffer (flax's peak RSS is ~4x the state)
    (orbax-checkpoint comes with flax and brax; the scripts do not use it: docs/performance.md#checkpoint-cost)

Methods, each writing to --dir (default: a temporary folder on this disk) with fsync:
  flax     flax.serialization.to_bytes of the leaves, then one write (the scripts before December 2026)
  npz      the scripts' save_checkpoint: this process's parts of the arrays (local_pieces), np.savez streamed
           into the file array by array; read back with read_checkpoint onto the state's devices
  raw      each array's bytes written as they are (no container)
  orbax    orbax-checkpoint's StandardCheckpointer on the state's global arrays, as a run of several processes
           would use it (each writes its shards; asynchronous: time to return and time to finish); restored
           onto the state's shardings
  no-buffer  npz without the replay buffer: what an epoch would cost if the buffer were saved every K epochs
Each reports the seconds to copy the state to the host (the scripts do this before writing, since the next epoch
updates the device buffers in place), to write, to read back, the peak RSS above the state itself while it
copies and writes, and the peak RSS while it reads back (above what was resident before).
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

METHODS = ["flax", "npz", "raw", "orbax", "no-buffer"]


def rss_gib(field):  # VmRSS (now) or VmHWM (peak) of this process
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 2**20


def humanoid_state(max_replay_size):
    """A humanoid_u_maze runner state at Table 2 sizes, on the device, filled with random numbers."""
    import jax

    import crl_resnet as crl

    args = crl.Args(env_id="humanoid_u_maze", max_replay_size=max_replay_size)
    args.actor_num_blocks = args.critic_num_blocks = args.num_blocks
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
    if method == "no-buffer":
        rs = rs.replace(buffer=None)
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS: the peak from here on (Linux 4.0 and later)
        f.write("5")
    base = rss_gib("VmRSS")
    path = os.path.join(directory, "checkpoint_last")
    start = time.time()
    host = crl.local_pieces(rs) if method != "orbax" else None  # main()'s host copy: each device's parts, once
    copy_s = time.time() - start  # orbax copies the devices' shards itself, asynchronously
    size = sum(x.nbytes for x in jax.tree.leaves(rs))
    start, finish_s = time.time(), None
    if method == "flax":
        import flax.serialization

        data = flax.serialization.to_bytes({"train_state": list(host.values()), "epoch": 1, "best_score": 0.0})
        crl.write_atomic(path + ".msgpack", data)
    elif method in ("npz", "no-buffer"):
        crl.save_checkpoint(directory, host, {"epoch": 1, "best_score": 0.0, "improved": False, "metrics_line": ""})
    elif method == "raw":

        def write_all(f):
            for array in host.values():
                f.write(memoryview(np.ascontiguousarray(array)).cast("B"))

        crl.write_atomic(path + ".raw", write_all)
    elif method == "orbax":
        import orbax.checkpoint as ocp

        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(directory, "orbax"), rs)  # the global arrays: each process its shards
        finish_s = time.time() - start
        checkpointer.wait_until_finished()
    write_s = time.time() - start
    write_peak = rss_gib("VmHWM") - base
    host = None  # freed before reading back
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = rss_gib("VmRSS")
    start = time.time()
    if method == "flax":
        with open(path + ".msgpack", "rb") as f:
            flax.serialization.msgpack_restore(f.read())
    elif method in ("npz", "no-buffer"):
        jax.block_until_ready(crl.read_checkpoint(*crl.last_checkpoint(directory), rs))
    elif method == "raw":
        with open(path + ".raw", "rb") as f:
            [np.fromfile(f, a.dtype, a.size) for a in jax.tree.leaves(rs)]
    elif method == "orbax":
        jax.block_until_ready(checkpointer.restore(os.path.join(directory, "orbax"), rs))  # onto rs's shardings
    read_s = time.time() - start
    read_peak = rss_gib("VmHWM") - base
    result = {"method": method, "gb": round(size / 1e9, 2), "host_copy_s": round(copy_s, 2)}
    result |= {"write_s": round(write_s, 2), "read_s": round(read_s, 2)}
    result |= {"returns_after_s": round(finish_s, 2) if finish_s is not None else None}
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
        if method == "orbax":
            try:
                import orbax.checkpoint  # noqa: F401
            except ImportError:
                print(json.dumps({"method": "orbax", "skipped": "orbax-checkpoint is not installed"}))
                continue
        directory = tempfile.mkdtemp(dir=cli.dir)
        command = [sys.executable, __file__, "--one", method, "--dir", directory]
        subprocess.run([*command, "--max-replay-size", str(cli.max_replay_size)], check=False)
        shutil.rmtree(directory, ignore_errors=True)
