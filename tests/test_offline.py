"""crl_offline.py: OGBench's data format and goal sampling, the offline losses against numpy, cold initialisation,
bad dataset files, and runs end to end on datasets made by tools/make_ogbench_dataset.py."""

import json
import os
import pathlib
import types

import jax
import jax.numpy as jnp
import make_ogbench_dataset
import numpy as np
import pytest
from conftest import made_once, run_script

import crl_offline

ogbench = pytest.importorskip("ogbench")

NAME = "pointmaze-medium-navigate-v0.npz"
TINY = ["--total-gradient-steps", "40", "--num-epochs", "2", "--batch-size", "32", "--num-eval-episodes", "1"]
TINY += ["--width", "16", "--episode-length", "30"]


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """A navigate dataset of 12 episodes of 101 steps (and 1 for validation), made once per session."""
    make = lambda folder: make_ogbench_dataset.main(
        ["--dataset", NAME[:-4], "--num-episodes", "12", "--episode-steps", "101", "--out", str(folder)]
    )
    return made_once(tmp_path_factory, "ogbench_small", make) / NAME


def test_the_tool_writes_what_ogbench_loads_and_the_loader_reads_it_as_ogbench_does(small_dataset):
    with np.load(small_dataset) as raw:
        assert raw["observations"].shape == (12 * 101, 2) and raw["terminals"].dtype == bool
        assert raw["terminals"].sum() == 12 and raw["terminals"][100] and raw["qpos"].shape == (12 * 101, 2)
        assert np.abs(raw["actions"]).max() <= 1
    with np.load(crl_offline.val_path(str(small_dataset))) as val:
        assert val["observations"].shape == (101, 2)  # a tenth as many episodes, rounded down, at least one here
    theirs, ours = ogbench.load_dataset(str(small_dataset)), crl_offline.load_ogbench_file(str(small_dataset))
    assert theirs.keys() == ours.keys()
    for key in theirs:
        assert theirs[key].dtype == ours[key].dtype and np.array_equal(theirs[key], ours[key]), key
    data = crl_offline.make_dataset(ours)
    assert data.obs.shape == (12 * 100, 2)  # each episode's last row dropped
    assert np.array_equal(data.episode_end[:100], np.full(100, 99)) and data.episode_end[100] == 199


def test_the_oracle_with_noise_moves_the_point_across_the_maze(small_dataset):
    """The navigate recipe: the point travels (not a random walk in place): over 100 steps it covers several
    cells in most episodes."""
    obs = np.load(small_dataset)["observations"].reshape(12, 101, 2)
    travelled = np.linalg.norm(obs[:, -1] - obs[:, 0], axis=1)
    assert np.median(travelled) > 4, travelled  # cells are 4 units wide


def law_dataset():
    """Three episodes of 50, 80 and 30 transitions."""
    lengths = [50, 80, 30]
    terminals = np.concatenate([np.eye(n)[-1] for n in lengths]).astype(np.float32)
    n = len(terminals)
    loaded = {"observations": np.arange(n, dtype=np.float32)[:, None], "actions": np.zeros((n, 1), np.float32)}
    return crl_offline.make_dataset(loaded | {"terminals": terminals}), lengths


def sample(t, p_cur, p_random, geometric, gamma=0.9, n=200_000, seed=0):
    data, _ = law_dataset()
    data = jax.tree.map(jnp.asarray, data)
    t = jnp.full((n,), t, jnp.int32)
    return np.asarray(crl_offline.sample_goals(jax.random.PRNGKey(seed), t, data, p_cur, p_random, gamma, geometric))


def test_future_goals_are_geometric_offsets_cut_at_the_episode_end():
    gamma, t, end = 0.9, 55, 129  # in the second episode: transitions 50..129
    goals = sample(t, 0.0, 0.0, True, gamma)
    offsets = goals - t
    assert offsets.min() >= 1 and goals.max() <= end
    for k in [1, 2, 5, 10]:  # P(offset = k) = (1 - gamma) gamma^(k - 1)
        expected = (1 - gamma) * gamma ** (k - 1)
        assert abs(np.mean(offsets == k) - expected) < 4 * np.sqrt(expected / len(goals)), k
    assert abs(np.mean(goals == end) - gamma ** (end - t - 1)) < 0.005  # the tail beyond the end, cut to it
    assert sample(end, 0.0, 0.0, True).max() == end  # the episode's last transition: its own goal


