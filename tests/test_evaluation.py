"""The evaluation every learning claim rests on: time near goal, success and final distance on a fake physics
whose distances are known step by step, with an episode that terminates early and one that hits the time limit."""

import jax
import jax.numpy as jnp
import numpy as np

import crl_resnet as crl

GOALS = jnp.array([3.0, 6.0, 100.0])


class Line:
    """Fake physics: a point on a line moving by its action (0.5 per step here), from x = 0 towards a goal drawn
    from GOALS; the episode terminates once x >= 2 * goal, so the goal at 3 ends at step 12, the others run to the
    time limit (20 steps). State = (x, goal)."""

    action_dim = 1

    def init(self, key):
        goal = GOALS[jax.random.randint(key, (), 0, len(GOALS))]
        return jnp.array([0.0, goal]), jnp.array([goal])

    def step(self, state, action):
        return state.at[0].add(action[0])

    def state(self, state):
        return state[:1]

    def terminated(self, state):
        return state[0] >= 2 * state[1]


class ConstantActor:
    """tanh(mean) = 0.5: every step moves the point by 0.5."""

    def apply(self, params, obs):
        return jnp.full((obs.shape[0], 1), jnp.arctanh(0.5)), jnp.zeros((obs.shape[0], 1))


def expected(goal, length=20, radius=1.1):
    """Per goal, by hand: x_t = 0.5 t after step t; near while |x_t - goal| < radius, until the episode's end."""
    end = min(length, int(2 * goal / 0.5))  # termination (x >= 2 goal) or the time limit
    x = 0.5 * np.arange(1, end + 1)
    near = np.abs(x - goal) < radius
    return near.sum(), near.any(), abs(x[-1] - goal)


def test_evaluation_scores_known_distances_and_ignores_what_follows_an_episodes_end(monkeypatch):
    monkeypatch.setitem(crl.ENVIRONMENTS, "line", crl.EnvSpec(Line, 1, (0,), 1.1, 20))
    # fixed goals: after the goal-3 episode terminates at step 12, the reset restarts it towards the same goal,
    # so steps 16-20 are near again and must not count
    env = crl.GoalEnv("line", fixed_goals=True)
    args = crl.Args(env_id="line", num_eval_envs=64)
    metrics = jax.jit(crl.make_evaluate(args, env, ConstantActor()))(None, jax.random.PRNGKey(0))
    goals = np.asarray(env.reset(jax.random.PRNGKey(0), 64).obs[:, 1])  # the goals evaluate drew with that key
    assert set(goals) == {3.0, 6.0, 100.0}
    by_hand = np.array([expected(g) for g in goals])
    assert list(expected(3.0)) == [5, True, 3.0] and list(expected(6.0)) == [5, True, 4.0]
    np.testing.assert_allclose(metrics["eval/time_near_goal"], by_hand[:, 0].mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["eval/time_near_goal_fraction"], by_hand[:, 0].mean() / 20, rtol=1e-6)
    np.testing.assert_allclose(metrics["eval/success"], by_hand[:, 1].mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["eval/dist_to_goal"], by_hand[:, 2].mean(), rtol=1e-5)
