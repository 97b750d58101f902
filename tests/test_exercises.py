"""The course's grader loop: an exercise copy made by tools/make_exercise.py fails the reference tests that cover
its blanked functions, and the original passes them (GRADE points the tests at a copy)."""

import os
import shutil
import subprocess
import sys

import make_exercise
import pytest
from conftest import ROOT

GRADED = ["tests/test_losses.py", "tests/test_replay_buffer.py"]


def grade(script, *tests):
    env = {**os.environ, "GRADE": str(script)} if script else dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_a_blanked_copy_fails_the_graded_tests_and_the_original_passes(tmp_path):
    make_exercise.main(
        ["crl_resnet.py", "infonce_loss", "future_indices", "make_losses.actor_loss"] + ["--out", str(tmp_path)]
    )
    copy = tmp_path / "crl_resnet.py"
    source = copy.read_text()
    assert source.count("raise NotImplementedError('lab 2: write the body of") == 3
    blanked = grade(copy, *GRADED)
    assert blanked.returncode == 1, blanked.stdout[-2000:]
    failed = [line for line in blanked.stdout.splitlines() if line.startswith("FAILED")]
    assert any("infonce" in line for line in failed) and any("actor_loss" in line for line in failed)
    assert any("test_replay_buffer" in line for line in failed), "future_indices is graded by the sampler's tests"
    assert "NotImplementedError: lab 2: write the body of infonce_loss" in blanked.stdout
    assert "NotImplementedError: lab 2: write the body of future_indices" in blanked.stdout
    original = grade(None, *GRADED)
    assert original.returncode == 0, original.stdout[-2000:]
    # a copy whose bodies are written back (here: the original's) passes: the tests grade the file GRADE names
    (tmp_path / "done").mkdir()
    shutil.copy(os.path.join(ROOT, "crl_resnet.py"), tmp_path / "done")
    assert grade(tmp_path / "done" / "crl_resnet.py", *GRADED).returncode == 0


def test_an_unknown_function_is_a_one_line_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        make_exercise.main(["crl_resnet.py", "infonce", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("error: infonce is not a function of the script; e.g. ")
