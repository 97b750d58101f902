"""The residual encoder of the paper's Fig. 2: depth, parameter count, identity shortcut."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crl_resnet as crl


def dense_kernels(params):
    """(Dense layer count, parameter count); scanned block kernels carry a leading num_blocks axis."""
    layers, count = 0, 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        count += leaf.size
        names = [str(getattr(p, "key", p)) for p in path]
        if names[-1] == "kernel":
            layers += leaf.shape[0] if "blocks" in names else 1
    return layers, count


def layer_params(fan_in, width):
    return fan_in * width + width + 2 * width  # Dense kernel + bias, LayerNorm scale + bias


@pytest.mark.parametrize("num_blocks", [1, 2, 4, 16])
def test_encoder_depth_and_parameter_count(num_blocks):
    width, repr_dim, in_dim = 32, 8, 5
    params = crl.Encoder(repr_dim, width, num_blocks).init(jax.random.PRNGKey(0), jnp.zeros((1, in_dim)))
    layers, count = dense_kernels(params)
    assert layers == 1 + 4 * num_blocks + 1  # input layer, 4 Dense per block, output layer
    expected = layer_params(in_dim, width) + 4 * num_blocks * layer_params(width, width) + width * repr_dim + repr_dim
    assert count == expected


@pytest.mark.parametrize("num_blocks", [1, 3])
def test_actor_depth_and_parameter_count(num_blocks):
    width, action_dim, obs_dim = 16, 3, 7
    params = crl.Actor(action_dim, width, num_blocks).init(jax.random.PRNGKey(0), jnp.zeros((1, obs_dim)))
    layers, count = dense_kernels(params)
    assert layers == 1 + 4 * num_blocks + 2  # two heads: mean and log-std
    expected = (
        layer_params(obs_dim, width)
        + 4 * num_blocks * layer_params(width, width)
        + 2 * (width * action_dim + action_dim)
    )
    assert count == expected


def test_block_is_identity_when_its_last_dense_is_zero():
    block = crl.ResidualBlock(width=16)
    h = jax.random.normal(jax.random.PRNGKey(1), (4, 16))
    params = block.init(jax.random.PRNGKey(0), h, None)
    out, _ = block.apply(params, h, None)
    assert not np.allclose(out, h)
    last = params["params"]["Dense_3"]
    params["params"]["Dense_3"] = {"kernel": jnp.zeros_like(last["kernel"]), "bias": jnp.zeros_like(last["bias"])}
    out, _ = block.apply(params, h, None)
    np.testing.assert_allclose(out, h, atol=1e-6)


def test_remat_changes_memory_not_results():
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 6))
    plain, remat = crl.Encoder(4, 16, 2), crl.Encoder(4, 16, 2, remat=True)
    params = plain.init(jax.random.PRNGKey(0), x)
    loss = lambda module: lambda p: jnp.sum(module.apply(p, x) ** 2)
    np.testing.assert_allclose(plain.apply(params, x), remat.apply(params, x), rtol=1e-6)
    g1, g2 = jax.grad(loss(plain))(params), jax.grad(loss(remat))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g1, g2)


def test_actor_log_std_is_squashed_into_bounds():
    actor = crl.Actor(2, 16, 1)
    obs = 1e3 * jax.random.normal(jax.random.PRNGKey(3), (64, 5))
    params = actor.init(jax.random.PRNGKey(0), obs)
    _, log_std = actor.apply(params, obs)
    assert float(log_std.min()) >= crl.LOG_STD_MIN and float(log_std.max()) <= crl.LOG_STD_MAX
