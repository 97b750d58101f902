"""An exercise copy of a script: the named functions' bodies replaced by a NotImplementedError naming the lab.

    python tools/make_exercise.py crl_resnet.py infonce_loss future_indices --lab 2
    python tools/make_exercise.py crl_resnet.py make_losses.actor_loss --lab 2     # a function inside another

writes exercises/crl_resnet.py (--out DIR for another folder): the whole script, with each named function's
signature and docstring kept and its body replaced by `raise NotImplementedError(...)`. A student writes the
bodies back; the reference tests, pointed at the copy by GRADE, grade it:

    GRADE=exercises/crl_resnet.py python -m pytest tests/test_losses.py tests/test_replay_buffer.py

(tests/conftest.py imports the file GRADE names in place of the script of the same name). The tests compare
each function with a plain numpy computation of the paper's formula, or a sampler with its law: a copy that
passes them computes what the original computes.
"""

import argparse
import ast
import pathlib
import sys


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def find(tree, dotted):
    """The function definition at a dotted path (make_losses.actor_loss), or None."""
    node = tree
    for name in dotted.split("."):
        found = [n for n in ast.iter_child_nodes(node) if isinstance(n, ast.FunctionDef) and n.name == name]
        if not found:
            return None
        node = found[0]
    return node


def blank(source, names, lab):
    """The source with each named function's body (less its docstring) replaced by one raise."""
    tree, lines = ast.parse(source), source.splitlines(keepends=True)
    functions = []
    for name in names:
        node = find(tree, name)
        if node is None:
            defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
            fail(f"{name} is not a function of the script; e.g. {', '.join(defined[:6])} (nested: outer.inner)")
        functions.append((name, node))
    for name, node in sorted(functions, key=lambda f: -f[1].lineno):  # from the bottom, so line numbers hold
        body = node.body
        has_docstring = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
        first = body[1] if has_docstring and len(body) > 1 else body[0]
        start = first.lineno - 1 if not (has_docstring and len(body) == 1) else body[0].end_lineno
        indent = " " * first.col_offset
        message = f"lab {lab}: write the body of {name} (its docstring says what it computes)"
        lines[start : node.end_lineno] = [f"{indent}raise NotImplementedError({message!r})\n"]
    return "".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", help="the script to copy, e.g. crl_resnet.py")
    parser.add_argument("functions", nargs="+", metavar="FUNCTION", help="functions to blank (outer.inner)")
    parser.add_argument("--lab", default="2", help="the lab the exercise belongs to, named in the error")
    parser.add_argument("--out", default="exercises", help="folder of the copy (default: exercises/)")
    cli = parser.parse_args(argv)
    script = pathlib.Path(cli.script)
    if not script.is_file():
        fail(f"{cli.script} is not a file: give a script such as crl_resnet.py")
    copy = pathlib.Path(cli.out, script.name)
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(blank(script.read_text(), cli.functions, cli.lab))
    print(f"wrote {copy}: {', '.join(cli.functions)} to write; grade with GRADE={copy} python -m pytest tests/...")


if __name__ == "__main__":
    main()
