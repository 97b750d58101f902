"""The side-by-side configuration for comparing with the paper's code: ant, 95,488 env steps, depth 4 / 16 / 64.

    python benchmarks/side_by_side.py                    # depth 4, 16, 64 (num_blocks 1, 4, 16)
    python benchmarks/side_by_side.py --num-blocks 1

Runs `python crl_resnet.py` itself (a fresh process per depth) with: --env-id ant, 128 envs, batch 256, episode
length 250, min replay 250, unroll 62, 32 SGD batches per training step, 2 epochs of 4 training steps:
250 x 128 prefill + 2 x 4 x 128 x 62 = 95,488 env steps, evaluation (128 episodes of 250 steps) after each
epoch, no checkpoints. Reported per depth: compile time (as the script prints it); steady env steps/s = the
second epoch's env steps over its wall time *including* its evaluation, and over the training program alone
(`training/epoch_sps`, evaluation excluded); total wall time of the process; its peak resident memory (ru_maxrss
of the child).
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = [
    "--env-id", "ant", "--num-envs", "128", "--num-eval-envs", "128", "--batch-size", "256",
    "--episode-length", "250", "--min-replay-size", "250", "--max-replay-size", "10000", "--unroll-length", "62",
    "--num-sgd-batches-per-training-step", "32", "--num-epochs", "2", "--total-env-steps", "95488",
    "--no-save-model",
]  # fmt: skip


def run(num_blocks, extra):
    """Runs crl_resnet.py in a temporary directory; returns (stdout, metrics per epoch, wall s, peak RSS bytes)."""
    with tempfile.TemporaryDirectory() as cwd:
        command = [sys.executable, os.path.join(ROOT, "crl_resnet.py"), *FLAGS, "--num-blocks", str(num_blocks)]
        log = pathlib.Path(cwd, "stdout.txt")
        start = time.perf_counter()
        with open(log, "w") as out:
            process = subprocess.Popen(command + extra, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout = log.read_text()
        if process.returncode != 0:
            sys.exit(f"crl_resnet.py --num-blocks {num_blocks} failed:\n{stdout[-3000:]}")
        (metrics_path,) = pathlib.Path(cwd, "runs").glob("*/metrics.jsonl")
        metrics = [json.loads(line) for line in metrics_path.read_text().splitlines()]
        return stdout, metrics, wall, usage.ru_maxrss * 1024


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-blocks", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more crl_resnet.py flags")
    cli = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; crl_resnet.py {' '.join(FLAGS)} --num-blocks N {' '.join(cli.extra)}\n")
    print(
        f"{'depth':>5} {'compile s':>9} {'steady env steps/s':>18} {'(training only)':>15} {'epoch 1 / 2 s':>14} "
        f"{'wall s':>7} {'peak RSS':>9}"
    )
    for num_blocks in cli.num_blocks:
        stdout, metrics, wall, rss = run(num_blocks, cli.extra)
        compile_s = float(re.search(r"compiled in ([0-9.]+) s", stdout).group(1))
        first, second = metrics[0], metrics[1]
        seconds = second["training/walltime"] - first["training/walltime"]
        steady = (second["training/env_steps"] - first["training/env_steps"]) / seconds
        epochs = f"{first['training/walltime']:.1f} / {seconds:.1f}"
        print(
            f"{4 * num_blocks:>5} {compile_s:>9.1f} {steady:>18,.0f} {second['training/epoch_sps']:>15,.0f} "
            f"{epochs:>14} {wall:>7.0f} {rss / 2**30:>5.2f} GiB",
            flush=True,
        )