def test_uniform_future_goals_cover_the_rest_of_the_episode():
    t, end = 55, 129
    goals = sample(t, 0.0, 0.0, False)
    assert goals.min() == t + 1 and goals.max() == end
    counts = np.bincount(goals - t - 1, minlength=end - t)
    inner = counts[1:-1] / len(goals)  # rounding a uniform gives the two ends half the weight of the others
    assert np.allclose(inner, 1 / (end - t - 1), rtol=0.1)
    assert np.allclose(counts[[0, -1]] / len(goals), 0.5 / (end - t - 1), rtol=0.15)


def test_goal_mixture_current_future_random_has_the_given_probabilities():
    t, (p_cur, p_random) = 10, (0.2, 0.3)
    goals = sample(t, p_cur, p_random, True)
    same_episode = (goals > t) & (goals <= 49)
    outside = (goals > 49) | (goals < t)
    # a random goal falls in (t, 49] with probability 39 / 160, on t itself with 1 / 160
    assert abs(np.mean(goals == t) - (p_cur + p_random / 160)) < 0.005
    assert abs(np.mean(outside) - p_random * (160 - 40) / 160) < 0.005
    assert abs(np.mean(same_episode) - (0.5 + p_random * 39 / 160)) < 0.005
    uniform = sample(t, 0.0, 1.0, True)
    assert abs(uniform.mean() - 79.5) < 0.5 and uniform.min() == 0 and uniform.max() == 159


def tiny_args(**overrides):
    fields = {"width": 16, "num_blocks": 1, "repr_dim": 8, "num_critics": 2, "bc_coef": 0.03, "gamma": 0.99}
    fields |= {"cold_init": False, "remat": False, "scan_unroll": 1, "compute_dtype": "float32"}
    fields |= {"actor_num_blocks": 1, "critic_num_blocks": 1}
    return types.SimpleNamespace(**(fields | overrides))


def losses_and_params(args, batch_size=16, seed=0):
    env = types.SimpleNamespace(obs_dim=2, goal_dim=2, action_dim=2)
    sa_encoder, g_encoder, actor = crl_offline.make_networks(args, env)
    critic_loss, actor_loss = crl_offline.make_losses(args, sa_encoder, g_encoder, actor)
    keys = jax.random.split(jax.random.PRNGKey(seed), 8)

    def critic(k):
        k1, k2 = jax.random.split(k)
        return {
            "sa_encoder": sa_encoder.init(k1, jnp.zeros((1, 4))),
            "g_encoder": g_encoder.init(k2, jnp.zeros((1, 2))),
        }

    critic_params = jax.vmap(critic)(jax.random.split(keys[0], args.num_critics))
    actor_params = actor.init(keys[1], jnp.zeros((1, 4)))
    batch = {
        k: jax.random.normal(keys[i + 2], (batch_size, 2)) for i, k in enumerate(["obs", "value_goal", "actor_goal"])
    }
    batch["action"] = jnp.clip(jax.random.normal(keys[6], (batch_size, 2)), -1, 1)
    reprs = lambda params, action, goal: jax.vmap(
        lambda p: (
            sa_encoder.apply(p["sa_encoder"], jnp.concatenate([batch["obs"], action], -1)),
            g_encoder.apply(p["g_encoder"], goal),
        )
    )(params)
    return critic_loss, actor_loss, critic_params, actor_params, actor, batch, reprs


