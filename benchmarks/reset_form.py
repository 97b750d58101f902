"""What automatic resets cost as a select (the scripts' form) against a lax.cond on done.any() (the old form).

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
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import crl_resnet as crl


class CondResetEnv(crl.GoalEnv):
    """GoalEnv with the reset behind lax.cond(done.any()), as the scripts had it before (same results)."""

    def step(self, env_state, action):
        sim_state = jax.vmap(self.task.step)(env_state.sim_state, action)
        state = jax.vmap(self.task.state)(sim_state)
        goal = env_state.obs[:, self.state_dim :]
        dist_to_goal = jnp.linalg.norm(state[:, self.goal_indices] - goal, axis=-1)
        steps = env_state.steps + 1
        done = (steps >= self.episode_length) | jax.vmap(self.task.terminated)(sim_state)
        obs = jnp.concatenate([state, goal], axis=-1)
        key, reset_key = jax.random.split(env_state.key)

        def reset_done(_):
            fresh = env_state.first if self.fixed_goals else self._fresh(reset_key, done.shape[0])
            pick = lambda new, old: jnp.where(done.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)
            return jax.tree.map(pick, fresh, (sim_state, obs))

        sim_state, obs = jax.lax.cond(done.any(), reset_done, lambda _: (sim_state, obs), None)
        steps = jnp.where(done, 0, steps)
        return crl.EnvState(sim_state, obs, steps, env_state.traj_id + done, done, dist_to_goal, key, env_state.first)


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
    fixed = goals == "fixed"
    return {
        form: rollout_speed(cls(env_id, fixed_goals=fixed), num_envs, num_steps, repeats)
        for form, cls in [("select", crl.GoalEnv), ("cond", CondResetEnv)]
    }


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
