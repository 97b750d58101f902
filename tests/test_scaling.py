"""What makes depth cheap: bfloat16 matmuls, seeds vmapped in one program, data parallelism over devices."""

import json

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, run_script

import crl_resnet as crl

SMALL = {
    "env_id": "point_u_maze",
    "num_envs": 16,
    "num_eval_envs": 16,
    "total_env_steps": 16 * 100 + 2 * 3 * 16 * 100,  # prefill + 2 epochs of 3 training steps
    "num_epochs": 2,
    "unroll_length": 100,
    "batch_size": 64,
    "num_sgd_batches_per_training_step": 4,
    "max_replay_size": 600,
    "min_replay_size": 100,
    "width": 32,
    "num_blocks": 1,
}


def small_args(**changes):
    args = crl.Args(**(SMALL | changes))
    args.actor_num_blocks = args.critic_num_blocks = args.num_blocks
    return args


def trained_params(args, seeds, epochs=None):
    """What crl_resnet.py's MAIN computes, on one device: init, prefill, every epoch (or the first `epochs`),
    vmapped over >1 seeds."""
    env = crl.GoalEnv(args.env_id, args.episode_length)
    init, prefill, epoch, _ = crl.make_train(args, env)
    rs = jax.vmap(lambda s: init(jax.random.PRNGKey(s)))(jnp.asarray(seeds))
    rs = jax.jit(crl.over_seeds(prefill, len(seeds)))(rs)
    epoch_fn = jax.jit(crl.over_seeds(epoch, len(seeds)))
    for _ in range(args.num_epochs if epochs is None else epochs):
        rs, _ = epoch_fn(rs)
    return jax.device_get(crl.checkpoint_params(rs))


def critic_loss_and_grads(compute_dtype, params, batch):
    args = small_args(width=64, num_blocks=4, compute_dtype=compute_dtype)
    env = crl.GoalEnv(args.env_id)
    critic_loss, _, _ = crl.make_losses(args, *crl.make_networks(args, env))
    (loss, _), grads = jax.jit(jax.value_and_grad(critic_loss, has_aux=True))(params, batch)
    return float(loss), jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads)]), critic_loss


def test_bfloat16_matmuls_keep_the_infonce_loss_within_1_percent_of_float32():
    """Tolerance: |loss_bf16 - loss_f32| <= 1% of loss_f32 and gradient cosine >= 0.99 (depth 16, width 64)."""
    args = small_args(width=64, num_blocks=4)
    env = crl.GoalEnv(args.env_id)
    sa_encoder, g_encoder, _ = crl.make_networks(args, env)
    key = jax.random.PRNGKey(0)
    params = {
        "sa_encoder": sa_encoder.init(key, jnp.zeros((1, env.state_dim + env.action_dim))),
        "g_encoder": g_encoder.init(jax.random.fold_in(key, 1), jnp.zeros((1, env.goal_dim))),
    }
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    batch = {
        "state": 4 * jax.random.normal(k1, (256, env.state_dim)),
        "action": jax.random.uniform(k2, (256, env.action_dim), minval=-1, maxval=1),
        "goal": 4 * jax.random.normal(k3, (256, env.goal_dim)),
    }
    loss32, grads32, _ = critic_loss_and_grads("float32", params, batch)
    loss16, grads16, critic_loss16 = critic_loss_and_grads("bfloat16", params, batch)
    # the flag takes effect: matmuls are bf16 in the program, the parameters and the loss stay float32
    program = str(jax.make_jaxpr(critic_loss16)(params, batch))
    assert "bf16[256,64]" in program and "dot_general" in program
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    assert loss16 != loss32
    assert abs(loss16 - loss32) <= 0.01 * abs(loss32), (loss16, loss32)
    cosine = jnp.dot(grads16, grads32) / (jnp.linalg.norm(grads16) * jnp.linalg.norm(grads32))
    assert cosine >= 0.99, cosine


@pytest.mark.slow  # remat alone is checked in the default suite (tests/test_networks.py)
def test_scan_unroll_and_remat_change_speed_and_memory_not_results():
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 6))
    plain = crl.Encoder(4, 16, 5)
    params = plain.init(jax.random.PRNGKey(0), x)
    loss = lambda module: lambda p: jnp.sum(module.apply(p, x) ** 2)
    for other in [crl.Encoder(4, 16, 5, scan_unroll=2), crl.Encoder(4, 16, 5, remat=True, scan_unroll=5)]:
        np.testing.assert_allclose(plain.apply(params, x), other.apply(params, x), rtol=1e-5, atol=1e-6)
        g1, g2 = jax.grad(loss(plain))(params), jax.grad(loss(other))(params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g2)


@pytest.mark.slow  # 40 s; the default suite trains two seeds in one program (tests/test_training.py)
def test_seed_k_of_a_vmapped_run_equals_a_single_run_with_that_seed():
    args = small_args()
    together = trained_params(args, [1, 2, 3])
    alone = trained_params(args, [2])
    leaves_together, leaves_alone = jax.tree.leaves(together), jax.tree.leaves(alone)
    for a, b in zip(leaves_together, leaves_alone):
        np.testing.assert_allclose(a[1], b[0], rtol=1e-3, atol=1e-4)
    # and the seeds are independent agents: different parameters
    kernel = leaves_together[-1]
    assert not np.allclose(kernel[0], kernel[1]) and not np.allclose(kernel[1], kernel[2])


