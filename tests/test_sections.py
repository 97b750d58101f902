"""Sibling scripts: the method first, shared sections byte-identical, each sibling differs only where it must."""

import difflib
import os
import pathlib
import re
import subprocess

from conftest import ROOT

SCRIPTS = ["crl_resnet.py", "crl_mlp.py", "sac_her.py", "gcbc.py", "eval_stitching.py", "crl_offline.py"]
ORDER = ["HEADER", "ARGS", "NETWORKS", "REPLAY BUFFER", "LOSSES", "TRAINING", "EVALUATION", "MAIN", "RUN PLUMBING"]
ORDER += ["ENVIRONMENTS", "ENTRY POINT"]
SHARED = ["REPLAY BUFFER", "ENVIRONMENTS", "ENTRY POINT"]  # byte-identical in every online script
OFFLINE = "crl_offline.py"  # a DATASET in place of the REPLAY BUFFER, OGBench's ENVIRONMENTS in place of brax's
TRAINERS = ["crl_resnet.py", "crl_mlp.py", "sac_her.py", "gcbc.py"]  # also share EVALUATION and RUN PLUMBING
MARKER = re.compile(r"^# ==== (.+?) ====\s*$")
ENTRY = 'if __name__ == "__main__":\n'


def lines(script):
    return pathlib.Path(ROOT, script).read_text().splitlines(keepends=True)


def sections(script):
    """{NAME: text} for every `# ==== NAME ====` marker; the text before the first marker is 'HEADER' and the
    closing `if __name__ == "__main__":` block is 'ENTRY POINT'."""
    out, name = {"HEADER": []}, "HEADER"
    for line in lines(script):
        match = MARKER.match(line)
        if match or line == ENTRY:
            name = match.group(1) if match else "ENTRY POINT"
            out[name] = [] if match else [line]
        else:
            out[name].append(line)
    return {k: "".join(v) for k, v in out.items()}


def start_line(script, name):
    """1-based line of a section's marker."""
    return next(i for i, line in enumerate(lines(script), 1) if line.strip() == f"# ==== {name} ====")


def present():
    return [s for s in SCRIPTS if os.path.exists(os.path.join(ROOT, s))]


def test_every_script_has_the_sections_in_order_and_ends_by_calling_main():
    for script in present():
        order = [("DATASET" if name == "REPLAY BUFFER" else name) for name in ORDER] if script == OFFLINE else ORDER
        assert list(sections(script)) == order, script
        assert sections(script)["ENTRY POINT"] == ENTRY + "    main()\n", script


def test_a_reader_meets_the_method_and_the_experiment_before_the_plumbing():
    """Goals, with headroom: the first network class within 300 lines (265-285 today: ARGS holds every flag with its
    help, the presets, and each flag's check); main(), the experiment, ends within 1025 lines in the training
    scripts (893-1024 today); RUN PLUMBING, the part every script copies, under 300 lines (297 today)."""
    for script in present():
        first_class = next(
            i
            for i, line in enumerate(lines(script), 1)
            if i > start_line(script, "NETWORKS") and line.startswith("class ")
        )
        assert first_class <= 300, (script, first_class)
        assert "def main():" in sections(script)["MAIN"], script
    for script in [*TRAINERS, OFFLINE]:
        assert start_line(script, "RUN PLUMBING") <= 1025, script
    assert sections("crl_resnet.py")["RUN PLUMBING"].count("\n") < 300


def without(text, *functions):
    """The section with the bodies of the named top-level functions cut out."""
    for name in functions:
        text, found = re.subn(rf"\ndef {name}\((.*)\):\n(?:    .*\n|\n(?=    ))*", rf"\ndef {name}(\1): ...\n", text)
        assert found == 1, name
    return text


def changed_lines(a, b):
    return [
        x
        for x in difflib.unified_diff(a.splitlines(), b.splitlines(), n=0)
        if x[:1] in "+-" and x[:3] not in ("+++", "---")
    ]


