"""Make an OGBench-format point-maze dataset here, with OGBench's own recipe, for crl_offline.py.

OGBench's official datasets download from its server; point-maze ones are made by an oracle and can be made offline.
The recipe (OGBench's data_gen_scripts/generate_locomaze.py, point mazes): every step the point moves towards the
next cell on the shortest path to its goal (the environment's oracle subgoal direction), plus Gaussian noise 0.5,
clipped to [-1, 1].
  navigate: start anywhere, goal a random junction or dead end ("vertex") cell, a new one each time it is reached;
  stitch:   start anywhere, goal a cell 4 cells away, kept for the whole (short) episode.
Episodes are stored one after another, each `--episode-steps` rows long with terminals 1 on its last row;
NAME.npz holds --num-episodes episodes and NAME-val.npz a tenth as many more (at least one), with the keys observations, actions,
terminals, qpos, qvel. They load with ogbench.load_dataset unchanged.

    python tools/make_ogbench_dataset.py --dataset pointmaze-medium-navigate-v0            # official size
    python tools/make_ogbench_dataset.py --dataset pointmaze-medium-stitch-v0 --out data/
    python tools/make_ogbench_dataset.py --dataset pointmaze-medium-navigate-v0 --num-episodes 20  # a small one
"""

import argparse
import os
import sys
import time

import numpy as np

