"""The paper-scale path on one GPU, in one prepared run: what README's GPU section reports.

    bash benchmarks/gpu_check.sh OUT            # on the GPU machine: carried wheels installed, then this script
    python benchmarks/gpu_check.py --out OUT    # the checks alone (about 8 minutes on one H200 is the plan)
    python benchmarks/gpu_check.py --dry-run    # every check at tiny sizes on a CPU (part of the test suite)

Each check writes its result as soon as it has it, as one JSON line of OUT/gpu_check.jsonl, and rewrites
OUT/gpu_check.md (a table of everything so far), so a run stopped by a time limit still leaves what it measured.
Checks run in order of priority and are skipped once --budget-s is spent:

 1. devices, versions, memory;
 2. epoch programs at Table 2 sizes (512 envs, batch 512, 800 SGD steps per training step, one training step
    per epoch) on ant_big_maze and humanoid_u_maze at depth 4, 64, 16 and the 1024/512 pair: compile time,
    env steps/s of the second epoch, XLA's memory plan, peak GPU memory so far, conditionals in the program;
 3. the precision of the critic's distances: default against highest matmul precision, on the runner state's
    own observations and on embeddings of norm 1, 10 and 30;
 4. checkpoint_last of the humanoid_u_maze state (5.9 GB): host copy, write, read back;
 5. automatic resets as a select against a lax.cond (benchmarks/reset_form.py), resampled and fixed goals;
 6. --scan-unroll 4 and --compute-dtype bfloat16 at depth 64, --num-seeds 2 and 4 at depth 4 (ant_big_maze).
The epochs skip the prefill (an empty buffer costs the same to sample) and the evaluation.
"""

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from reset_form import compare as compare_reset_forms  # this script's folder is on sys.path

import crl_resnet as crl

TABLE2 = {"num_envs": 512, "batch_size": 512, "num_sgd_batches_per_training_step": 800, "unroll_length": 62}
TABLE2 |= {"max_replay_size": 10_000, "min_replay_size": 1_000, "width": 256, "num_eval_envs": 128}
TINY = {"num_envs": 8, "batch_size": 16, "num_sgd_batches_per_training_step": 2, "unroll_length": 10}
TINY |= {"max_replay_size": 300, "min_replay_size": 100, "width": 16, "num_eval_envs": 8, "episode_length": 100}
DEPTHS = [(1, 1), (16, 16), (4, 4), (256, 128)]  # residual blocks (critic, actor): depth 4, 64, 16, 1024/512
DRY_DEPTHS = [(1, 1), (2, 1)]


