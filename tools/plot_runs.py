"""Learning curves and the paper's score of a set of runs, grouped by any flag, seeds aggregated.

    python tools/plot_runs.py runs/* --out figures/                         # groups: the flags that differ
    python tools/plot_runs.py runs/* --group-by depth --out figures/        # one group per critic depth
    python tools/plot_runs.py runs/* --group-by script depth --out figures/ # e.g. crl_mlp.py against crl_resnet.py
    python tools/plot_runs.py runs/SWEEP --out figures/                     # an eval_stitching.py sweep
    python tools/plot_runs.py runs/* --metrics gradients/critic_norm --out figures/  # more panels: any logged metric
    python tools/plot_runs.py runs/* --random random.json --out figures/    # the floor of tools/random_policy.py --out
    python tools/plot_runs.py runs/* --max-env-steps 4e6 --out figures/    # runs of different lengths at one budget
    python tools/plot_runs.py runs/offline_depth/* --group-by depth actor_num_blocks cold_init --out figures/

Each RUN_DIR is a run of any of the scripts (its args.json and metrics.jsonl), or a directory holding runs, such as
an eval_stitching.py sweep (runs/NAME/depth{D}/). Runs are grouped by the values of the --group-by flags: any flag of
args.json, plus `script` (which script made the run) and `depth` (the critic's Dense layers: 4 x critic_num_blocks
for the residual scripts, --critic-depth for crl_mlp.py, the policy's for gcbc.py). The default groups by every flag
that every run has and whose value differs between them, leaving out seeds, names and bookkeeping flags. A run of --num-seeds N is N
seeds. Writes to --out:

  curves.png   eval/time_near_goal and eval/success against env steps (the paper's Fig. 1 style): per group, the
               mean over seeds and a 95% bootstrap confidence band of that mean (none for a single seed)
  scores.json  per group: the paper's score (Sec. 4.1), each seed's mean eval/time_near_goal over its last five
  scores.md    evaluations, then their mean and standard deviation over seeds; eval/success the same way, and
               each --metrics metric (a panel of curves.png, log scale for norms) in scores.json

crl_offline.py's runs (OGBench) are scored as OGBench scores them, by eval/success, against gradient steps; add
each task's success as panels with --metrics eval/task1_success ... eval/task5_success.

The confidence band is a percentile bootstrap over seeds (2,000 resamples, numpy): with the 2-10 seeds of an RL
experiment this is what rliable's interval estimates do for one task, without its dependencies.
"""

import argparse
import json
import os
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

ONLINE = ([("eval/time_near_goal", "time near goal (steps)"), ("eval/success", "success rate")], "training/env_steps")
OFFLINE = ([("eval/success", "success rate")], "training/gradient_steps")  # crl_offline.py's runs (OGBench)
METRICS, STEPS = ONLINE  # the score first, then the other panels; the x axis. main() sets them for its runs
# flags that name or bookkeep a run: never a group by default
BOOKKEEPING = {"seed", "exp_name", "track", "wandb_project_name", "wandb_entity", "wandb_mode", "save_model", "resume"}
BOOKKEEPING |= {"render", "render_every", "evaluate", "checkpoint", "num_seeds", "from_runs", "depths"}
BOOKKEEPING |= {"num_blocks", "actor_num_blocks", "critic_num_blocks", "critic_depth", "actor_depth"}  # in `depth`
BOOKKEEPING |= {"pooled_seeds"}  # set by load_run


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def script_of(flags):
    """The script that wrote an args.json, told by the flags only it has."""
    if "dataset_path" in flags:
        return "crl_offline.py"
    if "max_train_gap" in flags:
        return "eval_stitching.py"
    if "relabel_ratio" in flags:
        return "sac_her.py"
    if "layer_norm" in flags:
        return "crl_mlp.py"
    return "crl_resnet.py" if "critic_lr" in flags else "gcbc.py"