def top_level(text):
    """{name: source} of the top-level functions, classes and constants of a section."""
    found, name = {}, None
    for line in text.splitlines(keepends=True):
        match = re.match(r"(?:def|class) (\w+)|([A-Z_]+) [|]?= ", line)
        if match:
            name = match.group(1) or match.group(2)
            found[name] = found.get(name, "")
        if name is not None:
            found[name] += line
    trim = lambda source: re.sub(r"(\n(#.*)?)+$", "", source) + "\n"  # less the comments and lines that end it
    return {k: trim(v) for k, v in found.items()}


def test_shared_functions_are_byte_identical_wherever_a_script_has_them():
    """What several scripts define alike is the same text in each, whichever section it is in (fail and flag in ARGS,
    the seeds-and-devices helpers in TRAINING, the score and metrics helpers in EVALUATION), so that diff shows
    only what an algorithm changes; device_shardings and make_render are crl_offline.py's own."""
    own = {s: set() for s in SCRIPTS}
    own[OFFLINE] = {"device_shardings", "make_render", "make_evaluate", "SCORE", "STEPS", "SUMMARY_FLAGS"}
    shared = {"ARGS": ["fail", "flag"], "MAIN": ["load_saved_actor"]}
    shared["TRAINING"] = ["over_seeds", "use_all_devices", "device_shardings", "split_over_devices", "host_copy"]
    shared["TRAINING"] += ["wait_until_ready", "CPU_WARNING_ABOVE", "expected_cpu_hours"]
    shared["EVALUATION"] = ["SCORE", "STEPS", "SUMMARY_FLAGS", "deterministic_rollout", "make_evaluate", "log_line"]
    shared["EVALUATION"] += ["over_seeds_summary", "logged_metrics", "write_summary", "make_render"]
    reference = {name: top_level(sections("crl_resnet.py")[name]) for name in shared}
    for script in present()[1:]:
        for name, functions in shared.items():
            theirs = top_level(sections(script)[name])
            for function in set(functions) & set(theirs) - own[script]:
                assert theirs[function] == reference[name][function], (script, name, function)
            assert {"fail", "flag"} <= set(theirs) or name != "ARGS", script


def test_training_scripts_share_evaluation_and_run_plumbing():
    """Each algorithm's own code lives in ARGS, NETWORKS, LOSSES, TRAINING and MAIN: EVALUATION and RUN PLUMBING are
    byte-identical in every training script, RUN PLUMBING in crl_offline.py too, and in eval_stitching.py but for its
    own --resume reading and the processes it never starts."""
    reference = sections("crl_resnet.py")
    for script in [*TRAINERS[1:], OFFLINE]:
        assert sections(script)["RUN PLUMBING"] == reference["RUN PLUMBING"], script
    for script in TRAINERS[1:]:
        assert sections(script)["EVALUATION"] == reference["EVALUATION"], script
    one_process = without(reference["RUN PLUMBING"], "start_processes", "parse_args")
    one_process = re.sub(r"\nLAUNCH_FLAGS = .*", "", one_process).replace("def start_processes(args): ...\n\n\n", "")
    below_the_header_comment = lambda text: text[text.index("\n\n\n") :]
    stitching = without(sections("eval_stitching.py")["RUN PLUMBING"], "parse_args")
    assert below_the_header_comment(stitching) == below_the_header_comment(one_process)
    assert not any("check_args" in sections(s)["RUN PLUMBING"] for s in present()), "flag checks live in ARGS"


def test_no_script_reaches_into_jax_internals():
    """Only JAX's public API (jax.distributed, jax.experimental.multihost_utils) and orbax's: jax._src changes
    without notice from one JAX release to the next."""
    for script in present():
        assert "jax._src" not in pathlib.Path(ROOT, script).read_text(), script


