import os
import subprocess
import sys

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

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
