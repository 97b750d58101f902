#!/usr/bin/env bash
# The paper's offline experiment (Sec. 4.10) at laptop scale, on pointmaze-medium-navigate made here at OGBench's
# size: critic depth 4, 8, 16 with a 4-layer actor, cold initialisation at depth 4 and 16, then critic depth 4, 8, 16
# with an 8-layer actor; 3 seeds each (one vmapped run), 10 evaluation episodes per task and seed. The runs' files
# (no checkpoints) go to RUNS_DIR, by default where docs/crl_offline.md#depth-offline reads them.
#   bash tools/offline_depth_sweep.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/offline_depth/runs}
[ -f data/pointmaze-medium-navigate-v0.npz ] || python tools/make_ogbench_dataset.py --dataset pointmaze-medium-navigate-v0
run() {  # name, flags
  name=$1; shift
  [ -f "$out/$name/summary.json" ] && return 0
  python crl_offline.py --preset laptop --total-gradient-steps 20000 --num-eval-episodes 10 --num-seeds 3 --exp-name "$name" "$@"
  mkdir -p "$out" && mv "runs/pointmaze-medium-v0__${name}__1__"* "$out/$name"
  rm -rf "$out/$name/checkpoints" "$out/$name"/*.msgpack  # what the tables need is args.json and metrics.jsonl
}
for c in 1 2 4; do run "actor4_critic$((4 * c))" --actor-num-blocks 1 --critic-num-blocks $c; done
for c in 1 4; do run "actor4_critic$((4 * c))_cold" --actor-num-blocks 1 --critic-num-blocks $c --cold-init; done
for c in 1 2 4; do run "actor8_critic$((4 * c))" --actor-num-blocks 2 --critic-num-blocks $c; done
[ -f "$out/../random.json" ] || python tools/random_policy.py --env-id pointmaze-medium-v0 --num-eval-envs 50 --seeds 3 --out "$out/../random.json"
