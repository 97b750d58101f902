"""Cost of --num-seeds N (N agents vmapped in one compiled program) against one seed.

    python benchmarks/num_seeds.py                        # the quick-start's sizes (--preset laptop), N = 1, 2, 4, 8
    python benchmarks/num_seeds.py --num-seeds 1 4 --width 256 --num-blocks 4

Times crl_resnet.py's epoch program (collection, relabelling, SGD) after compilation, mapped over N seeds exactly
as MAIN runs it (vmap; one seed without it), the seed counts interleaved and the best of --repeats used; prints each time and
its ratio to one seed. N independent runs one after another would cost N x.
"""

import argparse
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from timed_epoch import timed_epoch

import crl_resnet as crl


def make_epoch(cli, num_seeds):
    args = crl.Args(
        env_id="point_u_maze",
        num_envs=cli.num_envs,
        batch_size=cli.batch_size,
        num_sgd_batches_per_training_step=cli.num_sgd_batches,
        unroll_length=100,
        min_replay_size=100,
        max_replay_size=100 + 100 * cli.training_steps,
        num_epochs=1,
        total_env_steps=cli.num_envs * 100 * (1 + cli.training_steps),
        width=cli.width,
        num_blocks=cli.num_blocks,
        scan_unroll=cli.scan_unroll,
        num_seeds=num_seeds,
    )
    args.actor_num_blocks = args.critic_num_blocks = args.num_blocks
    return timed_epoch(crl, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-seeds", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-sgd-batches", type=int, default=50)
    parser.add_argument("--training-steps", type=int, default=4, help="training steps per timed epoch")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--num-blocks", type=int, default=2)
    parser.add_argument("--scan-unroll", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    cli = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}, {os.cpu_count()} CPU cores, jax {jax.__version__}")
    print(
        f"point_u_maze, {cli.num_envs} envs, batch {cli.batch_size}, {cli.num_sgd_batches} SGD batches per training "
        f"step, {cli.training_steps} training steps per epoch, width {cli.width}, depth {4 * cli.num_blocks}\n"
    )
    runs = {n: make_epoch(cli, n) for n in cli.num_seeds}
    times = {n: [] for n in runs}
    for _ in range(cli.repeats):
        for n, run in runs.items():
            times[n].append(run())
    one = min(times[min(times)]) / min(times)
    print(f"{'seeds':>5} {'epoch s':>8} {'vs 1 seed':>9} {'per seed':>9}")
    for n in runs:
        best = min(times[n])
        print(f"{n:>5} {best:>8.2f} {best / one:>8.2f}x {best / one / n:>8.2f}x")
