"""eval_stitching.py: corridor pairs, held-out goals, the value-map grid, bad input, and a tiny sweep end to end."""

import json

import jax
import matplotlib.image
import numpy as np
import pytest
from conftest import run_script
from test_cli import check_in_process
from test_training import render_states

import eval_stitching as st

U_PATH = [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]


def test_the_u_maze_corridor_runs_from_r_around_the_wall():
    assert st.corridor_path("u_maze") == U_PATH


@pytest.mark.parametrize("gap", [1, 2, 3, 5])
def test_training_pairs_are_within_the_gap_and_never_pair_r_with_a_held_out_goal(gap):
    train, held_out = st.stitching_pairs(U_PATH, gap)
    assert held_out == U_PATH[gap + 1 :]
    assert {U_PATH.index(g) - U_PATH.index(s) for s, g in train} == set(range(1, gap + 1))
    assert not any(s == U_PATH[0] and g in held_out for s, g in train)
    assert {c for pair in train for c in pair} == set(U_PATH), "every cell is visited in training"
    if gap == 3:  # the paper's setting: the held-out goals are the benchmark's far cells
        assert sorted(held_out) == sorted(st.MAZE_EVAL_GOALS["u_maze"])


def cells(xy, size=4.0):
    return [tuple(c) for c in np.round(np.asarray(xy) / size).astype(int).tolist()]


def test_the_training_sampler_draws_every_pair_within_the_gap_and_nothing_else():
    args = st.Args(env_id="point_u_maze")
    train, _ = st.stitching_pairs(U_PATH, 3)
    env = st.pairs_env(args, train)
    n = 20_000
    obs = env.reset(jax.random.PRNGKey(0), n).obs
    drawn = list(zip(cells(obs[:, :2]), cells(obs[:, 2:]), strict=True))
    assert set(drawn) == set(train), "all 15 pairs, and only those"
    counts = np.array([drawn.count(pair) for pair in train])
    assert counts.min() > 0.8 * n / len(train) and counts.max() < 1.2 * n / len(train), "uniform over the pairs"

    # automatic resets during training draw from the same pairs
    @jax.jit
    def rollout(key):
        def step(state, key):
            state = env.step(state, jax.random.uniform(key, (256, 2), minval=-1, maxval=1))
            return state, (state.obs, state.done)

        return jax.lax.scan(step, env.reset(key, 256), jax.random.split(key, 300))[1]

    obs, done = jax.device_get(rollout(jax.random.PRNGKey(1)))
    fresh = obs[done]  # observations right after an automatic reset
    assert len(fresh) == 3 * 256  # 300 steps of 100-step episodes
    assert set(zip(cells(fresh[:, :2]), cells(fresh[:, 2:]), strict=True)) <= set(train)


def test_held_out_evaluation_starts_at_r_and_targets_only_its_far_goal():
    args = st.Args(env_id="point_u_maze")
    _, held_out = st.stitching_pairs(U_PATH, 3)
    envs = st.heldout_envs(args, U_PATH, held_out)
    assert len(envs) == len(held_out)
    for env, goal in zip(envs, held_out, strict=True):
        obs = env.reset(jax.random.PRNGKey(0), 2000).obs
        assert set(cells(obs[:, :2])) == {U_PATH[0]} and set(cells(obs[:, 2:])) == {goal}


