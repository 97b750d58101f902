"""The stages of benchmarks/gpu_check.py, run in order in this process: the measurements themselves.

    python benchmarks/gpu_stages.py --out OUT --stages ant-4 humanoid-64 [--dry-run] [--deadline T --limit NAME=S]

gpu_check.py starts this and watches the clock: before each stage this writes the stage's name and start time to
OUT/stage.json, so that the watcher knows what it stops; run alone, nothing stops a stage. Each result is one row of
OUT/gpu_check.jsonl (Report).
"""

import argparse
import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpu_check import DRY_LIMIT_S, STAGES, Report  # this script's folder is on sys.path
from reset_form import compare as compare_reset_forms

import crl_resnet as crl

TABLE2 = {"num_envs": 512, "batch_size": 512, "num_sgd_batches_per_training_step": 800, "unroll_length": 62}
TABLE2 |= {"max_replay_size": 10_000, "min_replay_size": 1_000, "width": 256, "num_eval_envs": 128}
TINY = {"num_envs": 8, "batch_size": 16, "num_sgd_batches_per_training_step": 2, "unroll_length": 10}
TINY |= {"max_replay_size": 300, "min_replay_size": 100, "width": 16, "num_eval_envs": 8, "episode_length": 100}
DEPTHS = {4: (1, 1), 16: (4, 4), 64: (16, 16), 1024: (256, 128)}  # residual blocks (critic, actor) per depth
DRY_DEPTHS = {4: (1, 1), 16: (2, 1), 64: (2, 1), 1024: (2, 1)}
ENV_IDS = {"ant": "ant_big_maze", "humanoid": "humanoid_u_maze", "arm": "arm_push_easy"}
DRY_ENV_IDS = {"ant": "point_u_maze", "humanoid": "point_big_maze", "arm": "arm_reach"}


def host_syncs(program):
    """(conditionals, while loops whose trip count XLA does not know) in a compiled program: XLA's GPU runtime
    copies the predicate of each to the host and waits for it, once per execution (a loop: once per iteration)."""
    text = program.as_text()
    whiles = [line for line in text.splitlines() if re.search(r"\bwhile\(", line)]
    return len(re.findall(r"\bconditional\(", text)), sum("known_trip_count" not in line for line in whiles)


class Stage:
    """What a stage knows: the sizes, environments and depths of this run, and when it must have finished."""

    def __init__(self, report, dry_run, deadline):
        self.report, self.dry_run, self.deadline = report, dry_run, deadline
        self.sizes = TINY if dry_run else TABLE2
        self.depths, self.env_ids = (DRY_DEPTHS, DRY_ENV_IDS) if dry_run else (DEPTHS, ENV_IDS)

    def left(self):
        return self.deadline - time.time()


def devices(stage):
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    versions = {name: importlib.metadata.version(name) for name in ["jax", "jaxlib", "flax", "optax", "numpy"]}
    versions |= {name: importlib.metadata.version(name) for name in ["brax", "mujoco", "mujoco-mjx", "tyro"]}
    card = "no nvidia-smi"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        card = subprocess.run(query, check=True, capture_output=True, text=True, timeout=30).stdout.strip()
    stage.report.add(
        "devices",
        devices=[f"{d.platform}:{d.device_kind}" for d in jax.devices()],
        nvidia_smi=card,  # name, the card's memory, driver
        allocator_limit_gib=round(stats.get("bytes_limit", 0) / 2**30, 1),  # what JAX may take (75% by default)
        cpu_cores=os.cpu_count(),
        python=platform.python_version(),
        **versions,
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )
    if not stage.dry_run and jax.default_backend() != "gpu":
        print(f"gpu_check: JAX runs on {jax.default_backend()}, not a GPU: nothing to measure", flush=True)
        sys.exit(3)


def epoch_args(env_id, blocks, sizes, **flags):
    """Args of a run with one training step per epoch, 2 epochs."""
    fields = sizes | flags
    per_step, prefill = fields["num_envs"] * fields["unroll_length"], fields["num_envs"] * fields["min_replay_size"]
    args = crl.Args(env_id=env_id, num_epochs=2, total_env_steps=prefill + 2 * per_step, **fields)
    args.critic_num_blocks, args.actor_num_blocks = blocks
    args.num_blocks = blocks[0]
    crl.check_args(args)
    return args


