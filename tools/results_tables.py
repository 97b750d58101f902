"""Every results table in README.md and docs/, remade from the committed runs by the command its page names.

    python tools/results_tables.py      # after adding runs or changing plot_runs.py: every table and its folder

A results table sits in its page between a marker naming the command that makes it and an end marker:

    <!-- results: python tools/plot_runs.py docs/laptop_scale/reacher/runs --out docs/laptop_scale/reacher -->
    | group | seeds | score ...
    <!-- end results -->

This reruns each marker's command (globs expanded, as a shell would, in sorted order) from the repository's root,
which rewrites scores.md, scores.json and curves.png in its --out folder, and puts the new scores.md in the page.
tests/test_docs.py reruns every command into a scratch folder and fails on any difference, so no number in a
results table can drift from the runs committed under docs/.
"""

import glob
import os
import pathlib
import re

import plot_runs  # beside this file

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKER = re.compile(r"(<!-- results: python tools/plot_runs\.py (.+?) -->\n)(.*?)(<!-- end results -->)", re.DOTALL)


def pages(root=ROOT):
    return [pathlib.Path(root, "README.md"), *sorted(pathlib.Path(root, "docs").rglob("*.md"))]


def argv_of(command):
    """The command's arguments, each glob expanded in sorted order (run from the repository's root)."""
    return [a for arg in command.split() for a in (sorted(glob.glob(arg)) if "*" in arg else [arg])]


def tables(root=ROOT):
    """(page, command, table) for every results table in the pages."""
    return [(page, m.group(2), m.group(3)) for page in pages(root) for m in MARKER.finditer(page.read_text())]


def main():
    os.chdir(ROOT)
    for page in pages():
        text = page.read_text()
        parts = []
        for m in MARKER.finditer(text):
            plot_runs.main(argv_of(m.group(2)))
            out = argv_of(m.group(2))[argv_of(m.group(2)).index("--out") + 1]
            parts.append((m.span(3), pathlib.Path(out, "scores.md").read_text()))
        for (start, end), table in reversed(parts):
            text = text[:start] + table + text[end:]
        page.write_text(text)
        print(f"{page.relative_to(ROOT)}: {len(parts)} results tables")


if __name__ == "__main__":
    main()