@pytest.mark.slow  # the default suite trains on 2 devices in tests/test_processes.py (2 processes, and seeds split)
def test_two_devices_split_the_work_and_train_what_one_device_trains(tmp_path):
    """crl_resnet.py on 2 (virtual CPU) devices vs the same flags computed on one device here."""
    args = small_args()
    flags = []
    for name, value in SMALL.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = run_script("crl_resnet.py", *flags, "--exp-name", "two", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 cpu device(s)" in result.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    two = flax.serialization.msgpack_restore((run_dir / "final.msgpack").read_bytes())
    one = trained_params(args, [args.seed])
    for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(one)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)

    # an odd --num-envs cannot be split over 2 devices: a one-line error before compiling
    result = run_script("crl_resnet.py", *flags, "--num-envs", "15", cwd=tmp_path, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--num-envs must be a multiple of the 2 devices, got 15" in result.stderr


@pytest.mark.slow  # the default suite trains on 2 devices (above); this says who holds what
def test_the_data_split_shards_environments_and_replicates_parameters():
    """Who holds what on 2 (virtual) devices: half of the environments and of the replay buffer each, a full
    copy of every parameter, optimiser state and key."""
    code = """
import json, jax, jax.numpy as jnp
import crl_resnet as crl
args = crl.Args(env_id="point_u_maze", num_envs=8, max_replay_size=200, min_replay_size=100, width=16, num_blocks=1)
args.actor_num_blocks = args.critic_num_blocks = 1
init, _, _, _ = crl.make_train(args, crl.GoalEnv(args.env_id))
rs = jax.vmap(lambda s: init(jax.random.PRNGKey(s)))(jnp.arange(3))
mesh = jax.make_mesh((2,), ("devices",), axis_types=(jax.sharding.AxisType.Auto,))
rs = jax.device_put(rs, crl.device_shardings(rs, mesh, "data"))
local = lambda tree: [[list(s.data.shape) for s in x.addressable_shards] for x in jax.tree.leaves(tree)]
full = lambda tree: [[list(x.shape)] * 2 for x in jax.tree.leaves(tree)]
rest = rs.replace(env_state=None, buffer=None)
print(json.dumps([local(rs.buffer.obs), local(rs.env_state.obs), local(rs.env_state.key), local(rest) == full(rest)]))
"""
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = run_script("-c", code, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    buffer_obs, env_obs, env_key, rest_replicated = json.loads(result.stdout.strip().splitlines()[-1])
    obs_dim = buffer_obs[0][0][-1]
    assert buffer_obs == [[[3, 200, 4, obs_dim]] * 2]  # (seeds, time, envs / 2, obs) on each device
    assert env_obs == [[[3, 4, obs_dim]] * 2]
    assert env_key == [[[3, 2]] * 2]  # replicated
    assert rest_replicated  # parameters, optimiser states, log_alpha, keys, step counter


@pytest.mark.slow  # compiles the epoch twice on 2 devices
def test_the_seeds_split_puts_whole_seeds_on_each_device_and_its_update_communicates_nothing():
    """--devices-split seeds on 2 (virtual) devices: each holds one seed's whole state, and the compiled epoch has
    no all-reduce (the data split's has: the gradients')."""
    code = """
import json, jax, numpy as np
import crl_resnet as crl
args = crl.Args(env_id="point_u_maze", num_envs=8, max_replay_size=200, min_replay_size=100, width=16, num_blocks=1)
args = crl.dataclasses.replace(args, unroll_length=50, batch_size=16, num_sgd_batches_per_training_step=2)
args = crl.dataclasses.replace(args, total_env_steps=800 + 8 * 50, num_epochs=1, num_seeds=2)
args.actor_num_blocks = args.critic_num_blocks = 1
init, _, epoch, _ = crl.make_train(args, crl.GoalEnv(args.env_id))
init_all = jax.vmap(lambda s: init(jax.random.PRNGKey(s)))
out = {}
for split in ["seeds", "data"]:
    mesh = crl.use_all_devices(split)
    shardings = crl.device_shardings(jax.eval_shape(init_all, np.arange(2)), mesh, split)
    rs = jax.jit(init_all, out_shardings=shardings)(np.arange(2))
    hlo = jax.jit(jax.vmap(epoch), out_shardings=(shardings, None)).lower(rs).compile().as_text()
    local = [[list(s.data.shape) for s in x.addressable_shards] for x in jax.tree.leaves(rs.buffer.obs)]
    out[split] = {"all_reduce": hlo.count(" all-reduce("), "buffer": local}
print(json.dumps(out))
"""
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = run_script("-c", code, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    obs_dim = out["seeds"]["buffer"][0][0][-1]
    assert out["seeds"]["buffer"] == [[[1, 200, 8, obs_dim]] * 2], "one seed's whole buffer on each device"
    assert out["seeds"]["all_reduce"] == 0 and out["data"]["all_reduce"] > 0, out
