"""What the maze walls cost: env steps/s with the walls as built vs the alternatives we rejected, in one run.

    python benchmarks/maze_contacts.py

1. Wall cells merged into few boxes (`maze_walls`) vs one box per wall cell, on ant_u_maze and ant_big_maze.
2. The benchmark's contacts, which the paper's environments use, vs the cheaper sets of our earlier versions:
   ant_big_maze with torso, hips and feet meeting the walls vs torso and feet; humanoid_big_maze with every geom
   meeting the floor and the walls (and the goal a body of the model) vs brax's humanoid with the feet on the
   floor and only the pelvis and the feet meeting the walls.
3. The ant's feet meeting its torso, its hips and each other (the benchmark's ant_maze.xml; 26 pairs) vs not.
Each (geom, box) pair is a contact test in every physics substep, so these choices trade contacts for speed.
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
    cheaper = [
        (
            "ant_big_maze",
            "our earlier cheaper set",
            lambda: crl.Locomotion("ant", "big_maze", wall_geoms=("torso_geom",)),
        ),
        (
            "humanoid_big_maze",
            "our earlier cheaper set",
            lambda: crl.Locomotion("humanoid", "big_maze", size=2.0, wall_geoms=("butt",), goal_z=(1.25,)),
        ),
        (
            "ant_big_maze",
            "without self-contacts",
            lambda: crl.Locomotion("ant", "big_maze", wall_geoms=crl.ANT_WALL_GEOMS),
        ),
    ]
    for env_id, label, make in cheaper:
        spec = crl.ENVIRONMENTS[env_id]
        benchmark = steps_per_second(env_id, 128, 100, 3)
        state_dim = 246 if env_id.startswith("humanoid") else spec.state_dim
        crl.ENVIRONMENTS["cheaper"] = crl.EnvSpec(make, state_dim, spec.goal_indices, 0.5, 1000)
        cheap = steps_per_second("cheaper", 128, 100, 3)
        print(
            f"{env_id}: the benchmark's contacts {benchmark:,.0f} steps/s, {label} {cheap:,.0f} steps/s: "
            f"{cheap / benchmark:.2f}x"
        )
