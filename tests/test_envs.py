"""Every registered environment: finite observations of the declared shape, goals re-sampled at every reset."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crl_resnet as crl


def random_rollout(env, num_envs, num_steps, seed=0):
    @jax.jit
    def run(key):
        def step(env_state, key):
            action = jax.random.uniform(key, (num_envs, env.action_dim), minval=-1, maxval=1)
            env_state = env.step(env_state, action)
            return env_state, (env_state.obs, env_state.done)

        k_reset, k_steps = jax.random.split(key)
        return jax.lax.scan(step, env.reset(k_reset, num_envs), jax.random.split(k_steps, num_steps))

    return run(jax.random.PRNGKey(seed))


@pytest.mark.parametrize("env_id", list(crl.ENVIRONMENTS))
def test_reset_and_200_random_steps_are_finite_with_declared_shape(env_id):
    spec = crl.ENVIRONMENTS[env_id]
    env = crl.GoalEnv(env_id, episode_length=50)  # short episodes so automatic resets happen in the rollout
    final, (obs, done) = random_rollout(env, num_envs=16, num_steps=200)
    assert obs.shape == (200, 16, spec.state_dim + len(spec.goal_indices))
    assert np.all(np.isfinite(np.asarray(obs)))
    assert int(done.sum()) == 4 * 16, "every environment resets at each time limit"
    assert np.all(np.asarray(final.traj_id) == 4)
    goals = np.asarray(obs[..., spec.state_dim :])
    # goals are constant within an episode and re-sampled at each (automatic) reset
    assert np.all(goals[:49] == goals[:1])  # obs after steps 1..49; step 50 ends the episode and resets
    assert np.all(np.any(goals[49] != goals[48], axis=-1))
    assert len(np.unique(goals[0].round(5), axis=0)) == 16, "parallel environments get different goals"


@pytest.mark.parametrize("env_id", list(crl.ENVIRONMENTS))
def test_goals_differ_across_resets(env_id):
    env = crl.GoalEnv(env_id)
    a = env.reset(jax.random.PRNGKey(0), 8).obs[:, env.state_dim :]
    b = env.reset(jax.random.PRNGKey(1), 8).obs[:, env.state_dim :]
    assert np.all(np.any(np.asarray(a) != np.asarray(b), axis=-1))


@pytest.mark.parametrize("name", ["u_maze", "big_maze"])
def test_eval_variants_sample_only_their_far_goal_cells(name):
    env = crl.GoalEnv(f"point_{name}_eval")
    goals = np.asarray(env.reset(jax.random.PRNGKey(0), 2000).obs[:, env.state_dim :])
    cells = {tuple(c) for c in np.round(goals / 4.0).astype(int)}
    assert cells == set(crl.MAZE_EVAL_GOALS[name])
    train_cells = {
        tuple(c)
        for c in np.round(
            np.asarray(crl.GoalEnv(f"point_{name}").reset(jax.random.PRNGKey(0), 2000).obs[:, 2:]) / 4.0
        ).astype(int)
    }
    assert train_cells == set(crl.maze_cells(name, "G"))


@pytest.mark.parametrize("name", list(crl.MAZE_LAYOUTS))
def test_point_never_enters_a_wall(name):
    maze = crl.PointMaze(name)
    walls = np.array([[c == "#" for c in row] for row in crl.MAZE_LAYOUTS[name]])

    @jax.jit
    def wander(key):
        def step(xy, key):  # long straight pushes, so the point presses into walls
            xy = maze.step(xy, jax.random.choice(key, jnp.array([[1.0, 0], [-1, 0], [0, 1], [0, -1], [1, 1]])))
            return xy, xy

        return jax.lax.scan(step, maze.start, jax.random.split(key, 3000))[1]

    path = np.asarray(jax.vmap(wander)(jax.random.split(jax.random.PRNGKey(0), 32))).reshape(-1, 2)
    cells = np.round(path / 4.0).astype(int)
    assert not walls[cells[:, 0], cells[:, 1]].any()
    assert len({tuple(c) for c in cells}) > 3, "the point moves through several cells"


def test_success_radius_is_applied_to_the_goal_indices():
    env = crl.GoalEnv("reacher", episode_length=10)
    state = env.reset(jax.random.PRNGKey(0), 4)
    nxt = env.step(state, jnp.zeros((4, 2)))
    tip = np.asarray(nxt.obs[:, :3])
    goal = np.asarray(state.obs[:, env.state_dim :])
    np.testing.assert_allclose(np.asarray(nxt.dist_to_goal), np.linalg.norm(tip - goal, axis=-1), rtol=1e-5)
    # the goal lies in the fingertip's plane (the spring backend lets the arm sag ~2 mm; the radius is 50 mm)
    np.testing.assert_allclose(goal[:, 2], tip[:, 2], atol=3e-3)
