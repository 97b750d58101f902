"""Compile time of one training epoch against depth: the residual trunk is a scan, so it should stay flat.

    python benchmarks/compile_time.py                       # num_blocks 1, 16, 64, 256 (depth 4 to 1024)
    python benchmarks/compile_time.py --num-blocks 1 64

Uses the paper's defaults (Table 2: 512 envs, batch 512, 800 SGD batches per training step, width 256) on
point_big_maze; prints the time to lower and compile the epoch program and its ratio to the shallowest.
"""

import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import crl_resnet as crl

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-blocks", nargs="+", type=int, default=[1, 16, 64, 256])
    parser.add_argument("--env-id", default="point_big_maze")
    cli = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}, {os.cpu_count()} CPU cores")
    print(f"{'num_blocks':>10} {'depth':>6} {'lower s':>8} {'compile s':>10} {'total s':>8} {'vs first':>9}")
    first = None
    for num_blocks in cli.num_blocks:
        args = crl.Args(env_id=cli.env_id, num_blocks=num_blocks)
        args.actor_num_blocks = args.critic_num_blocks = num_blocks
        env = crl.GoalEnv(args.env_id)
        init, _, epoch, _ = crl.make_train(args, env)
        ts = jax.eval_shape(jax.vmap(init), jax.vmap(jax.random.PRNGKey)(jax.numpy.arange(1)))  # no allocation
        start = time.perf_counter()
        lowered = jax.jit(jax.vmap(epoch), donate_argnums=0).lower(ts)
        lowered_at = time.perf_counter()
        lowered.compile()
        done = time.perf_counter()
        total = done - start
        first = first or total
        print(
            f"{num_blocks:>10} {4 * num_blocks:>6} {lowered_at - start:>8.1f} {done - lowered_at:>10.1f} "
            f"{total:>8.1f} {total / first:>8.2f}x",
            flush=True,
        )
