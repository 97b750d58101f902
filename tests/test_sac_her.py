"""sac_her.py: the TD target, the twin-Q critic loss, HER relabelling against plain reference computations."""

import jax
import jax.numpy as jnp
import numpy as np

import sac_her as sac


def test_sac_target_takes_the_twin_minimum_and_subtracts_the_entropy_term():
    rng = np.random.default_rng(0)
    reward = rng.integers(0, 2, 7).astype(np.float32)
    next_q = rng.normal(size=(2, 7)).astype(np.float32)
    next_log_prob = rng.normal(size=7).astype(np.float32)
    alpha, gamma = 0.3, 0.9
    expected = [reward[i] + gamma * (min(next_q[0, i], next_q[1, i]) - alpha * next_log_prob[i]) for i in range(7)]
    np.testing.assert_allclose(sac.sac_target(reward, next_q, next_log_prob, alpha, gamma), expected, rtol=1e-6)


def make_batch(key, batch=16, state_dim=3, action_dim=2, goal_dim=2):
    ks = jax.random.split(key, 5)
    return {
        "state": jax.random.normal(ks[0], (batch, state_dim)),
        "action": jax.random.uniform(ks[1], (batch, action_dim), minval=-1, maxval=1),
        "goal": jax.random.normal(ks[2], (batch, goal_dim)),
        "next_state": jax.random.normal(ks[3], (batch, state_dim)),
        "reward": (jax.random.uniform(ks[4], (batch,)) < 0.5).astype(jnp.float32),
        "has_next": jnp.arange(batch) % 4 != 3,
    }


def test_critic_loss_matches_a_plain_reference_and_ignores_steps_without_a_successor():
    args = sac.Args(width=8, num_blocks=1, actor_num_blocks=1, critic_num_blocks=1, gamma=0.95)
    env = type("Env", (), {"action_dim": 2})()
    q_network, actor = sac.make_networks(args, env)
    critic_loss = jax.jit(sac.make_losses(args, q_network, actor)[0])  # one compile beats eager op-by-op
    batch = make_batch(jax.random.PRNGKey(0))
    x = jnp.zeros((1, 3 + 2 + 2))
    critic = jax.vmap(q_network.init, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(1), 2), x)
    target = jax.vmap(q_network.init, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(2), 2), x)
    actor_params = actor.init(jax.random.PRNGKey(3), jnp.zeros((1, 5)))
    log_alpha, key = jnp.log(0.2), jax.random.PRNGKey(4)
    loss, _ = critic_loss(critic, target, actor_params, log_alpha, batch, key)

    # reference: a' ~ pi(s', g) with the same noise, y = r + gamma (min_k Q'_k(s', a', g) - alpha log pi), each
    # Q-network applied on its own (no vmap over the pair), squared errors summed over the two, averaged over rows
    mean, log_std = actor.apply(actor_params, jnp.concatenate([batch["next_state"], batch["goal"]], -1))
    next_action, next_log_prob = sac.sample_tanh_gaussian(key, mean, log_std)
    first, second = (jax.tree.map(lambda p, k=k: p[k], target) for k in range(2))
    next_sag = jnp.concatenate([batch["next_state"], next_action, batch["goal"]], -1)
    q_next = np.minimum(q_network.apply(first, next_sag), q_network.apply(second, next_sag))
    y = np.asarray(batch["reward"]) + 0.95 * (q_next - 0.2 * np.asarray(next_log_prob))
    sag = jnp.concatenate([batch["state"], batch["action"], batch["goal"]], -1)
    q = [np.asarray(q_network.apply(jax.tree.map(lambda p, k=k: p[k], critic), sag)) for k in range(2)]
    valid = np.asarray(batch["has_next"])
    expected = sum(np.sum((q[k][valid] - y[valid]) ** 2) for k in range(2)) / valid.sum()
    np.testing.assert_allclose(loss, expected, rtol=1e-4)

    # rows without a successor carry no TD error: changing their next state or reward changes nothing
    no_next = ~batch["has_next"]
    changed = {
        **batch,
        "next_state": jnp.where(no_next[:, None], 100.0, batch["next_state"]),
        "reward": jnp.where(no_next, 5.0, batch["reward"]),
    }
    np.testing.assert_allclose(critic_loss(critic, target, actor_params, log_alpha, changed, key)[0], loss, rtol=1e-6)

    # the target is a constant: the gradient reaches the online Q-networks only
    grads = jax.grad(lambda c, t: critic_loss(c, t, actor_params, log_alpha, batch, key)[0], argnums=(0, 1))(
        critic, target
    )
    assert optax_norm(grads[1]) == 0 and optax_norm(grads[0]) > 0


def optax_norm(tree):
    return float(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree)))


def trajectory_buffer(num_envs=8, capacity=300, episode=30):
    """A buffer whose state is (trajectory id, time in trajectory) and whose commanded goal is (-1, -1)."""
    buffer = sac.buffer_init(capacity, num_envs, 4, 1)
    t = np.arange(capacity)[:, None] + np.arange(num_envs)[None] * 7  # staggered episode starts
    traj = (t // episode).astype(np.int32)
    state = np.stack([traj, t % episode], -1).astype(np.float32)
    obs = np.concatenate([state, -np.ones_like(state)], -1)
    return sac.buffer_insert(buffer, jnp.asarray(obs), jnp.zeros((capacity, num_envs, 1)), jnp.asarray(traj))


def test_her_relabels_a_fraction_with_future_states_of_the_same_trajectory_and_recomputes_rewards():
    buffer = trajectory_buffer()
    batches = []
    for seed in range(10):
        k_sample, k_her = jax.random.split(jax.random.PRNGKey(seed))
        k_start, k_future = jax.random.split(k_sample)  # as training_step samples them
        obs, action, traj_id = sac.sample_windows(buffer, k_start, 30)
        transitions = sac.relabel_with_future_states(obs, action, traj_id, k_future, 0.9, 2, jnp.array([0, 1]))
        transitions |= sac.next_states(obs, traj_id, 2)
        batches.append(jax.device_get(sac.her_relabel(transitions, k_her, 0.8, jnp.array([0, 1]), 0.5)))
    b = {k: np.concatenate([x[k] for x in batches]) for k in batches[0]}
    commanded = np.all(b["goal"] == -1, axis=1)
    relabelled = ~commanded
    assert abs(relabelled.mean() - 0.8) < 0.02, relabelled.mean()
    valid = relabelled & b["has_next"]
    # same trajectory, strictly later step
    np.testing.assert_array_equal(b["goal"][valid, 0], b["state"][valid, 0])
    assert np.all(b["goal"][valid, 1] > b["state"][valid, 1])
    # s_{t+1} is the next step of the same trajectory
    np.testing.assert_array_equal(b["next_state"][b["has_next"]], b["state"][b["has_next"]] + [0, 1])
    assert not np.any(b["has_next"][b["state"][:, 1] == 29]), "an episode's last step has no successor"
    # r = 1[||s_{t+1}[goal_indices] - g|| < 0.5]: here exactly when the goal is the very next state
    expected = np.linalg.norm(b["next_state"] - b["goal"], axis=1) < 0.5
    np.testing.assert_array_equal(b["reward"], expected.astype(np.float32))
    assert b["reward"][valid].mean() > 0.05 and b["reward"][commanded].sum() == 0
