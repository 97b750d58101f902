"""Bad input: a one-line error naming the flag, exit status 2, before anything is compiled (docs/crl_resnet.md#flags-that-matter)."""

import dataclasses
import json
import os
import pathlib
import sys

import pytest
from conftest import ROOT, run_script

TINY = [
    "--env-id",
    "point_u_maze",
    "--num-envs",
    "8",
    "--num-eval-envs",
    "8",
    "--total-env-steps",
    "20000",
    "--num-epochs",
    "2",
    "--unroll-length",
    "10",
    "--batch-size",
    "32",
    "--num-sgd-batches-per-training-step",
    "2",
    "--max-replay-size",
    "300",
    "--min-replay-size",
    "100",
    "--width",
    "16",
]


def run(*flags, env=None, cwd=None):
    return run_script("crl_resnet.py", *flags, env=env, cwd=cwd, timeout=300)


BAD = [
    (["--env-id", "nope"], "--env-id", "point_u_maze"),
    (["--num-blocks", "0"], "--num-blocks", ">= 1"),
    (["--actor-num-blocks", "0"], "--actor-num-blocks", ">= 1"),
    (["--num-envs", "0"], "--num-envs", ">= 1"),
    (["--num-eval-envs", "0"], "--num-eval-envs", ">= 1"),
    (["--batch-size", "10000"], "--batch-size", "transitions sampled per training step"),
    (["--num-sgd-batches-per-training-step", "400"], "--num-sgd-batches-per-training-step", "at most"),
    (["--total-env-steps", "500"], "--total-env-steps", "too small"),
    (["--min-replay-size", "400"], "--min-replay-size", "--max-replay-size"),
    (["--min-replay-size", "50"], "--min-replay-size", "episode"),
    (["--episode-length", "1"], "--episode-length", ">= 2"),
    (["--unroll-length", "0"], "--unroll-length", ">= 1"),
    (["--gamma", "1.0"], "--gamma", "(0, 1)"),
    (["--gamma", "0"], "--gamma", "(0, 1)"),
    (["--critic-lr", "0"], "--critic-lr", "> 0"),
    (["--actor-lr", "-1e-3"], "--actor-lr", "> 0"),
    (["--alpha-lr", "0"], "--alpha-lr", "> 0"),
    (["--resume", "runs/does_not_exist"], "--resume", "runs/NAME"),
    (["--width", "0"], "--width", ">= 1"),
    (["--repr-dim", "0"], "--repr-dim", ">= 1"),
    (["--num-seeds", "0"], "--num-seeds", ">= 1"),
    (["--logsumexp-penalty", "-0.1"], "--logsumexp-penalty", ">= 0"),
    (["--target-entropy-scale", "-1"], "--target-entropy-scale", ">= 0"),
    (["--eval-env-id", "nope"], "--eval-env-id", "is unknown"),
    (["--eval-env-id", "ant_u_maze"], "--eval-env-id", "does not fit --env-id point_u_maze"),
]


def assert_one_line_error(result, flag, phrase, status=2):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert flag in lines[0] and phrase in lines[0], lines[0]


def check_in_process(module, flags, capsys, monkeypatch):
    """What the script does with these flags up to its checks (parse_args, start_processes' own, check_args), in
    this process: the one-line error it prints, or None if the flags pass."""
    monkeypatch.setattr(sys, "argv", [module.__file__, *flags])
    capsys.readouterr()
    try:
        args = module.parse_args()
        if hasattr(module, "start_processes"):  # (given no launch flags, it starts nothing)
            module.start_processes(args)
        module.check_args(args)
    except SystemExit as stop:
        err = capsys.readouterr().err
        assert stop.code == 2 and "Traceback" not in err, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        return lines[0]
    return None


