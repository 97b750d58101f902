"""What automatic resets cost as a select against a lax.cond on done.any(), the two forms GoalEnv chooses from.

    python benchmarks/reset_form.py
    python benchmarks/reset_form.py --env-ids humanoid_u_maze --num-envs 512 --steps 200

A select computes a reset state at every step and keeps it where an episode ended; the cond computes it only at
steps where some episode ended, but XLA's GPU runtime copies a conditional's predicate to the host and waits for
it, once per env step. With fixed training goals (the paper's protocol) the reset state is a stored copy and
costs nothing either way; with resampled goals it is the task's init (brax's forward kinematics, MJX's for arms).
Random actions, each form compiled once and timed in the same run, best of --repeats; the compiled programs'
conditionals are counted too.
"""

import argparse
import os
import platform
import re
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import crl_resnet as crl


def rollout_speed(env, num_envs, num_steps, repeats):
    """(env steps/s, conditionals in the compiled program, episodes ended per step) of a random-action rollout."""

    def run(key):
        def step(env_state, key):
            action = jax.random.uniform(key, (num_envs, env.action_dim), minval=-1, maxval=1)
            env_state = env.step(env_state, action)
            return env_state, env_state.done.sum()

        k_reset, k_steps = jax.random.split(key)
        final, ended = jax.lax.scan(step, env.reset(k_reset, num_envs), jax.random.split(k_steps, num_steps))
        return final.obs, ended

    program = jax.jit(run).lower(jax.random.PRNGKey(0)).compile(env.compiler_options)
    conditionals = len(re.findall(r"\bconditional\(", program.as_text()))
    best, ended = float("inf"), 0
    for r in range(repeats):
        start = time.perf_counter()
        _, ended = jax.block_until_ready(program(jax.random.PRNGKey(r + 1)))
        best = min(best, time.perf_counter() - start)
    return num_envs * num_steps / best, conditionals, float(ended.mean())


def compare(env_id, num_envs, num_steps, repeats, goals):
    """{form: (steps/s, conditionals, episodes ended per step)} for the select and the cond form."""
    result = {}
    for form in ["select", "cond"]:
        env = crl.GoalEnv(env_id, fixed_goals=goals == "fixed")
        env.reset_select = form == "select"  # what GoalEnv chooses by backend and goals, forced either way
        result[form] = rollout_speed(env, num_envs, num_steps, repeats)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-ids", nargs="+", default=["humanoid_u_maze", "ant_big_maze", "arm_push_easy"])
    parser.add_argument("--goals", nargs="+", default=["resampled", "fixed"], choices=["resampled", "fixed"])
    parser.add_argument("--num-envs", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    cli = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}, {os.cpu_count()} CPU cores, {platform.processor()}")
    print(f"{cli.num_envs} envs, {cli.steps} steps, best of {cli.repeats}")
    for env_id in cli.env_ids:
        for goals in cli.goals:
            result = compare(env_id, cli.num_envs, cli.steps, cli.repeats, goals)
            (select, c_select, ended), (cond, c_cond, _) = result["select"], result["cond"]
            print(
                f"{env_id:<18} {goals:<9} select {select:>9,.0f} st/s ({c_select} conditionals)   cond {cond:>9,.0f} "
                f"st/s ({c_cond})   select/cond {select / cond:.2f}   episodes ended per step {ended:.2f}",
                flush=True,
            )
