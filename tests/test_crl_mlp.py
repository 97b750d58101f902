"""crl_mlp.py: plain MLP encoders (depth layers, optional LayerNorm, no skip connections), CLI and a tiny run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_script
from test_cli import check_in_process

import crl_mlp
import crl_resnet


def dense_layers(params):
    """Dense kernels, a scanned one (stacked on a leading axis) counted once per layer it holds."""
    kernels = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0] if path[-1].key == "kernel"]
    return sum(int(np.prod(k.shape[:-2])) for k in kernels)


@pytest.mark.parametrize("depth", [1, 2, 4, 9])
def test_encoder_has_the_input_layer_depth_dense_layers_and_the_output(depth):
    params = crl_mlp.Encoder(8, 16, depth).init(jax.random.PRNGKey(0), jnp.zeros((1, 5)))
    assert dense_layers(params) == 1 + depth + 1
    actor = crl_mlp.Actor(3, 16, depth).init(jax.random.PRNGKey(0), jnp.zeros((1, 5)))
    assert dense_layers(actor) == 1 + depth + 2  # mean and log-std heads


@pytest.mark.parametrize("num_blocks", [1, 2, 4])
def test_depth_is_counted_as_in_crl_resnet(num_blocks):
    """crl_mlp.py --depth 4n has as many Dense layers as crl_resnet.py --num-blocks n: the no-residual ablation
    compares networks of one size."""
    resnet = crl_resnet.Encoder(8, 16, num_blocks).init(jax.random.PRNGKey(0), jnp.zeros((1, 5)))
    mlp = crl_mlp.Encoder(8, 16, 4 * num_blocks).init(jax.random.PRNGKey(0), jnp.zeros((1, 5)))
    assert dense_layers(mlp) == dense_layers(resnet)


def test_layers_compose_without_skip_connections_and_layer_norm_is_a_flag():
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
    for layer_norm in [True, False]:
        trunk = crl_mlp.MLPTrunk(16, 3, layer_norm)
        params = trunk.init(jax.random.PRNGKey(0), x)["params"]
        assert ("LayerNorm_0" in params["Layer_0"]) == layer_norm

        def layer(p, h, layer_norm=layer_norm):  # reference: Dense -> (LayerNorm) -> swish, nothing added back
            h = h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
            if layer_norm:
                mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
                h = (h - mean) / jnp.sqrt(var + 1e-6) * p["LayerNorm_0"]["scale"] + p["LayerNorm_0"]["bias"]
            return jax.nn.swish(h)

        h = layer(params["Layer_0"], x)
        for i in range(3):
            h = layer(jax.tree.map(lambda leaf, i=i: leaf[i], params["layers"]), h)
        np.testing.assert_allclose(trunk.apply({"params": params}, x), h, rtol=1e-5, atol=1e-5)


def test_bad_depth_is_a_one_line_error(capsys, monkeypatch):
    line = check_in_process(crl_mlp, ["--depth", "0"], capsys, monkeypatch)
    assert line == "error: --depth must be >= 1, got 0"


@pytest.mark.long
def test_tiny_run_writes_metrics_with_finite_losses(tmp_path):
    flags = ["--env-id", "point_u_maze", "--num-envs", "16", "--num-eval-envs", "16", "--total-env-steps", "12000"]
    flags += ["--num-epochs", "2", "--unroll-length", "50", "--batch-size", "64"]
    flags += ["--num-sgd-batches-per-training-step", "4", "--max-replay-size", "400", "--min-replay-size", "100"]
    flags += ["--width", "32", "--depth", "3", "--no-layer-norm"]
    result = run_script("crl_mlp.py", *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [run] = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("point_u_maze__crl_mlp__1__")
    assert json.loads((run / "args.json").read_text())["layer_norm"] is False
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in logged] == [1, 2]
    assert all(np.isfinite(m["losses/critic_loss"]) and np.isfinite(m["losses/actor_loss"]) for m in logged)
