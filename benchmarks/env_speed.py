"""Environment steps per second under random actions, automatic resets included, for registered environments.

    python benchmarks/env_speed.py                      # every environment at 128, 256 and 512 envs (an hour)
    python benchmarks/env_speed.py --env-ids point_u_maze --num-envs 256
    python benchmarks/env_speed.py --env-ids ant ant_big_maze humanoid --num-envs 128 512 --steps 100 --repeats 3

Each measurement is one jitted lax.scan of --steps steps, timed after compilation, best of --repeats.
"""

import argparse
import os
import platform
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import crl_resnet as crl


def steps_per_second(env_id, num_envs, num_steps, repeats):
    env = crl.GoalEnv(env_id)

    def run(key):
        def step(env_state, key):
            action = jax.random.uniform(key, (num_envs, env.action_dim), minval=-1, maxval=1)
            return env.step(env_state, action), None

        k_reset, k_steps = jax.random.split(key)
        final, _ = jax.lax.scan(step, env.reset(k_reset, num_envs), jax.random.split(k_steps, num_steps))
        return final.obs

    run = jax.jit(run).lower(jax.random.PRNGKey(0)).compile(env.compiler_options)  # the arm's XLA options
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(jax.random.PRNGKey(r + 1)))
        best = min(best, time.perf_counter() - start)
    return num_envs * num_steps / best


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-ids", nargs="+", default=list(crl.ENVIRONMENTS))
    parser.add_argument("--num-envs", nargs="+", type=int, default=[128, 256, 512])
    parser.add_argument("--steps", type=int, default=None, help="steps per measurement (default: by env cost)")
    parser.add_argument("--repeats", type=int, default=5)
    cli = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}, {os.cpu_count()} CPU cores, {platform.processor()}")
    print(f"{'env_id':<22}" + "".join(f"{n:>12} envs" for n in cli.num_envs))
    for env_id in cli.env_ids:
        steps = cli.steps or (10000 if env_id.startswith("point") else 200)
        rates = [steps_per_second(env_id, n, steps, cli.repeats) for n in cli.num_envs]
        print(f"{env_id:<22}" + "".join(f"{r:>12,.0f} st/s" for r in rates), flush=True)