def test_crl_mlp_differs_from_crl_resnet_only_in_networks_and_the_flags_they_need():
    resnet, mlp = sections("crl_resnet.py"), sections("crl_mlp.py")
    for name in ["LOSSES", "TRAINING"]:
        assert mlp[name] == resnet[name], name
    assert changed_lines(resnet["NETWORKS"], mlp["NETWORKS"]), "the networks differ"
    # outside NETWORKS: the docstring, the depth flags, their check, their resolution and the line that prints them.
    # The goal: MAIN differs in at most 4 lines (4 today) and the whole file in at most 75 lines each way
    assert len(changed_lines(resnet["MAIN"], mlp["MAIN"])) <= 4
    whole = changed_lines(*(pathlib.Path(ROOT, s).read_text() for s in ["crl_resnet.py", "crl_mlp.py"]))
    removed, added = sum(line[0] == "-" for line in whole), sum(line[0] == "+" for line in whole)
    assert max(removed, added) <= 75, f"diff crl_resnet.py crl_mlp.py: -{removed} +{added} lines"


def test_baselines_differ_from_crl_resnet_in_their_algorithm_and_the_line_that_prints_it():
    """sac_her.py and gcbc.py: the algorithm lives in NETWORKS, LOSSES and TRAINING; MAIN differs only in the line
    that prints the network depths: at most 4 changed lines (2 and 4 today)."""
    resnet = sections("crl_resnet.py")
    for script in ["sac_her.py", "gcbc.py"]:
        theirs = sections(script)
        assert len(changed_lines(resnet["MAIN"], theirs["MAIN"])) <= 4, script
        for name in ["NETWORKS", "LOSSES", "TRAINING"]:
            assert changed_lines(resnet[name], theirs[name]), (script, name)


def test_eval_stitching_trains_exactly_what_crl_resnet_trains():
    resnet, stitching = sections("crl_resnet.py"), sections("eval_stitching.py")
    for name in ["NETWORKS", "LOSSES", "TRAINING"]:
        assert stitching[name] == resnet[name], name


def test_crl_offline_shares_the_networks_with_crl_resnet():
    """Going offline changes the data (DATASET), the losses, training and evaluation; the networks gain the cold
    initialisation and lose the log-std head (at most 26 changed lines, 24 today)."""
    resnet, offline = sections("crl_resnet.py"), sections(OFFLINE)
    assert 0 < len(changed_lines(resnet["NETWORKS"], offline["NETWORKS"])) <= 26


def diff_sizes(script, reference="crl_resnet.py"):
    """Lines out / in of `diff REFERENCE SCRIPT` (GNU diff)."""
    result = subprocess.run(
        ["diff", reference, script], cwd=ROOT, capture_output=True, text=True, check=False, timeout=900
    )
    diff = result.stdout.splitlines()
    return sum(line.startswith("< ") for line in diff), sum(line.startswith("> ") for line in diff)


def test_the_layout_page_quotes_the_sibling_diff_sizes_that_diff_gives():
    readme = pathlib.Path(ROOT, "docs", "layout.md").read_text()
    for script in present()[1:]:
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{script}` |"))
        quoted = re.search(r"\| (\d+) / (\d+):", row)
        assert quoted, f"docs/layout.md's row of {script} quotes no 'out / in' diff size"
        assert tuple(map(int, quoted.groups())) == diff_sizes(script), (script, quoted.groups(), diff_sizes(script))
    quoted = re.search(r"`diff sac_her.py gcbc.py` is (\d+) / (\d+) lines", readme)
    assert quoted and tuple(map(int, quoted.groups())) == diff_sizes("gcbc.py", "sac_her.py")


def test_the_layout_page_quotes_where_crl_resnet_s_sections_are():
    """docs/layout.md's line of the first network, of main()'s end and RUN PLUMBING's size are the code's."""
    page = " ".join(pathlib.Path(ROOT, "docs", "layout.md").read_text().split())
    first_class = next(
        i
        for i, line in enumerate(lines("crl_resnet.py"), 1)
        if i > start_line("crl_resnet.py", "NETWORKS") and line.startswith("class ")
    )
    plumbing = sections("crl_resnet.py")["RUN PLUMBING"].count("\n")
    quoted = re.search(r"first network is at line (\d+) .*ends before line (\d+); RUN PLUMBING.* is (\d+) lines", page)
    assert quoted, "docs/layout.md quotes no line numbers"
    assert tuple(map(int, quoted.groups())) == (first_class, start_line("crl_resnet.py", "RUN PLUMBING"), plumbing)
