"""Compile time of crl_resnet.py's training epoch against depth: scanned residual trunk vs an unrolled loop.

    python benchmarks/compile_vs_depth.py                       # the table in docs/performance.md
    python benchmarks/compile_vs_depth.py --num-blocks 1 64 --unrolled 1 4 --timeout 300

Compiles the whole epoch program (environment steps, replay buffer, relabelling and every SGD update) with the
paper's defaults (Table 2: 512 envs, batch 512, 800 SGD batches per training step, width 256) on point_big_maze,
once per configuration, each in a fresh process (nothing cached), and prints the time against the 4-layer
network. "scanned" is crl_resnet.py as it is (flax.linen.scan over blocks); "unrolled" replaces the scan with a
Python loop over blocks, as a network written layer by layer would be. The last row is the paper's largest
configuration: a 1024-layer critic (256 blocks) and a 512-layer actor (128 blocks).
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import json, sys, time
import flax.linen as nn
import jax
import crl_resnet as crl

critic_blocks, actor_blocks, mode, env_id = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
if mode == "unrolled":  # the same parameters and layers, one Python iteration (and one traced copy) per block

    class UnrolledTrunk(nn.Module):
        width: int
        num_blocks: int
        remat: bool = False
        scan_unroll: int = 1
        dtype: object = None

        @nn.compact
        def __call__(self, x):
            x = crl.dense_layernorm_swish(x, self.width, self.dtype)
            for _ in range(self.num_blocks):
                x, _ = crl.ResidualBlock(self.width, self.dtype)(x, None)
            return x

    crl.ResidualTrunk = UnrolledTrunk
args = crl.Args(env_id=env_id, num_blocks=critic_blocks, critic_num_blocks=critic_blocks, actor_num_blocks=actor_blocks)
env = crl.GoalEnv(args.env_id)
init, _, epoch, _ = crl.make_train(args, env)
rs = jax.eval_shape(jax.vmap(init), jax.vmap(jax.random.PRNGKey)(jax.numpy.arange(1)))  # shapes only
start = time.perf_counter()
lowered = jax.jit(crl.over_seeds(epoch, 1), donate_argnums=0).lower(rs)
lowered_at = time.perf_counter()
lowered.compile()
print(json.dumps({"lower": lowered_at - start, "compile": time.perf_counter() - lowered_at}))
"""


def measure(critic_blocks, actor_blocks, mode, env_id, timeout):
    """(lower s, compile s) in a fresh interpreter, or None when it ran past the timeout."""
    command = [sys.executable, "-c", CHILD, str(critic_blocks), str(actor_blocks), mode, env_id]
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        sys.exit(f"{mode} {critic_blocks} blocks failed:\n{result.stderr[-2000:]}")
    times = json.loads(result.stdout.strip().splitlines()[-1])
    return times["lower"], times["compile"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-blocks", nargs="+", type=int, default=[1, 4, 16, 64, 256], help="scanned")
    parser.add_argument("--unrolled", nargs="+", type=int, default=[1, 4, 16, 64], help="unrolled (0: none)")
    parser.add_argument("--paper-1024", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--env-id", default="point_big_maze")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per configuration")
    cli = parser.parse_args()

    import jax  # only for the device line; the measurements run in child processes

    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}, {os.cpu_count()} CPU cores, jax {jax.__version__}")
    print(f"epoch program of crl_resnet.py, paper defaults, {cli.env_id}; each row a fresh process\n")
    configs = [("scanned", n, n) for n in cli.num_blocks]
    if cli.paper_1024:
        configs.append(("scanned", 256, 128))
    configs += [("unrolled", n, n) for n in cli.unrolled if n > 0]
    header = f"{'trunk':>9} {'critic layers':>13} {'actor layers':>12} {'lower s':>8} {'compile s':>10} {'total s':>8}"
    print(header + f" {'vs 4 layers':>11}")
    base = {}
    started = time.perf_counter()
    for mode, critic_blocks, actor_blocks in configs:
        times = measure(critic_blocks, actor_blocks, mode, cli.env_id, cli.timeout)
        layers = f"{4 * critic_blocks:>13} {4 * actor_blocks:>12}"
        if times is None:
            print(f"{mode:>9} {layers} {'':>8} {'':>10} {'> ' + str(int(cli.timeout)):>8} (timed out)", flush=True)
            continue
        total = sum(times)
        base.setdefault(mode, total if critic_blocks == 1 else None)
        ratio = f"{total / base[mode]:>10.2f}x" if base.get(mode) else f"{'':>11}"
        print(f"{mode:>9} {layers} {times[0]:>8.1f} {times[1]:>10.1f} {total:>8.1f} {ratio}", flush=True)
    print(f"\n(benchmark wall time {time.perf_counter() - started:.0f} s)")