def test_value_map_grid_maps_pixels_to_their_cells():
    per_cell, size = 6, 4.0
    grid = st.value_map_grid("u_maze", size, per_cell)
    assert grid.shape == (5 * per_cell, 5 * per_cell, 2)
    rows, cols = np.meshgrid(np.arange(grid.shape[0]), np.arange(grid.shape[1]), indexing="ij")
    np.testing.assert_array_equal(np.round(grid[..., 0] / size), rows // per_cell)
    np.testing.assert_array_equal(np.round(grid[..., 1] / size), cols // per_cell)
    # pixel centres stay strictly inside their cell, spread evenly over it
    offsets = grid - np.stack([rows // per_cell, cols // per_cell], -1) * size
    levels = np.unique(np.round(offsets, 5))
    assert np.abs(offsets).max() < size / 2 and len(levels) == per_cell and np.allclose(levels, -levels[::-1])
    np.testing.assert_allclose(
        grid[per_cell * 3 + per_cell // 2, per_cell * 1 + per_cell // 2], [12 + size / 12, 4 + size / 12]
    )


def one_line_error(*flags):
    result = run_script("eval_stitching.py", *flags, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize(
    "flags,phrase",
    [
        (["--max-train-gap", "0"], "--max-train-gap must be in [1, 5]"),
        (["--max-train-gap", "6"], "--max-train-gap must be in [1, 5]"),
        (["--depths", "4", "6"], "--depths 6 is not a positive multiple of 4"),
        (["--depths", "0"], "--depths 0 is not a positive multiple of 4"),
        (
            ["--env-id", "ant_big_maze"],
            "choose one of: point_u_maze, ant_u_maze, ant_u4_maze, ant_u5_maze, humanoid_u_maze",
        ),
        (["--env-id", "nope"], "--env-id 'nope' has no stitching experiment"),
        (["--from-runs", "runs/missing"], "--from-runs runs/missing is not a run directory"),
    ],
)
def test_bad_input_is_a_one_line_error(flags, phrase, capsys, monkeypatch):
    line = check_in_process(st, ["--env-id", "point_u_maze", *flags], capsys, monkeypatch)
    assert line is not None and phrase in line, line


def test_bad_input_is_a_one_line_error_end_to_end():
    assert "--depths 6 is not a positive multiple of 4" in one_line_error("--depths", "4", "6")


TINY = ["--num-envs", "16", "--num-eval-envs", "16", "--total-env-steps", "24000", "--num-epochs", "2"]
TINY += ["--unroll-length", "50", "--batch-size", "64", "--num-sgd-batches-per-training-step", "4"]
TINY += ["--max-replay-size", "400", "--min-replay-size", "100", "--width", "32"]


def run(script, *flags, cwd):
    result = run_script(script, *flags, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def check_outputs(run_dir, depths, seeds):
    results = json.loads((run_dir / "stitching.json").read_text())
    assert [g["cell"] for g in results["held_out_goals"]] == [[3, 3], [3, 2], [3, 1]]
    assert list(results["depths"]) == [str(d) for d in depths]
    for entry in results["depths"].values():
        assert len(entry["seeds"]) == seeds
        for goal in entry["goals"].values():
            assert len(goal["success"]) == seeds and all(0 <= v <= 1 for v in goal["success"])
            assert all(0 <= v <= results["episode_length"] for v in goal["time_near_goal"])
    image = matplotlib.image.imread(run_dir / "stitching.png")
    assert image.shape[:2] == (400, 1000) and image.std() > 0
    for depth in depths:
        image = matplotlib.image.imread(run_dir / f"value_map_depth{depth}.png")
        assert image.shape[:2] == (440, 500) and image.std() > 0


@pytest.mark.long
def test_tiny_sweep_writes_the_json_and_figures_and_resumes(tmp_path):
    flags = ["--env-id", "point_u_maze", "--depths", "4", "--num-seeds", "1", "--render"]
    out = run("eval_stitching.py", *flags, *TINY, cwd=tmp_path)
    [run_dir] = list((tmp_path / "runs").iterdir())
    check_outputs(run_dir, [4], seeds=1)
    frames = render_states(run_dir / "depth4")["states"]["x"]
    assert len(frames) == 3 * 100 and set(cells([f["pos"][-1][:2] for f in frames])) == {(3, 1)}, "the far goal"
    logged = [json.loads(x) for x in (run_dir / "depth4" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in logged] == [1, 2] and "eval/success_3_1" in logged[-1]
    assert "held-out goals from R (1, 1): [(3, 3), (3, 2), (3, 1)]" in out

    # a finished sweep resumed: nothing is trained again, the figures are rewritten
    (run_dir / "stitching.png").unlink()
    out = run("eval_stitching.py", "--resume", str(run_dir), cwd=tmp_path)
    assert "compiled" not in out
    check_outputs(run_dir, [4], seeds=1)


@pytest.mark.slow  # 40 s on top of the sweep above, which the default suite runs
def test_from_runs_analyses_a_sweep_and_a_crl_resnet_run_together(tmp_path):
    run("eval_stitching.py", "--env-id", "point_u_maze", "--depths", "4", "--num-seeds", "2", *TINY, cwd=tmp_path)
    [run_dir] = list((tmp_path / "runs").iterdir())
    run("crl_resnet.py", "--env-id", "point_u_maze", *TINY, "--num-blocks", "3", "--exp-name", "plain", cwd=tmp_path)
    [crl_run] = [p for p in (tmp_path / "runs").iterdir() if "plain" in p.name]
    run(
        "eval_stitching.py",
        "--from-runs",
        str(crl_run),
        str(run_dir / "depth4"),
        "--exp-name",
        "analysis",
        cwd=tmp_path,
    )
    [analysis] = [p for p in (tmp_path / "runs").iterdir() if "analysis" in p.name]
    results = json.loads((analysis / "stitching.json").read_text())
    assert list(results["depths"]) == ["4", "12"] and results["env_id"] == "point_u_maze"
    assert len(results["depths"]["4"]["seeds"]) == 2 and len(results["depths"]["12"]["seeds"]) == 1
    assert (analysis / "value_map_depth12.png").stat().st_size > 0 and (analysis / "stitching.png").stat().st_size > 0


def test_from_runs_of_different_mazes_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    for name, env_id in [("a", "point_u_maze"), ("b", "ant_u_maze")]:
        (tmp_path / name).mkdir()
        saved = {"env_id": env_id, "episode_length": 100, "critic_num_blocks": 1}
        (tmp_path / name / "args.json").write_text(json.dumps(saved))
        (tmp_path / name / "final.msgpack").write_bytes(b"")
    line = check_in_process(st, ["--from-runs", str(tmp_path / "a"), str(tmp_path / "b")], capsys, monkeypatch)
    assert "--from-runs mixes environments or episode lengths" in line


def test_the_u4_and_u5_mazes_are_corridors_too(capsys, monkeypatch):
    """Fig. 5's value maps are on the U4-maze: the sweep and --from-runs take every corridor maze."""
    u4, u5 = st.corridor_path("u4_maze"), st.corridor_path("u5_maze")
    assert (u4[0], u4[-1], len(u4)) == ((2, 1), (4, 1), 11)
    assert (u5[0], u5[-1], len(u5)) == ((2, 1), (4, 1), 17)
    assert set(u4) == set(st.maze_cells("u4_maze", "R") + st.maze_cells("u4_maze", "G")), "the whole maze"
    _, held_out = st.stitching_pairs(u4, 3)
    assert held_out == u4[4:]
    line = check_in_process(st, ["--env-id", "ant_u4_maze", "--max-train-gap", "10"], capsys, monkeypatch)
    assert "--max-train-gap must be in [1, 9] on the u4_maze (11 corridor cells)" in line


@pytest.mark.slow  # the sweep above draws value maps on the U-maze in the default suite
def test_value_maps_on_any_maze(tmp_path):
    """--from-runs on crl_resnet.py runs of a maze that branches (no held-out goals): a value map per depth, from R
    to the cell farthest along the maze, and each free cell's mean value in stitching.json."""
    import crl_resnet as crl

    distances = st.path_distances("big_maze")
    assert st.corridor_path("big_maze") is None and st.corridor_path("u_maze") == U_PATH
    assert max(distances, key=distances.get) == (6, 5) and distances[(6, 5)] == 11 and len(distances) == 26
    for name, blocks in [("a", 1), ("b", 2)]:  # two untrained agents: what matters here is what gets drawn
        args = crl.Args(env_id="point_big_maze", width=16, num_blocks=blocks, episode_length=100)
        args.actor_num_blocks = args.critic_num_blocks = blocks
        init = crl.make_train(args, crl.GoalEnv(args.env_id))[0]
        params = jax.tree.map(lambda x: x[None], crl.checkpoint_params(init(jax.random.PRNGKey(0))))
        (tmp_path / name).mkdir()
        (tmp_path / name / "args.json").write_text(json.dumps(crl.dataclasses.asdict(args)))
        (tmp_path / name / "final.msgpack").write_bytes(crl.flax.serialization.to_bytes(jax.device_get(params)))
    out = run("eval_stitching.py", "--from-runs", str(tmp_path / "a"), str(tmp_path / "b"), cwd=tmp_path)
    assert "branches" in out and "farthest cell (6, 5) (11 cells along the maze)" in out
    [run_dir] = list((tmp_path / "runs").iterdir())
    results = json.loads((run_dir / "stitching.json").read_text())
    assert results["env_id"] == "point_big_maze" and results["held_out_goals"] == [] and results["corridor"] is None
    assert results["value_map"] == {"start": [1, 1], "goal": [6, 5], "cells_from_start": 11}
    assert list(results["depths"]) == ["4", "8"] and not (run_dir / "stitching.png").exists()
    for depth in ["4", "8"]:
        values = results["depths"][depth]["value_per_cell"]
        assert next(iter(values)) == "(1, 1)" and list(values)[-1] == "(6, 5)" and len(values) == 26
        assert all(v <= 0 for v in values.values()), "f = -||phi - psi||"
        image = matplotlib.image.imread(run_dir / f"value_map_depth{depth}.png")
        assert image.shape[:2] == (440, 500) and image.std() > 0
