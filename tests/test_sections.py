"""Sibling scripts: shared sections byte-identical, crl_mlp.py differs from crl_resnet.py only where it must."""

import difflib
import os
import pathlib
import re

from conftest import ROOT

SCRIPTS = ["crl_resnet.py", "crl_mlp.py", "sac_her.py", "gcbc.py", "eval_stitching.py"]
SHARED = ["ENVIRONMENTS", "REPLAY BUFFER"]  # byte-identical in every script (SPEC section 3)
MARKER = re.compile(r"^# ==== (.+?) ====\s*$")


def sections(script):
    """{NAME: text} for every `# ==== NAME ====` marker; the text before the first marker is 'HEADER'."""
    out, name = {"HEADER": []}, "HEADER"
    for line in pathlib.Path(ROOT, script).read_text().splitlines(keepends=True):
        match = MARKER.match(line)
        if match:
            name = match.group(1)
            out[name] = []
        else:
            out[name].append(line)
    return {k: "".join(v) for k, v in out.items()}


def present():
    return [s for s in SCRIPTS if os.path.exists(os.path.join(ROOT, s))]


def test_every_script_has_the_sections_in_order():
    order = ["HEADER", "ARGS", "ENVIRONMENTS", "NETWORKS", "REPLAY BUFFER", "LOSSES", "TRAINING"]
    order += ["EVALUATION AND LOGGING", "MAIN"]
    for script in present():
        assert list(sections(script)) == order, script


def test_shared_sections_are_byte_identical_in_every_script():
    assert len(present()) >= 2
    reference = sections("crl_resnet.py")
    for script in present()[1:]:
        for name in SHARED:
            theirs = sections(script)[name]
            diff = "".join(difflib.unified_diff(reference[name].splitlines(True), theirs.splitlines(True), n=0))
            assert theirs == reference[name], f"{name} differs in {script}:\n{diff[:2000]}"


def test_crl_mlp_differs_from_crl_resnet_only_in_networks_and_the_flags_they_need():
    resnet, mlp = sections("crl_resnet.py"), sections("crl_mlp.py")
    for name in ["ENVIRONMENTS", "REPLAY BUFFER", "LOSSES", "TRAINING"]:
        assert mlp[name] == resnet[name], name
    lines = list(difflib.ndiff(resnet["NETWORKS"].splitlines(), mlp["NETWORKS"].splitlines()))
    assert any(line.startswith("+ ") for line in lines), "the networks differ"
    # outside NETWORKS: the docstring, the depth flags, their check and their use in MAIN
    whole = difflib.unified_diff(
        pathlib.Path(ROOT, "crl_resnet.py").read_text().splitlines(),
        pathlib.Path(ROOT, "crl_mlp.py").read_text().splitlines(),
        n=0,
    )
    changed = [line for line in whole if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    removed, added = sum(line[0] == "-" for line in changed), sum(line[0] == "+" for line in changed)
    assert max(removed, added) <= 60, f"diff crl_resnet.py crl_mlp.py: -{removed} +{added} lines"


def without_check_args(text):
    """The section with the body of check_args (the flags each algorithm validates) cut out."""
    return re.sub(r"\ndef check_args\(args\):\n(?:    .*\n|\n(?=    ))*", "\ndef check_args(args): ...\n", text)


def changed_lines(a, b):
    return [
        x
        for x in difflib.unified_diff(a.splitlines(), b.splitlines(), n=0)
        if x[:1] in "+-" and x[:3] not in ("+++", "---")
    ]


def test_baselines_share_evaluation_and_main_with_crl_resnet():
    """sac_her.py and gcbc.py: evaluation, checkpoints, logging and MAIN are CRL's; only the checks and the
    line that prints the network depths follow the algorithm's flags."""
    resnet = sections("crl_resnet.py")
    assert "def check_args(args): ...\n\n\nSTATE_FLAGS_EXEMPT" in without_check_args(resnet["EVALUATION AND LOGGING"])
    for script, main_lines in [("sac_her.py", 2), ("gcbc.py", 6)]:
        theirs = sections(script)
        assert without_check_args(theirs["EVALUATION AND LOGGING"]) == without_check_args(
            resnet["EVALUATION AND LOGGING"]
        ), script
        assert len(changed_lines(resnet["MAIN"], theirs["MAIN"])) <= main_lines, script
        # the algorithm lives in LOSSES and TRAINING; the networks differ by a critic head or its absence
        assert changed_lines(resnet["LOSSES"], theirs["LOSSES"]) and changed_lines(
            resnet["TRAINING"], theirs["TRAINING"]
        )


def test_eval_stitching_trains_exactly_what_crl_resnet_trains():
    resnet, stitching = sections("crl_resnet.py"), sections("eval_stitching.py")
    for name in ["NETWORKS", "LOSSES", "TRAINING"]:
        assert stitching[name] == resnet[name], name
