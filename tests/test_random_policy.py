"""tools/random_policy.py: a uniformly random policy scored by make_evaluate, the floor of every learning claim."""

import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import random_policy
from scipy import stats


def test_a_random_point_never_reaches_the_far_cells_but_sometimes_a_near_goal(tmp_path, capsys):
    out = tmp_path / "random.json"
    random_policy.main(["--env-id", "point_u_maze_eval", "--num-eval-envs", "64", "--seeds", "2", "--out", str(out)])
    far = json.loads(out.read_text())
    assert far["eval/success"] == 0 and len(far["eval/success_per_seed"]) == 2  # 5 cells away: 40 steps at full speed
    assert far["episode_length"] == 100 and far["episodes_per_seed"] == 64 and far["env_id"] == "point_u_maze_eval"
    assert "eval/time_near_goal: 0 " in capsys.readouterr().out
    near = random_policy.random_policy_metrics("point_u_maze", num_envs=1024, episode_length=50)
    assert 0 < near["eval/success"] < 0.1, "goals in the start's neighbour cell are sometimes hit"
    assert 0 < near["eval/time_near_goal"] <= 50 * near["eval/success"]
    assert np.isclose(near["eval/time_near_goal_fraction"], near["eval/time_near_goal"] / 50)


def test_random_actions_are_fresh_at_every_step_even_where_the_observation_repeats():
    class Echo:  # an environment whose step returns the action it was given
        def step(self, state, action):
            return action

    env = random_policy.RandomActions(Echo(), seed=0)
    obs = jnp.zeros((1000, 3))  # one observation, repeated: a point stuck in a corner
    step = jax.jit(lambda t: env.step(SimpleNamespace(obs=obs, steps=jnp.full(1000, t)), jnp.zeros((1000, 2))))
    at = lambda t: np.asarray(step(t))
    first, second = at(0), at(1)
    assert np.all(first == first[0]), "the same observation at the same step: the same action"
    assert not np.any(first[0] == second[0]), "the next step: a fresh action"
    many = np.concatenate([at(t)[:1] for t in range(2000)])
    assert np.all(np.abs(many) <= 1) and stats.kstest(many[:, 0], "uniform", args=(-1, 2)).pvalue > 1e-3


def test_bad_flags_get_one_line(capsys, tmp_path):
    missing = str(tmp_path / "nowhere" / "random.json")
    for argv in [
        ["--env-id", "nope"],
        ["--env-id", "reacher", "--seeds", "0"],
        ["--env-id", "reacher", "--out", missing],
    ]:
        with pytest.raises(SystemExit) as stop:
            random_policy.main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("error: --"), err


def test_one_compilation_serves_every_seed_and_a_seed_is_reproducible():
    before = random_policy.compiled_evaluate.cache_info().misses
    runs = [
        random_policy.random_policy_metrics("point_u_maze", num_envs=256, seed=s, episode_length=50) for s in (0, 1)
    ]
    assert random_policy.compiled_evaluate.cache_info().misses == before + 1
    assert runs[0]["eval/dist_to_goal"] != runs[1]["eval/dist_to_goal"]
    again = random_policy.random_policy_metrics("point_u_maze", num_envs=256, seed=1, episode_length=50)
    assert again == runs[1], "a seed is reproducible"