def epoch_check(stage, robot, depth, **flags):
    """Compiles the epoch program, runs two epochs and reports the second (the first alone when two would not fit
    the stage's time); returns the runner state, the environment and the args."""
    blocks = stage.depths[depth]
    args = epoch_args(stage.env_ids[robot], blocks, stage.sizes, **flags)
    label = f"{4 * blocks[0]}" if blocks[0] == blocks[1] else f"{4 * blocks[0]}/{4 * blocks[1]}"
    check = f"epoch {args.env_id} depth {label}" + "".join(f" --{k.replace('_', '-')} {v}" for k, v in flags.items())
    env = crl.GoalEnv(args.env_id, args.episode_length, fixed_goals=True)  # the paper's protocol
    init, prefill, epoch, _ = crl.make_train(args, env)
    seeds = jnp.arange(args.num_seeds) + args.seed
    start = time.time()
    rs = jax.block_until_ready(jax.jit(jax.vmap(lambda s: init(jax.random.PRNGKey(s))))(seeds))
    init_s = time.time() - start
    start = time.time()  # as main() does: an unfilled buffer would give the SGD steps rows of zeros
    rs = jax.block_until_ready(jax.jit(crl.over_seeds(prefill, args.num_seeds))(rs))
    prefill_s = time.time() - start
    rs = jax.device_put(rs, crl.device_shardings(rs, crl.use_all_devices("data"), "data"))
    start = time.time()
    program = jax.jit(crl.over_seeds(epoch, args.num_seeds), donate_argnums=0).lower(rs).compile(env.compiler_options)
    compile_s = time.time() - start
    plan = program.memory_analysis()
    times = []
    while len(times) < 2 and (not times or stage.left() > 1.5 * times[0]):
        start = time.time()
        rs, metrics = jax.block_until_ready(program(rs))
        times.append(time.time() - start)
    env_steps = args.num_seeds * args.num_envs * args.unroll_length
    stats = jax.devices()[0].memory_stats() or {}
    conditionals, unknown_whiles = host_syncs(program)
    stage.report.add(
        check,
        compile_s=round(compile_s, 1),
        init_s=round(init_s, 1),
        prefill_s=round(prefill_s, 1),  # compile and run, min_replay_size steps of every environment
        first_epoch_s=round(times[0], 2),
        epoch_s=round(times[-1], 3),
        timed_epoch=len(times),
        env_steps_per_s=round(env_steps / times[-1]),
        sgd_steps_per_s=round(args.num_seeds * args.num_sgd_batches_per_training_step / times[-1], 1),
        plan_gib=round((plan.temp_size_in_bytes + plan.argument_size_in_bytes) / 2**30, 2) if plan else None,
        allocator_peak_gib=round(stats.get("peak_bytes_in_use", 0) / 2**30, 2),  # of this process so far
        conditionals=conditionals,
        unknown_trip_whiles=unknown_whiles,
        critic_loss=float(np.mean(metrics["losses/critic_loss"])),
    )
    return rs, env, args


