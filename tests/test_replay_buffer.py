"""Future-state relabelling: geometric law, truncation at trajectory ends, circular storage."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import crl_resnet as crl


def offsets_at(traj_id_row, t, gamma, n=40_000, seed=0):
    ids = jnp.tile(jnp.array(traj_id_row)[None], (n, 1))
    future = crl.future_indices(ids, jax.random.PRNGKey(seed), gamma)
    return np.asarray(future[:, t]) - t


def chi_square_p(offsets, probs):
    counts = np.bincount(offsets, minlength=len(probs))[: len(probs)]
    assert counts.sum() == len(offsets), "offsets outside the support"
    assert np.all(counts[probs == 0] == 0), "offsets the law gives probability 0"
    return stats.chisquare(counts[probs > 0], probs[probs > 0] * len(offsets)).pvalue


def test_offsets_follow_the_geometric_law():
    gamma, window = 0.9, 400
    offsets = offsets_at(np.zeros(window, dtype=np.int32), 0, gamma)
    # P(j - t = k) = (1 - gamma) gamma^(k - 1), k >= 1; pool the tail beyond 40 into one bin
    k = np.arange(1, 41)
    probs = np.concatenate([[0.0], (1 - gamma) * gamma ** (k - 1)])
    probs = np.append(probs, 1 - probs.sum())
    binned = np.minimum(offsets, 41)
    assert chi_square_p(binned, probs) > 1e-3
    assert abs(offsets.mean() - 1 / (1 - gamma)) < 0.1


def test_offsets_are_truncated_to_the_trajectory():
    gamma = 0.7
    ids = np.array([0] * 10 + [1] * 30, dtype=np.int32)  # trajectory 0 ends at index 9
    offsets = offsets_at(ids, 4, gamma)  # 5 steps left: k in 1..5 with P(k) ∝ gamma^k
    probs = np.concatenate([[0.0], gamma ** np.arange(1, 6)])
    probs /= probs.sum()
    assert offsets.min() >= 1 and offsets.max() <= 5
    assert chi_square_p(offsets, probs) > 1e-3
    assert np.all(offsets_at(ids, 9, gamma, n=100) == 0), "the last step of a trajectory falls back to itself"


def test_future_never_crosses_a_trajectory_boundary():
    rng = np.random.default_rng(0)
    resets = rng.random((64, 300)) < 0.05  # random episode ends, as with early termination
    ids = jnp.array(np.cumsum(resets, axis=1), dtype=jnp.int32)
    future = np.asarray(crl.future_indices(ids, jax.random.PRNGKey(1), 0.99))
    t = np.arange(300)[None]
    ids = np.asarray(ids)
    assert np.all(future >= t)
    assert np.all(np.take_along_axis(ids, future, axis=1) == ids)
    is_last = np.append(ids[:, 1:] != ids[:, :-1], np.ones((64, 1), bool), axis=1)
    assert np.all((future > t) | is_last)


def test_circular_buffer_samples_time_contiguous_windows_and_same_episode_goals():
    """Fill past capacity with episodes of length 7; state = (global time, env), goal must be a later step."""
    capacity, num_envs, episode, window = 50, 3, 7, 20
    buffer = crl.buffer_init(capacity, num_envs, obs_dim=3, action_dim=1)
    for start in range(0, 130, 13):  # 130 rows: wraps around the 50-row buffer twice
        time_index = np.arange(start, start + 13)[:, None].repeat(num_envs, 1)
        obs = np.stack([time_index, np.tile(np.arange(num_envs), (13, 1)), -np.ones_like(time_index)], -1)
        action = time_index[..., None] * 0.5
        buffer = crl.buffer_insert(
            buffer,
            jnp.array(obs, jnp.float32),
            jnp.array(action, jnp.float32),
            jnp.array(time_index // episode, jnp.int32),
        )
    assert int(buffer.size) == capacity
    tr = crl.sample_transitions(buffer, jax.random.PRNGKey(0), window, 0.9, state_dim=2, goal_indices=jnp.array([0]))
    state_t = np.asarray(tr["state"][:, 0]).reshape(num_envs, window)
    goal_t = np.asarray(tr["goal"][:, 0]).reshape(num_envs, window)
    assert np.all(np.diff(state_t, axis=1) == 1), "windows are consecutive steps in time"
    assert state_t.min() >= 130 - capacity, "only the newest `capacity` rows are sampled"
    assert np.all(goal_t >= state_t) and np.all(goal_t // episode == state_t // episode)
    np.testing.assert_array_equal(np.asarray(tr["action"][:, 0]).reshape(num_envs, window), state_t * 0.5)
    assert set(tr) == {"state", "action", "goal"}, "what CRL and GCBC read; SAC adds its own (sac_her.py)"
