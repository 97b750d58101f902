"""The CRL losses against plain numpy computations of the paper's formulas (Sec. 3)."""

import jax
import jax.numpy as jnp
import numpy as np

import crl_resnet as crl


def reference_infonce(phi, psi, penalty):
    phi, psi = np.asarray(phi, np.float64), np.asarray(psi, np.float64)
    batch = phi.shape[0]
    logits = np.empty((batch, batch))
    for i in range(batch):
        for j in range(batch):
            logits[i, j] = -np.sqrt(np.sum((phi[i] - psi[j]) ** 2))  # f(s_i, a_i, g_j) = -||phi_i - psi_j||
    lse = np.log(np.sum(np.exp(logits), axis=1))
    return np.mean(-np.diag(logits) + lse) + penalty * np.mean(lse**2)


def test_infonce_with_l2_energy_and_penalty_matches_numpy():
    rng = np.random.default_rng(0)
    for batch, dim, scale, penalty in [(8, 4, 1.0, 0.1), (32, 64, 3.0, 0.1), (16, 8, 0.3, 0.0), (5, 2, 10.0, 1.0)]:
        phi = rng.normal(size=(batch, dim)).astype(np.float32) * scale
        psi = rng.normal(size=(batch, dim)).astype(np.float32) * scale
        ours = float(crl.infonce_loss(crl.l2_energy(jnp.array(phi), jnp.array(psi)), penalty))
        np.testing.assert_allclose(ours, reference_infonce(phi, psi, penalty), rtol=2e-5, atol=2e-5)


def test_infonce_is_lower_when_positives_are_closest():
    rng = np.random.default_rng(1)
    psi = rng.normal(size=(16, 8)).astype(np.float32)
    aligned = float(crl.infonce_loss(crl.l2_energy(jnp.array(psi + 0.01), jnp.array(psi)), 0.1))
    shuffled = float(crl.infonce_loss(crl.l2_energy(jnp.array(psi[::-1] + 0.01), jnp.array(psi)), 0.1))
    assert aligned < shuffled