class Report:
    """Appends each result to OUT/gpu_check.jsonl and rewrites OUT/gpu_check.md, as it goes."""

    def __init__(self, out, budget_s):
        os.makedirs(out, exist_ok=True)
        self.out, self.budget_s, self.start, self.rows = out, budget_s, time.time(), []
        open(os.path.join(out, "gpu_check.jsonl"), "w").close()

    def left(self):
        return self.budget_s - (time.time() - self.start)

    def add(self, check, **result):
        row = {"check": check, "at_s": round(time.time() - self.start, 1)} | result
        self.rows.append(row)
        with open(os.path.join(self.out, "gpu_check.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
        lines = ["| check | result |", "|---|---|"]
        lines += [
            f"| {r['check']} | {', '.join(f'{k} {v}' for k, v in r.items() if k != 'check')} |" for r in self.rows
        ]
        with open(os.path.join(self.out, "gpu_check.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"[{row['at_s']:7.1f} s] {check}: {json.dumps(result)}", flush=True)

    def run(self, check, fn, *args, **kwargs):
        """fn(*args) -> dict, reported; skipped past the budget; an error is reported and the run goes on."""
        if self.left() <= 0:
            return self.add(check, skipped="budget spent")
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 (an out-of-memory depth must not cost the checks after it)
            traceback.print_exc()
            return self.add(check, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")


def devices(report):
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    versions = {}
    for name in ["jax", "jaxlib", "flax", "optax", "brax", "mujoco", "numpy"]:
        module = __import__(name)
        versions[name] = getattr(module, "__version__", "?")
    report.add(
        "devices",
        devices=[f"{d.platform}:{d.device_kind}" for d in jax.devices()],
        memory_gib=round(stats.get("bytes_limit", 0) / 2**30, 1),
        cpu_cores=os.cpu_count(),
        python=platform.python_version(),
        **versions,
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )


def epoch_args(env_id, blocks, sizes, **flags):
    """Args of a run with one training step per epoch, 2 epochs."""
    fields = sizes | flags
    per_step, prefill = fields["num_envs"] * fields["unroll_length"], fields["num_envs"] * fields["min_replay_size"]
    args = crl.Args(env_id=env_id, num_epochs=2, total_env_steps=prefill + 2 * per_step, **fields)
    args.critic_num_blocks, args.actor_num_blocks = blocks
    args.num_blocks = blocks[0]
    crl.check_args(args)
    return args


def epoch_check(report, check, args):
    """Compiles the epoch program, runs two epochs, reports the second; returns the runner state."""
    env = crl.GoalEnv(args.env_id, args.episode_length, fixed_goals=True)  # the paper's protocol
    init, _, epoch, _ = crl.make_train(args, env)
    seeds = jnp.arange(args.num_seeds) + args.seed
    start = time.time()
    rs = jax.block_until_ready(jax.jit(jax.vmap(lambda s: init(jax.random.PRNGKey(s))))(seeds))
    init_s = time.time() - start
    rs = jax.device_put(rs, crl.data_parallel(rs, crl.use_all_devices()))
    start = time.time()
    lowered = jax.jit(crl.over_seeds(epoch, args.num_seeds), donate_argnums=0).lower(rs)
    program = lowered.compile(env.compiler_options)
    compile_s = time.time() - start
    plan = program.memory_analysis()
    times = []
    for _ in range(2):
        start = time.time()
        rs, metrics = jax.block_until_ready(program(rs))
        times.append(time.time() - start)
    env_steps = args.num_seeds * args.num_envs * args.unroll_length
    stats = jax.devices()[0].memory_stats() or {}
    report.add(
        check,
        compile_s=round(compile_s, 1),
        init_s=round(init_s, 1),
        first_epoch_s=round(times[0], 2),
        epoch_s=round(times[1], 3),
        env_steps_per_s=round(env_steps / times[1]),
        sgd_steps_per_s=round(args.num_seeds * args.num_sgd_batches_per_training_step / times[1], 1),
        plan_gib=round((plan.temp_size_in_bytes + plan.argument_size_in_bytes) / 2**30, 2) if plan else None,
        peak_gib_so_far=round(stats.get("peak_bytes_in_use", 0) / 2**30, 2),
        conditionals=len(re.findall(r"\bconditional\(", program.as_text())),
        critic_loss=float(np.mean(metrics["losses/critic_loss"])),
    )
    return rs, env


def precision_check(report, rs, env, args):
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
    report.add("critic logits: default vs highest precision", **{k: float(f"{v:.3g}") for k, v in result.items()})


def checkpoint_check(report, rs):
    """What RunLog does at every epoch's end: a host copy of the state, then checkpoint_last.npz on local disk."""
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.time()
        host = jax.device_get(crl.named_leaves(rs))
        copy_s = time.time() - start
        size = sum(x.nbytes for x in host.values())
        meta = {"epoch": 1, "best_score": 0.0, "improved": False, "metrics_line": json.dumps({"epoch": 1})}
        start = time.time()
        crl.save_checkpoint(run_dir, host, meta)
        write_s = time.time() - start
        del host
        start = time.time()
        restored = crl.restore_checkpoint(run_dir, rs)
        jax.block_until_ready(restored[0])
        read_s = time.time() - start
    report.add(
        "checkpoint_last (humanoid_u_maze state)",
        gb=round(size / 1e9, 2),
        host_copy_s=round(copy_s, 2),
        write_s=round(write_s, 2),
        read_and_put_s=round(read_s, 2),
    )


def reset_check(report, env_id, sizes):
    for goals in ["resampled", "fixed"]:
        steps = 100 if sizes is TABLE2 else 10
        result = compare_reset_forms(env_id, sizes["num_envs"], steps, 2, goals)
        (select, c_select, ended), (cond, c_cond, _) = result["select"], result["cond"]
        report.add(
            f"resets {env_id} {goals}",
            select_steps_per_s=round(select),
            cond_steps_per_s=round(cond),
            select_over_cond=round(select / cond, 2),
            conditionals=f"{c_select} / {c_cond}",
            episodes_ended_per_step=round(ended, 2),
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check_out")
    parser.add_argument("--budget-s", type=float, default=300, help="no check starts after this many seconds")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes and point mazes, for a CPU")
    cli = parser.parse_args()
    sizes, depths = (TINY, DRY_DEPTHS) if cli.dry_run else (TABLE2, DEPTHS)
    ant, humanoid = ("point_u_maze", "point_big_maze") if cli.dry_run else ("ant_big_maze", "humanoid_u_maze")
    report = Report(cli.out, cli.budget_s)
    devices(report)
    states = {}
    for i, blocks in enumerate(depths):
        for env_id in [ant, humanoid] if i == 0 or not cli.dry_run else [ant]:
            depth = f"{4 * blocks[0]}" if blocks[0] == blocks[1] else f"{4 * blocks[0]}/{4 * blocks[1]}"
            check = f"epoch {env_id} depth {depth}"
            states[(env_id, i)] = report.run(check, epoch_check, report, check, epoch_args(env_id, blocks, sizes))
            if i == 0 and env_id == ant and states[(env_id, i)]:
                rs, env = states[(env_id, i)]
                report.run("precision", precision_check, report, rs, env, epoch_args(env_id, blocks, sizes))
            if i == 0 and env_id == humanoid and states[(env_id, i)]:
                report.run("checkpoint", checkpoint_check, report, states.pop((env_id, i))[0])
            states.pop((env_id, i), None)  # frees the device memory before the next depth
    report.run("resets", reset_check, report, humanoid, sizes)
    deep = depths[1]
    for flags in [{"scan_unroll": 4}, {"compute_dtype": "bfloat16"}]:
        check = f"epoch {ant} depth {4 * deep[0]} " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in flags.items())
        report.run(check, epoch_check, report, check, epoch_args(ant, deep, sizes, **flags))
    for num_seeds in [2] if cli.dry_run else [2, 4]:
        check = f"epoch {ant} depth {4 * depths[0][0]} --num-seeds {num_seeds}"
        report.run(check, epoch_check, report, check, epoch_args(ant, depths[0], sizes, num_seeds=num_seeds))
    print(f"wrote {cli.out}/gpu_check.jsonl and gpu_check.md")


if __name__ == "__main__":
    main()
