"""tools/plot_runs.py on synthetic run directories whose scores are known: grouping, seeds, the last-five score."""

import json

import matplotlib.image
import numpy as np
import plot_runs
import pytest


def make_run(path, flags, near, success=None, norm=None):
    """A run directory: args.json and one metrics line per evaluation; near[e] is a number (one seed) or a list
    (one value per seed of a --num-seeds run); norm: a gradients/critic_norm of epoch e x norm in every seed."""
    path.mkdir(parents=True)
    run_flags = {"env_id": "point_u_maze", "eval_env_id": "point_u_maze_eval", "episode_length": 100}
    (path / "args.json").write_text(json.dumps(run_flags | {"critic_lr": 3e-4, "seed": 1} | flags))
    lines = []
    for epoch, value in enumerate(near, 1):
        line = {"epoch": epoch, "training/env_steps": 1000 * epoch}
        values = np.atleast_1d(value).astype(float)
        rate = values / 100 if success is None else np.full_like(values, success)
        line |= {"eval/time_near_goal": float(values.mean()), "eval/success": float(rate.mean())}
        if len(values) > 1:
            line |= {"eval/time_near_goal_per_seed": values.tolist(), "eval/success_per_seed": rate.tolist()}
        if norm is not None:
            line |= {"gradients/critic_norm": epoch * norm}
        lines.append(json.dumps(line))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_groups_seeds_and_the_last_five_evaluations(tmp_path):
    """Depth 4: a one-seed run and a two-seed run (three seeds); depth 16: one seed; seven evaluations each."""
    make_run(tmp_path / "a", {"num_blocks": 1, "seed": 1}, [0, 0, 10, 20, 30, 40, 50])  # last five: mean 30
    make_run(tmp_path / "b", {"num_blocks": 1, "seed": 2, "num_seeds": 2}, [[0, 0]] * 2 + [[20, 40]] * 5)  # 20, 40
    make_run(tmp_path / "c", {"num_blocks": 4, "seed": 1}, [50] * 7, success=1.0)
    out = tmp_path / "out"
    plot_runs.main([str(tmp_path / x) for x in "abc"] + ["--out", str(out)])
    table = json.loads((out / "scores.json").read_text())
    assert list(table) == ["depth 4", "depth 16"], "grouped by the only flag that differs, as the critic's depth"
    shallow, deep = table["depth 4"], table["depth 16"]
    assert shallow["seeds"] == 3 and deep["seeds"] == 1
    np.testing.assert_allclose(shallow["score_per_seed"], [30, 20, 40])
    np.testing.assert_allclose([shallow["score"], shallow["score_std_over_seeds"]], [30, np.std([30, 20, 40])])
    np.testing.assert_allclose(shallow["success_per_seed"], [0.3, 0.2, 0.4])
    assert (deep["score"], deep["score_std_over_seeds"], deep["success"], deep["env_steps"]) == (50, 0, 1, 7000)
    markdown = (out / "scores.md").read_text()
    row = "| depth 4 | 3 | 30.0 ± 8.2 [20.0, 40.0] | 30.0, 20.0, 40.0 | 0.30 ± 0.08 | 0.30, 0.20, 0.40 |"
    row += " 0.50, 0.20, 0.40 | 0.007M |"  # the best evaluation of each seed
    assert row + " not logged |" in markdown  # the interval: a mean of three draws of the seeds, 2.5% to 97.5%

    groups = plot_runs.group_runs(plot_runs.find_runs([str(tmp_path / x) for x in "abc"]), ["depth"])
    np.testing.assert_allclose(groups["depth 4"]["eval/time_near_goal"][-1], [50, 20, 40])  # (T, seeds): last step
    fig = plot_runs.plot_curves(groups, "test")
    for ax in fig.axes:
        assert len(ax.get_lines()) == 2, "one line per group in each panel"
        np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [50] * 7 if "time" in ax.get_ylabel() else [1] * 7)
    assert len(fig.axes[0].collections) == 1, "a confidence band for the group with seeds, none for one seed"
    image = matplotlib.image.imread(out / "curves.png")
    assert image.shape[:2] == (400, 1100) and image.std() > 0


