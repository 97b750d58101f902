"""Where the arm tasks' action space can put the arm: for uniformly sampled actions (targets of joints 1, 2, 4, 6 in
the benchmark's ranges, the other joints' targets fixed), the arm is simulated to rest (MuJoCo, 1 s from the start
pose, gripper closed) and, for a grid over each goal and cube region, the distance to the nearest resting point.

    python benchmarks/arm_workspace.py                  # 20k samples, about a minute

The benchmark's joints 3-7 have actuator gains below their stiffness (they settle at 0.57 or 0.5 of their targets)
and joint 6 saturates at its 12 N m force limit, so resting poses, not the targets' kinematics, say what is
reachable. arm_reach's goal is for link 7's origin (the wrist); push and binpick goals and cubes are for the cube,
so the fingertips (the centre between them) are measured there.
"""

import argparse
import os
import sys
import time

import mujoco
import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import crl_resnet as crl


def resting_points(num_samples, seed):
    """Link 7's origin and the fingertips at rest under each sampled action, arm_push_easy's model (cube away)."""
    arm = crl.ENVIRONMENTS["arm_push_easy"].make()
    model, data = arm.model, mujoco.MjData(arm.model)
    low, high = np.asarray(arm.target_low), np.asarray(arm.target_high)
    actions = np.random.default_rng(seed).uniform(-1, 1, (num_samples, 4))
    wrist, tips = np.zeros((num_samples, 3)), np.zeros((num_samples, 3))
    for i, action in enumerate(actions):
        mujoco.mj_resetData(model, data)
        data.qpos[:7], data.qpos[9:16] = arm.home, [1.5, 1.5, crl.CUBE_HALF, 1, 0, 0, 0]
        data.ctrl[:] = [0, 0, 0, 0, 0, 0, 1.4487, 0, 0]
        data.ctrl[[0, 1, 3, 5]] = low + (action + 1) * (high - low) / 2
        for _ in range(500):
            mujoco.mj_step(model, data)
        wrist[i], tips[i] = data.xpos[arm.wrist], data.site_xpos[arm.grip]
    return wrist, tips


def coverage(points, region, n=9):
    """Fractions of an n^3 grid over `region` (n^2 if flat) within 3, 5 and 10 cm of a resting point."""
    low, high = np.asarray(region, float)
    axes = [np.linspace(a, b, n if b > a else 1) for a, b in zip(low, high)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    dist = cKDTree(points).query(grid)[0]
    return [(dist < r).mean() for r in (0.03, 0.05, 0.1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    wrist, tips = resting_points(args.num_samples, args.seed)
    rows = []
    for env_id in [e for e in crl.ENVIRONMENTS if e.startswith("arm_")]:
        arm = crl.ENVIRONMENTS[env_id].make()
        if not arm.cube:
            rows.append((f"{env_id} goals, link 7's origin", arm.goal_region, wrist))
            continue
        cubes = [[*arm.cube_region[0], crl.CUBE_HALF], [*arm.cube_region[1], crl.CUBE_HALF]]
        rows += [(f"{env_id} cubes, fingertips", cubes, tips), (f"{env_id} goals, fingertips", arm.goal_region, tips)]
    print(f"{args.num_samples} sampled actions at rest ({time.time() - start:.0f} s); fraction of each region within")
    print(f"{'':44s}   3 cm   5 cm  10 cm of a resting point")
    for name, region, points in rows:
        print(f"{name:44s} " + " ".join(f"{c:6.3f}" for c in coverage(points, region)))


if __name__ == "__main__":
    main()
