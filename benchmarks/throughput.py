"""SGD updates/s and achieved FLOP/s of crl_resnet.py's training step, next to this machine's matmul rate.

    python benchmarks/throughput.py                                   # depth 64, width 256, batch 512
    python benchmarks/throughput.py --num-blocks 64 --variants "" "remat=True"

Times crl_resnet.py's own compiled epoch program (collection, relabelling, SGD updates of critic, actor and
alpha) in a configuration where the updates are nearly all of the work: 64 point-maze environments stepping
one step per training step, --num-sgd-batches updates per training step. Achieved FLOP/s counts the matmuls
an update needs, from the shapes, once each:
  critic: forward + backward of sa_encoder and g_encoder (3 x forward each) and the (B, B) logits;
  actor:  forward + backward of the actor (3x), sa_encoder forward + backward to its action input (2x);
  LayerNorm, swish, Adam and the environment are not counted (they are overhead the rate has to carry).
The reference is a (4096 x 4096) @ (4096 x 4096) float32 jnp.dot timed in the same process, best of 5, before
and after the updates (the higher of the two).
Each variant (Args fields, e.g. "scan_unroll=2", "compute_dtype=bfloat16") is measured three times, the
variants interleaved so that the shared machine's load affects them alike; the best time of each is used.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from timed_epoch import timed_epoch

import crl_resnet as crl


def matmul_flops_per_second(n=4096, repeats=5):
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n))
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def update_flops(args, env):
    """Matmul FLOPs of one critic + actor update (see the module docstring)."""
    b, w = args.batch_size, args.width

    def trunk(in_dim, num_blocks):
        return 2 * b * in_dim * w + 4 * num_blocks * 2 * b * w * w

    sa = trunk(env.state_dim + env.action_dim, args.critic_num_blocks) + 2 * b * w * args.repr_dim
    g = trunk(env.goal_dim, args.critic_num_blocks) + 2 * b * w * args.repr_dim
    actor = trunk(env.obs_dim, args.actor_num_blocks) + 2 * 2 * b * w * env.action_dim
    logits = 2 * b * b * args.repr_dim
    return 3 * (sa + g + logits) + 3 * actor + 2 * sa


def make_variant(cli, changes):
    """(run() -> seconds of one epoch, SGD updates per epoch, FLOPs per update) for Args with `changes`."""
    fields = {
        "env_id": "point_big_maze",
        "num_blocks": cli.num_blocks,
        "width": cli.width,
        "batch_size": cli.batch_size,
        "num_envs": 64,
        "unroll_length": 1,
        "num_sgd_batches_per_training_step": cli.num_sgd_batches,
        "min_replay_size": 1000,
        "max_replay_size": 1000 + cli.training_steps,
        "num_epochs": 1,
        "total_env_steps": 64 * (1000 + cli.training_steps),
    }
    for change in filter(None, changes.split(",")):
        name, value = change.split("=")
        default = getattr(crl.Args, name)
        fields[name] = value == "True" if isinstance(default, bool) else type(default)(value)
    args = crl.Args(**fields)
    args.actor_num_blocks = args.critic_num_blocks = args.num_blocks
    run = timed_epoch(crl, args)
    updates = crl.schedule(args).training_steps_per_epoch * args.num_sgd_batches_per_training_step
    return run, updates, update_flops(args, crl.GoalEnv(args.env_id))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-blocks", type=int, default=16, help="16 blocks = depth 64")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--num-sgd-batches", type=int, default=8, help="SGD updates per training step")
    parser.add_argument("--training-steps", type=int, default=2, help="training steps per timed epoch")
    parser.add_argument("--variants", nargs="+", default=["", "scan_unroll=2", "remat=True", "compute_dtype=bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    cli = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}, {os.cpu_count()} CPU cores, jax {jax.__version__}")
    print(f"depth {4 * cli.num_blocks} (actor and critic), width {cli.width}, batch {cli.batch_size}")
    peak = matmul_flops_per_second()
    variants = {name: make_variant(cli, name) for name in cli.variants}
    times = {name: [] for name in variants}
    for _ in range(cli.repeats):
        for name, (run, _, _) in variants.items():
            times[name].append(run())
    peak = max(peak, matmul_flops_per_second())  # before and after the updates: the higher is the reference
    print(f"float32 matmul (4096^3 jnp.dot): {peak / 1e9:.1f} GFLOP/s\n")
    print(f"{'variant':>24} {'updates/s':>10} {'GFLOP/s':>8} {'of matmul':>10} {'epoch s (best, all)':>30}")
    for name, (_, updates, flops) in variants.items():
        best = min(times[name])
        rate = flops * updates / best
        all_times = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"{name or 'default':>24} {updates / best:>10.2f} {rate / 1e9:>8.1f} {rate / peak:>9.0%} {all_times:>30}")