# OGBench's sizes: (episodes, steps per episode) of the official datasets
OFFICIAL = {"navigate": (1000, 1001), "stitch": (5000, 201)}
OFFICIAL_GIANT = {"navigate": (500, 2001), "stitch": (5000, 201)}
MAZES = ["medium", "large", "giant", "teleport"]


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", default="pointmaze-medium-navigate-v0", help="pointmaze-{maze}-{navigate|stitch}-v0"
    )
    parser.add_argument("--out", default="data", help="directory for NAME.npz and NAME-val.npz")
    parser.add_argument("--num-episodes", type=int, default=None, help="training episodes (default: OGBench's)")
    parser.add_argument("--episode-steps", type=int, default=None, help="rows per episode (default: OGBench's)")
    parser.add_argument("--noise", type=float, default=0.5, help="std of the Gaussian action noise (OGBench: 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    parts = args.dataset.split("-")
    if len(parts) != 4 or parts[0] != "pointmaze" or parts[1] not in MAZES or parts[2] not in OFFICIAL:
        parser.error(
            f"--dataset {args.dataset!r}: expected pointmaze-{{{'|'.join(MAZES)}}}-{{navigate|stitch}}-v0 (ant and "
            "humanoid datasets need OGBench's expert policies: download them with ogbench.download_datasets)"
        )
    episodes, steps = (OFFICIAL_GIANT if parts[1] == "giant" else OFFICIAL)[parts[2]]
    args.num_episodes = args.num_episodes or episodes
    args.episode_steps = args.episode_steps or steps
    for name in ["num_episodes", "episode_steps"]:
        if getattr(args, name) < 2:
            parser.error(f"--{name.replace('_', '-')} must be >= 2, got {getattr(args, name)}")
    args.env_name, args.kind = f"pointmaze-{parts[1]}-{parts[3]}", parts[2]
    return args


def maze_cells(maze_map):
    """All free cells, and the "vertex" cells among them: free cells that are not the middle of a straight corridor."""
    free, vertex = [], []
    for i in range(maze_map.shape[0]):
        for j in range(maze_map.shape[1]):
            if maze_map[i, j] != 0:
                continue
            free.append((i, j))
            up_down_open = maze_map[i - 1, j] == 0 and maze_map[i + 1, j] == 0
            left_right_open = maze_map[i, j - 1] == 0 and maze_map[i, j + 1] == 0
            corridor = (up_down_open and maze_map[i, j - 1] == 1 and maze_map[i, j + 1] == 1) or (
                left_right_open and maze_map[i - 1, j] == 1 and maze_map[i + 1, j] == 1
            )
            if not corridor:
                vertex.append((i, j))
    return free, vertex


def cells_at_distance(maze_map, start, distance):
    """Free cells exactly `distance` moves from `start` (breadth-first search over the 4 neighbours)."""
    steps, frontier, found = {start: 0}, [start], []
    while frontier:
        i, j = frontier.pop(0)
        for di, dj in [(-1, 0), (0, -1), (1, 0), (0, 1)]:
            cell = (i + di, j + dj)
            inside = 0 <= cell[0] < maze_map.shape[0] and 0 <= cell[1] < maze_map.shape[1]
            if inside and maze_map[cell] == 0 and cell not in steps:
                steps[cell] = steps[(i, j)] + 1
                frontier.append(cell)
                found += [cell] if steps[cell] == distance else []
    return found


def make(args):
    import gymnasium
    import ogbench.locomaze  # noqa: F401 (registers the maze environments)

    np.random.seed(args.seed)  # OGBench's environments draw their noise from numpy's global generator
    env = gymnasium.make(args.env_name, terminate_at_goal=False, max_episode_steps=args.episode_steps)
    env.action_space.seed(args.seed)
    maze = env.unwrapped
    free, vertex = maze_cells(maze.maze_map)
    data = {k: [] for k in ["observations", "actions", "terminals", "qpos", "qvel"]}
    total = args.num_episodes + max(1, args.num_episodes // 10)  # the last tenth (at least one) to NAME-val.npz
    start = time.time()
    for episode in range(total):
        init = free[np.random.randint(len(free))]
        if args.kind == "navigate":
            goal = vertex[np.random.randint(len(vertex))]
        else:
            near = cells_at_distance(maze.maze_map, init, 4)
            goal = near[np.random.randint(len(near))] if near else init
        seed = args.seed if episode == 0 else None  # the environment's own generator, seeded once
        ob, _ = env.reset(seed=seed, options={"task_info": {"init_ij": init, "goal_ij": goal}})
        done = False
        while not done:
            subgoal, _ = maze.get_oracle_subgoal(maze.get_xy(), maze.cur_goal_xy)
            direction = subgoal - maze.get_xy()
            action = direction / (np.linalg.norm(direction) + 1e-6)  # the oracle: full speed towards the subgoal
            action = np.clip(action + np.random.normal(0, args.noise, action.shape), -1, 1)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if info["success"] and args.kind == "navigate":  # reached: a new goal, the episode goes on
                maze.set_goal(vertex[np.random.randint(len(vertex))])
            for key, value in [("observations", ob), ("actions", action), ("terminals", done)]:
                data[key].append(value)
            data["qpos"].append(info["prev_qpos"])
            data["qvel"].append(info["prev_qvel"])
            ob = next_ob
        if (episode + 1) % 100 == 0:
            print(f"{episode + 1}/{total} episodes, {time.time() - start:.0f} s", flush=True)
    split = args.num_episodes * args.episode_steps
    dtypes = {"terminals": bool}
    os.makedirs(args.out, exist_ok=True)
    name = "-".join(["pointmaze", args.env_name.split("-")[1], args.kind, args.env_name.split("-")[2]])
    paths = []
    for suffix, rows in [("", slice(0, split)), ("-val", slice(split, None))]:
        path = os.path.join(args.out, f"{name}{suffix}.npz")
        arrays = {k: np.asarray(v[rows], dtype=dtypes.get(k, np.float32)) for k, v in data.items()}
        np.savez_compressed(path + ".tmp.npz", **arrays)  # then renamed: a kill never leaves half a dataset
        os.replace(path + ".tmp.npz", path)
        paths.append(path)
    return paths


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    paths = make(args)
    print(f"wrote {paths[0]} ({args.num_episodes} episodes of {args.episode_steps} steps) and {paths[1]}")


if __name__ == "__main__":
    main()
