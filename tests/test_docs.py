"""The door and the pages behind it: every relative link in README.md and docs/ reaches a file (and its #anchor a
heading or an <a id> there), every script's first line names its page, and --preset laptop is the command
docs/crl_resnet.md shows."""

import json
import pathlib
import re

from conftest import ROOT

PAGES = [pathlib.Path(ROOT, "README.md"), *sorted(pathlib.Path(ROOT, "docs").rglob("*.md"))]
SCRIPTS = ["crl_resnet.py", "crl_mlp.py", "sac_her.py", "gcbc.py", "eval_stitching.py", "crl_offline.py"]


def prose(text):
    """The text outside fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def anchors(path):
    """GitHub's anchors of a markdown file: one per heading (lower case, punctuation dropped, spaces to hyphens)
    and one per <a id="...">."""
    text = prose(path.read_text())
    slug = lambda h: re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)} | set(
        re.findall(r'<a id="([^"]+)">', text)
    )


def test_every_relative_link_reaches_a_file_and_its_anchor():
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text())):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            assert path.exists(), f"{page.name}: {target} is missing"
            assert not anchor or anchor in anchors(path), f"{page.name}: {target} has no such anchor"
            checked += 1
    assert checked > 50


def test_the_readme_is_a_door_and_every_script_names_its_page():
    readme = pathlib.Path(ROOT, "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "python crl_resnet.py --preset laptop" in readme and "python -m pytest" in readme
    for script in SCRIPTS:
        page = f"docs/{script.removesuffix('.py')}.md"
        assert pathlib.Path(ROOT, page).exists() and f"]({page})" in readme, script
        first = pathlib.Path(ROOT, script).read_text().splitlines()[0]
        assert first.startswith(f"# docs: {page} -- "), (script, first)


def test_the_laptop_preset_is_the_command_its_page_shows():
    import crl_resnet

    page = pathlib.Path(ROOT, "docs", "crl_resnet.md").read_text()
    long_command = next(line for line in page.splitlines() if line.startswith("python crl_resnet.py --env-id point_u"))
    assert long_command.split()[2:] == crl_resnet.PRESETS["laptop"].split()


def known_flags(relative):
    """The flags a program of this repository takes: its Args fields (root scripts, booleans also as --no-...) or
    its argparse arguments (tools/, benchmarks/)."""
    import ast

    text = pathlib.Path(ROOT, relative).read_text()
    if "/" in relative:
        return set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", text)) | {"--help"}
    [args] = [n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == "Args"]
    fields = [n for n in args.body if isinstance(n, ast.AnnAssign)]
    flags = {"--" + n.target.id.replace("_", "-") for n in fields} | {"--help"}
    return flags | {"--no-" + n.target.id.replace("_", "-") for n in fields if ast.unparse(n.annotation) == "bool"}


OTHER_PROGRAMS_FLAGS = {"--no-deps"}  # pip's, pytest's and SLURM's, which the docs quote too


def test_every_flag_the_docs_quote_is_a_flag_of_the_program_they_quote_it_for():
    """A command quoted in README.md or docs/ (`python SCRIPT ...`, continuation lines joined) passes only flags
    SCRIPT has; a flag quoted alone, `--flag`, is one that some program of the repository has."""
    programs = [
        *SCRIPTS,
        *(f"{d}/{p.name}" for d in ["tools", "benchmarks"] for p in pathlib.Path(ROOT, d).glob("*.py")),
    ]
    flags = {program: known_flags(program) for program in programs}
    every = set().union(*flags.values()) | OTHER_PROGRAMS_FLAGS
    checked, wrong = 0, []
    for page in PAGES:
        text = page.read_text().replace("\\\n", " ")
        for program, rest in re.findall(r"python (\S+\.py)([^`\n]*)", text):
            if program in flags:
                quoted = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest.split("#")[0]))
                wrong += [(page.name, program, flag) for flag in sorted(quoted - flags[program])]
                checked += len(quoted)
        for flag in re.findall(r"`(--[a-z][\w-]*)", text):
            wrong += [(page.name, "any program", flag)] if flag not in every else []
            checked += 1
    assert checked > 100 and not wrong, wrong


def test_every_results_table_is_what_plot_runs_makes_of_the_committed_runs(tmp_path, monkeypatch):
    """A results table in README.md or docs/ sits between `<!-- results: python tools/plot_runs.py ARGS -->` and
    `<!-- end results -->`: that command, run on the committed runs into a scratch folder, makes the table to the
    character, and the scores.md and scores.json committed in its --out folder (tools/results_tables.py)."""
    import plot_runs
    import results_tables

    monkeypatch.chdir(ROOT)
    found = results_tables.tables(ROOT)
    for i, (page, command, table) in enumerate(found):
        argv = results_tables.argv_of(command)
        out = pathlib.Path(argv[argv.index("--out") + 1])
        argv[argv.index("--out") + 1] = str(tmp_path / str(i))
        plot_runs.main(argv)
        fresh = (tmp_path / str(i) / "scores.md").read_text()
        assert table == fresh, f"{page.name}: the table of `{command}` is not what it makes:\n{fresh}"
        assert (out / "scores.md").read_text() == fresh, f"{out}/scores.md is stale: python tools/results_tables.py"
        fresh = json.loads((tmp_path / str(i) / "scores.json").read_text())
        assert json.loads((out / "scores.json").read_text()) == fresh, f"{out}/scores.json is stale"
        assert (out / "curves.png").is_file()
    assert len(found) >= 20, f"{len(found)} results tables found"
