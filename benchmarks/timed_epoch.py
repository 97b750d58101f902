"""The epoch the benchmarks time: crl_resnet.py's compiled epoch program, as main() runs it over the seeds."""

import time

import jax
import jax.numpy as jnp


def timed_epoch(crl, args):
    """run() -> seconds of one epoch of `args` (args.num_seeds seeds, mapped with over_seeds as main() maps them):
    the runner state is built and prefilled once, the epoch compiled and run once to warm up, and each call
    continues from the state the last one left."""
    init, prefill, epoch, _ = crl.make_train(args, crl.GoalEnv(args.env_id))
    rs = jax.vmap(lambda s: init(jax.random.PRNGKey(s)))(jnp.arange(args.num_seeds))
    rs = jax.jit(crl.over_seeds(prefill, args.num_seeds))(rs)
    epoch_fn = jax.jit(crl.over_seeds(epoch, args.num_seeds), donate_argnums=0).lower(rs).compile()
    state = {"rs": jax.block_until_ready(epoch_fn(rs)[0])}

    def run():
        start = time.perf_counter()
        state["rs"] = jax.block_until_ready(epoch_fn(state["rs"]))[0]  # the metrics too: both are awaited
        return time.perf_counter() - start

    return run
