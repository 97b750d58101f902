"""The paper-scale path on one GPU, in one prepared run of at most --budget-s (480 s): what docs/gpu.md reports.

    bash benchmarks/gpu_check.sh OUT            # on the GPU machine: carried wheels installed, then this script
    python benchmarks/gpu_check.py --out OUT    # the check alone
    python benchmarks/gpu_check.py --dry-run    # every stage at tiny sizes on a CPU (benchmarks/gpu_rehearsal.sh)

The measurements are stages (benchmarks/gpu_stages.py), run in the order of STAGES, which is their value, each
within its own time limit: a stage that overruns is stopped and recorded as such, and the next one starts; once
the budget is spent the rest are recorded as skipped. This process never touches the GPU: it runs the stages in a
child process, watches the clock, and after stopping a stage (or a crash) starts a new child at the next one.
Every result is one JSON line of OUT/gpu_check.jsonl, and OUT/gpu_check.md (a table) is rewritten with each, so
a run stopped from outside still leaves what it measured.

Stages; the epochs are at Table 2 sizes (512 envs, batch 512, 800 SGD steps per training step), one training step
per epoch, without the prefill (an empty buffer costs the same to sample) and the evaluation:
  devices        devices, versions, the card's memory (nvidia-smi) and the allocator's limit; exits on no GPU
  ant-4          ant_big_maze at depth 4: compile time, env steps/s of the second epoch, XLA's memory plan, the
                 allocator's peak, conditionals and while loops of unknown trip count; then the critic's logits
                 at default against highest matmul precision
  ant-1024       the same at the 1024/512 pair (the paper's headline; one timed epoch when two would not fit)
  humanoid-64    humanoid_u_maze at depth 64
  arm-solver     arm_push_easy env steps/s with MJX's solver loop as it is and with a fixed iteration count
  humanoid-4     humanoid_u_maze at depth 4, then a checkpoint of its state (orbax): pause, write, read back
  ant-64, ant-16, humanoid-16, humanoid-1024
  resets         automatic resets as a select against a lax.cond (benchmarks/reset_form.py)
  scan-unroll    --scan-unroll 4 at depth 64 (ant_big_maze)
  bfloat16       --compute-dtype bfloat16 at depth 64 (ant_big_maze)
  seeds-2, seeds-4   --num-seeds 2 and 4 at depth 4 (ant_big_maze)
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

STAGES = {  # stage: its time limit on a GPU (s), in order of value
    "devices": 60,
    "ant-4": 90,
    "ant-1024": 180,
    "humanoid-64": 80,
    "arm-solver": 90,
    "humanoid-4": 90,
    "ant-64": 60,
    "ant-16": 60,
    "humanoid-16": 60,
    "humanoid-1024": 180,
    "resets": 60,
    "scan-unroll": 60,
    "bfloat16": 60,
    "seeds-2": 60,
    "seeds-4": 60,
}
DRY_LIMIT_S = 900  # every stage's limit in a dry run: a CPU compiles the tiny programs slower than a GPU runs them
DRY_BUDGET_S = 3600


class Report:
    """Appends each result to OUT/gpu_check.jsonl and rewrites OUT/gpu_check.md from it (shared by the processes,
    which never write at the same time)."""

    def __init__(self, out, start=None):
        self.out, self.start = out, start or float(os.environ.get("GPU_CHECK_START", time.time()))
        os.makedirs(out, exist_ok=True)

    def add(self, check, **result):
        row = {"check": check, "at_s": round(time.time() - self.start, 1)} | result
        with open(os.path.join(self.out, "gpu_check.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(os.path.join(self.out, "gpu_check.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        lines = ["| check | result |", "|---|---|"]
        lines += [f"| {r['check']} | {', '.join(f'{k} {v}' for k, v in r.items() if k != 'check')} |" for r in rows]
        with open(os.path.join(self.out, "gpu_check.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"[{row['at_s']:7.1f} s] {check}: {json.dumps(result)}", flush=True)


def parse_limit(text):
    name, _, seconds = text.partition("=")
    if name not in STAGES or not seconds.replace(".", "", 1).isdigit():
        raise argparse.ArgumentTypeError(f"--limit takes STAGE=SECONDS with STAGE one of {', '.join(STAGES)}")
    return name, float(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check_out")
    parser.add_argument("--budget-s", type=float, help=f"no stage runs past this (default 480; {DRY_BUDGET_S} dry)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, point mazes and arm_reach, on a CPU")
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES), help="these, in order")
    parser.add_argument("--limit", type=parse_limit, action="append", default=[], help="STAGE=SECONDS: its limit")
    cli = parser.parse_args()
    budget_s = cli.budget_s or (DRY_BUDGET_S if cli.dry_run else 480)
    limits = {name: DRY_LIMIT_S if cli.dry_run else limit for name, limit in STAGES.items()} | dict(cli.limit)
    start = time.time()
    deadline = start + budget_s
    os.makedirs(cli.out, exist_ok=True)
    open(os.path.join(cli.out, "gpu_check.jsonl"), "w").close()
    report, progress = Report(cli.out, start), os.path.join(cli.out, "stage.json")
    stages = cli.stages
    child_env = os.environ | {"GPU_CHECK_START": str(start)}
    stages_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_stages.py")
    while stages:
        if deadline - time.time() < 10:
            for name in stages:
                report.add(name, skipped="budget spent")
            break
        with open(progress, "w") as f:
            json.dump({"stage": stages[0], "start": time.time()}, f)
        command = [sys.executable, stages_script, "--out", cli.out, "--stages", *stages, "--deadline", str(deadline)]
        command += ["--limits", json.dumps(limits)] + (["--dry-run"] if cli.dry_run else [])
        child = subprocess.Popen(command, env=child_env, start_new_session=True)
        stopped = None
        while child.poll() is None:
            time.sleep(0.5)
            with open(progress) as f:
                current = json.load(f)
            now = time.time()
            if now > min(deadline, current["start"] + limits[current["stage"]]):
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                stopped = current["stage"]
                overrun = "budget spent" if now > deadline else f"stage limit {limits[stopped]:.0f} s"
                report.add(stopped, stopped_after_s=round(now - current["start"], 1), reason=overrun)
                time.sleep(2)  # the driver frees the stopped process's GPU memory
        if child.returncode == 0:
            break
        if child.returncode == 3:  # the devices stage found no GPU
            print("gpu_check: not a GPU machine (see the devices row); use --dry-run to rehearse on a CPU")
            sys.exit(1)
        if stopped is None:  # a crash (out of host memory, a signal): the stage it was in is lost, the rest run
            with open(progress) as f:
                stopped = json.load(f)["stage"]
            report.add(stopped, error=f"the process died (exit code {child.returncode})")
        stages = stages[stages.index(stopped) + 1 :]
    if os.path.exists(progress):
        os.remove(progress)
    print(f"wrote {cli.out}/gpu_check.jsonl and gpu_check.md in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