def precision_check(stage, rs, env, args):
    """Max |logit difference| between the default and the highest matmul precision of phi.psi, on the diagonal
    (positive pairs, where ||phi||^2 + ||psi||^2 - 2 phi.psi cancels) and over all pairs."""
    sa_encoder, g_encoder, _ = crl.make_networks(args, env)
    critic = jax.tree.map(lambda x: x[0], rs.critic_params)
    obs = rs.env_state.obs[0][: args.batch_size]
    action = jax.random.uniform(jax.random.PRNGKey(0), (obs.shape[0], env.action_dim), minval=-1, maxval=1)
    phi = sa_encoder.apply(critic["sa_encoder"], jnp.concatenate([obs[:, : env.state_dim], action], -1))
    psi = g_encoder.apply(critic["g_encoder"], obs[:, env.state_dim :])

    @jax.jit
    def differences(phi, psi):
        plain = jnp.sum(phi**2, -1)[:, None] + jnp.sum(psi**2, -1)[None, :] - 2 * phi @ psi.T
        difference = jnp.abs(-jnp.sqrt(jnp.maximum(plain, 1e-12)) - crl.l2_energy(phi, psi))
        return jnp.max(jnp.diag(difference)), jnp.max(difference)

    result = {"state_norm": round(float(jnp.linalg.norm(phi, axis=-1).mean()), 2)}
    result["state_diag"], result["state_all"] = map(float, differences(phi, psi))
    for norm in [1, 10, 30]:
        k_phi, k_step = jax.random.split(jax.random.PRNGKey(norm))
        phi = jax.random.normal(k_phi, (args.batch_size, args.repr_dim))
        phi = norm * phi / jnp.linalg.norm(phi, axis=-1, keepdims=True)
        step = jax.random.normal(k_step, phi.shape)
        psi = phi + 0.5 * step / jnp.linalg.norm(step, axis=-1, keepdims=True)
        result[f"norm{norm}_diag"], result[f"norm{norm}_all"] = map(float, differences(phi, psi))
    stage.report.add("critic logits: default vs highest precision", **{k: float(f"{v:.3g}") for k, v in result.items()})


def checkpoint_check(stage, rs):
    """What main() does at every epoch's end: orbax copies the state off the device (training's only pause) and
    writes it on its own threads to local disk; then what --resume does: the state read back onto the device."""
    with tempfile.TemporaryDirectory() as run_dir:
        checkpoints = crl.Checkpoints(run_dir)
        start = time.time()
        checkpoints.save(1, rs, improved=False, best_score=0.0, metrics={"epoch": 1, crl.STEPS: 0})
        returns_s = time.time() - start
        checkpoints.wait()
        write_s = time.time() - start
        start = time.time()
        restored = crl.Checkpoints(run_dir).restore(rs)
        jax.block_until_ready(restored[0])
        read_s = time.time() - start
    stage.report.add(
        f"checkpoint ({stage.env_ids['humanoid']} state, orbax)",
        gb=round(sum(x.nbytes for x in jax.tree.leaves(rs)) / 1e9, 2),
        save_returns_s=round(returns_s, 2),
        write_s=round(write_s, 2),
        read_and_put_s=round(read_s, 2),
    )


def resets_check(stage):
    env_id, steps = stage.env_ids["humanoid"], 10 if stage.dry_run else 100
    for goals in ["resampled", "fixed"]:
        result = compare_reset_forms(env_id, stage.sizes["num_envs"], steps, 2, goals)
        (select, c_select, ended), (cond, c_cond, _) = result["select"], result["cond"]
        stage.report.add(
            f"resets {env_id} {goals}",
            select_steps_per_s=round(select),
            cond_steps_per_s=round(cond),
            select_over_cond=round(select / cond, 2),
            conditionals=f"{c_select} / {c_cond}",
            episodes_ended_per_step=round(ended, 2),
        )


@contextlib.contextmanager
def while_loops_of_fixed_count(count):
    """jax.lax.while_loop traced as `count` iterations whose steps past the loop's exit keep its state: a loop
    whose trip count XLA knows. MJX's constraint solver is the only while loop in the arms' step, and it stops after
    at most opt.iterations, so the physics is unchanged; only the early exit goes."""
    original = jax.lax.while_loop

    def fixed(cond, body, state):
        step = lambda _, s: jax.tree.map(functools.partial(jnp.where, cond(s)), body(s), s)
        return jax.lax.fori_loop(0, count, step, state)

    jax.lax.while_loop = fixed
    try:
        yield
    finally:
        jax.lax.while_loop = original