@pytest.mark.parametrize("flags,flag,phrase", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_a_one_line_error(flags, flag, phrase, capsys, monkeypatch):
    import crl_resnet

    line = check_in_process(crl_resnet, [*TINY, *flags], capsys, monkeypatch)
    assert line is not None and flag in line and phrase in line, line


@pytest.mark.parametrize("flags,flag,phrase", [BAD[0], BAD[17]], ids=["env", "resume"])
def test_bad_input_is_a_one_line_error_before_anything_compiles_end_to_end(flags, flag, phrase):
    """The same through the real entry point, for a few cases: nothing runs before the check."""
    assert_one_line_error(run(*TINY, *flags), flag, phrase)


def test_track_online_that_wandb_refuses_is_one_line_that_suggests_offline(tmp_path):
    """wandb's own error (here: no API key for an address that answers nothing), in one line, before compiling."""
    code = "import sys, crl_resnet as c; c.start_wandb(c.Args(track=True), sys.argv[1])"
    env = {k: None for k in os.environ if k.startswith("WANDB_")}
    env |= {"WANDB_BASE_URL": "http://127.0.0.1:9", "HOME": str(tmp_path), "PYTHONPATH": ROOT}
    result = run_script("-c", code, str(tmp_path / "run"), env=env, timeout=120)
    assert_one_line_error(result, "--track", "--wandb-mode offline")


def test_resume_with_different_architecture_flags(tmp_path, capsys, monkeypatch):
    import crl_resnet

    run_dir = tmp_path / "runs" / "earlier"
    run_dir.mkdir(parents=True)
    args = {"num_blocks": 1, "width": 16, "env_id": "point_u_maze", "actor_num_blocks": 1, "critic_num_blocks": 1}
    (run_dir / "args.json").write_text(json.dumps(args))
    for flags, flag, phrase in [
        (["--num-blocks", "4"], "--num-blocks", "differs"),
        (["--width", "32"], "--width", "differs"),
    ]:
        line = check_in_process(crl_resnet, ["--resume", str(run_dir), *flags], capsys, monkeypatch)
        assert line is not None and flag in line and phrase in line, line
    (run_dir / "args.json").write_text(json.dumps(args | {"save_model": False}))
    line = check_in_process(crl_resnet, ["--resume", str(run_dir)], capsys, monkeypatch)
    assert line is not None and "--no-save-model" in line, line


def test_paper_defaults_are_consistent():
    """`python crl_resnet.py --num-blocks 64` must pass every check: Table 2 sizes fit the default environment."""
    import crl_resnet as crl

    crl.check_args(crl.Args(num_blocks=64))  # exits with status 2 on any inconsistency


def parsed(module, flags, monkeypatch):
    monkeypatch.setattr(sys, "argv", [module.__file__, *flags])
    return module.parse_args()


@pytest.mark.parametrize("script", ["crl_resnet", "crl_mlp", "sac_her", "gcbc"])
def test_a_preset_is_its_flags_and_the_flags_given_with_it_override_them(script, capsys, monkeypatch):
    """--preset laptop is the CPU quick-start's command line, value for value (so the same seed gives the same run),
    in every training script; a flag given with it wins; an unknown name is a one-line error."""
    module = __import__(script)
    for name, flags in module.PRESETS.items():
        preset = parsed(module, ["--preset", name], monkeypatch)
        assert preset == dataclasses.replace(parsed(module, flags.split(), monkeypatch), preset=name)
    laptop = parsed(module, ["--preset", "laptop"], monkeypatch)
    depth = laptop.depth if script == "crl_mlp" else 4 * laptop.num_blocks
    assert (laptop.env_id, laptop.num_envs, laptop.width, depth, laptop.seed) == ("point_u_maze", 256, 64, 8, 1)
    given = parsed(module, ["--seed", "3", "--preset", "laptop", "--width", "32"], monkeypatch)
    assert (given.env_id, given.seed, given.width, given.num_envs) == ("point_u_maze", 3, 32, 256)
    line = check_in_process(module, ["--preset", "desktop"], capsys, monkeypatch)
    assert line == "error: --preset desktop is not a preset: choose one of laptop, laptop-reacher, laptop-ant"


@pytest.mark.parametrize("script", ["crl_resnet", "crl_mlp", "sac_her", "gcbc", "eval_stitching", "crl_offline"])
def test_help_reads_like_the_method_and_every_help_text_is_one_sentence_line(script):
    """--help lists CleanRL's shared flags, then the method's (environment, networks, schedule, losses), then
    evaluation, then the run plumbing last; each flag's help is one line of source, which tyro prints unbroken."""
    import ast

    module = __import__(script)
    source = pathlib.Path(module.__file__).read_text()
    [args] = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Args"]
    fields = [n.target.id for n in args.body if isinstance(n, ast.AnnAssign)]
    helps = [n.value.value for n in args.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)]
    assert len(helps) == len(fields) and all("\n" not in text for text in helps), script
    assert fields[:3] == ["exp_name", "seed", "track"], fields
    plumbing = ["wandb_project_name", "wandb_entity", "wandb_mode", "save_model", "resume"]
    plumbing += ["devices_split", "coordinator_address", "num_processes", "process_id"]
    mine = [f for f in fields if f in plumbing]
    runtime = (
        [f for f in fields if f in ("actor_num_blocks", "critic_num_blocks")] if script == "eval_stitching" else []
    )
    assert fields[-len(mine) - len(runtime) :] == mine + runtime, (script, fields[-12:])
    evaluation = [
        f for f in ["eval_env_id", "num_eval_envs", "num_eval_episodes", "evaluate", "checkpoint"] if f in fields
    ]
    assert max(fields.index(f) for f in evaluation) < fields.index("wandb_project_name")
    assert min(fields.index(f) for f in evaluation) > fields.index("gamma" if "gamma" in fields else "width"), script


def test_flags_are_resolved_once_into_what_args_json_records():
    """What None and "env" stand for is fixed once, before anything reads the flags, and resolving again changes
    nothing: a resumed or evaluated run, which reads args.json, sees the values the run was trained with."""
    import crl_resnet as crl

    resolved = crl.resolve_args(crl.Args(env_id="point_u_maze", num_blocks=2, critic_num_blocks=4))
    assert (resolved.actor_num_blocks, resolved.critic_num_blocks) == (2, 4)
    assert (resolved.train_goals, resolved.episode_length, resolved.eval_env_id) == (
        "resampled",
        100,
        "point_u_maze_eval",
    )
    assert crl.resolve_args(resolved) == resolved
    paper = crl.resolve_args(crl.Args())
    assert (paper.train_goals, paper.episode_length, paper.eval_env_id) == ("fixed", 1000, "ant_big_maze_eval")
    assert crl.resolve_args(crl.Args(env_id="point_u_maze", train_goals="fixed")).train_goals == "fixed"
