"""gcbc.py: the tanh-Gaussian log-likelihood against scipy, and maximum likelihood recovering a goal-dependent policy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

import gcbc


def test_tanh_gaussian_log_likelihood_matches_the_change_of_variables():
    rng = np.random.default_rng(0)
    mean, log_std = rng.normal(size=(6, 3)), rng.uniform(-2, 1, size=(6, 3))
    action = rng.uniform(-0.999, 0.999, size=(6, 3))
    # p(a) = N(atanh(a); mean, std) / (1 - a^2), per dimension
    expected = np.sum(stats.norm.logpdf(np.arctanh(action), mean, np.exp(log_std)) - np.log(1 - action**2), -1)
    got = gcbc.tanh_gaussian_log_prob(jnp.asarray(action), jnp.asarray(mean), jnp.asarray(log_std))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_log_likelihood_agrees_with_the_sampler_and_stays_finite_on_the_boundary():
    mean, log_std = jnp.zeros((1000, 2)), jnp.full((1000, 2), -0.5)
    action, log_prob = gcbc.sample_tanh_gaussian(jax.random.PRNGKey(0), mean, log_std)
    np.testing.assert_allclose(gcbc.tanh_gaussian_log_prob(action, mean, log_std), log_prob, rtol=1e-3, atol=1e-3)
    edge = jnp.array([[1.0, -1.0]])  # prefill actions and saturated tanh reach the boundary
    assert np.isfinite(gcbc.tanh_gaussian_log_prob(edge, jnp.zeros((1, 2)), jnp.zeros((1, 2)))).all()


def test_maximum_likelihood_recovers_the_action_taken_for_each_goal():
    """Data where the action depends on the goal only: GCBC's loss fitted by Adam must learn that map."""
    args = gcbc.Args(width=32, num_blocks=1)
    actor = gcbc.make_networks(args, type("Env", (), {"action_dim": 2})())
    actor_loss = gcbc.make_losses(args, actor)
    key = jax.random.PRNGKey(0)
    goal = jax.random.uniform(key, (256, 2), minval=-1, maxval=1)
    batch = {"state": jnp.zeros((256, 3)), "goal": goal, "action": 0.8 * jnp.tanh(2 * goal[:, ::-1])}
    params = actor.init(key, jnp.zeros((1, 5)))
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state):
        (loss, info), grads = jax.value_and_grad(actor_loss, has_aux=True)(params, batch)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss, info

    _, _, first_loss, first = step(params, opt_state)
    for _ in range(500):
        params, opt_state, loss, info = step(params, opt_state)
    assert loss < first_loss - 3, (first_loss, loss)
    assert info["losses/action_mse"] < 0.01 < first["losses/action_mse"]