def test_energy_gradient_is_finite_when_embeddings_coincide():
    phi = jnp.ones((4, 3))
    grad = jax.grad(lambda p: crl.infonce_loss(crl.l2_energy(p, phi), 0.1))(phi)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    key = jax.random.PRNGKey(0)
    mean = jnp.array([[0.3, -1.2], [2.0, 0.0]])
    log_std = jnp.array([[-0.5, 0.4], [0.0, -2.0]])
    action, log_prob = crl.sample_tanh_gaussian(key, mean, log_std)
    u = np.arctanh(np.clip(np.asarray(action, np.float64), -1 + 1e-12, 1 - 1e-12))
    m, s = np.asarray(mean, np.float64), np.exp(np.asarray(log_std, np.float64))
    gauss = -0.5 * ((u - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
    expected = np.sum(gauss - np.log(1 - np.tanh(u) ** 2), axis=-1)
    np.testing.assert_allclose(np.asarray(log_prob), expected, rtol=1e-3, atol=1e-3)
    assert np.all(np.abs(np.asarray(action)) < 1)


class Linear:
    """A stand-in network: apply(params, x) = x @ params (the actor: mean and log-std from two matrices)."""

    def __init__(self, heads=1):
        self.heads = heads

    def apply(self, params, x):
        return x @ params if self.heads == 1 else tuple(x @ p for p in params)


def test_actor_loss_matches_numpy():
    """mean_i[alpha log pi(a_i | s_i, g_i) - f(s_i, a_i, g_i)], a_i = tanh(u_i), u_i ~ N(mean, std), with
    f = -||phi(s_i, a_i) - psi(g_i)||: the actor maximises the critic of its own action (paper Sec. 3)."""
    rng = np.random.default_rng(0)
    batch, state_dim, goal_dim, action_dim, repr_dim = 16, 3, 2, 2, 4
    w_sa = rng.normal(size=(state_dim + action_dim, repr_dim)).astype(np.float32)
    w_mean, w_log_std = (0.3 * rng.normal(size=(state_dim + goal_dim, action_dim)).astype(np.float32) for _ in "ab")
    state = rng.normal(size=(batch, state_dim)).astype(np.float32)
    goal = rng.normal(size=(batch, goal_dim)).astype(np.float32)
    psi = rng.normal(size=(batch, repr_dim)).astype(np.float32)
    log_alpha, key = 0.3, jax.random.PRNGKey(1)
    _, actor_loss, _ = crl.make_losses(crl.Args(), Linear(), None, Linear(heads=2))
    batch_ = {"state": jnp.array(state), "goal": jnp.array(goal)}
    critic = {"sa_encoder": jnp.array(w_sa)}
    loss, log_prob = actor_loss((jnp.array(w_mean), jnp.array(w_log_std)), critic, log_alpha, batch_, psi, key)

    obs = np.concatenate([state, goal], -1).astype(np.float64)
    mean, log_std = obs @ w_mean, obs @ w_log_std
    noise = np.asarray(jax.random.normal(key, mean.shape), np.float64)  # the draws sample_tanh_gaussian makes
    u = mean + np.exp(log_std) * noise
    action = np.tanh(u)
    gauss = -0.5 * noise**2 - log_std - 0.5 * np.log(2 * np.pi)
    expected_log_prob = np.sum(gauss - np.log(1 - np.tanh(u) ** 2), -1)
    q = -np.linalg.norm(np.concatenate([state, action], -1) @ w_sa - psi, axis=-1)
    np.testing.assert_allclose(np.asarray(log_prob), expected_log_prob, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(float(loss), np.mean(np.exp(log_alpha) * expected_log_prob - q), rtol=1e-4)


def test_temperature_loss_raises_alpha_when_entropy_falls_below_its_target():
    """-alpha * mean(log pi + target): its gradient in log alpha is -alpha * mean(log pi + target), so descent
    raises alpha when the entropy -log pi is below the target and lowers it above; log pi is a constant to it."""
    _, _, alpha_loss = crl.make_losses(crl.Args(), None, None, None)
    target, log_alpha = -1.0, jnp.array(0.2)
    for log_prob, direction in [(jnp.array([2.0, 1.0]), 1), (jnp.array([-3.0, -2.0]), -1)]:  # entropy -1.5, 2.5
        value = float(alpha_loss(log_alpha, log_prob, target))
        np.testing.assert_allclose(value, -np.exp(0.2) * np.mean(np.asarray(log_prob) + target), rtol=1e-6)
        step = -jax.grad(alpha_loss)(log_alpha, log_prob, target)  # a gradient-descent step on log alpha
        assert np.sign(float(step)) == direction
        assert np.all(np.asarray(jax.grad(alpha_loss, argnums=1)(log_alpha, log_prob, target)) == 0)


class Drift:
    """Fake physics with a 3-d action: state (2,) moved by the action's first two entries."""

    action_dim = 3

    def init(self, key):
        return jnp.zeros(2), jax.random.uniform(key, (2,))

    def step(self, state, action):
        return state + action[:2]

    def state(self, state):
        return state

    def terminated(self, state):
        return jnp.zeros((), dtype=bool)


def test_the_target_entropy_is_minus_half_the_action_dimension(monkeypatch):
    """make_train gives the temperature loss -target_entropy_scale * |A| (Table 2's 0.5 by default)."""
    seen = []
    make_losses = crl.make_losses

    def recording(*args):
        critic_loss, actor_loss, alpha_loss = make_losses(*args)
        return (
            critic_loss,
            actor_loss,
            lambda log_alpha, log_prob, target: seen.append(target) or alpha_loss(log_alpha, log_prob, target),
        )

    monkeypatch.setattr(crl, "make_losses", recording)
    monkeypatch.setitem(crl.ENVIRONMENTS, "drift", crl.EnvSpec(Drift, 2, (0, 1), 0.5, 100))
    for env_id, action_dim in [("point_u_maze", 2), ("drift", 3)]:
        args = crl.Args(env_id=env_id, num_envs=4, batch_size=8, num_sgd_batches_per_training_step=1)
        args = crl.dataclasses.replace(args, unroll_length=10, max_replay_size=1000, min_replay_size=1000, width=8)
        args = crl.dataclasses.replace(args, total_env_steps=4 * 1000 + 100 * 40, num_blocks=1)
        args.actor_num_blocks = args.critic_num_blocks = 1
        env = crl.GoalEnv(env_id)
        init, _, epoch, _ = crl.make_train(args, env)
        jax.eval_shape(epoch, jax.eval_shape(init, jax.random.PRNGKey(0)))
        assert seen[-1] == -0.5 * action_dim == -0.5 * env.action_dim


def test_the_defaults_are_the_papers_table_2():
    args = crl.Args()
    assert (args.num_envs, args.batch_size, args.max_replay_size, args.min_replay_size) == (512, 512, 10_000, 1_000)
    assert (args.actor_lr, args.critic_lr, args.gamma, args.logsumexp_penalty, args.repr_dim) == (
        3e-4,
        3e-4,
        0.99,
        0.1,
        64,
    )
    assert args.episode_length is None and crl.ENVIRONMENTS[args.env_id].episode_length == 1000
    utd = args.num_sgd_batches_per_training_step / (args.num_envs * args.unroll_length)
    assert round(1 / utd) == 40, "UTD 1:40"
    assert args.total_env_steps == 100_000_000 and args.target_entropy_scale == 0.5
    assert args.alpha_lr == 3e-4, "not in Table 2: the paper's code's temperature learning rate"
    assert args.num_epochs == 100 and args.num_eval_envs == 128, "the paper's code: 100 evaluations of 128 episodes"
