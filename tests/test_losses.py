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