def test_binary_nce_critic_loss_against_numpy():
    args = tiny_args()
    critic_loss, _, critic_params, _, _, batch, reprs = losses_and_params(args)
    loss, info = critic_loss(critic_params, batch)
    phi, psi = map(np.asarray, reprs(critic_params, batch["action"], batch["value_goal"]))
    logits = np.einsum("eik,ejk->eij", phi, psi) / np.sqrt(phi.shape[-1])
    labels = np.eye(logits.shape[-1])
    bce = np.logaddexp(0, logits) - labels * logits  # -y log sigmoid(l) - (1 - y) log(1 - sigmoid(l))
    np.testing.assert_allclose(loss, bce.mean(), rtol=1e-5)
    mean_logits = logits.mean(axis=0)
    np.testing.assert_allclose(info["critic/logits_pos"], np.trace(mean_logits) / len(labels), rtol=1e-5)


def test_ddpg_bc_actor_loss_against_numpy_and_its_gradient_scale_is_held_fixed():
    args = tiny_args()
    _, actor_loss, critic_params, actor_params, actor, batch, reprs = losses_and_params(args)
    loss, info = actor_loss(actor_params, critic_params, batch)
    mean = np.asarray(actor.apply(actor_params, jnp.concatenate([batch["obs"], batch["actor_goal"]], -1)))
    phi, psi = map(np.asarray, reprs(critic_params, jnp.clip(mean, -1, 1), batch["actor_goal"]))
    q = np.maximum((phi * psi).sum(-1) / np.sqrt(phi.shape[-1]), np.log(1e-6)).min(axis=0)
    q_loss = -q.mean() / (np.abs(q).mean() + 1e-6)
    a = np.asarray(batch["action"])
    log_prob = (-0.5 * (a - mean) ** 2 - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(loss, q_loss - args.bc_coef * log_prob.mean(), rtol=1e-5)
    np.testing.assert_allclose(info["actor/q_loss"], q_loss, rtol=1e-5)
    # the gradient of -mean(q) / mean|q| treats mean|q| as a constant (stop_gradient)
    scale = float(np.abs(q).mean() + 1e-6)

    def by_hand(params):
        m = actor.apply(params, jnp.concatenate([batch["obs"], batch["actor_goal"]], -1))
        p, s = reprs(critic_params, jnp.clip(m, -1, 1), batch["actor_goal"])
        qq = jnp.maximum(jnp.sum(p * s, -1) / jnp.sqrt(p.shape[-1]), jnp.log(1e-6)).min(axis=0)
        lp = jnp.sum(-0.5 * (batch["action"] - m) ** 2 - 0.5 * jnp.log(2 * jnp.pi), -1)
        return -jnp.mean(qq) / scale - args.bc_coef * jnp.mean(lp)

    ours = jax.grad(lambda p: actor_loss(p, critic_params, batch)[0])(actor_params)
    for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(jax.grad(by_hand)(actor_params))):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7)


def test_cold_init_puts_the_encoders_last_layer_within_1e_12_symmetrically():
    args = tiny_args(width=64, repr_dim=64, cold_init=True)
    sa_encoder, g_encoder, _ = crl_offline.make_networks(args, types.SimpleNamespace(action_dim=2))
    for encoder, dim in [(sa_encoder, 4), (g_encoder, 2)]:
        params = encoder.init(jax.random.PRNGKey(0), jnp.zeros((1, dim)))["params"]
        last = params[max(k for k in params if k.startswith("Dense_"))]
        kernel = np.asarray(last["kernel"])
        assert np.abs(kernel).max() <= 1e-12 and not np.any(np.asarray(last["bias"]))
        assert kernel.min() < -5e-13 and kernel.max() > 5e-13  # both signs, spread over the interval
        assert abs(np.mean(kernel > 0) - 0.5) < 0.05 and abs(kernel.mean()) < 5e-14
        trunk = params["ResidualTrunk_0"]
        assert max(np.abs(np.asarray(x)).max() for x in jax.tree.leaves(trunk)) > 1e-3  # the rest as usual
    warm = crl_offline.make_networks(tiny_args(width=64, repr_dim=64), types.SimpleNamespace(action_dim=2))[1]
    params = warm.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))["params"]
    assert np.abs(np.asarray(params[max(k for k in params if k.startswith("Dense_"))]["kernel"])).max() > 1e-3