def critic_depth(flags):
    """Dense layers of the critic's encoders (of the policy for gcbc.py, which has no critic)."""
    if "layer_norm" in flags:  # crl_mlp.py counts layers, not residual blocks
        return flags.get("critic_depth") or flags["depth"]
    return 4 * (flags.get("critic_num_blocks") or flags["num_blocks"])


def find_runs(paths):
    """Every run directory (one with args.json and metrics.jsonl) at or directly under the given paths."""
    runs = []
    for path in map(pathlib.Path, paths):
        if not path.is_dir():
            fail(f"{path} is not a directory; give run directories (runs/NAME) or directories holding them")
        found = [path] if (path / "metrics.jsonl").is_file() else sorted(p.parent for p in path.glob("*/metrics.jsonl"))
        found = [run for run in found if (run / "args.json").is_file()]
        if not found:
            fail(f"{path} holds no run: no args.json with a metrics.jsonl in it or in its subdirectories")
        runs += found
    return runs


def load_run(run, metrics, max_env_steps=None):
    """(flags, [(env steps, {metric: per-seed values}) per evaluation]) of one run, up to max_env_steps."""
    flags = json.loads((run / "args.json").read_text())
    flags |= {"script": script_of(flags), "depth": critic_depth(flags)}
    evaluations = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        missing = [key for key in metrics if key not in m]
        if missing:
            fail(f"--metrics {missing[0]} is not logged by {run}; metrics.jsonl has e.g. {', '.join(sorted(m)[:4])}")
        values = {key: np.atleast_1d(m.get(f"{key}_per_seed", m[key])).astype(float) for key in metrics}
        if flags.get("num_seeds", 1) > 1 and f"{metrics[0]}_per_seed" not in m:  # older eval_stitching.py runs
            flags["pooled_seeds"] = flags["num_seeds"]
        if max_env_steps is None or m[STEPS] <= max_env_steps:
            evaluations.append((m[STEPS], values))
    if not evaluations:
        within = f" within --max-env-steps {max_env_steps:g}" if max_env_steps else ""
        fail(f"{run} has logged no evaluation yet{within}")
    return flags, evaluations


def group_runs(runs, group_by, metrics=tuple(key for key, _ in METRICS), max_env_steps=None):
    """{label: {"flags": {flag: value}, "runs": [run dirs], "steps": (T,), metric: (T, seeds)}}: the runs of a
    group put on the env-step grid of its first run (others interpolated on it, where they overlap); evaluations
    after max_env_steps left out, so runs of different lengths are scored at one budget."""
    loaded = {run: load_run(run, metrics, max_env_steps) for run in runs}
    if group_by is None:
        keys = set.intersection(*(set(flags) for flags, _ in loaded.values())) - BOOKKEEPING  # flags of every run
        group_by = sorted(k for k in keys if len({json.dumps(f.get(k)) for f, _ in loaded.values()}) > 1)
    for flag in group_by:
        if not any(flag in flags for flags, _ in loaded.values()):
            fail(f"--group-by {flag} is not a flag of these runs; e.g. depth, script, env_id, width, batch_size")
    groups = {}
    for run, (flags, evaluations) in loaded.items():
        key = {flag: flags.get(flag) for flag in group_by}
        label = ", ".join(f"{k} {v}" for k, v in key.items()) or "all runs"
        group = groups.setdefault(label, {"flags": key, "runs": [], "curves": []})
        group["runs"].append(str(run))
        group.setdefault("run_flags", []).append(flags)
        steps = np.array([s for s, _ in evaluations], dtype=float)
        group["curves"].append((steps, {k: np.stack([v[k] for _, v in evaluations]) for k in metrics}))
    for group in groups.values():
        steps = group["curves"][0][0]
        steps = steps[steps <= min(s[-1] for s, _ in group["curves"])]
        group["steps"] = steps
        for key in metrics:
            columns = []  # one per seed
            for run_steps, curves in group["curves"]:
                columns += [np.interp(steps, run_steps, seed) for seed in curves[key].T]
            group[key] = np.stack(columns, axis=1)  # (T, seeds)
    order = lambda v: (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))  # numbers in numeric order
    return dict(sorted(groups.items(), key=lambda item: [order(v) for v in item[1]["flags"].values()]))