def test_a_stitching_sweep_and_any_flag_as_groups(tmp_path, capsys):
    stitching = {"max_train_gap": 3, "num_blocks": 1}
    make_run(tmp_path / "sweep" / "depth4", stitching | {"critic_num_blocks": 1}, [10] * 3)
    make_run(tmp_path / "sweep" / "depth8", stitching | {"critic_num_blocks": 2}, [20] * 3)
    make_run(tmp_path / "mlp", {"layer_norm": True, "depth": 8, "critic_depth": 8, "width": 32}, [5] * 3)
    groups = plot_runs.group_runs(plot_runs.find_runs([str(tmp_path / "sweep"), str(tmp_path / "mlp")]), None)
    assert list(groups) == [
        "depth 4, script eval_stitching.py",
        "depth 8, script crl_mlp.py",
        "depth 8, script eval_stitching.py",
    ]
    groups = plot_runs.group_runs(plot_runs.find_runs([str(tmp_path / "sweep"), str(tmp_path / "mlp")]), ["script"])
    assert [g["eval/time_near_goal"].shape[1] for g in groups.values()] == [1, 2]
    with pytest.raises(SystemExit) as stop:
        plot_runs.main([str(tmp_path / "sweep"), "--group-by", "nope", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("error: --group-by nope"), err
    with pytest.raises(SystemExit):
        plot_runs.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
    assert capsys.readouterr().err.startswith("error: ")


def test_more_metrics_as_panels_and_in_the_scores(tmp_path, capsys):
    make_run(tmp_path / "a", {"num_blocks": 1}, [10] * 6, norm=1.0)  # norms 1..6: last five mean 4
    make_run(tmp_path / "b", {"num_blocks": 2}, [20] * 6, norm=10.0)
    out = tmp_path / "out"
    plot_runs.main([str(tmp_path / "a"), str(tmp_path / "b"), "--metrics", "gradients/critic_norm", "--out", str(out)])
    table = json.loads((out / "scores.json").read_text())
    assert table["depth 4"]["gradients/critic_norm (last 5)"] == {"mean": 4.0, "per_seed": [4.0]}
    assert table["depth 8"]["gradients/critic_norm (last 5)"]["mean"] == 40.0
    assert matplotlib.image.imread(out / "curves.png").shape[:2] == (800, 1100), "a third panel, on a second row"
    groups = plot_runs.group_runs(plot_runs.find_runs([str(tmp_path / "a")]), None)
    fig = plot_runs.plot_curves(groups, "test", random={"eval/time_near_goal": 4.0, "eval/success": 0.25})
    floors = [[line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] for ax in fig.axes]
    assert floors == [[4.0], [0.25]], "a dashed random-policy line where the JSON has the metric"
    floor = {"eval/time_near_goal": 0.0, "eval/success": 0.0, "env_id": "point_u_maze_eval", "episode_length": 100}
    (tmp_path / "random.json").write_text(json.dumps(floor))
    plot_runs.main([str(tmp_path / "a"), "--random", str(tmp_path / "random.json"), "--out", str(out)])
    for wrong in ["{not json", "5", json.dumps(floor | {"episode_length": 1000}), json.dumps(floor | {"env_id": "x"})]:
        (tmp_path / "random.json").write_text(wrong)
        capsys.readouterr()
        with pytest.raises(SystemExit):
            plot_runs.main([str(tmp_path / "a"), "--random", str(tmp_path / "random.json"), "--out", str(out)])
        err = capsys.readouterr().err
        assert err.startswith("error: --random ") and err.count("\n") == 1, err
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        plot_runs.main([str(tmp_path / "a"), "--metrics", "gradients/nope", "--out", str(out)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("error: --metrics gradients/nope"), err


def test_max_env_steps_scores_runs_of_different_lengths_at_one_budget(tmp_path, capsys):
    make_run(tmp_path / "long", {"num_blocks": 1}, [0, 10, 20, 30, 40, 50, 60, 70])  # evaluations at 1000..8000
    make_run(tmp_path / "short", {"num_blocks": 2}, [0, 0, 5, 5, 5, 5])  # at 1000..6000
    out = tmp_path / "out"
    plot_runs.main([str(tmp_path / "long"), str(tmp_path / "short"), "--max-env-steps", "6e3", "--out", str(out)])
    table = json.loads((out / "scores.json").read_text())
    assert table["depth 4"]["score_per_seed"] == [30.0], "the last five evaluations up to 6000 steps: 10..50"
    assert table["depth 4"]["env_steps"] == table["depth 8"]["env_steps"] == 6000
    assert table["depth 8"]["score_per_seed"] == [4.0]
    for bad in ["0", "500"]:  # not positive; before any evaluation
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            plot_runs.main([str(tmp_path / "long"), "--max-env-steps", bad, "--out", str(out)])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and "--max-env-steps" in err, err


def test_two_grouping_flags_read_apart_by_colour_and_line_style(tmp_path):
    """--group-by script depth: one colour per depth, one line style per script (the residual ablation's figure)."""
    for depth in (8, 16):
        make_run(tmp_path / f"resnet{depth}", {"num_blocks": depth // 4}, [10] * 3)
        make_run(tmp_path / f"mlp{depth}", {"layer_norm": True, "depth": depth, "critic_depth": depth}, [5] * 3)
    groups = plot_runs.group_runs(plot_runs.find_runs([str(tmp_path)]), ["script", "depth"])
    fig = plot_runs.plot_curves(groups, "test")
    style = {line.get_label().split(" (")[0]: (line.get_color(), line.get_linestyle()) for line in fig.axes[0].lines}
    assert len(style) == 4 and len(set(style.values())) == 4, "every group has its own look"
    assert (
        style["script crl_mlp.py, depth 8"][0]
        == style["script crl_resnet.py, depth 8"][0]
        != style["script crl_mlp.py, depth 16"][0]
    )
    assert (
        style["script crl_mlp.py, depth 8"][1]
        == style["script crl_mlp.py, depth 16"][1]
        != style["script crl_resnet.py, depth 8"][1]
    )
    one_flag = plot_runs.group_runs(plot_runs.find_runs([str(tmp_path)]), ["depth"])
    assert {line.get_linestyle() for line in plot_runs.plot_curves(one_flag, "test").axes[0].lines} == {"-"}


def test_crl_offline_runs_are_scored_by_success_against_gradient_steps(tmp_path):
    for name, cold, rates in [("a", False, [[0.0, 0.2]] * 2 + [[0.4, 0.6]] * 5), ("b", True, [[0.1, 0.1]] * 7)]:
        path = tmp_path / name
        path.mkdir()
        flags = {"env_id": "pointmaze-medium-v0", "episode_length": 1000, "dataset_path": "d.npz", "critic_lr": 3e-4}
        (path / "args.json").write_text(json.dumps(flags | {"num_blocks": 1, "cold_init": cold, "num_seeds": 2}))
        lines = [
            {
                "epoch": e,
                "training/gradient_steps": 100 * e,
                "eval/success": float(np.mean(r)),
                "eval/success_per_seed": r,
            }
            for e, r in enumerate(rates, 1)
        ]
        (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    out = tmp_path / "out"
    plot_runs.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)])
    table = json.loads((out / "scores.json").read_text())
    assert list(table) == ["cold_init False", "cold_init True"]
    np.testing.assert_allclose(table["cold_init False"]["score_per_seed"], [0.4, 0.6])
    assert table["cold_init True"]["score"] == table["cold_init True"]["success"] == 0.1
    assert table["cold_init False"]["gradient_steps"] == 700
    assert (
        "| cold_init False | 2 | 0.50 ± 0.10 [0.40, 0.60] | 0.40, 0.60 | 0.40, 0.60 | 0.0007M |"
        in (out / "scores.md").read_text()
    )
    make_run(tmp_path / "online", {"num_blocks": 1}, [10] * 5)  # online runs after it: scored as before
    plot_runs.main([str(tmp_path / "online"), "--out", str(out)])
    assert json.loads((out / "scores.json").read_text())["all runs"]["env_steps"] == 5000


def test_the_table_has_the_random_policy_wall_times_and_evaluations(tmp_path):
    """scores.md is the results table a page shows: a row for --random, each run's training wall time, and the
    `--evaluate` results every run of a group has (evaluation__ENV__CHECKPOINT.json), per seed in scores.json."""
    make_run(tmp_path / "a", {"num_blocks": 1}, [10] * 5)
    make_run(tmp_path / "b", {"num_blocks": 2, "num_seeds": 2}, [[20, 30]] * 5)
    for run, walltime in [("a", 61.4), ("b", 3599.6)]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        lines[-1] = json.dumps(json.loads(lines[-1]) | {"training/walltime": walltime})
        (tmp_path / run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    evaluation = {"eval_env_id": "point_u_maze", "checkpoint": "final", "episodes_per_seed": 1024}
    metrics = {"eval/success": 0.5, "eval/success_per_seed": [0.4, 0.6], "eval/time_near_goal": 50.0}
    metrics |= {"eval/time_near_goal_per_seed": [40.0, 60.0]}
    (tmp_path / "b" / "evaluation__point_u_maze__final.json").write_text(json.dumps(evaluation | {"metrics": metrics}))
    random = {"eval/time_near_goal": 1.0, "eval/success": 0.25, "eval/time_near_goal_per_seed": [0.5, 1.5]}
    random |= {"eval/success_per_seed": [0.0, 0.5], "env_id": "point_u_maze_eval", "episode_length": 100}
    (tmp_path / "random.json").write_text(json.dumps(random | {"episodes_per_seed": 256}))
    out = tmp_path / "out"
    plot_runs.main(
        [str(tmp_path / "a"), str(tmp_path / "b"), "--random", str(tmp_path / "random.json")] + ["--out", str(out)]
    )
    lines = (out / "scores.md").read_text().splitlines()
    assert lines[0].endswith(
        "| wall time per run | `--evaluate on point_u_maze (final)`: success, time near goal (episodes per seed) |"
    )
    assert lines[2].endswith("| 1 min 01 s | — |"), "run a has no --evaluate"
    assert lines[3].endswith("| 60 min 00 s | 0.50, 50.0 (1024) |"), "seconds rounded before minutes"
    assert (
        lines[4]
        == "| random policy | 2 | 1.0 ± 0.5 | 0.5, 1.5 | 0.25 ± 0.25 | 0.00, 0.50 |  | 256 episodes per seed |  |  |"
    )
    table = json.loads((out / "scores.json").read_text())
    assert table["depth 8"]["--evaluate on point_u_maze (final)"]["success"] == [0.4, 0.6]
    assert table["random policy"]["score_per_seed"] == [0.5, 1.5]
    plot_runs.main([str(tmp_path / "a"), "--max-env-steps", "4000", "--out", str(out)])  # cut before the last line
    assert (out / "scores.md").read_text().splitlines()[2].endswith("| 0.004M | not logged |"), "wall time at 4000"


def test_stitching_tables_from_eval_stitchings_json(tmp_path):
    """--stitching adds eval_stitching.py's results to scores.md: per held-out goal and depth, mean ± std over
    seeds; then the value per cell, R and the goal named."""
    make_run(tmp_path / "a", {"num_blocks": 1}, [10] * 5)
    goals = {"(3, 3)": {"success": [0.5, 1.0], "time_near_goal": [40.0, 60.0]}}
    results = {
        "held_out_goals": [{"name": "(3, 3)", "cell": [3, 3], "cells_from_start": 4}],
        "value_map": {"start": [1, 1], "goal": [3, 3], "cells_from_start": 4},
        "depths": {
            "4": {"seeds": [1, 2], "goals": goals, "value_per_cell": {"(1, 1)": -9.0, "(3, 3)": -1.04}},
            "16": {"seeds": [1, 2], "goals": goals, "value_per_cell": {"(1, 1)": -8.0, "(3, 3)": -2.0}},
        },
    }
    (tmp_path / "stitching.json").write_text(json.dumps(results))
    out = tmp_path / "out"
    plot_runs.main([str(tmp_path / "a"), "--stitching", str(tmp_path / "stitching.json"), "--out", str(out)])
    lines = (out / "scores.md").read_text().splitlines()
    assert "| (3, 3) (4) | 0.75 ± 0.25 | 50.0 ± 10.0 | 0.75 ± 0.25 | 50.0 ± 10.0 |" in lines
    assert "| critic | R (1, 1) | goal (3, 3) |" in lines
    assert "| depth 4 | -9.0 | -1.0 |" in lines and "| depth 16 | -8.0 | -2.0 |" in lines


def test_a_run_that_logged_only_the_mean_of_its_seeds_says_so(tmp_path):
    """eval_stitching.py runs made before it logged per-seed values: the table says how many seeds the one mean
    pools, and counts it as one value (its interval is no interval)."""
    make_run(tmp_path / "a", {"num_blocks": 1, "num_seeds": 3}, [10] * 5)  # means only: no _per_seed keys
    out = tmp_path / "out"
    plot_runs.main([str(tmp_path / "a"), "--out", str(out)])
    assert (
        (out / "scores.md").read_text().splitlines()[2].startswith("| all runs | 3, logged as their mean | 10.0 ± 0.0")
    )
