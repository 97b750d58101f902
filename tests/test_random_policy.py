"""tools/random_policy.py: a uniformly random policy scored by make_evaluate, the floor of every learning claim."""

import json
import os
import sys

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import random_policy


def test_a_random_point_never_reaches_the_far_cells_but_often_a_near_goal(tmp_path, capsys):
    out = tmp_path / "random.json"
    random_policy.main(["--env-id", "point_u_maze_eval", "--num-eval-envs", "64", "--seeds", "2", "--out", str(out)])
    far = json.loads(out.read_text())
    assert far["eval/success"] == 0 and len(far["eval/success_per_seed"]) == 2  # 5 cells away: 40 steps at full speed
    assert far["episode_length"] is None and far["episodes_per_seed"] == 64
    assert "eval/time_near_goal: 0 " in capsys.readouterr().out
    near = random_policy.random_policy_metrics("point_u_maze", num_envs=1024, episode_length=50)
    assert 0 < near["eval/success"] < 0.1, "goals in the start's neighbour cell are sometimes hit"
    assert 0 < near["eval/time_near_goal"] <= 50 * near["eval/success"]
    assert np.isclose(near["eval/time_near_goal_fraction"], near["eval/time_near_goal"] / 50)


def test_bad_flags_get_one_line(capsys):
    for argv in [["--env-id", "nope"], ["--env-id", "reacher", "--seeds", "0"]]:
        with pytest.raises(SystemExit) as stop:
            random_policy.main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("error: --"), err