def bootstrap_band(values, rng, resamples=2000):
    """95% percentile bootstrap interval of the mean over seeds, at each step: values (T, seeds) -> (low, high)."""
    pick = rng.integers(0, values.shape[1], (resamples, values.shape[1]))
    means = values[:, pick].mean(-1)  # (T, resamples)
    return np.percentile(means, 2.5, axis=1), np.percentile(means, 97.5, axis=1)


def line_styles(groups):
    """(colour, line style) per group: grouped by two or more flags (e.g. script and depth), the colour follows the
    last flag and the line style the others, so a resnet and an MLP of one depth share a colour, not a line."""
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dashes = ["-", ":", "-.", (0, (6, 2))]  # "--" is the random policy's
    keys = [list(group["flags"].values()) for group in groups.values()]
    if not keys or len(keys[0]) < 2:
        return [(palette[i % len(palette)], "-") for i in range(len(keys))]
    last = list(dict.fromkeys(json.dumps(key[-1]) for key in keys))
    rest = list(dict.fromkeys(json.dumps(key[:-1]) for key in keys))
    return [
        (palette[last.index(json.dumps(k[-1])) % len(palette)], dashes[rest.index(json.dumps(k[:-1])) % len(dashes)])
        for k in keys
    ]


def plot_curves(groups, title, extra=(), random=None):
    """The figure: one line (mean over seeds) and one band per group in each panel, one panel per metric; a dashed
    line at a random policy's value where `random` (tools/random_policy.py's JSON) has the metric."""
    rng = np.random.default_rng(0)
    panels = METRICS + [(key, key) for key in extra]
    columns = min(len(panels), 2)  # two panels a row
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns + 1 * (columns == 1), 4 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.remove()
    axes = axes.flat[: len(panels)]
    for (color, style), (label, group) in zip(line_styles(groups), groups.items()):
        seeds = group[METRICS[0][0]].shape[1]
        for ax, (key, name) in zip(axes, panels):
            values = group[key]
            label_seeds = f"{label} ({seeds} seed{'s' * (seeds > 1)})"
            ax.plot(group["steps"], values.mean(1), color=color, ls=style, label=label_seeds)
            if seeds > 1:
                ax.fill_between(group["steps"], *bootstrap_band(values, rng), color=color, alpha=0.2, lw=0)
            ax.set(
                xlabel=STEPS.split("/")[1].replace("_", " "),
                ylabel=name,
                yscale="log" if key.endswith("norm") else "linear",
            )
    for ax, (key, _) in zip(axes, panels):
        if random and key in random:
            ax.axhline(random[key], color="grey", ls="--", label="random policy")
    for ax, (key, _) in zip(axes, panels):
        if key.endswith("success"):
            ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}: mean over seeds, 95% bootstrap confidence band")
    fig.tight_layout()
    return fig


def wall_time(run, max_env_steps=None):
    """Seconds from a run's start to its last evaluation within max_env_steps (its training/walltime; None if not
    logged)."""
    lines = [json.loads(line) for line in (pathlib.Path(run) / "metrics.jsonl").read_text().splitlines()]
    kept = [m for m in lines if max_env_steps is None or m[STEPS] <= max_env_steps]
    return kept[-1].get("training/walltime")


def evaluations(run):
    """{"ENV (CHECKPOINT)": {metric: per-seed values}} of each `--evaluate` of a run (evaluation__ENV__CKPT.json)."""
    found = {}
    for path in sorted(pathlib.Path(run).glob("evaluation__*__*.json")):
        e = json.loads(path.read_text())
        m = e["metrics"]
        per_seed = {key: np.atleast_1d(m.get(f"eval/{key}_per_seed", m[f"eval/{key}"])) for key in EVALUATED}
        found[f"{e['eval_env_id']} ({e['checkpoint']})"] = per_seed | {"episodes_per_seed": e["episodes_per_seed"]}
    return found