def arm_solver_check(stage):
    """Env steps/s of random-action rollouts of an arm with MJX's solver loop as it is and with its iteration count
    fixed: what the host round trip per solver iteration costs on a GPU against the iterations it saves."""
    env_id, num_envs, steps = stage.env_ids["arm"], stage.sizes["num_envs"], 5 if stage.dry_run else 40
    env = crl.GoalEnv(env_id, fixed_goals=True)
    iterations = int(env.task.model.opt.iterations)

    def rollout(key):
        def step(env_state, key):
            action = jax.random.uniform(key, (num_envs, env.action_dim), minval=-1, maxval=1)
            return env.step(env_state, action), None

        k_reset, k_steps = jax.random.split(key)
        return jax.lax.scan(step, env.reset(k_reset, num_envs), jax.random.split(k_steps, steps))[0].obs

    result, final = {}, {}
    for form, patch in [("early_exit", contextlib.nullcontext()), ("fixed", while_loops_of_fixed_count(iterations))]:
        start = time.time()
        with patch:  # a new function each time: jit would otherwise reuse the first trace
            program = jax.jit(lambda key: rollout(key)).lower(jax.random.PRNGKey(0)).compile(env.compiler_options)
        result[f"{form}_compile_s"] = round(time.time() - start, 1)
        result[f"{form}_unknown_trip_whiles"] = host_syncs(program)[1]
        best = float("inf")
        for repeat in range(2):
            start = time.perf_counter()
            final[form] = jax.block_until_ready(program(jax.random.PRNGKey(1)))
            best = min(best, time.perf_counter() - start)
        result[f"{form}_env_steps_per_s"] = round(num_envs * steps / best)
    stage.report.add(
        f"{env_id} solver: early exit vs {iterations} iterations always",
        **result,
        fixed_over_early_exit=round(result["fixed_env_steps_per_s"] / result["early_exit_env_steps_per_s"], 2),
        max_obs_difference=float(jnp.max(jnp.abs(final["fixed"] - final["early_exit"]))),
    )


def epoch_then(after):
    """A stage that runs an epoch check and then `after` on its runner state."""
    return lambda robot, depth: lambda stage: after(stage, *epoch_check(stage, robot, depth))


RUN = {  # stage name (gpu_check.STAGES) -> what it runs
    "devices": devices,
    "ant-4": epoch_then(precision_check)("ant", 4),
    "ant-1024": lambda stage: epoch_check(stage, "ant", 1024),
    "humanoid-64": lambda stage: epoch_check(stage, "humanoid", 64),
    "arm-solver": arm_solver_check,
    "humanoid-4": epoch_then(lambda stage, rs, env, args: checkpoint_check(stage, rs))("humanoid", 4),
    "ant-64": lambda stage: epoch_check(stage, "ant", 64),
    "ant-16": lambda stage: epoch_check(stage, "ant", 16),
    "humanoid-16": lambda stage: epoch_check(stage, "humanoid", 16),
    "humanoid-1024": lambda stage: epoch_check(stage, "humanoid", 1024),
    "resets": resets_check,
    "scan-unroll": lambda stage: epoch_check(stage, "ant", 64, scan_unroll=4),
    "bfloat16": lambda stage: epoch_check(stage, "ant", 64, compute_dtype="bfloat16"),
    "seeds-2": lambda stage: epoch_check(stage, "ant", 4, num_seeds=2),
    "seeds-4": lambda stage: epoch_check(stage, "ant", 4, num_seeds=4),
}
assert list(RUN) == list(STAGES)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--deadline", type=float, default=float("inf"), help="time.time() by which all must end")
    parser.add_argument("--limits", default="{}", help="JSON {stage: seconds}: each stage's own time limit")
    cli = parser.parse_args()
    report, limits = Report(cli.out), json.loads(cli.limits)
    for name in cli.stages:
        start = time.time()
        with open(os.path.join(cli.out, "stage.json.tmp"), "w") as f:
            json.dump({"stage": name, "start": start}, f)
        os.replace(os.path.join(cli.out, "stage.json.tmp"), os.path.join(cli.out, "stage.json"))  # read while written
        limit = limits.get(name, DRY_LIMIT_S if cli.dry_run else STAGES[name])
        stage = Stage(report, cli.dry_run, min(cli.deadline, start + limit))
        try:
            RUN[name](stage)
        except Exception as e:  # noqa: BLE001 (an out-of-memory depth must not cost the stages after it)
            traceback.print_exc()
            report.add(name, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")


if __name__ == "__main__":
    main()
