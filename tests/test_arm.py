"""The manipulation tasks (Panda arm + cube, MJX): stepping is finite, the cube stays on the table and inside the
bins, goals and cubes start inside their declared regions, and scripted policies solve arm_reach and
arm_push_easy (so the tasks are solvable and the success metric reads the right entries).

MJX costs 30-60 s of compilation per environment and ~1-2k env steps/s on 2 CPU cores, so everything here is
marked slow except one random-action test on arm_push_easy: `python -m pytest -m slow tests/test_arm.py`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mujoco import mjx

import crl_resnet as crl

ARMS = [env_id for env_id in crl.ENVIRONMENTS if env_id.startswith("arm_")]
IN_DEFAULT_SUITE = {"arm_push_easy"}


def rollout(env, policy, num_envs, num_steps, seed=0):
    """obs before each step, and the distance to the goal and done flag after it: (num_steps, num_envs, ...)."""

    def run(key):
        def step(env_state, key):
            new_state = env.step(env_state, policy(env_state.obs, key))
            return new_state, (env_state.obs, new_state.dist_to_goal, new_state.done)

        k_reset, k_steps = jax.random.split(key)
        return jax.lax.scan(step, env.reset(k_reset, num_envs), jax.random.split(k_steps, num_steps))[1]

    key = jax.random.PRNGKey(seed)
    return jax.tree.map(np.asarray, jax.jit(run).lower(key).compile(env.compiler_options)(key))


def random_policy(env):
    return lambda obs, key: jax.random.uniform(key, (obs.shape[0], env.action_dim), minval=-1, maxval=1)


def test_every_arm_task_is_registered_with_the_benchmark_dimensions():
    assert ARMS == ["arm_reach", "arm_push_easy", "arm_push_hard", "arm_binpick_easy", "arm_binpick_hard"]
    for env_id in ARMS:
        spec = crl.ENVIRONMENTS[env_id]
        assert spec.success_radius == 0.1
        if env_id == "arm_reach":  # the gripper point is the goal
            assert (spec.state_dim, spec.goal_indices) == (13, (7, 8, 9))
        else:  # the cube is the goal
            assert (spec.state_dim, spec.goal_indices) == (17, (0, 1, 2))


@pytest.mark.parametrize(
    "env_id", [pytest.param(e, marks=() if e in IN_DEFAULT_SUITE else pytest.mark.slow) for e in ARMS]
)
def test_500_random_steps_are_finite_and_the_cube_stays_on_the_table_and_out_of_the_walls(env_id):
    env = crl.GoalEnv(env_id)
    obs, dist, done = rollout(env, random_policy(env), num_envs=8, num_steps=500)
    assert obs.shape == (500, 8, env.obs_dim) and np.all(np.isfinite(obs)) and np.all(np.isfinite(dist))
    assert done.sum() == 500 // env.episode_length * 8, "an automatic reset at every time limit"
    if env_id == "arm_reach":
        return
    cube = obs[..., :3]
    # pressed by the arm's full joint torques the cube sinks into the table a little (push: 5 mm at most seen);
    # wedged between a pad and a bin wall it once sank 2 cm (binpick_hard, 1 of 8000 steps) but never through
    sink = 0.007 if "push" in env_id else 0.021
    assert cube[..., 2].min() > crl.CUBE_HALF - sink, "the cube stays on the table"
    for centre, half in [(np.array(c.split(), float), np.array(s.split(), float)) for c, s in env.task.walls]:
        inside = np.all(np.abs(cube - centre) < half + crl.CUBE_HALF - 0.005, axis=-1)
        assert not inside.any(), "the cube's centre never comes within 1.5 cm of a wall's middle"
    print(f"{env_id}: cube height {cube[..., 2].min():.4f}..{cube[..., 2].max():.3f}")


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ARMS)
def test_goals_and_cubes_start_only_inside_their_declared_regions(env_id):
    env = crl.GoalEnv(env_id)
    obs = np.asarray(jax.jit(lambda key: env.reset(key, 2000).obs)(jax.random.PRNGKey(0)))
    arm = env.task
    regions = [(obs[:, env.state_dim :], arm.goal_region)] + ([(obs[:, :3], arm.cube_region)] if arm.cube else [])
    for points, (low, high) in regions:
        low, high = np.asarray(low), np.asarray(high)
        assert np.all(points >= low - 1e-6) and np.all(points <= high + 1e-6)
        spread = high - low  # uniform: the samples reach near every face of a box (z is fixed for cubes on the table)
        np.testing.assert_allclose(points.min(0), low, atol=0.02 * spread.max())
        np.testing.assert_allclose(points.max(0), high, atol=0.02 * spread.max())
    if arm.cube:  # the cube starts at rest on the table, the gripper open
        np.testing.assert_allclose(obs[:, 2], crl.CUBE_HALF, atol=1e-6)
        np.testing.assert_allclose(obs[:, 16], 0.08, atol=1e-6)


# ---- scripted policies: inverse kinematics of the gripper point for joints 1, 2, 4, 6 (the action's joints) ----
ACTION_JOINTS = jnp.array([0, 1, 3, 5])


def gripper_ik(arm, joints, target, weight=0.3, iterations=12):
    """Joint 1, 2, 4, 6 angles within the action's ranges that put the gripper point at `target`, with the hand as
    near to pointing down as `weight` asks (Gauss-Newton on MJX's own forward kinematics from the current angles;
    the last iterations drop the hand term, so that where joint 6's range cannot point the hand down, the
    position still comes out exact)."""

    def residual(x, weight):
        qpos = arm.data.qpos.at[:7].set(joints.at[ACTION_JOINTS].set(x))
        data = mjx.kinematics(arm.mjx_model, arm.data.replace(qpos=qpos))
        hand_z = data.site_xmat[arm.grip][:, 2] + jnp.array([0.0, 0.0, 1.0])  # the hand's z axis should be -z
        return jnp.concatenate([data.site_xpos[arm.grip] - target, weight * hand_z])

    def gauss_newton(i, x):
        w = jnp.where(i < iterations - 4, weight, 0.0)
        jac = jax.jacfwd(residual)(x, w)
        step = jnp.linalg.solve(jac.T @ jac + 1e-4 * jnp.eye(4), jac.T @ residual(x, w))
        return jnp.clip(x - step, arm.target_low, arm.target_high)

    return jax.lax.fori_loop(0, iterations, gauss_newton, joints[ACTION_JOINTS])


def command(arm, joints, x, max_change=0.15):
    """The action that moves joints 1, 2, 4, 6 toward angles `x` by at most `max_change` rad per step: a slow,
    straight path in joint space (the home pose cannot point the hand down, so a Cartesian path from it can't)."""
    x = joints[ACTION_JOINTS] + jnp.clip(x - joints[ACTION_JOINTS], -max_change, max_change)
    return 2 * (x - arm.target_low) / (arm.target_high - arm.target_low) - 1


def reach_policy(env):
    def act(obs):
        joints, goal = obs[:7], obs[13:16]
        return command(env.task, joints, gripper_ik(env.task, joints, goal, weight=0.0))  # high goals: tilted

    return lambda obs, key: jax.vmap(act)(obs)


def push_policy(env):
    """Closed gripper: go 6 cm behind the cube (seen from the goal) at 12 cm height, descend, push toward the goal."""

    def act(obs):
        cube, joints, grip, goal = obs[:3], obs[3:10], obs[10:13], obs[17:20]
        u = (goal - cube)[:2] / (jnp.linalg.norm((goal - cube)[:2]) + 1e-6)
        behind = cube[:2] - 0.06 * u
        rel = grip[:2] - cube[:2]
        lateral = jnp.linalg.norm(rel - (rel @ u) * u)
        aligned = (rel @ u < -0.03) & (lateral < 0.015)
        above_behind = jnp.linalg.norm(grip[:2] - behind) < 0.015
        push = aligned & (grip[2] < 0.05)
        target_xy = jnp.where(push, grip[:2] + 0.04 * u - 0.5 * (rel - (rel @ u) * u), behind)
        target_z = jnp.where(push | above_behind, 0.03, 0.12)
        target = jnp.append(target_xy, target_z)
        target = jnp.where(jnp.linalg.norm((goal - cube)[:2]) < 0.02, grip, target)  # arrived: hold still
        x = gripper_ik(env.task, joints, target)
        return jnp.append(command(env.task, joints, x), 1.0)  # > 0: gripper closed

    return lambda obs, key: jax.vmap(act)(obs)


@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id, policy, min_success", [("arm_reach", reach_policy, 0.9), ("arm_push_easy", push_policy, 0.7)]
)
def test_a_scripted_policy_succeeds_on_most_episodes(env_id, policy, min_success):
    env = crl.GoalEnv(env_id)
    dist = rollout(env, policy(env), num_envs=32, num_steps=env.episode_length)[1]
    success = (dist < env.success_radius).any(0)
    print(f"{env_id}: scripted success {success.mean():.2f}, final distance {dist[-1].mean():.3f}")
    assert success.mean() >= min_success
    random_dist = rollout(env, random_policy(env), num_envs=32, num_steps=env.episode_length)[1]
    assert success.mean() > (random_dist < env.success_radius).any(0).mean() + 0.3, "far better than random actions"