EVALUATED = ["success", "time_near_goal"]  # the columns of an --evaluate


def scores(groups, extra=(), max_env_steps=None):
    """{label: the paper's score and success of the group}: per seed the mean of its last five evaluations (and
    of each extra metric), with a 95% bootstrap interval of the mean over seeds; the runs' wall time; and each
    `--evaluate` every run of the group has, per seed."""
    table = {}
    rng = np.random.default_rng(0)
    for label, group in groups.items():
        keys = [key for key, _ in METRICS] + list(extra)
        last = {key: np.concatenate([c[key][-5:] for _, c in group["curves"]], axis=1).mean(0) for key in keys}
        score, success = last[METRICS[0][0]], last["eval/success"]
        low, high = bootstrap_band(score[None], rng)
        times = [wall_time(run, max_env_steps) for run in group["runs"]]
        table[label] = {
            "flags": group["flags"],
            "seeds": len(score),
            "pooled_seeds": max((f.get("pooled_seeds", 0) for f in group["run_flags"]), default=0),
            "score": float(score.mean()),
            "score_std_over_seeds": float(score.std()),
            "score_95_interval": [float(low[0]), float(high[0])],
            "score_per_seed": score.tolist(),
            "success": float(success.mean()),
            "success_std_over_seeds": float(success.std()),
            "success_per_seed": success.tolist(),
            "success_best_per_seed": np.concatenate([c["eval/success"] for _, c in group["curves"]], 1).max(0).tolist(),
            STEPS.split("/")[1]: float(np.mean([s[-1] for s, _ in group["curves"]])),
            "wall_time_s_per_run": None if None in times else times,
            "runs": group["runs"],
        }
        for key in extra:
            table[label][f"{key} (last 5)"] = {"mean": float(last[key].mean()), "per_seed": last[key].tolist()}
        found = [evaluations(run) for run in group["runs"]]
        for where in sorted(set.intersection(*(set(f) for f in found))):
            per_seed = {key: np.concatenate([f[where][key] for f in found]).tolist() for key in EVALUATED}
            table[label][f"--evaluate on {where}"] = per_seed | {
                "episodes_per_seed": found[0][where]["episodes_per_seed"]
            }
    return table


def minutes(seconds):
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def random_row(random, seeds):
    """The random policy's scores as a group of scores(), from tools/random_policy.py's JSON."""
    score = np.atleast_1d(random.get(f"{METRICS[0][0]}_per_seed", random[METRICS[0][0]]))
    success = np.atleast_1d(random.get("eval/success_per_seed", random["eval/success"]))
    return {
        "seeds": len(score),
        "score": float(score.mean()),
        "score_std_over_seeds": float(score.std()),
        "score_per_seed": score.tolist(),
        "success": float(success.mean()),
        "success_std_over_seeds": float(success.std()),
        "success_per_seed": success.tolist(),
        "episodes_per_seed": random.get("episodes_per_seed"),
    }