@pytest.mark.long
def test_a_tiny_run_trains_evaluates_on_ogbench_tasks_resumes_and_is_evaluated(small_dataset, tmp_path):
    flags = ["--dataset-path", str(small_dataset), "--num-seeds", "2", *TINY]
    out = run_script("crl_offline.py", *flags, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    [run_dir] = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("pointmaze-medium-v0__crl_offline__1__")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and lines[-1]["training/gradient_steps"] == 40
    for m in lines:
        tasks = [m[f"eval/task{k}_success"] for k in range(1, 6)]
        assert np.isclose(m["eval/success"], np.mean(tasks)) and len(m["eval/success_per_seed"]) == 2
        assert np.isfinite(m["validation/val_critic_loss"]) and np.isfinite(m["losses/critic_loss"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert np.isclose(summary["score"], np.mean([m["eval/success"] for m in lines]))
    assert summary["gradient_steps"] == 40 and summary["env_id"] == "pointmaze-medium-v0"
    saved = json.loads((run_dir / "args.json").read_text())
    assert saved["bc_coef"] == 0.03 and saved["actor_p_randomgoal"] == 0.0 and saved["env_id"] == "pointmaze-medium-v0"
    for which in ["final", "last"]:
        out = run_script("crl_offline.py", "--evaluate", str(run_dir), "--checkpoint", which, cwd=tmp_path, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads((run_dir / f"evaluation__pointmaze-medium-v0__{which}.json").read_text())
        assert result["epoch"] == 2 and 0 <= result["metrics"]["eval/success"] <= 1
    # a run asked for more epochs than it has: --resume continues from its checkpoint
    args = json.loads((run_dir / "args.json").read_text())
    (run_dir / "args.json").write_text(json.dumps(args | {"num_epochs": 3, "total_gradient_steps": 60}))
    out = run_script("crl_offline.py", "--resume", str(run_dir), cwd=tmp_path, timeout=600)
    assert out.returncode == 0 and "resumed" in out.stdout and "after epoch 2" in out.stdout, out.stdout + out.stderr
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3] and lines[-1]["training/gradient_steps"] == 60


def test_render_draws_one_episode_of_each_task(tmp_path, capsys):
    import flax

    env = crl_offline.OGBenchTask("pointmaze-medium-v0", 20)
    args = tiny_args()
    _, _, actor = crl_offline.make_networks(args, env)
    params = actor.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    params = jax.tree.map(lambda x: x[None], flax.core.unfreeze(params))
    try:
        path = crl_offline.make_render(env, actor, 0)(params, str(tmp_path / "render.html"))
    except SystemExit:  # a machine without OpenGL (EGL or OSMesa): the one-line error is the behaviour
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--render: OGBench's renderer did not start" in err[0], err
        pytest.skip("no OpenGL context on this machine: " + err[0])
    page = pathlib.Path(path).read_text()
    assert page.count("data:image/gif;base64,") == 5 and "task 5, 20 steps" in page


BAD_FILES = {
    "missing": (None, "no such file; make one with tools/make_ogbench_dataset.py"),
    "corrupt": (b"not a zip file", "cannot read"),
    "no observations": ({"actions": np.zeros((4, 2)), "terminals": np.ones(4, bool)}, "cannot read"),
    "wrong shape": (
        {"observations": np.zeros(8), "actions": np.zeros((8, 2)), "terminals": np.eye(8, dtype=bool)[-1]},
        "expected observations (N, obs)",
    ),
    "rows that disagree": (
        {"observations": np.zeros((8, 2)), "actions": np.zeros((8, 2)), "terminals": np.eye(6, dtype=bool)[-1]},
        "cannot read",
    ),
    "another environment": (
        {"observations": np.zeros((8, 29)), "actions": np.zeros((8, 8)), "terminals": np.eye(8, dtype=bool)[-1]},
        "a dataset of another environment?",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_dataset_file_is_a_one_line_error_before_anything_compiles(case, tmp_path, capsys, monkeypatch):
    from test_cli import check_in_process

    content, phrase = BAD_FILES[case]
    path = tmp_path / "pointmaze-medium-navigate-v0.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.savez(path, **content)
    line = check_in_process(crl_offline, ["--dataset-path", str(path)], capsys, monkeypatch)
    assert line is not None and "--dataset-path" in line and phrase in line, line


@pytest.mark.parametrize(
    "flags,phrase",
    [
        (["--env-id", "pointmaze-tiny-v0"], "--env-id 'pointmaze-tiny-v0' is not an OGBench environment"),
        (
            ["--value-p-curgoal", "0.6", "--value-p-randomgoal", "0.6"],
            "--value-p-randomgoal must be <= 1 - --value-p-curgoal",
        ),
        (["--actor-p-curgoal", "1.5"], "--actor-p-curgoal must be in [0, 1]"),
        (["--bc-coef", "-1"], "--bc-coef must be >= 0"),
        (["--num-critics", "0"], "--num-critics must be >= 1"),
        (["--batch-size", "100000"], "--batch-size must be <= the 1200 transitions"),
        (["--total-gradient-steps", "3", "--num-epochs", "4"], "--total-gradient-steps must be >= --num-epochs"),
        (["--preset", "laptop-reacher"], "--preset laptop-reacher is not a preset"),
    ],
)
def test_bad_flags_are_one_line_errors(flags, phrase, small_dataset, capsys, monkeypatch):
    from test_cli import check_in_process

    line = check_in_process(crl_offline, ["--dataset-path", str(small_dataset), *flags], capsys, monkeypatch)
    assert line is not None and phrase in line, line


def test_stitch_datasets_get_random_actor_goals_and_ant_mazes_a_larger_bc_weight(small_dataset, tmp_path):
    args = crl_offline.resolve_args(crl_offline.Args(dataset_path=str(small_dataset)))
    assert (args.actor_p_randomgoal, args.bc_coef, args.env_id) == (0.0, 0.03, "pointmaze-medium-v0")
    assert (args.episode_length, args.actor_num_blocks) == (1000, 1), "OGBench's episodes; --num-blocks"
    stitch = tmp_path / "pointmaze-medium-stitch-v0.npz"
    os.symlink(small_dataset, stitch)
    args = crl_offline.resolve_args(crl_offline.Args(dataset_path=str(stitch)))
    assert args.actor_p_randomgoal == 0.5
    assert crl_offline.env_id_of("/x/antmaze-large-navigate-v0.npz") == "antmaze-large-v0"


@pytest.mark.parametrize(
    "dataset, gamma, bc_coef, actor_p_randomgoal",
    [  # OGBench's impls/hyperparameters.sh for CRL
        ("pointmaze-giant-navigate-v0", 0.995, 0.03, 0.0),
        ("antmaze-giant-stitch-v0", 0.995, 0.1, 0.5),
        ("antmaze-large-explore-v0", 0.99, 0.003, 1.0),
        ("humanoidmaze-medium-navigate-v0", 0.995, 0.1, 0.0),
        ("antsoccer-arena-stitch-v0", 0.99, 0.3, 0.5),
        ("cube-double-play-v0", 0.99, 3.0, 0.0),
        ("cube-double-noisy-v0", 0.99, 0.1, 0.0),
        ("scene-play-v0", 0.99, 3.0, 0.0),
        ("puzzle-4x4-noisy-v0", 0.99, 0.1, 0.0),
    ],
)
def test_ogbench_crl_settings_follow_the_dataset_name_and_flags_override_them(
    dataset, gamma, bc_coef, actor_p_randomgoal
):
    args = crl_offline.Args(dataset_path=f"/data/{dataset}.npz", episode_length=1000)
    resolved = crl_offline.resolve_args(args)
    assert (resolved.gamma, resolved.bc_coef, resolved.actor_p_randomgoal) == (gamma, bc_coef, actor_p_randomgoal)
    given = crl_offline.resolve_args(crl_offline.dataclasses.replace(args, gamma=0.9, bc_coef=1.0))
    assert (given.gamma, given.bc_coef) == (0.9, 1.0)


def test_the_laptop_preset_is_its_flags_and_flags_given_override_it(monkeypatch):
    import dataclasses
    import sys

    def parsed(flags):
        monkeypatch.setattr(sys, "argv", ["crl_offline.py", *flags])
        return crl_offline.parse_args()

    preset = parsed(["--preset", "laptop"])
    assert preset == dataclasses.replace(parsed(crl_offline.PRESETS["laptop"].split()), preset="laptop")
    assert (preset.width, preset.batch_size, preset.total_gradient_steps) == (64, 256, 10_000)
    assert parsed(["--preset", "laptop", "--width", "32"]).width == 32


@pytest.mark.slow
def test_crl_offline_beats_a_random_policy_on_a_generated_navigate_dataset(tmp_path):
    """The laptop preset on pointmaze-medium-navigate at OGBench's size, made here (2 minutes), 2 seeds: the
    trained policy reaches OGBench's goals more often than a uniformly random one on the same tasks."""
    make_ogbench_dataset.main(["--dataset", NAME[:-4], "--out", str(tmp_path / "data")])
    out = run_script("crl_offline.py", "--preset", "laptop", "--num-seeds", "2", cwd=tmp_path, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    [run_dir] = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    from random_policy import ogbench_random_metrics

    random_success = ogbench_random_metrics("pointmaze-medium-v0", episodes_per_task=10)["eval/success"]
    assert summary["success"] > random_success + 0.15, (summary, random_success)


@pytest.mark.slow
def test_two_devices_under_either_split_train_what_one_device_trains(small_dataset, tmp_path):
    flags = ["--dataset-path", str(small_dataset), "--num-seeds", "2", "--no-save-model", *TINY]
    losses = {}
    for name, devices, split in [("one", 1, "data"), ("data", 2, "data"), ("seeds", 2, "seeds")]:
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        more = ["--devices-split", split, "--exp-name", name]
        out = run_script("crl_offline.py", *flags, *more, cwd=tmp_path, env=env, timeout=600)
        assert out.returncode == 0 and f"{devices} cpu device(s)" in out.stdout, out.stderr[-3000:]
        [run_dir] = (tmp_path / "runs").glob(f"*__{name}__*")
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [m["losses/critic_loss_per_seed"] + m["losses/actor_loss_per_seed"] for m in lines]
    np.testing.assert_allclose(losses["data"], losses["one"], rtol=1e-4)
    np.testing.assert_allclose(losses["seeds"], losses["one"], rtol=1e-4)


def test_an_evaluation_is_the_same_for_a_seed_on_any_process_and_a_tiny_dataset_keeps_a_validation_episode(tmp_path):
    """Every episode's random start is seeded (OGBench draws it from unseeded generators): processes that evaluate
    the same seed score the same episodes, which their agreement on checkpoint_best needs."""
    env = crl_offline.OGBenchTask("pointmaze-medium-v0", 40)
    args = types.SimpleNamespace(num_seeds=1, num_eval_episodes=2)
    _, _, actor = crl_offline.make_networks(tiny_args(), env)
    params = jax.tree.map(lambda x: x[None], actor.init(jax.random.PRNGKey(0), jnp.zeros((1, 4))))
    start = lambda seed: crl_offline.OGBenchTask.reset(env.make(), seed, options={"task_id": 3})[0]
    np.testing.assert_array_equal(start(7), start(7))  # two fresh environments, as on two processes
    assert not np.array_equal(start(7), start(8))
    evaluate = crl_offline.make_evaluate(args, env, actor)
    first, second = evaluate(params, 7), evaluate(params, 7)
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)
    make_ogbench_dataset.main(["--num-episodes", "3", "--episode-steps", "20", "--out", str(tmp_path)])
    with np.load(tmp_path / "pointmaze-medium-navigate-v0-val.npz") as val:
        assert val["observations"].shape == (20, 2)
