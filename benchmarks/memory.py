"""Peak memory of crl_resnet.py's training against depth, with and without --remat (batch 512, width 256).

    python benchmarks/memory.py                       # the table in docs/performance.md
    python benchmarks/memory.py --configs 256/128 --remat-only

Each configuration runs in a fresh process: build the networks (critic blocks / actor blocks), prefill a small
point-maze replay buffer, compile crl_resnet.py's epoch program and run one epoch of 2 SGD updates at batch
512. Reported: XLA's own plan for that program (parameters + optimiser state + buffer passed in, and the
temporary buffers, i.e. activations kept for the backward pass) and the process's peak resident memory
(ru_maxrss: Python, JAX, compiled code and every buffer at its largest moment).
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import json, resource, sys
import jax
import crl_resnet as crl

critic_blocks, actor_blocks, remat = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "True"
args = crl.Args(env_id="point_big_maze", num_envs=64, unroll_length=1, num_sgd_batches_per_training_step=2,
                min_replay_size=1000, max_replay_size=1001, num_epochs=1, total_env_steps=64 * 1001,
                num_blocks=critic_blocks, critic_num_blocks=critic_blocks, actor_num_blocks=actor_blocks, remat=remat)
env = crl.GoalEnv(args.env_id)
init, prefill, epoch, _ = crl.make_train(args, env)
rs = jax.jit(prefill)(init(jax.random.PRNGKey(0)))
compiled = jax.jit(epoch, donate_argnums=0).lower(rs).compile()
plan = compiled.memory_analysis()
rs, metrics = compiled(rs)
loss = float(metrics["losses/critic_loss"])
print(json.dumps({
    "arguments": plan.argument_size_in_bytes, "temp": plan.temp_size_in_bytes,
    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "loss": loss,
}))
"""


def measure(critic_blocks, actor_blocks, remat):
    command = [sys.executable, "-c", CHILD, str(critic_blocks), str(actor_blocks), str(remat)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
    return json.loads(result.stdout.strip().splitlines()[-1]), None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs", nargs="+", default=["1/1", "16/16", "64/64", "256/128"], help="critic/actor blocks"
    )
    parser.add_argument("--remat-only", action="store_true", help="skip the runs without --remat")
    cli = parser.parse_args()

    import jax  # only for the device line; the measurements run in child processes

    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}, {os.cpu_count()} CPU cores, jax {jax.__version__}")
    print("batch 512, width 256, one epoch of 2 SGD updates; each row a fresh process\n")
    gib = 2**30
    header = (
        f"{'critic layers':>13} {'actor layers':>12} {'--remat':>7} {'params+state+buffer':>20} {'activations':>12}"
    )
    print(header + f" {'peak RSS':>9}")
    for config in cli.configs:
        critic_blocks, actor_blocks = map(int, config.split("/"))
        for remat in [True] if cli.remat_only else [False, True]:
            result, error = measure(critic_blocks, actor_blocks, remat)
            row = f"{4 * critic_blocks:>13} {4 * actor_blocks:>12} {'on' if remat else 'off':>7}"
            if result is None:
                print(f"{row} failed: {error}", flush=True)
                continue
            print(
                f"{row} {result['arguments'] / gib:>16.2f} GiB {result['temp'] / gib:>8.2f} GiB "
                f"{result['peak_rss'] / gib:>5.2f} GiB",
                flush=True,
            )