def scores_markdown(table, extra=(), random=None):
    """The table of scores.md, the one a results page shows: a row per group (and the random policy's)."""
    digits = 2 if METRICS[0][0] == "eval/success" else 1  # a rate, or steps near the goal
    f = lambda values, d=digits: ", ".join(f"{v:.{d}f}" for v in values)
    by_rate = METRICS[0][0] == "eval/success"  # the score is the success rate: one column says both
    where = sorted({key for row in table.values() for key in row if key.startswith("--evaluate on ")})
    header = [
        "group",
        "seeds",
        f"score: {METRICS[0][1]}, mean ± std [95% interval]",
        "per seed",
        *([] if by_rate else ["success", "per seed"]),
        "best evaluation's success, per seed",
        STEPS[9:].replace("_", " "),
        "wall time per run",
        *[f"{key}, last 5" for key in extra],
        *[f"`{key}`: success, time near goal (episodes per seed)" for key in where],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in table.items():
        low, high = row["score_95_interval"]
        times = row["wall_time_s_per_run"]
        cells = [
            label,
            f"{row['pooled_seeds']}, logged as their mean" if row.get("pooled_seeds") else str(row["seeds"]),
            f"{row['score']:.{digits}f} ± {row['score_std_over_seeds']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]",
            f(row["score_per_seed"]),
            *(
                []
                if by_rate
                else [f"{row['success']:.2f} ± {row['success_std_over_seeds']:.2f}", f(row["success_per_seed"], 2)]
            ),
            f(row["success_best_per_seed"], 2),
            f"{row[STEPS[9:]] / 1e6:.3g}M",
            ", ".join(minutes(t) for t in times) if times else "not logged",
            *[f"{row[f'{key} (last 5)']['mean']:.3g}" for key in extra],
        ]
        for key in where:
            e = row.get(key)
            cells.append(
                f"{np.mean(e['success']):.2f}, {np.mean(e['time_near_goal']):.1f} ({e['episodes_per_seed']})"
                if e
                else "—"
            )
        lines.append("| " + " | ".join(cells) + " |")
    if random:
        r = random_row(random, None)
        cells = [
            "random policy",
            str(r["seeds"]),
            f"{r['score']:.{digits}f} ± {r['score_std_over_seeds']:.{digits}f}",
            f(r["score_per_seed"]),
            *(
                []
                if by_rate
                else [f"{r['success']:.2f} ± {r['success_std_over_seeds']:.2f}", f(r["success_per_seed"], 2)]
            ),
            "",
            f"{r['episodes_per_seed']} episodes per seed" if r["episodes_per_seed"] else "",
            "",
            *[f"{random[key]:.3g}" if isinstance(random.get(key), (int, float)) else "" for key in extra],
            *[""] * len(where),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "\n".join(lines)
        + "\n\nmean ± standard deviation over seeds, and a 95% bootstrap interval of the mean; each seed's value is the"
        " mean of its last five evaluations (paper Sec. 4.1)\n"
    )


def stitching_markdown(results):
    """eval_stitching.py's stitching.json as tables: per held-out goal and depth, success and time near goal (mean ±
    std over seeds); then each depth's critic value per free cell, in order of distance from the start R."""
    depths = results["depths"]
    mean_std = lambda v, d: f"{np.mean(v):.{d}f} ± {np.std(v):.{d}f}"
    lines = []
    goals = results["held_out_goals"]
    if goals:
        header = ["held-out goal (cells from R)"]
        header += [f"depth {d}: {what}" for d in depths for what in ("success", "time near goal")]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for goal in goals:
            cells = [f"{goal['name']} ({goal['cells_from_start']})"]
            for entry in depths.values():
                v = entry["goals"][goal["name"]]
                cells += [mean_std(v["success"], 2), mean_std(v["time_near_goal"], 1)]
            lines.append("| " + " | ".join(cells) + " |")
        seeds = ", ".join(f"depth {d}: {len(e['seeds'])}" for d, e in depths.items())
        lines += ["", f"mean ± standard deviation over seeds ({seeds}), the final networks; stitching.json", ""]
    values = [d for d, e in depths.items() if "value_per_cell" in e]
    if values:
        cells = list(depths[values[0]]["value_per_cell"])
        start, goal = results["value_map"]["start"], results["value_map"]["goal"]
        name = lambda c: (
            "R " + c if c == f"({start[0]}, {start[1]})" else "goal " + c if c == f"({goal[0]}, {goal[1]})" else c
        )
        lines += ["| critic | " + " | ".join(map(name, cells)) + " |", "|" + "---|" * (len(cells) + 1)]
        for d in values:
            lines.append(f"| depth {d} | " + " | ".join(f"{depths[d]['value_per_cell'][c]:.1f}" for c in cells) + " |")
        lines += [
            "",
            "the critic's mean value f(s, π(s, g), g) per cell for the goal above, cells in order of distance from R",
            "",
        ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or directories holding runs")
    parser.add_argument("--group-by", nargs="+", default=None, metavar="FLAG", help="default: the flags that differ")
    parser.add_argument("--out", required=True, help="folder for curves.png, scores.json and scores.md")
    parser.add_argument(
        "--metrics", nargs="+", default=[], metavar="KEY", help="more panels, e.g. gradients/critic_norm"
    )
    parser.add_argument("--random", default=None, metavar="JSON", help="a random policy's metrics, drawn dashed")
    parser.add_argument("--stitching", default=None, metavar="JSON", help="eval_stitching.py's tables, in scores.md")
    parser.add_argument("--max-env-steps", type=float, default=None, metavar="N", help="score at N env steps per seed")
    cli = parser.parse_args(argv)
    runs = find_runs(cli.runs)
    offline = ["dataset_path" in json.loads((run / "args.json").read_text()) for run in runs]
    if any(offline) and not all(offline):
        fail("crl_offline.py's runs (success against gradient steps) cannot be grouped with online ones")
    global METRICS, STEPS
    METRICS, STEPS = OFFLINE if all(offline) else ONLINE  # OGBench's score: success, against gradient steps
    if cli.max_env_steps is not None and cli.max_env_steps <= 0:
        fail(f"--max-env-steps {cli.max_env_steps:g} must be a positive number of env steps per seed, e.g. 4e6")
    random = None
    if cli.random:
        try:
            random = json.loads(pathlib.Path(cli.random).read_text())
        except (OSError, ValueError) as e:
            fail(f"--random {cli.random} is not a readable JSON file of tools/random_policy.py --out ({e})")
        if not isinstance(random, dict) or not all(isinstance(random.get(k), (int, float)) for k, _ in METRICS):
            fail(
                f"--random {cli.random} holds no {' and '.join(k for k, _ in METRICS)}: write it with random_policy.py"
            )
    cli.metrics = [key for key in dict.fromkeys(cli.metrics) if key not in dict(METRICS)]  # each panel once
    if random:  # a floor is only a floor where it was measured: the runs' evaluation environment and episode length
        for run in runs:
            flags = json.loads((run / "args.json").read_text())
            where = (flags.get("eval_env_id") or flags["env_id"], flags.get("episode_length"))
            if (random.get("env_id"), random.get("episode_length")) != where:
                fail(
                    f"--random {cli.random} was measured on {random.get('env_id')}, episode {random.get('episode_length')}"
                    f"; {run} is evaluated on {where[0]}, episode {where[1]}"
                )
    groups = group_runs(runs, cli.group_by, [key for key, _ in METRICS] + cli.metrics, cli.max_env_steps)
    os.makedirs(cli.out, exist_ok=True)
    envs = sorted(
        {json.loads(pathlib.Path(run, "args.json").read_text())["env_id"] for g in groups.values() for run in g["runs"]}
    )
    fig = plot_curves(groups, ", ".join(envs), cli.metrics, random)
    fig.savefig(os.path.join(cli.out, "curves.png"), dpi=100)
    plt.close(fig)
    table = scores(groups, cli.metrics, cli.max_env_steps)
    if random:
        table["random policy"] = random_row(random, None) | {"from": cli.random}
    markdown = scores_markdown({k: v for k, v in table.items() if k != "random policy"}, cli.metrics, random)
    pathlib.Path(cli.out, "scores.json").write_text(json.dumps(table, indent=2) + "\n")
    if cli.stitching:
        try:
            markdown += "\n" + stitching_markdown(json.loads(pathlib.Path(cli.stitching).read_text()))
        except (OSError, ValueError, KeyError) as e:
            fail(f"--stitching {cli.stitching} is not a stitching.json written by eval_stitching.py ({e!r})")
    pathlib.Path(cli.out, "scores.md").write_text(markdown)
    print(markdown, end="")
    print(f"wrote {cli.out}/curves.png, scores.json, scores.md ({len(groups)} groups)")


if __name__ == "__main__":
    main()
