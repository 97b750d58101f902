"""Which goal and cube regions of the arm tasks the arm can reach with its action space (joint 1, 2, 4, 6 targets
in the benchmark's ranges, the other joints fixed): forward kinematics of uniformly sampled targets, then, for a
grid over each region, the distance to the nearest reached point.

    python benchmarks/arm_workspace.py                  # 200k samples, a few seconds

Only kinematics: the pads' contact with the table is accounted for by keeping samples whose gripper point is
3 cm or more above the table; for the push and binpick regions (the cube's height) the hand must also point
down (its axis within 25 degrees of vertical), as pushing and grasping need.
"""

import argparse
import os
import sys

import mujoco
import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import crl_resnet as crl


def sample_workspace(num_samples, seed):
    arm = crl.PandaArm([[0, 0, 0], [0, 0, 0]])
    data = mujoco.MjData(arm.model)
    low, high = np.asarray(arm.target_low), np.asarray(arm.target_high)
    targets = np.random.default_rng(seed).uniform(low, high, (num_samples, 4))
    grip, wrist, hand_z = np.zeros((num_samples, 3)), np.zeros((num_samples, 3)), np.zeros(num_samples)
    for i, x in enumerate(targets):
        data.qpos[:7] = arm.home
        data.qpos[[0, 1, 3, 5]] = x
        mujoco.mj_kinematics(arm.model, data)
        grip[i] = data.site_xpos[arm.grip]
        wrist[i] = data.xpos[arm.model.body("link7").id]
        hand_z[i] = data.xmat[arm.hand].reshape(3, 3)[2, 2]  # world z of the hand's axis: -1 = pointing down
    return grip, wrist, hand_z


def coverage(points, region, n=9):
    """Fractions of an n^3 grid over `region` (n^2 if flat) within 3, 5 and 10 cm of a reached point."""
    low, high = np.asarray(region, float)
    axes = [np.linspace(a, b, n if b > a else 1) for a, b in zip(low, high)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    dist = cKDTree(points).query(grid)[0]
    return [(dist < r).mean() for r in (0.03, 0.05, 0.1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    grip, wrist, hand_z = sample_workspace(args.num_samples, args.seed)
    above = grip[:, 2] > 0.03
    down = above & (hand_z < -np.cos(np.radians(25)))
    rows = [("benchmark's reach box, wrist", [[-0.2, 0.3, 0.1], [0.2, 0.7, 0.5]], wrist[above])]
    rows += [("benchmark's reach box, gripper point", [[-0.2, 0.3, 0.1], [0.2, 0.7, 0.5]], grip[above])]
    for env_id in [e for e in crl.ENVIRONMENTS if e.startswith("arm_")]:
        arm = crl.ENVIRONMENTS[env_id].make()
        if not arm.cube:
            rows.append((f"{env_id} goals, gripper point", arm.goal_region, grip[above]))
            continue
        for name, region in [("cubes", arm.cube_region), ("goals", arm.goal_region)]:
            rows.append((f"{env_id} {name}, gripper point, hand down", region, grip[down]))
    print(f"{args.num_samples} sampled joint targets; fraction of each region within 3 / 5 / 10 cm of one")
    for name, region, points in rows:
        print(f"{name:48s} " + " ".join(f"{c:6.3f}" for c in coverage(points, region)))


if __name__ == "__main__":
    main()
