import os
import sys

import jax

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
