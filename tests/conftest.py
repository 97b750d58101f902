import atexit
import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

# One JAX compilation cache for the session, shared with every script a test starts: the tests compile the same
# tiny runs many times (each resumed or stopped run compiles its programs again), and a cache hit skips XLA.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="crl-tests-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # every program, however quick to compile
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the scripts, imported as modules
sys.path.insert(0, os.path.join(ROOT, "tools"))  # random_policy.py, plot_runs.py

# GRADE=exercises/crl_resnet.py: the tests import that file (a student's copy, tools/make_exercise.py) in place of
# the script of the same name, so the reference tests grade it
if os.environ.get("GRADE"):
    graded = os.path.abspath(os.environ["GRADE"])
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(graded))[0], graded)
    sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[spec.name])

FAST_COMPILE = {"xla_backend_optimization_level": 0}  # no LLVM optimisation: half a brax robot's compile time


def fast_jit(fn, static_argnums=(), options=None):
    """jax.jit(fn) compiled without LLVM's optimisations (and with `options`, e.g. an environment's): for tests
    of values, not speed, where compiling a brax robot dominates the run time."""

    static_argnums = (static_argnums,) if isinstance(static_argnums, int) else static_argnums

    def call(*args):
        lowered = jax.jit(fn, static_argnums=static_argnums).lower(*args)
        return lowered.compile(FAST_COMPILE | (options or {}))(
            *[a for i, a in enumerate(args) if i not in static_argnums]
        )

    return call


def run_script(script, *flags, cwd=None, env=None, timeout=900):
    """`python SCRIPT FLAGS` run to its end (SCRIPT: a file of the repo, or "-c" with the code as first flag): its
    CompletedProcess, output captured as text. env: variables set on top of this environment (None unsets one)."""
    command = [sys.executable, script if script == "-c" else os.path.join(ROOT, script), *flags]
    environ = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run(command, check=False, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)


def pytest_collection_modifyitems(items):
    """Tests marked `long` start first: a long test left for last keeps one worker busy while the others idle."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def made_once(tmp_path_factory, name, make):
    """A folder `name` filled by make(folder) once per test session, by whichever test process asks first (the
    others wait for it): for a run that several tests read, on however many xdist workers they land."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the workers' common folder
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


STARTED = []  # processes started by the running test


def popen(command, **kwargs):
    """subprocess.Popen of a process that does not outlive its test: a test that fails or times out while it runs
    kills it (no run is left training on the machine's cores)."""
    process = subprocess.Popen(command, **kwargs)
    STARTED.append(process)
    return process


@pytest.fixture(autouse=True)
def kill_what_the_test_started():
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.communicate()
