"""What the maze walls cost: env steps/s with the walls as built vs the alternatives we rejected, in one run.

    python benchmarks/maze_contacts.py

1. Wall cells merged into few boxes (`maze_walls`) vs one box per wall cell, on ant_u_maze and ant_big_maze.
2. Humanoid maze with only the pelvis (and the feet) meeting the walls vs all eight trunk and leg capsules.
Each (geom, box) pair is a contact test in every physics substep, so both choices trade contacts for speed.
Random actions, automatic resets included, 128 envs, best of 3 after compilation.
"""

import os
import platform
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from env_speed import steps_per_second  # this script's folder is on sys.path

import crl_resnet as crl


def one_box_per_cell(layout, size):
    return "".join(
        f'<geom type="box" pos="{i * size} {j * size} {size / 4}" size="{size / 2} {size / 2} {size / 4}" '
        'contype="0" conaffinity="3"/>'
        for i, j in crl.maze_cells(layout, "#")
    )


if __name__ == "__main__":
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}, {os.cpu_count()} CPU cores, {platform.processor()}")
    merged_walls = crl.maze_walls
    for env_id in ["ant_u_maze", "ant_big_maze"]:
        layout = env_id.removeprefix("ant_")
        merged = steps_per_second(env_id, 128, 100, 3)
        crl.maze_walls = one_box_per_cell
        per_cell = steps_per_second(env_id, 128, 100, 3)
        crl.maze_walls = merged_walls
        boxes, cells = merged_walls(layout, 4.0).count("<geom"), len(crl.maze_cells(layout, "#"))
        print(
            f"{env_id}: {boxes} merged boxes {merged:,.0f} steps/s, {cells} boxes (one per cell) "
            f"{per_cell:,.0f} steps/s: merged is {merged / per_cell:.2f}x"
        )
    pelvis = steps_per_second("humanoid_big_maze", 128, 100, 3)
    crl.HUMANOID_WALL_GEOMS = ("torso1", "uwaist", "lwaist", "butt") + tuple(
        f"{side}_{part}1" for side in ("right", "left") for part in ("thigh", "shin")
    )
    capsules = steps_per_second("humanoid_big_maze", 128, 100, 3)
    print(
        f"humanoid_big_maze: pelvis and feet meet the walls {pelvis:,.0f} steps/s, all eight trunk and leg "
        f"capsules {capsules:,.0f} steps/s: {pelvis / capsules:.2f}x"
    )
