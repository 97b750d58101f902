# docs: docs/eval_stitching.md -- the paper's stitching experiment and value maps, over a sweep of depths
"""Stitching and value maps: do deeper CRL networks combine short experience into long paths?

Reruns Sec. 4.5 / Fig. 6 and Sec. 4.4 / Fig. 5 of "1000 Layer Networks for Self-Supervised RL" (Wang et al.)
with the CRL of crl_resnet.py. In a corridor maze (the U-mazes: U, U4, U5), training episodes start in a corridor
cell and target a cell at most
`--max-train-gap` cells further along the U (paper: 3); evaluation starts at R and targets the far cells, which
no training episode ever pairs with R, so reaching them means stitching short pieces together. One CRL agent is
trained per depth in `--depths` (one after another, `--num-seeds` seeds each in one program), then:
runs/{run_name}/stitching.json (success and time near goal per held-out goal, per depth, per seed),
stitching.png (grouped bars) and value_map_depth{D}.png (the critic's f(s, pi(s, g), g) over the maze, from R to
the farthest cell). `--from-runs runs/A runs/B` skips training and evaluates checkpoints of crl_resnet.py runs
instead; on a maze that branches (big, hardest: no corridor to hold goals out along) it draws the value maps only.

Reading map. Study: ARGS (with PRESETS), NETWORKS, REPLAY BUFFER, LOSSES and TRAINING (crl_resnet.py's, unchanged),
EVALUATION (the held-out goals, value maps and figures) and MAIN (main(), the sweep). Skip on a first read: RUN
PLUMBING (resume, stop signals, orbax checkpoints, logging) and ENVIRONMENTS.

Siblings: identical to crl_resnet.py in ENVIRONMENTS, NETWORKS, REPLAY BUFFER, LOSSES and TRAINING; differs in
the training start-goal distribution, the held-out evaluation, the depth sweep and the figures.

Run:  python eval_stitching.py --env-id point_u_maze --depths 4 16       (CPU, about 15 minutes)
      python eval_stitching.py --env-id ant_u_maze --depths 4 16 64      (the paper's experiment, one GPU)
      python eval_stitching.py --from-runs runs/A runs/B                  (analyse crl_resnet.py runs)
"""

import atexit
import contextlib
import dataclasses
import functools
import io
import json
import logging
import math
import operator
import os
import pathlib
import re
import signal
import sys
import threading
import time
import types
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Annotated, Any, Literal, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
import tyro
from jax.experimental import multihost_utils

# orbax logs each failure it raises, which the scripts say in one line, and reads it had under way when it gave up
# report to the event loop it closed: neither is news to a user
for noisy in ["absl", "asyncio"]:
    logging.getLogger(noisy).setLevel(logging.CRITICAL)
_unraisablehook = sys.unraisablehook
sys.unraisablehook = lambda error: None if "Event loop is closed" in str(error.exc_value) else _unraisablehook(error)

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

# mujoco.mjx prints "Failed to import warp" on import when the optional warp backend is absent; brax warns
# that it is in maintenance mode. Neither concerns the spring/pipeline physics used here.
warnings.filterwarnings("ignore", message="Brax System, piplines and environments are not actively")
with contextlib.redirect_stdout(io.StringIO()):
    import mujoco
    from brax import base as brax_base
    from brax import envs as brax_envs
    from brax.io import mjcf as brax_mjcf
    from mujoco import mjx


# ==== ARGS ====
@dataclasses.dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment; runs are written to runs/{env_id}__{exp_name}__{seed}__{unix time}"""
    seed: int = 1
    """seed of the experiment (seed i of --num-seeds uses seed + i)"""
    track: bool = False
    """log to Weights & Biases (see --wandb-mode); when off, nothing is sent anywhere"""

    # Algorithm specific arguments: the maze, the depths, the schedule and the losses (Table 2's values)
    env_id: str = "ant_u_maze"
    """a corridor maze (point_u_maze on a CPU, ant_u_maze, ant_u4_maze, ...); the other defaults follow it (PRESETS)"""
    episode_length: Optional[int] = None
    """steps per episode; None uses the environment's own (1000 for the paper's environments)"""
    depths: tuple[int, ...] = (4, 16, 64)
    """network depths to train, one agent each (Dense layers in the residual blocks of actor and critic: 4 x blocks)"""
    max_train_gap: int = 3
    """training (start, goal) pairs are corridor cells 1 to this many cells apart along the U (paper: 3)"""
    width: int = 256
    """units per Dense layer"""
    repr_dim: int = 64
    """dimension of the representations phi(s, a) and psi(g)"""
    batch_size: int = 512
    """transitions per SGD minibatch (also the number of InfoNCE negatives + 1)"""
    total_env_steps: int = 100_000_000
    """total environment steps, prefill included (paper: 100M-400M)"""
    num_envs: int = 512
    """parallel training environments"""
    num_epochs: int = 100
    """epochs, each one compiled program followed by an evaluation (the paper's code: 100)"""
    unroll_length: int = 62
    """environment steps collected per environment in one training step"""
    num_sgd_batches_per_training_step: int = 800
    """SGD minibatches per training step; with the defaults UTD = 800 / (512 * 62) = 1:40 (paper)"""
    max_replay_size: int = 10_000
    """replay capacity in time steps; each step holds num_envs transitions"""
    min_replay_size: int = 1_000
    """time steps collected by the untrained policy before training (at least --episode-length)"""
    gamma: float = 0.99
    """discount of the future-state (goal) distribution"""
    actor_lr: float = 3e-4
    """actor learning rate (Adam)"""
    critic_lr: float = 3e-4
    """critic learning rate (Adam)"""
    alpha_lr: float = 3e-4
    """entropy temperature learning rate (Adam)"""
    logsumexp_penalty: float = 0.1
    """weight of the penalty mean((logsumexp_j L_ij)^2) on the InfoNCE logits"""
    target_entropy_scale: float = 0.5
    """target entropy = -scale * action_dim"""
    num_seeds: int = 1
    """independent seeds per depth in one jitted program (vmap); metrics.jsonl: means, stitching.json: per seed"""
    remat: bool = False
    """recompute each residual block in the backward pass: activation memory O(1) in depth, ~1.3x compute"""
    scan_unroll: int = 1
    """scan steps over depth unrolled into one loop iteration: 2-4 speed up narrow nets on a CPU, not wide ones"""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the matmuls; parameters, LayerNorm, the residual stream and the losses stay float32"""

    # Evaluation
    num_eval_envs: int = 128
    """parallel evaluation environments (one episode each per evaluation)"""
    render: bool = False
    """after training each depth, write depth{D}/render.html (brax viewer): three episodes from R to the far end"""
    from_runs: tuple[str, ...] = ()
    """crl_resnet.py runs (runs/NAME) to evaluate instead of training; on a branching maze, value maps only"""

    # Run plumbing: tracking, checkpoints, resuming
    wandb_project_name: str = "scaling-crl"
    """the wandb project name"""
    wandb_entity: Optional[str] = None
    """the wandb entity (team or user); None uses your default entity"""
    wandb_mode: Literal["online", "offline"] = "online"
    """wandb mode: offline writes runs/{run_name}/wandb for a later `wandb sync` and needs no network"""
    save_model: bool = True
    """write checkpoints (the last two epochs, the best evaluation) and the final networks of every depth"""
    resume: Optional[str] = None
    """a run directory (runs/NAME) to continue from its last checkpoint, with its flags"""

    # to be filled in runtime: the depth being trained
    actor_num_blocks: Annotated[int, tyro.conf.Suppress] = 0
    """residual blocks of the actor (depth / 4)"""
    critic_num_blocks: Annotated[int, tyro.conf.Suppress] = 0
    """residual blocks of sa_encoder and g_encoder (depth / 4)"""


# Defaults per environment (any flag on the command line overrides them). The ant and humanoid mazes keep the
# paper's Table 2 (the Args defaults); point_u_maze uses the CPU quick-start's sizes of crl_resnet.py with a budget
# that trains depths 4 and 16 with 3 seeds each in about 15 minutes on 2 CPU cores.
PRESETS = {
    "point_u_maze": {
        "num_seeds": 3,
        "total_env_steps": 6_025_600,
        "num_envs": 256,
        "num_eval_envs": 256,
        "num_epochs": 6,
        "unroll_length": 100,
        "batch_size": 256,
        "num_sgd_batches_per_training_step": 50,
        "max_replay_size": 4000,
        "min_replay_size": 100,
        "width": 64,
        "scan_unroll": 2,
    },
    "ant_u_maze": {},
    "ant_u4_maze": {},
    "ant_u5_maze": {},
    "humanoid_u_maze": {},
}


def fail(message, status=2):
    """A one-line error, no traceback: status 2 for bad input (like argparse), 1 for a run that had to stop."""
    tqdm.tqdm.write(f"error: {message}", file=sys.stderr)  # on a line of its own, under a progress bar
    sys.exit(status)


def flag(name):
    return "--" + name.replace("_", "-")  # num_envs -> --num-envs


def check_args(args):
    """Every inconsistency in the flags is a one-line error here, before anything is compiled."""
    if args.env_id not in PRESETS and not args.from_runs:
        fail(
            f"--env-id {args.env_id!r} has no stitching experiment (it needs a corridor maze); choose one of: "
            f"{', '.join(PRESETS)} (value maps of crl_resnet.py runs on any maze: --from-runs)"
        )
    made_on = set()
    for run in args.from_runs:
        if not os.path.isfile(os.path.join(run, "args.json")):
            fail(f"--from-runs {run} is not a run directory of crl_resnet.py (no args.json); give runs/NAME")
        if not any(os.path.isfile(os.path.join(run, f)) for f in ["final.msgpack", "checkpoint_best.msgpack"]):
            fail(f"--from-runs {run} has no final.msgpack or checkpoint_best.msgpack: it saved no parameters")
        saved = json.loads(pathlib.Path(run, "args.json").read_text())
        if maze_layout(saved.get("env_id", "")) is None or "critic_num_blocks" not in saved:
            fail(
                f"--from-runs {run} is a run on {saved.get('env_id')!r}; choose runs of crl_resnet.py on a maze "
                "(an id ending in _maze: point, ant or humanoid)"
            )
        made_on.add((saved["env_id"], saved["episode_length"]))
    if len(made_on) > 1:
        fail(f"--from-runs mixes environments or episode lengths {sorted(made_on)}; give runs of one environment")
    if not args.from_runs and not args.depths:
        fail("--depths is empty; give depths to train, e.g. --depths 4 16 64, or --from-runs runs/A runs/B")
    for depth in args.depths:
        if depth < 4 or depth % 4:
            fail(
                f"--depths {depth} is not a positive multiple of 4 (depth = 4 x residual blocks); e.g. --depths 4 16 64"
            )
    layout = maze_layout(min(made_on)[0] if made_on else args.env_id)  # the maze of --from-runs' runs
    path = corridor_path(layout)  # None for a branching maze: it holds no goal out
    if path and not 1 <= args.max_train_gap <= len(path) - 2:
        fail(
            f"--max-train-gap must be in [1, {len(path) - 2}] on the {layout} ({len(path)} corridor cells), got "
            f"{args.max_train_gap}"
        )
    counts = ["num_seeds", "num_envs", "num_eval_envs", "num_epochs", "unroll_length", "batch_size", "width"]
    counts += ["num_sgd_batches_per_training_step", "max_replay_size", "min_replay_size", "repr_dim"]
    for name in counts:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            fail(f"{flag(name)} must be >= 1, got {getattr(args, name)}")
    episode = args.episode_length or ENVIRONMENTS[args.env_id].episode_length
    pool = args.num_envs * episode  # relabelled transitions sampled per training step (--num-envs x episode)
    plan, devices = schedule(args), jax.device_count()
    rules = [  # (flag, broken, what it must be)
        ("episode_length", episode < 2, ">= 2"),
        ("gamma", not 0 < args.gamma < 1, "in (0, 1)"),
        *[(name, getattr(args, name) <= 0, "> 0") for name in ["actor_lr", "critic_lr", "alpha_lr"]],
        *[(name, getattr(args, name) < 0, ">= 0") for name in ["logsumexp_penalty", "target_entropy_scale"]],
        ("min_replay_size", args.min_replay_size > args.max_replay_size, "<= --max-replay-size"),
        ("min_replay_size", args.min_replay_size < episode, f">= the episode's {episode} steps (--episode-length)"),
        ("unroll_length", args.unroll_length > args.max_replay_size, "<= --max-replay-size"),
        ("batch_size", args.batch_size > pool, f"<= the {pool} transitions sampled per training step"),
        (
            "num_sgd_batches_per_training_step",
            args.num_sgd_batches_per_training_step > pool // args.batch_size,
            f"at most {pool // args.batch_size}: the batches of --batch-size in {pool} transitions",
        ),
        *[
            (name, getattr(args, name) % devices, f"a multiple of the {devices} devices")
            for name in ["num_envs", "batch_size"]
        ],
        ("total_env_steps", plan.training_steps_per_epoch < 1, f">= {plan.min_total_steps}: too small for an epoch"),
    ]
    for name, broken, must_be in rules:
        if broken:
            fail(f"{flag(name)} must be {must_be}, got {getattr(args, name)}")


# ==== NETWORKS ====
# Every Dense layer: kernel init variance scaling 1/3, fan-in, uniform, and zero biases, as in the paper's code.
dense_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def dense_layernorm_swish(x, width, dtype):
    """One layer (called inside a module): the matmul in `dtype`, LayerNorm and swish in float32."""
    x = nn.Dense(width, kernel_init=dense_init, dtype=dtype)(x).astype(jnp.float32)
    return nn.swish(nn.LayerNorm()(x))


class ResidualBlock(nn.Module):
    """4 x [Dense -> LayerNorm -> swish], identity added after the last activation (paper Fig. 2)."""

    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, _):
        x = h
        for _ in range(4):
            x = dense_layernorm_swish(x, self.width, self.dtype)
        return h + x, None


class ResidualTrunk(nn.Module):
    """Dense -> LayerNorm -> swish, then num_blocks residual blocks, scanned so compile time is flat in depth."""

    width: int
    num_blocks: int
    remat: bool = False
    scan_unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = dense_layernorm_swish(x, self.width, self.dtype)
        # backward pass: keep each Dense output, recompute LayerNorm and swish (cheaper than storing them, see
        # docs/performance.md); --remat keeps only each block's input
        saved = jax.checkpoint_policies.nothing_saveable if self.remat else jax.checkpoint_policies.dots_saveable
        block = nn.remat(ResidualBlock, prevent_cse=False, policy=saved)
        blocks = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=self.num_blocks,
            unroll=min(self.scan_unroll, self.num_blocks),
        )
        x, _ = blocks(self.width, self.dtype, name="blocks")(x, None)
        return x


class Encoder(nn.Module):
    """sa_encoder phi(s, a) or g_encoder psi(g): residual trunk, then Dense(repr_dim)."""

    repr_dim: int
    width: int
    num_blocks: int
    remat: bool = False
    scan_unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = ResidualTrunk(self.width, self.num_blocks, self.remat, self.scan_unroll, self.dtype)(x)
        return nn.Dense(self.repr_dim, kernel_init=dense_init, dtype=self.dtype)(x).astype(jnp.float32)


class Actor(nn.Module):
    """pi(a | s, g): residual trunk, then Dense heads for the mean and the tanh-squashed log-std."""

    action_dim: int
    width: int
    num_blocks: int
    remat: bool = False
    scan_unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, obs):
        x = ResidualTrunk(self.width, self.num_blocks, self.remat, self.scan_unroll, self.dtype)(obs)
        mean = nn.Dense(self.action_dim, kernel_init=dense_init, dtype=self.dtype)(x).astype(jnp.float32)
        log_std = nn.Dense(self.action_dim, kernel_init=dense_init, dtype=self.dtype)(x).astype(jnp.float32)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(log_std) + 1)
        return mean, log_std


def make_networks(args, env):
    dtype = jnp.dtype(args.compute_dtype)
    trunk = (args.width, args.critic_num_blocks, args.remat, args.scan_unroll, dtype)
    sa_encoder = Encoder(args.repr_dim, *trunk)
    g_encoder = Encoder(args.repr_dim, *trunk)
    actor = Actor(env.action_dim, args.width, args.actor_num_blocks, *trunk[2:])
    return sa_encoder, g_encoder, actor


# ==== REPLAY BUFFER ====
# A circular buffer of trajectories shaped (time, num_envs, .) with a trajectory id per step. Sampling takes
# one window of `episode_length` consecutive steps per environment and relabels every step with a future
# state of the same trajectory, j - t ~ Geometric(1 - gamma) truncated to the trajectory: the positive pairs
# (s_t, a_t, g = s_j) of the InfoNCE objective (paper Sec. 3).


@flax.struct.dataclass
class ReplayBuffer:
    obs: jax.Array  # (capacity, num_envs, obs_dim) concat(state, commanded goal)
    action: jax.Array  # (capacity, num_envs, action_dim)
    traj_id: jax.Array  # (capacity, num_envs)
    insert_pos: jax.Array  # next row to write
    size: jax.Array  # rows filled


def buffer_init(capacity, num_envs, obs_dim, action_dim):
    return ReplayBuffer(
        obs=jnp.zeros((capacity, num_envs, obs_dim)),
        action=jnp.zeros((capacity, num_envs, action_dim)),
        traj_id=jnp.zeros((capacity, num_envs), dtype=jnp.int32),
        insert_pos=jnp.zeros((), dtype=jnp.int32),
        size=jnp.zeros((), dtype=jnp.int32),
    )


def buffer_insert(buffer, obs, action, traj_id):
    """Append (T, num_envs, .) rows, overwriting the oldest once full."""
    capacity = buffer.obs.shape[0]
    rows = (buffer.insert_pos + jnp.arange(obs.shape[0])) % capacity
    return ReplayBuffer(
        obs=buffer.obs.at[rows].set(obs),
        action=buffer.action.at[rows].set(action),
        traj_id=buffer.traj_id.at[rows].set(traj_id),
        insert_pos=(buffer.insert_pos + obs.shape[0]) % capacity,
        size=jnp.minimum(buffer.size + obs.shape[0], capacity),
    )


def future_indices(traj_id, key, gamma):
    """For each step t of each (W,) window of trajectory ids, a future step j with P(j) ∝ gamma^(j - t).

    j ranges over t+1 .. last step of t's trajectory inside the window; a last step falls back to itself.
    Example: a window of 6 steps with a reset after step 2, traj_id = [7, 7, 7, 8, 8, 8], has last = [2, 2, 2, 5,
    5, 5]: t = 0 draws j = 1 or 2 (P ∝ gamma, gamma^2), t = 1 draws 2, t = 2 keeps 2, t = 3 draws 4 or 5, t = 4
    draws 5, t = 5 keeps 5; no step is ever relabelled with the other trajectory's states.
    Inverse CDF of the geometric law truncated to K = last - t steps:
    j - t = 1 + floor(log(1 - u (1 - gamma^K)) / log gamma).
    """
    window = traj_id.shape[-1]
    t = jnp.arange(window)
    # ids never decrease within a window, so the trajectory of t ends just before the first larger id
    last = jax.vmap(lambda ids: jnp.searchsorted(ids, ids, side="right"))(traj_id) - 1
    horizon = last - t  # (E, W) steps left in the trajectory
    u = jax.random.uniform(key, traj_id.shape)
    offset = 1 + jnp.floor(jnp.log1p(-u * (1 - gamma**horizon)) / jnp.log(gamma)).astype(jnp.int32)
    return t + jnp.where(horizon > 0, jnp.clip(offset, 1, horizon), 0)


def sample_windows(buffer, key, window):
    """One window of `window` consecutive steps per environment, from anywhere in the filled part of the buffer:
    obs, action and traj_id shaped (num_envs, window, .)."""
    capacity, num_envs = buffer.traj_id.shape
    oldest = (buffer.insert_pos - buffer.size) % capacity
    start = jax.random.randint(key, (num_envs,), 0, buffer.size - window + 1)
    rows = (oldest + start[:, None] + jnp.arange(window)) % capacity  # (E, W)
    envs = jnp.arange(num_envs)[:, None]
    return buffer.obs[rows, envs], buffer.action[rows, envs], buffer.traj_id[rows, envs]


def relabel_with_future_states(obs, action, traj_id, key, gamma, state_dim, goal_indices):
    """Every step of (E, W) windows with its goal relabelled as a future state of its own trajectory: flat
    (E * W, .) transitions {state, action, goal}."""
    future = future_indices(traj_id, key, gamma)  # (E, W)
    future_state = jnp.take_along_axis(obs, future[..., None], axis=1)[..., :state_dim]
    transitions = {"state": obs[..., :state_dim], "action": action, "goal": future_state[..., goal_indices]}
    return flatten_windows(transitions)


def flatten_windows(tree):
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def sample_transitions(buffer, key, window, gamma, state_dim, goal_indices):
    """One window per environment, every step relabelled: the (num_envs * window, .) positive pairs."""
    k_start, k_future = jax.random.split(key)
    obs, action, traj_id = sample_windows(buffer, k_start, window)
    return relabel_with_future_states(obs, action, traj_id, k_future, gamma, state_dim, goal_indices)


# ==== LOSSES ====
def l2_energy(phi, psi):
    """(B, B) logits L_ij = f(s_i, a_i, g_j) = -||phi_i - psi_j||_2, the critic of paper Sec. 3."""
    # ||phi_i||^2 + ||psi_j||^2 - 2 phi_i.psi_j is one matmul instead of a (B, B, repr_dim) tensor (faster, see
    # docs/parity.md#notes-and-deviations). The terms cancel where phi_i is near psi_j, so the product runs in full float32
    # even where the default is TF32 (NVIDIA GPUs); the floor keeps sqrt and its gradient finite at phi_i == psi_j
    dot = jnp.matmul(phi, psi.T, precision=jax.lax.Precision.HIGHEST)
    squared = jnp.sum(phi**2, -1)[:, None] + jnp.sum(psi**2, -1)[None, :] - 2 * dot
    return -jnp.sqrt(jnp.maximum(squared, 1e-12))


def infonce_loss(logits, logsumexp_penalty):
    """mean_i[-L_ii + logsumexp_j L_ij] + penalty * mean_i[(logsumexp_j L_ij)^2]; row i's positive is g_i."""
    lse = jax.nn.logsumexp(logits, axis=1)
    return jnp.mean(-jnp.diag(logits) + lse) + logsumexp_penalty * jnp.mean(lse**2)


def sample_tanh_gaussian(key, mean, log_std):
    """a = tanh(u), u ~ N(mean, std); log pi(a) includes the tanh change of variables."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    log_prob = jnp.sum(-0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)
    log_det = jnp.sum(2 * (jnp.log(2.0) - u - jax.nn.softplus(-2 * u)), -1)  # log(1 - tanh(u)^2), stably
    return jnp.tanh(u), log_prob - log_det


def make_losses(args, sa_encoder, g_encoder, actor):
    """The losses of paper Sec. 3: InfoNCE for the critic, -f(s, pi(s, g), g) plus entropy for the actor, and the
    automatic temperature alpha (as in SAC)."""

    def critic_loss(critic_params, batch):
        phi = sa_encoder.apply(critic_params["sa_encoder"], jnp.concatenate([batch["state"], batch["action"]], -1))
        psi = g_encoder.apply(critic_params["g_encoder"], batch["goal"])
        logits = l2_energy(phi, psi)  # (B, B)
        loss = infonce_loss(logits, args.logsumexp_penalty)
        accuracy = jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(logits.shape[0]))
        info = {"losses/critic_accuracy": accuracy, "losses/logits_pos": jnp.mean(jnp.diag(logits))}
        return loss, (info, psi)

    def actor_loss(actor_params, critic_params, log_alpha, batch, psi, key):
        """psi = g_encoder(goal) from critic_loss: the actor's gradient does not flow into it, so reuse it."""
        mean, log_std = actor.apply(actor_params, jnp.concatenate([batch["state"], batch["goal"]], -1))
        action, log_prob = sample_tanh_gaussian(key, mean, log_std)
        phi = sa_encoder.apply(critic_params["sa_encoder"], jnp.concatenate([batch["state"], action], -1))
        q = -jnp.linalg.norm(phi - psi, axis=-1)  # f(s, a, g) on the diagonal only
        alpha = jnp.exp(log_alpha)
        return jnp.mean(alpha * log_prob - q), log_prob

    def alpha_loss(log_alpha, log_prob, target_entropy):
        # raises alpha when the policy's entropy (-log_prob) falls below the target, lowers it above
        return jnp.mean(-jnp.exp(log_alpha) * jax.lax.stop_gradient(log_prob + target_entropy))

    return critic_loss, actor_loss, alpha_loss


# ==== TRAINING ====
# One training step (paper Sec. 3, sizes in Table 2): COLLECT unroll_length steps in every environment with the
# stochastic policy, RELABEL one window per environment with future states as goals, UPDATE the critic, actor and
# temperature on num_sgd_batches_per_training_step minibatches of that pool. An epoch is a scan of training steps:
# one compiled program, run num_epochs times by main().


@flax.struct.dataclass
class RunnerState:
    """Everything one seed's training carries from step to step (PureJaxRL's "runner state", `rs` in the code):
    the networks and their optimiser states, the environments, the replay buffer, the random key."""

    actor_params: Any
    critic_params: Any  # {"sa_encoder": ..., "g_encoder": ...}
    log_alpha: jax.Array
    actor_opt_state: Any
    critic_opt_state: Any
    alpha_opt_state: Any
    env_state: "EnvState"  # the training environments (ENVIRONMENTS)
    buffer: ReplayBuffer
    key: jax.Array
    env_steps: jax.Array  # environment steps so far, prefill included


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How --total-env-steps is spent: a prefill by the untrained policy, then --num-epochs epochs of whole training
    steps, each num_envs x unroll_length env steps; a remainder too small for one more step is not run."""

    prefill_steps: int
    training_steps_per_epoch: int
    env_steps_per_epoch: int
    total_steps: int
    min_total_steps: int  # the smallest --total-env-steps with one training step per epoch


def schedule(args):
    prefill_steps = args.min_replay_size * args.num_envs
    per_training_step = args.num_envs * args.unroll_length
    training_steps = (args.total_env_steps - prefill_steps) // (args.num_epochs * per_training_step)
    per_epoch = training_steps * per_training_step
    total, least = prefill_steps + args.num_epochs * per_epoch, prefill_steps + args.num_epochs * per_training_step
    return Schedule(prefill_steps, training_steps, per_epoch, total, least)


def make_train(args, env):
    """Returns init(key) -> rs, prefill(rs) -> rs and epoch(rs) -> (rs, metrics) for one seed, and the actor
    module (for evaluation). Each is a pure function of its inputs: main() jits them over seeds and devices."""
    sa_encoder, g_encoder, actor = make_networks(args, env)
    critic_loss, actor_loss, alpha_loss = make_losses(args, sa_encoder, g_encoder, actor)
    actor_opt, critic_opt, alpha_opt = optax.adam(args.actor_lr), optax.adam(args.critic_lr), optax.adam(args.alpha_lr)
    target_entropy = -args.target_entropy_scale * env.action_dim
    steps_per_epoch = schedule(args).training_steps_per_epoch

    def init(key):
        key, k_actor, k_sa, k_g, k_env = jax.random.split(key, 5)
        actor_params = actor.init(k_actor, jnp.zeros((1, env.obs_dim)))
        critic_params = {
            "sa_encoder": sa_encoder.init(k_sa, jnp.zeros((1, env.state_dim + env.action_dim))),
            "g_encoder": g_encoder.init(k_g, jnp.zeros((1, env.goal_dim))),
        }
        log_alpha = jnp.zeros(())
        return RunnerState(
            actor_params,
            critic_params,
            log_alpha,
            actor_opt.init(actor_params),
            critic_opt.init(critic_params),
            alpha_opt.init(log_alpha),
            env.reset(k_env, args.num_envs),
            buffer_init(args.max_replay_size, args.num_envs, env.obs_dim, env.action_dim),
            key,
            jnp.zeros((), dtype=jnp.int32),
        )

    def policy(actor_params, obs, key):
        mean, log_std = actor.apply(actor_params, obs)
        return sample_tanh_gaussian(key, mean, log_std)[0]

    def collect(rs, num_steps, act):
        """COLLECT: steps every environment num_steps times with actions act(obs, key), stores the transitions."""

        def env_step(env_state, key):
            action = act(env_state.obs, key)
            next_state = env.step(env_state, action)
            return next_state, (env_state.obs, action, env_state.traj_id)

        key, collect_key = jax.random.split(rs.key)
        env_state, (obs, action, traj_id) = jax.lax.scan(
            env_step, rs.env_state, jax.random.split(collect_key, num_steps)
        )
        buffer = buffer_insert(rs.buffer, obs, action, traj_id)
        env_steps = rs.env_steps + num_steps * args.num_envs
        return rs.replace(env_state=env_state, buffer=buffer, key=key, env_steps=env_steps)

    def prefill(rs):  # the untrained stochastic policy fills the buffer, as in the paper's code
        return collect(rs, args.min_replay_size, lambda obs, key: policy(rs.actor_params, obs, key))

    def sgd_step(rs, batch):
        """UPDATE on one minibatch: critic, actor and temperature, each from the parameters before this step."""
        key, actor_key = jax.random.split(rs.key)
        (c_loss, (c_info, psi)), c_grads = jax.value_and_grad(critic_loss, has_aux=True)(rs.critic_params, batch)
        (a_loss, log_prob), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(
            rs.actor_params, rs.critic_params, rs.log_alpha, batch, psi, actor_key
        )
        al_loss, al_grad = jax.value_and_grad(alpha_loss)(rs.log_alpha, log_prob, target_entropy)
        c_updates, critic_opt_state = critic_opt.update(c_grads, rs.critic_opt_state)
        a_updates, actor_opt_state = actor_opt.update(a_grads, rs.actor_opt_state)
        al_update, alpha_opt_state = alpha_opt.update(al_grad, rs.alpha_opt_state)
        rs = rs.replace(
            critic_params=optax.apply_updates(rs.critic_params, c_updates),
            actor_params=optax.apply_updates(rs.actor_params, a_updates),
            log_alpha=optax.apply_updates(rs.log_alpha, al_update),
            critic_opt_state=critic_opt_state,
            actor_opt_state=actor_opt_state,
            alpha_opt_state=alpha_opt_state,
            key=key,
        )
        metrics = {
            "losses/critic_loss": c_loss,
            "losses/actor_loss": a_loss,
            "losses/alpha_loss": al_loss,
            "losses/alpha": jnp.exp(rs.log_alpha),
            "losses/entropy": -jnp.mean(log_prob),
            # gradient health of deep nets: vanishing shows as a norm drifting to 0, explosion as a blow-up
            "gradients/critic_norm": optax.tree.norm(c_grads),
            "gradients/actor_norm": optax.tree.norm(a_grads),
            **c_info,
        }
        return rs, metrics

    def training_step(rs, _):
        # COLLECT with the current stochastic policy
        rs = collect(rs, args.unroll_length, lambda obs, key: policy(rs.actor_params, obs, key))
        # RELABEL one window per environment: every step's goal is a future state of its own trajectory
        key, sample_key, perm_key = jax.random.split(rs.key, 3)
        transitions = sample_transitions(
            rs.buffer, sample_key, env.episode_length, args.gamma, env.state_dim, env.goal_indices
        )
        # minibatches without replacement from the relabelled pool: (num_sgd_batches, batch_size, .)
        num_used = args.num_sgd_batches_per_training_step * args.batch_size
        pick = jax.random.permutation(perm_key, transitions["state"].shape[0])[:num_used]
        batches = jax.tree.map(lambda x: x[pick].reshape((-1, args.batch_size) + x.shape[1:]), transitions)
        # UPDATE on each minibatch in turn (split over the devices: data parallelism)
        rs, metrics = jax.lax.scan(sgd_step, rs.replace(key=key), split_over_devices(batches, axis=1))
        return rs, jax.tree.map(jnp.mean, metrics)

    def epoch(rs):
        rs, metrics = jax.lax.scan(training_step, rs, None, length=steps_per_epoch)
        return rs, jax.tree.map(jnp.mean, metrics)

    return init, prefill, epoch, actor


def checkpoint_params(rs):
    """The networks written to checkpoint_best and final: what evaluation and eval_stitching.py load."""
    return {"actor": rs.actor_params, "critic": rs.critic_params}


# Seeds and devices: main() runs these functions vmapped over seeds, on a mesh of every device (docs/cluster.md)
def over_seeds(fn, num_seeds):
    """fn over the leading seed axis: vmap for several seeds, for one the axis dropped (faster: docs/performance.md)."""
    if num_seeds > 1:
        return jax.vmap(fn)
    return lambda *xs: jax.tree.map(lambda y: y[None], fn(*jax.tree.map(lambda x: x[0], xs)))


def use_all_devices(devices_split):
    """A one-axis mesh over every device of every process. With --devices-split data it is set for the program:
    split_over_devices splits each seed's minibatches over it; with seeds, nothing within a seed is split."""
    mesh = jax.make_mesh((jax.device_count(),), ("devices",), axis_types=(jax.sharding.AxisType.Auto,))
    if devices_split == "data":
        jax.set_mesh(mesh)
    return mesh


def device_shardings(rs, mesh, devices_split):
    """Where a (seeds, ...) RunnerState lives. data: each device steps its share of every seed's environments and
    holds theirs of the replay buffer, the rest is replicated; XLA adds the gradients' all-reduce (split_over_devices
    in TRAINING). seeds: each device holds whole seeds, and the update communicates nothing."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    split = lambda axis: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*[None] * axis, "devices"))
    if devices_split == "seeds":
        return jax.tree.map(lambda _: split(0), rs)
    env_state = jax.tree.map(lambda x: split(1) if x.ndim >= 2 else replicated, rs.env_state)  # (seeds, envs, .)
    buffer = jax.tree.map(lambda x: split(2) if x.ndim >= 3 else replicated, rs.buffer)  # (seeds, time, envs, .)
    shardings = jax.tree.map(lambda _: replicated, rs)
    return shardings.replace(env_state=env_state.replace(key=replicated), buffer=buffer)


def split_over_devices(tree, axis):
    """Splits `axis` of every array over the devices of the mesh set by use_all_devices (--devices-split data); no-op
    without one."""
    if "devices" not in jax.sharding.get_abstract_mesh().axis_names:
        return tree
    spec = jax.sharding.PartitionSpec(*[None] * axis, "devices")
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, spec), tree)


def host_copy(tree):
    """numpy copies of (global) arrays: jax.device_get, or with several processes gathered from all of them."""
    return jax.device_get(tree) if jax.process_count() == 1 else multihost_utils.process_allgather(tree, tiled=True)


def wait_until_ready(tree):
    """jax.block_until_ready, but Python's signal handlers (SIGTERM, Ctrl-C) run while it waits."""
    while not all(leaf.is_ready() for leaf in jax.tree.leaves(tree)):
        time.sleep(0.01)
    return tree


CPU_WARNING_ABOVE = 2.5e13  # batch x width^2 x SGD steps above which a CPU run is timed (Table 2's: 3e14)


def expected_cpu_hours(args, env):
    """On a CPU, a run sized for a GPU: its hours here, from one training step compiled and timed at its sizes."""
    steps = args.num_seeds * args.num_epochs * schedule(args).training_steps_per_epoch
    work = steps * args.num_sgd_batches_per_training_step * args.batch_size * args.width**2
    if jax.default_backend() != "cpu" or work < CPU_WARNING_ABOVE:
        return None
    one_step = args.min_replay_size * args.num_envs + args.num_envs * args.unroll_length  # prefill + one step
    init, _, epoch, _ = make_train(dataclasses.replace(args, num_epochs=1, total_env_steps=one_step), env)
    rs = jax.jit(init)(jax.random.PRNGKey(0))
    training_step = jax.jit(epoch, donate_argnums=0).lower(rs).compile(env.compiler_options)
    start = time.time()  # after compiling
    wait_until_ready(training_step(rs))
    return (time.time() - start) * steps / 3600


# ==== EVALUATION ====
SCORE = "eval/time_near_goal"  # what checkpoint_best and summary.json rank by: the paper's score (Sec. 4.1)
STEPS = "training/env_steps"  # what metrics.jsonl and wandb count progress in


def deterministic_rollout(env, actor, actor_params, env_state, length, record):
    """`length` steps of the deterministic policy a = tanh(mean); returns record(env_state, next_state) of each
    step, stacked over time (what evaluation scores and what --render draws)."""

    def step(env_state, _):
        mean, _ = actor.apply(actor_params, env_state.obs)
        next_state = env.step(env_state, jnp.tanh(mean))
        return next_state, record(env_state, next_state)

    return jax.lax.scan(step, env_state, None, length=length)[1]


def make_evaluate(args, env, actor):
    """One episode of the deterministic policy in each of num_eval_envs environments, fresh starts and goals.

    time_near_goal, the steps spent within the success radius of the goal, is the paper's score (Sec. 4.1);
    success is whether the goal was reached at all; dist_to_goal is the distance at the episode's end."""

    def evaluate(actor_params, key):
        record = lambda _, next_state: (next_state.dist_to_goal, next_state.done)
        env_state = env.reset(key, args.num_eval_envs)
        dist, done = deterministic_rollout(env, actor, actor_params, env_state, env.episode_length, record)
        alive = (jnp.cumsum(done, axis=0) - done) == 0  # (T, n) steps up to and including the episode's end
        near = (dist < env.success_radius) & alive
        final_dist = jnp.sum(dist * (done & alive), axis=0)
        time_near_goal = jnp.mean(jnp.sum(near, axis=0))
        return {
            "eval/time_near_goal": time_near_goal,
            "eval/time_near_goal_fraction": time_near_goal / env.episode_length,
            "eval/success": jnp.mean(jnp.any(near, axis=0)),
            "eval/dist_to_goal": jnp.mean(final_dist),
        }

    return evaluate


def log_line(metrics):
    shown = {k.split("/")[-1]: v for k, v in metrics.items() if isinstance(v, float) and not k.endswith("_std")}
    return ", ".join(f"{k} {v:.3g}" for k, v in shown.items())


def logged_metrics(run_dir):
    """run_dir's metrics.jsonl as a list of dicts ([] without it), less a line torn by a kill (only the last can be)."""
    path, logged = pathlib.Path(run_dir, "metrics.jsonl"), []
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            logged.append(json.loads(line))
    return logged


def make_render(env, actor, seed, num_episodes=3):
    """render(actor_params, path) -> path: brax's HTML viewer of num_episodes episodes of seed 0's deterministic
    policy (actor_params has a leading seed axis), from the starts and goals of key `seed` at every call."""

    @functools.partial(jax.jit, compiler_options=env.compiler_options)  # compiled at the first call
    def rollout(actor_params, key):
        record = lambda state, _: (jax.tree.map(lambda x: x[0], state.sim_state), state.obs[0, env.state_dim :])
        params, length = jax.tree.map(lambda x: x[0], actor_params), num_episodes * env.episode_length
        return deterministic_rollout(env, actor, params, env.reset(key, 1), length, record)

    def render(actor_params, path):
        from brax.io import html as brax_html  # needs jinja2: imported by runs that render, not by every run

        sim_states, goals = host_copy(rollout(actor_params, jax.random.PRNGKey(seed)))
        frames = [
            env.task.render_frame(jax.tree.map(operator.itemgetter(t), sim_states), g) for t, g in enumerate(goals)
        ]
        if jax.process_index() == 0:
            write_atomic(path, brax_html.render(env.task.render_system, frames).encode())
        return path

    return render


# The experiment (paper Sec. 4.5): the maze's corridor in path order from R; training pairs are (path[i],
# path[i + k]) for k = 1 .. max_train_gap, evaluation goes from R to path[max_train_gap + 1:], pairs no training
# episode ever had. Mazes that branch have no corridor to hold goals out along: for them, value maps only.


def maze_layout(env_id):
    """The MAZE_LAYOUTS name of a maze environment (ant_u4_maze_eval -> u4_maze); None if env_id is no maze."""
    name = env_id.removesuffix("_eval").split("_", 1)[-1]
    return name if name in MAZE_LAYOUTS else None


def path_distances(layout):
    """{free cell: its distance from R in cells, along the maze's corridors} (breadth-first search)."""
    free = set(maze_cells(layout, "R") + maze_cells(layout, "G") + maze_cells(layout, "."))
    distances = {cell: 0 for cell in maze_cells(layout, "R")}
    frontier = list(distances)
    while frontier:
        i, j = frontier.pop(0)
        for cell in [(i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)]:
            if cell in free and cell not in distances:
                distances[cell] = distances[(i, j)] + 1
                frontier.append(cell)
    return distances


def corridor_path(layout):
    """The free cells of a corridor maze in path order from R; None if the maze branches (or has cells that the
    path from R does not pass through)."""
    distances = path_distances(layout)
    path = sorted(distances, key=distances.get)
    return path if [distances[cell] for cell in path] == list(range(len(path))) else None


def stitching_pairs(path, max_train_gap):
    """Training (start, goal) cell pairs at most max_train_gap cells apart, and the held-out goals from R."""
    train = [(path[i], path[i + k]) for k in range(1, max_train_gap + 1) for i in range(len(path) - k)]
    return train, path[max_train_gap + 1 :]


class CellPairs:
    """A maze whose every reset draws a (start cell, goal cell) pair uniformly from `pairs`."""

    def __init__(self, maze, pairs):
        self.maze = maze
        self.pairs = jnp.array(pairs, dtype=jnp.float32) * maze.size  # (P, 2, 2) cell centres

    def __getattr__(self, name):  # everything else (step, state, rendering) is the maze's own
        return getattr(self.maze, name)

    def init(self, key):
        k_pair, k_init = jax.random.split(key)
        start, goal = self.pairs[jax.random.randint(k_pair, (), 0, len(self.pairs))]
        return self.maze.init(k_init, start, goal[None])


def pairs_env(args, pairs):
    env = GoalEnv(args.env_id, args.episode_length)
    env.task = CellPairs(env.task, pairs)
    return env


def heldout_envs(args, path, held_out):
    """One evaluation environment per held-out goal cell, each starting at R."""
    return [pairs_env(args, [(path[0], goal)]) for goal in held_out]


def make_heldout_evaluate(args, actor, path, held_out):
    """evaluate(actor_params, key) -> {metric: (G,)}: make_evaluate's metrics from R to each held-out goal."""
    evaluates = [make_evaluate(args, env, actor) for env in heldout_envs(args, path, held_out)]

    def evaluate(actor_params, key):
        per_goal = [ev(actor_params, jax.random.fold_in(key, g)) for g, ev in enumerate(evaluates)]
        return jax.tree.map(lambda *m: jnp.stack(m), *per_goal)

    return evaluate


def value_map_grid(layout, size, per_cell):
    """(H, W, 2) xy at pixel centres over the whole layout; pixel (r, c) lies in cell (r // per_cell, c // per_cell),
    whose centre is (i * size, j * size): rows of the layout run along x, columns along y."""
    offsets = (np.arange(per_cell) + 0.5) / per_cell * size - size / 2
    rows, cols = len(MAZE_LAYOUTS[layout]), len(MAZE_LAYOUTS[layout][0])
    x = (np.arange(rows)[:, None] * size + offsets).reshape(-1)
    y = (np.arange(cols)[:, None] * size + offsets).reshape(-1)
    return np.stack(np.meshgrid(x, y, indexing="ij"), -1).astype(np.float32)


def make_value_map(args, env):
    """f(s, pi(s, g), g) = -||phi(s, a) - psi(g)|| with a = tanh(mean) at every grid position (paper Fig. 5).

    s is a start state with its first two numbers, the xy of the point or torso, moved to the grid position."""
    sa_encoder, g_encoder, actor = make_networks(args, env)

    def value_map(params, state, goal, grid):
        states = jnp.broadcast_to(state, grid.shape[:2] + state.shape).at[..., :2].set(grid).reshape(-1, len(state))
        goals = jnp.broadcast_to(goal, (states.shape[0], len(goal)))
        mean, _ = actor.apply(params["actor"], jnp.concatenate([states, goals], -1))
        phi = sa_encoder.apply(params["critic"]["sa_encoder"], jnp.concatenate([states, jnp.tanh(mean)], -1))
        psi = g_encoder.apply(params["critic"]["g_encoder"], goal[None])
        return -jnp.linalg.norm(phi - psi, axis=-1).reshape(grid.shape[:2])

    return jax.jit(value_map)


def plot_value_map(values, layout, size, per_cell, start, goal, title, path):
    walls = np.kron(np.array([[c == "#" for c in row] for row in MAZE_LAYOUTS[layout]]), np.ones((per_cell, per_cell)))
    extent = (-size / 2, (walls.shape[1] / per_cell - 0.5) * size, (walls.shape[0] / per_cell - 0.5) * size, -size / 2)
    fig, ax = plt.subplots(figsize=(5, 4.4))
    image = ax.imshow(np.where(walls, np.nan, values), extent=extent, cmap="viridis")
    ax.imshow(np.where(walls, 1.0, np.nan), extent=extent, cmap="Greys", vmin=0, vmax=1.5)
    ax.plot(start[1], start[0], "o", ms=12, mfc="white", mec="black", label="start")
    ax.plot(goal[1], goal[0], "*", ms=18, mfc="red", mec="black", label="goal")
    ax.set(title=title, xlabel="y", ylabel="x")
    ax.legend(loc="lower right", fontsize=8)
    fig.colorbar(image, ax=ax, label="f(s, π(s, g), g)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_stitching(results, path):
    """Grouped bars: held-out goal x depth, mean over seeds with their standard deviation."""
    depths = list(results["depths"])
    goals = results["held_out_goals"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(depths)
    for ax, metric, label in [(axes[0], "success", "success rate"), (axes[1], "time_near_goal", "time near goal")]:
        for d, depth in enumerate(depths):
            per_goal = results["depths"][depth]["goals"]
            mean = [np.mean(per_goal[g["name"]][metric]) for g in goals]
            std = [np.std(per_goal[g["name"]][metric]) for g in goals]
            ax.bar(
                np.arange(len(goals)) + (d - (len(depths) - 1) / 2) * width,
                mean,
                width,
                yerr=std,
                capsize=3,
                label=f"depth {depth}",
            )
        ax.set_xticks(np.arange(len(goals)), [f"{g['name']}\n{g['cells_from_start']} cells from R" for g in goals])
        ax.set(ylabel=label, xlabel="held-out goal cell")
    axes[0].set_ylim(0, 1.05)
    axes[1].set_ylim(0, results["episode_length"])
    axes[0].legend()
    seeds = sorted({len(v["seeds"]) for v in results["depths"].values()})
    fig.suptitle(
        f"{results['env_id']}: trained on pairs <= {results['max_train_gap']} cells apart; "
        f"error bars: std over {'/'.join(map(str, seeds))} seeds"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ==== MAIN ====
def main():
    """The experiment (paper Sec. 4.5): one CRL agent per depth trained on the short corridor pairs, then every
    agent evaluated from R on the held-out goals, with a value map per depth (Sec. 4.4) and the figures."""
    args = parse_args()
    check_args(args)
    use_all_devices("data")
    if args.from_runs:  # the runs say which maze and episode length they were made on (one of each: checked)
        saved = json.loads(pathlib.Path(args.from_runs[0], "args.json").read_text())
        args.env_id, args.episode_length = saved["env_id"], saved["episode_length"]
    maze = ENVIRONMENTS[args.env_id].make()
    args.episode_length = args.episode_length or ENVIRONMENTS[args.env_id].episode_length
    path, distances = corridor_path(maze.layout), path_distances(maze.layout)
    start, far = maze_cells(maze.layout, "R")[0], max(distances, key=distances.get)  # the value maps' start and goal
    train_pairs, held_out = stitching_pairs(path, args.max_train_gap) if path else ([], [])
    run_dir = open_run_dir(args)
    stop = StopSignals(run_dir)  # SIGTERM, Ctrl-C: the sweep ends after the epoch under way, its files written
    if path:
        print(
            f"{run_dir}: {args.env_id}, corridor {path}\n"
            f"training pairs: {len(train_pairs)} (start, goal) cell pairs 1 to {args.max_train_gap} cells apart; "
            f"held-out goals from R {start}: {held_out}"
        )
    else:
        print(
            f"{run_dir}: {args.env_id} branches, so no goal can be held out along a corridor: value maps only, "
            f"from R {start} to the farthest cell {far} ({distances[far]} cells along the maze)"
        )

    # TRAIN one agent per depth (or load the agents of --from-runs)
    if args.from_runs:
        agents = saved_agents(args)
    else:
        agents = {}
        for depth in args.depths:
            depth_args = dataclasses.replace(args, actor_num_blocks=depth // 4, critic_num_blocks=depth // 4)
            depth_dir = os.path.join(run_dir, f"depth{depth}")
            params = train_depth(depth_args, depth_dir, path, train_pairs, held_out, stop)
            agents[depth] = [(depth_args, params)]

    # EVALUATE every agent on the held-out goals with a fresh key, and draw its value map
    results = {
        "env_id": args.env_id,
        "max_train_gap": args.max_train_gap,
        "episode_length": args.episode_length,
        "corridor": path,
        "train_pairs": train_pairs,
        "held_out_goals": [
            {"name": f"({i}, {j})", "cell": [i, j], "cells_from_start": path.index((i, j))} for i, j in held_out
        ],
        "value_map": {"start": start, "goal": far, "cells_from_start": distances[far]},
        "depths": {},
    }
    per_cell = 12
    grid = value_map_grid(maze.layout, maze.size, per_cell)
    start_env = pairs_env(args, [(start, far)])  # the value maps' start state and goal: R and the farthest cell
    start_obs = start_env.reset(jax.random.PRNGKey(args.seed), 1).obs[0]
    state, goal = start_obs[: start_env.state_dim], start_obs[start_env.state_dim :]
    goal = goal.at[:2].set(jnp.array(far, dtype=jnp.float32) * maze.size)
    for depth, runs in agents.items():
        entry = {"source": list(args.from_runs) or [os.path.join(run_dir, f"depth{depth}")], "seeds": [], "goals": {}}
        for run_args, params in runs if held_out else []:  # a branching maze has no held-out goals
            actor = make_networks(run_args, start_env)[2]
            evaluate = jax.jit(jax.vmap(make_heldout_evaluate(run_args, actor, path, held_out)))
            seeds = jnp.arange(run_args.num_seeds) + run_args.seed
            metrics = jax.device_get(evaluate(params["actor"], jax.vmap(jax.random.PRNGKey)(seeds + 10_000)))
            entry["seeds"] += seeds.tolist()
            for g, name in enumerate(h["name"] for h in results["held_out_goals"]):
                goal_entry = entry["goals"].setdefault(name, {"success": [], "time_near_goal": []})
                goal_entry["success"] += metrics["eval/success"][:, g].tolist()
                goal_entry["time_near_goal"] += metrics["eval/time_near_goal"][:, g].tolist()
        results["depths"][str(depth)] = entry
        run_args, params = runs[0]
        first_seed = jax.tree.map(lambda x: x[0], params)
        values = np.asarray(make_value_map(run_args, start_env)(first_seed, state, goal, grid))
        title = f"{args.env_id}, depth {depth}, seed {run_args.seed}"
        figure = os.path.join(run_dir, f"value_map_depth{depth}.png")
        plot_value_map(
            values, maze.layout, maze.size, per_cell, np.asarray(state[:2]), np.asarray(goal[:2]), title, figure
        )
        cells = values.reshape(len(values) // per_cell, per_cell, -1, per_cell).mean(axis=(1, 3))
        # the mean value of each free cell, in order of distance from R (the map's seed only)
        entry["value_per_cell"] = {f"({i}, {j})": float(cells[i, j]) for i, j in sorted(distances, key=distances.get)}
        if held_out:
            summary = ", ".join(f"{name} {np.mean(v['success']):.2f}" for name, v in entry["goals"].items())
            print(f"depth {depth}: held-out success per goal (mean of {len(entry['seeds'])} seeds): {summary}")
    write_atomic(os.path.join(run_dir, "stitching.json"), json.dumps(results, indent=2).encode())
    if held_out:
        plot_stitching(results, os.path.join(run_dir, "stitching.png"))
    figures = ("stitching.png, " if held_out else "") + f"value_map_depth{{{','.join(map(str, agents))}}}.png"
    print(f"wrote {run_dir}/stitching.json, {figures}")


def train_depth(args, depth_dir, path, train_pairs, held_out, stop):
    """crl_resnet.py's run for one depth, on the training pairs, evaluated on the held-out goals after every epoch.

    depth_dir holds what a crl_resnet.py run writes (args.json, metrics.jsonl, checkpoints, final.msgpack), so a
    killed sweep resumes where it stopped and --from-runs can read it. Returns the final parameters (all seeds)."""
    final_path = os.path.join(depth_dir, "final.msgpack")
    if os.path.isfile(final_path):  # trained before this sweep was resumed
        return flax.serialization.msgpack_restore(pathlib.Path(final_path).read_bytes())
    if stop.agreed():  # a stop signal in the depth before: this one is not started
        print(
            f"stopped by {stop.received} before depth {4 * args.critic_num_blocks}: continue with --resume {stop.run_dir}"
        )
        sys.exit(0)
    env = pairs_env(args, train_pairs)
    try:
        os.makedirs(depth_dir, exist_ok=True)
    except OSError as e:
        fail(f"cannot create {depth_dir}: {e.strerror or e}", status=1)
    depth_args = dataclasses.asdict(args) | {"num_blocks": args.critic_num_blocks}
    write_atomic(os.path.join(depth_dir, "args.json"), json.dumps(depth_args, indent=2).encode())

    name = f"{os.path.basename(os.path.normpath(os.path.dirname(depth_dir)))}__{os.path.basename(depth_dir)}"
    wandb = start_wandb(args, depth_dir, name) if args.track else None

    init, prefill, epoch, actor = make_train(args, env)
    evaluate = make_heldout_evaluate(args, actor, path, held_out)
    seeds = jnp.arange(args.num_seeds) + args.seed
    rs = jax.vmap(lambda s: init(jax.random.PRNGKey(s)))(seeds)
    eval_keys = jax.vmap(jax.random.PRNGKey)(seeds)
    mesh = jax.sharding.get_mesh()
    shardings = device_shardings(rs, mesh, "data")
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())  # the epoch's metrics
    rs, n, options = jax.device_put(rs, shardings), args.num_seeds, env.compiler_options  # options: XLA flags
    compile_start = time.time()  # the runner state is donated: each program updates it in place
    prefill_fn = jax.jit(over_seeds(prefill, n), donate_argnums=0, out_shardings=shardings).lower(rs).compile(options)
    epoch_fn = jax.jit(over_seeds(epoch, n), donate_argnums=0, out_shardings=(shardings, replicated))
    epoch_fn = epoch_fn.lower(rs).compile(options)
    evaluate_fn = jax.jit(over_seeds(evaluate, n)).lower(rs.actor_params, eval_keys).compile(options)
    label = f"depth {4 * args.critic_num_blocks}"
    print(f"{label}: compiled in {time.time() - compile_start:.1f} s (prefill, one epoch, evaluation)")

    checkpoints = Checkpoints(depth_dir)  # depth{D}/checkpoints/{epoch}, through orbax
    restored = checkpoints.restore(rs) if args.resume else None  # None: no checkpoint yet, start afresh
    rs, first_epoch, best_score = restored or (prefill_fn(rs), 0, -math.inf)

    steps, label = schedule(args).total_steps, f"{label}, epoch"
    log = RunLog(
        args, depth_dir, stop, wandb, epoch=first_epoch, env_steps=int(rs.env_steps[0]), total=steps, label=label
    )
    for epoch_index in range(first_epoch + 1, args.num_epochs + 1):
        if stop.agreed():  # the epochs so far are written; --resume continues the sweep
            break
        rs, train_metrics = wait_until_ready(epoch_fn(rs))
        eval_epoch_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_keys, epoch_index)
        eval_metrics = jax.device_get(evaluate_fn(rs.actor_params, eval_epoch_keys))  # {metric: (seeds, goals)}
        metrics = {k: float(np.mean(v)) for k, v in jax.device_get(train_metrics).items()}
        metrics |= {k: float(np.mean(v)) for k, v in eval_metrics.items()}  # over seeds and goals
        if args.num_seeds > 1:  # each seed's mean over the goals, for tools/plot_runs.py's intervals
            metrics |= {f"{k}_per_seed": np.mean(v, axis=1).tolist() for k, v in eval_metrics.items()}
        for g, goal in enumerate(held_out):  # one key per held-out goal
            metrics |= {f"{k}_{goal[0]}_{goal[1]}": float(np.mean(v[:, g])) for k, v in eval_metrics.items()}
        metrics |= {"epoch": epoch_index, **log.progress_metrics(int(rs.env_steps[0]))}
        checkpoints.wait()  # the last epoch's checkpoint is whole (a write that failed ends the run in one line)
        log.check(epoch_index, metrics)  # a non-finite loss stops the run here, with that checkpoint kept
        improved = metrics[SCORE] > best_score  # checkpoint_best: the best evaluation so far
        best_score = max(best_score, metrics[SCORE])
        if args.save_model:  # orbax copies the state off the devices now, and writes it while the next epoch runs
            checkpoints.save(epoch_index, rs, improved=improved, best_score=best_score, metrics=metrics)
        log.append(epoch_index, metrics)  # the epoch's line of metrics.jsonl, wandb and the console
    checkpoints.wait()
    log.close()  # after a stop signal, with epochs left, says how to resume and exits
    params = jax.device_get(checkpoint_params(rs))
    write_atomic(final_path, flax.serialization.to_bytes(params))  # always: it marks the depth as done
    if args.render:  # seed 0 from R to the farthest held-out goal
        far_env = pairs_env(args, [(path[0], held_out[-1])])
        make_render(far_env, actor, args.seed)(params["actor"], os.path.join(depth_dir, "render.html"))
    return params


def saved_agents(args):
    """--from-runs: {depth: [(run args, parameters with a leading seed axis), ...]} of crl_resnet.py runs."""
    agents = {}
    for run in args.from_runs:
        saved = json.loads(pathlib.Path(run, "args.json").read_text())
        name = "final.msgpack" if os.path.isfile(os.path.join(run, "final.msgpack")) else "checkpoint_best.msgpack"
        params = flax.serialization.msgpack_restore(pathlib.Path(run, name).read_bytes())
        fields = ["width", "repr_dim", "actor_num_blocks", "critic_num_blocks", "remat", "seed", "num_seeds"]
        fields += ["scan_unroll", "compute_dtype"]  # absent from runs made before these flags existed
        run_args = dataclasses.replace(args, **{k: saved[k] for k in fields if k in saved})
        agents.setdefault(4 * saved["critic_num_blocks"], []).append((run_args, params))
    return dict(sorted(agents.items()))


# ==== RUN PLUMBING ====
# Skip on a first read. As main() calls it: --resume, stop signals, wandb, checkpoints, the log.


RESUME_MAY_CHANGE = {"track", "wandb_project_name", "wandb_entity", "wandb_mode", "render", "render_every", "resume"}
RESUME_MAY_CHANGE |= {"devices_split"}  # a checkpoint is restored onto any devices
HEARTBEAT_S = 60  # a process silent this long is dead to jax.distributed's coordination service
WRITE_TIMEOUT_S = 1200  # how long the processes wait for each other's shards of a checkpoint (orbax's default)


def parse_args():
    """tyro.cli with the environment's PRESETS as defaults; --resume runs/NAME loads that run's flags instead."""
    given = {}
    for i, arg in enumerate(sys.argv):
        for option in ["--resume", "--env-id"]:
            if arg == option and i + 1 < len(sys.argv):
                given[option] = sys.argv[i + 1]
            elif arg.startswith(option + "="):
                given[option] = arg.split("=", 1)[1]
    resume = given.get("--resume")
    if resume is None:
        return tyro.cli(Args, default=Args(**PRESETS.get(given.get("--env-id", Args.env_id), {})))
    saved_path = os.path.join(resume, "args.json")
    if not os.path.isfile(saved_path):
        fail(f"--resume {resume} is not a run directory (no args.json); give runs/NAME of an earlier run")
    with open(saved_path) as f:
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in json.load(f).items()}  # tyro gives tuples
    if not saved.get("save_model", True):
        fail(f"--resume {resume}: that run was made with --no-save-model, so it has no checkpoint to continue from")
    args = tyro.cli(Args, default=Args(**{k: v for k, v in saved.items() if k in Args.__dataclass_fields__}))
    for name, value in saved.items():
        if name not in RESUME_MAY_CHANGE and getattr(args, name, value) != value:
            fail(
                f"{flag(name)} {getattr(args, name)} differs from the run in {resume} ({value}); "
                "a resumed run keeps the flags it was started with"
            )
    return args


def open_run_dir(args):
    """runs/{env_id}__{exp_name}__{seed}__{unix time} with args.json, or the run --resume continues (less .tmp)."""
    if args.resume:
        for partial in pathlib.Path(args.resume).glob("**/*.tmp") if jax.process_index() == 0 else []:
            with contextlib.suppress(OSError):  # one that cannot go is overwritten by the next write
                partial.unlink()
        return args.resume
    stamp = multihost_utils.broadcast_one_to_all(np.int32(time.time()))  # process 0's, for every process
    run_dir = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(stamp)}"
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        fail(f"cannot create the run directory {run_dir}: {e.strerror or e}", status=1)
    if jax.process_index() == 0:
        write_atomic(os.path.join(run_dir, "args.json"), json.dumps(dataclasses.asdict(args), indent=2).encode())
    return run_dir


def write_atomic(path, data):
    """Write-then-rename: a kill leaves the old file or the new; a failed write (a full disk) is a one-line error."""
    try:
        with open(path + ".tmp", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
    except OSError as e:
        pathlib.Path(path + ".tmp").unlink(missing_ok=True)
        kept = "; the file there before is intact" if os.path.exists(path) else ""
        fail(f"cannot write {path}: {e.strerror or e}{kept}", status=1)


class StopSignals:
    """How a run ends early, its files whole: SIGTERM (a cluster's preemption notice) or Ctrl-C ends it after the epoch
    (a second at once); with several processes, one that dies or stops answering ends the others in one line."""

    def __init__(self, run_dir):
        self.received, self.noted, self.run_dir = None, 0, run_dir
        for stop in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop, self.note)
        if jax.process_count() > 1:
            self.ending, self.watcher = threading.Event(), threading.Thread(target=self.watch, daemon=True)
            self.watcher.start()
            atexit.register(self.end_together)
            hook = sys.excepthook  # a failed collective may be a dead process: watch() names it first, in one line
            sys.excepthook = lambda *error: (time.sleep(HEARTBEAT_S + 20), hook(*error))

    def note(self, signum, _frame):
        self.noted, name = signum, signal.Signals(signum).name
        for stop in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop, signal.SIG_DFL)
        stopping = f"\n{name}: stopping once this epoch is written; {name} again stops at once\n"
        os.write(sys.stdout.fileno(), stopping.encode())  # unbuffered: a print may be what was interrupted

    def agreed(self):
        """Whether the run stops now: a signal to this process, or with several to any (all stop after one epoch)."""
        noted = host_copy(np.array([self.noted]))  # every process's
        if noted.any() and not self.received:
            first = int(np.argmax(noted > 0))
            self.received = signal.Signals(noted[first]).name + (f" to process {first}" if len(noted) > 1 else "")
        return self.received is not None

    def watch(self):
        """Every 10 s the processes ask jax.distributed which of them live; the others name a dead one, and exit 1."""
        while not self.ending.wait(10):
            try:
                with multihost_utils.live_devices(jax.devices()) as alive:
                    dead = set(range(jax.process_count())) - {device.process_index for device in alive}
            except multihost_utils.ProcessFailureError as e:
                dead = {device.process_index for device in e.failed_devices}
            except Exception:  # noqa: BLE001 (a query that failed: asked again in 10 s)
                dead = set()
            if dead and not self.ending.is_set():
                dead = ", ".join(map(str, sorted(dead)))
                epochs = checkpoint_epochs(self.run_dir)
                kept = f"its last whole checkpoint is epoch {max(epochs)}" if epochs else "it has no checkpoint yet"
                resume = f"continue with --resume {self.run_dir} (on any number of processes)"
                tqdm.tqdm.write(f"error: process {dead} stopped answering; run stopped, {kept}: {resume}", sys.stderr)
                os._exit(1)

    def end_together(self):  # at exit, all at once (watch() takes one gone for dead), process 0 last (it hosts JAX's)
        with contextlib.suppress(Exception):
            wait_for_every_process("end")  # watch() still names a process that dies before it gets here
            self.ending.set()
            if jax.process_index() > 0:
                return jax.distributed.shutdown()
            self.watcher.join()
            with multihost_utils.live_devices(jax.devices()):  # a barrier of those not gone yet: waits for them
                pass


def start_wandb(args, run_dir, name=None):
    """--track: a wandb run named after the run directory and resumed with it (process 0's), or a one-line error."""
    if jax.process_index() > 0:
        return None
    import wandb

    name = name or os.path.basename(os.path.normpath(run_dir))
    where = {"project": args.wandb_project_name, "entity": args.wandb_entity, "mode": args.wandb_mode, "dir": run_dir}
    try:
        wandb.init(**where, name=name, id=name, resume="allow", config=dataclasses.asdict(args))
    except Exception as e:  # noqa: BLE001 (wandb's own error, in one line)
        fail(f"--track: wandb did not start ({str(e).strip().splitlines()[0]}); --wandb-mode offline needs no network")
    return wandb


def wait_for_every_process(name):  # jax.distributed's barrier: it waits, where gloo gives up in 30 s
    ocp.multihost.sync_global_processes(name, timeout=24 * 3600, processes=set(range(jax.process_count())))


def checkpoint_epochs(run_dir):  # those whose checkpoint orbax has committed, whole
    path = os.path.join(run_dir, "checkpoints")
    return ocp.utils.checkpoint_steps(path) if os.path.isdir(path) else []


class Checkpoints:
    """The runner state after every epoch in runs/NAME/checkpoints/{epoch}, through orbax: every process writes its
    shards while the next epoch trains, the last two are kept, and a kill leaves whole ones only; then the networks of
    the best epoch in checkpoint_best.msgpack, one file for one process (docs/crl_resnet.md#checkpoints)."""

    def __init__(self, run_dir, write=True):  # write=False: read alone, leaving a training run's writes be
        self.run_dir, self.path = run_dir, os.path.abspath(os.path.join(run_dir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(max_to_keep=2, cleanup_tmp_directories=write, read_only=not write)
        options.async_options = ocp.AsyncOptions(timeout_secs=WRITE_TIMEOUT_S)
        self.manager = ocp.CheckpointManager(self.path, options=options)
        self.epoch, self.best_networks = None, None  # the checkpoint being written, and its networks if the best

    def save(self, epoch, rs, **meta):
        """Starts writing; returns once orbax has copied the state off the devices. meta: what restore() reads."""
        meta["metrics"] = json.dumps(meta["metrics"])  # as metrics.jsonl holds it
        state = ocp.args.PyTreeSave(jax.tree.map(lambda x: x if x.size else None, rs))  # orbax keeps no empty arrays
        self.manager.save(epoch, args=ocp.args.Composite(state=state, meta=ocp.args.JsonSave(meta)))
        self.epoch, self.best_networks = epoch, host_copy(checkpoint_params(rs)) if meta["improved"] else None

    def wait(self):
        """Waits for the write under way (a failed one is a one-line error), then writes its checkpoint_best."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 (the file system's error, through orbax, in one line)
            kept = [epoch for epoch in checkpoint_epochs(self.run_dir) if epoch < self.epoch]
            kept = f"the checkpoint of epoch {max(kept)} is whole" if kept else "no checkpoint was written before"
            fail(f"cannot write {self.path}/{self.epoch}: {reason(e)}; {kept}", status=1)
        if self.best_networks is not None and jax.process_index() == 0:
            write_atomic(f"{self.run_dir}/checkpoint_best.msgpack", flax.serialization.to_bytes(self.best_networks))
        self.best_networks = None

    def read(self, epoch, like):
        """(state, meta) of `epoch`: like's fields of the runner state, on like's devices (or this process's first)."""
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        where = lambda x: getattr(x, "sharding", None) or device
        saved = jax.tree.map(lambda x: x if x.size else None, like)  # as save() left out MJX's empty arrays
        restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=where(x)), saved)
        try:
            state = ocp.args.PyTreeRestore(saved, restore_args=restore_args, partial_restore=True)
            restored = self.manager.restore(epoch, args=ocp.args.Composite(state=state, meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 (orbax's error, in one line)
            fail(f"cannot read {self.path}/{epoch} as this run's checkpoint: {reason(e)}", status=1)
        read = iter(jax.tree.leaves(restored.state))
        empty = lambda x: jax.device_put(np.zeros(x.shape, x.dtype), where(x))
        return jax.tree.map(lambda x: next(read) if x.size else empty(x), like), restored.meta

    def restore(self, like):
        """(rs, epoch, best score) of the last checkpoint, on like's devices (any number, in any processes), or None;
        metrics.jsonl is cut back to its epoch (and given its line), so the epochs after it are run and logged again."""
        epoch, metrics_path = self.manager.latest_step(), os.path.join(self.run_dir, "metrics.jsonl")
        if epoch is None and list(pathlib.Path(self.run_dir).glob("checkpoint_last*.npz")):  # its metrics stay
            fail(f"{self.run_dir} was checkpointed before these scripts used orbax: finish it with that version", 1)
        if epoch is None:
            print(f"{self.run_dir} has no checkpoint yet: starting it afresh with its saved flags")
            if jax.process_index() == 0:
                write_atomic(metrics_path, b"")
            return None
        rs, meta = self.read(epoch, like)
        kept = [json.dumps(m) for m in logged_metrics(self.run_dir) if m["epoch"] < epoch]  # as append() wrote them
        if jax.process_index() == 0:
            write_atomic(metrics_path, "".join(line + "\n" for line in [*kept, meta["metrics"]]).encode())
        if meta["improved"]:  # checkpoint_best comes after its checkpoint: a kill may have come in between
            self.best_networks = host_copy(checkpoint_params(rs))
            self.wait()
        print(f"resumed {self.run_dir} after epoch {epoch} ({json.loads(meta['metrics'])[STEPS]} {STEPS[9:]})")
        return rs, epoch, meta["best_score"]


def reason(error):  # an error of orbax (or of tensorstore, which writes for it) in a few words
    code = re.search(r"os_error_code='?(\d+)", str(error))
    return os.strerror(int(code.group(1))) if code else str(error).strip().splitlines()[0][:300]


class RunLog:
    """What process 0 shows and keeps of every epoch (the last done: `epoch`): the console, metrics.jsonl, wandb."""

    def __init__(self, args, run_dir, stop, wandb, epoch, env_steps, total, label="epoch"):
        self.args, self.run_dir, self.stop, self.wandb = args, run_dir, stop, wandb
        self.epoch, self.label, self.start = epoch, label, (time.time(), env_steps)
        hide = jax.process_index() > 0
        self.progress = tqdm.tqdm(total=total, initial=env_steps, unit="step", unit_scale=True, disable=hide)

    def progress_metrics(self, env_steps):
        elapsed = time.time() - self.start[0]
        return {STEPS: env_steps, "training/sps": (env_steps - self.start[1]) / elapsed, "training/walltime": elapsed}

    def check(self, epoch_index, metrics):  # a non-finite loss stops the run here, before its epoch is written
        bad = [k for k, v in metrics.items() if k.startswith("losses/") and not np.all(np.isfinite(v))]
        if bad:
            self.progress.close()
            kept = f"the last good checkpoint (epoch {self.epoch}) is kept in {self.run_dir}/checkpoints"
            kept = kept if self.args.save_model and self.epoch else "no checkpoint had been written yet"
            fail(f"{bad[0]} is not finite in epoch {epoch_index}; run stopped, {kept}", status=1)

    def append(self, epoch_index, metrics):
        """The epoch's line at the end of metrics.jsonl, on wandb, and on the console under the progress bar."""
        self.epoch, path = epoch_index, os.path.join(self.run_dir, "metrics.jsonl")
        try:
            with open(path, "a") if jax.process_index() == 0 else io.StringIO() as f:
                f.write(json.dumps(metrics) + "\n")
        except OSError as e:
            fail(f"cannot write {path}: {e.strerror or e}", status=1)
        if self.wandb:
            self.wandb.log(metrics, step=metrics[STEPS])
        self.progress.update(metrics[STEPS] - self.progress.n)
        self.progress.write(f"{self.label} {epoch_index}: {log_line(metrics)}")

    def render(self, path, epoch_index, key="render"):  # also to wandb under `key`: a slider over steps
        if self.wandb:
            self.wandb.log({key: self.wandb.Html(pathlib.Path(path).read_text())}, step=self.progress.n)
        self.progress.write(f"{self.label} {epoch_index}: wrote {path}")

    def close(self):  # after a stop signal, with epochs left: says how to resume, and exits
        self.progress.close()
        if self.wandb:
            self.wandb.finish()
        if self.stop.received and self.epoch < self.args.num_epochs:
            stopped = f"stopped by {self.stop.received} after {self.label} {self.epoch}"
            print(f"{stopped}: continue with --resume {self.run_dir}")
            sys.exit(0)


# ==== ENVIRONMENTS ====
# Skip on a first read. Every environment is goal-conditioned: observation = concat(state, goal), goal =
# state[goal_indices] of a target state, re-sampled at every reset (automatic resets included). `GoalEnv` is what
# the method sees: batched environments with time limits and automatic resets. Below it, the tasks it steps (a
# point in a maze, brax's arms and robots, MJX's Panda arm) and their registry, ENVIRONMENTS, at the end.


@flax.struct.dataclass
class EnvState:
    sim_state: Any  # (n, ...) simulator state of each environment (the task's own pytree)
    obs: jax.Array  # (n, state_dim + goal_dim) concat(state, goal)
    steps: jax.Array  # (n,) steps since the last reset
    traj_id: jax.Array  # (n,) counts resets: consecutive steps with equal ids belong to one trajectory
    done: jax.Array  # (n,) the episode ended at this step (time limit or termination); obs is already reset
    dist_to_goal: jax.Array  # (n,) ||state[goal_indices] - goal|| after this step, before any reset
    key: jax.Array
    first: Any = None  # (sim_state, obs) of the first reset, which every reset restores when goals are fixed


class GoalEnv:
    """n environments of one registry entry, batched, with a time limit and automatic resets: reset(key, n) ->
    EnvState, step(env_state, (n, action_dim) actions) -> EnvState. Every reset draws a fresh start and goal, or,
    with fixed_goals, restores each environment's first ones (brax's AutoResetWrapper in the paper's code)."""

    def __init__(self, env_id, episode_length=None, fixed_goals=False):
        spec = ENVIRONMENTS[env_id]
        self.fixed_goals = fixed_goals
        self.task = spec.make()
        self.state_dim, self.goal_indices = spec.state_dim, jnp.array(spec.goal_indices)
        self.goal_dim, self.action_dim = len(spec.goal_indices), self.task.action_dim
        self.obs_dim = self.state_dim + self.goal_dim
        self.success_radius = spec.success_radius
        self.episode_length = episode_length or spec.episode_length
        # XLA options for every program that steps this environment: `jax.jit(f).lower(...).compile(options)`
        self.compiler_options = known_compiler_options(getattr(self.task, "compiler_options", {}))
        # automatic resets as a select, not a lax.cond on done.any(): a GPU copies a conditional's predicate to the
        # host and waits for it, every step. A CPU does not, and there a cond that skips sampling fresh goals at
        # steps where no episode ends is cheaper (docs/performance.md#automatic-resets); a stored first state costs nothing.
        self.reset_select = fixed_goals or jax.default_backend() != "cpu"

    def _fresh(self, key, n):
        sim_state, goal = jax.vmap(self.task.init)(jax.random.split(key, n))
        return sim_state, jnp.concatenate([jax.vmap(self.task.state)(sim_state), goal], axis=-1)

    def reset(self, key, n):
        key, reset_key = jax.random.split(key)
        sim_state, obs = self._fresh(reset_key, n)
        zeros = jnp.zeros((n,), dtype=jnp.int32)
        first = jax.tree.map(jnp.copy, (sim_state, obs)) if self.fixed_goals else None  # own buffers: donated apart
        return EnvState(sim_state, obs, zeros, zeros, zeros.astype(bool), jnp.zeros((n,)), key, first)

    def step(self, env_state, action):
        sim_state = jax.vmap(self.task.step)(env_state.sim_state, action)
        state = jax.vmap(self.task.state)(sim_state)
        goal = env_state.obs[:, self.state_dim :]
        dist_to_goal = jnp.linalg.norm(state[:, self.goal_indices] - goal, axis=-1)
        steps = env_state.steps + 1
        done = (steps >= self.episode_length) | jax.vmap(self.task.terminated)(sim_state)
        obs = jnp.concatenate([state, goal], axis=-1)
        key, reset_key = jax.random.split(env_state.key)

        def reset_done(_):  # environments whose episode ended take a reset state
            fresh = env_state.first if self.fixed_goals else self._fresh(reset_key, done.shape[0])
            pick = lambda new, old: jnp.where(done.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)
            return jax.tree.map(pick, fresh, (sim_state, obs))

        if self.reset_select:
            sim_state, obs = reset_done(None)
        else:
            sim_state, obs = jax.lax.cond(done.any(), reset_done, lambda _: (sim_state, obs), None)
        steps = jnp.where(done, 0, steps)
        return EnvState(sim_state, obs, steps, env_state.traj_id + done, done, dist_to_goal, key, env_state.first)


def known_compiler_options(options):
    """options without those the installed jaxlib does not know: an unknown option fails every compile that is given
    it, and jaxlib drops options between versions (0.11 removed xla_cpu_use_fusion_emitters)."""
    program = jax.jit(lambda x: x).lower(0.0)

    def known(name, value):
        try:
            program.compile({name: value})
        except jax.errors.JaxRuntimeError as e:
            if "No such compile option" not in str(e):
                raise  # a known option with a bad value is our error
            return False
        return True

    return {name: value for name, value in options.items() if known(name, value)}


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """A registry entry: how to build the task, where its goal lives in the state, when it counts as reached."""

    make: Callable[[], Any]  # builds the task (a Task)
    state_dim: int
    goal_indices: tuple  # which state entries the goal specifies
    success_radius: float  # "near the goal" when ||state[goal_indices] - goal|| < success_radius
    episode_length: int
    fixed_goals: bool = True  # the benchmark's protocol in training (see GoalEnv); False for our point mazes


MAZE_LAYOUTS = {  # '#' wall, 'R' start, 'G' goal cell, '.' free; cell (i, j) is centred at (i * size, j * size)
    "u_maze": ["#####", "#RGG#", "###G#", "#GGG#", "#####"],
    "u4_maze": ["#####", "#GGG#", "#R#G#", "###G#", "#G#G#", "#GGG#", "#####"],
    "u5_maze": ["########", "#GGGGGG#", "#R####G#", "######G#", "#G####G#", "#GGGGGG#", "########"],
    "big_maze": [
        "########",
        "#RG##GG#",
        "#GG#GGG#",
        "##GGG###",
        "#GG#GGG#",
        "#G#GG#G#",
        "#GGG#GG#",
        "########",
    ],
    "hardest_maze": [
        "############",
        "#RGGG#GGGGG#",
        "#G##G#G#G#G#",
        "#GGGGGG#GGG#",
        "#G####G###G#",
        "#GG#G#GGGGG#",
        "##G#G#G#G###",
        "#GG#GGG#GGG#",
        "############",
    ],
}
MAZE_EVAL_GOALS = {  # the far cells that the `_eval` variants restrict goals to: the paper's code's splits
    "u_maze": [(3, 1), (3, 2), (3, 3)],
    "u4_maze": [(4, 1), (5, 1), (5, 2), (5, 3)],
    "u5_maze": [(4, 1), (4, 6)] + [(5, j) for j in range(1, 7)],
    "big_maze": [(1, 5), (1, 6), (2, 6), (5, 3), (5, 6), (6, 2), (6, 3), (6, 5), (6, 6)],  # the humanoid's adds (2, 5)
    # ours (the benchmark defines no split here): the 13 goal cells 13-15 cells from R along the corridors
    "hardest_maze": [(1, 10), (2, 10), (3, 8), (3, 9), (3, 10), (4, 10), (5, 4), (5, 10), (6, 4)]
    + [(7, 4), (7, 8), (7, 9), (7, 10)],
}
GOAL_MARKER = (  # a red ball with two slide joints (so brax treats it as a link) drawn at the goal in renders
    '<body name="goal_marker"><joint type="slide" axis="1 0 0" limited="false"/>'
    '<joint type="slide" axis="0 1 0" limited="false"/>'
    '<geom type="sphere" size="0.5" contype="0" conaffinity="0" rgba="0.9 0.2 0.2 1"/></body>'
)


def maze_cells(layout, char):
    return [(i, j) for i, row in enumerate(MAZE_LAYOUTS[layout]) for j, c in enumerate(row) if c == char]


def maze_walls(layout, size):
    """MJCF boxes covering the wall cells: runs of '#' in a row, stacked over the rows where the run repeats.

    Each box costs one contact test per colliding robot geom per physics substep, so fewer boxes is faster
    (docs/environments.md; benchmarks/maze_contacts.py).
    Walls are size / 2 tall, as in the benchmark. They collide with geoms whose contype has bit 1 (brax's feet)
    or bit 2 (set by `Locomotion` on torso geoms); the floor, conaffinity 1, keeps ignoring bit-2 geoms.
    """
    boxes = []  # [first row, last row + 1, first column, last column + 1]
    for i, row in enumerate(MAZE_LAYOUTS[layout]):
        for run in re.finditer("#+", row):
            above = [box for box in boxes if box[1] == i and box[2:] == [run.start(), run.end()]]
            if above:
                above[0][1] = i + 1
            else:
                boxes.append([i, i + 1, run.start(), run.end()])
    return "".join(
        f'<geom type="box" pos="{(i0 + i1 - 1) * size / 2} {(j0 + j1 - 1) * size / 2} {size / 4}" '
        f'size="{(i1 - i0) * size / 2} {(j1 - j0) * size / 2} {size / 4}" contype="0" conaffinity="3" '
        'rgba="0.7 0.5 0.3 1"/>'
        for i0, i1, j0, j1 in boxes
    )


class Task:
    """A task's physics, as GoalEnv uses it: init(key) -> (sim_state, goal), step(sim_state, action) -> sim_state,
    state(sim_state) -> (state_dim,) vector, terminated(sim_state); for --render, render_system (a brax System) and
    render_frame(sim_state, goal) (its links' poses, the goal marker last)."""

    def terminated(self, sim_state):  # episodes end at the time limit; only brax's robots fall over (Locomotion)
        return jnp.zeros((), dtype=bool)


def viewer_frame(pos, rot, goal):
    """One frame for brax's viewer: the links' positions (L, 3) and rotations (L, 4), then the goal marker (a
    2-d goal is drawn at height 0.5)."""
    marker = jnp.concatenate([goal, jnp.full(3 - len(goal), 0.5)])
    rot = jnp.vstack([rot, jnp.array([1.0, 0, 0, 0])])
    return types.SimpleNamespace(x=brax_base.Transform(pos=jnp.vstack([pos, marker]), rot=rot))


def maze_start_and_goals(layout, goal_cells, size):
    """World xy of the start cell R's centre, and (G, 2) of the goal cells' centres (default: every G cell)."""
    start = jnp.array(maze_cells(layout, "R")[0], dtype=jnp.float32) * size
    return start, jnp.array(goal_cells or maze_cells(layout, "G"), dtype=jnp.float32) * size


class PointMaze(Task):
    """A point mass in a maze, in pure JAX: action = velocity in [-1, 1]^2 scaled by `speed` units per step.

    Walls block motion per axis: the x move is undone if it ends inside a wall cell, then the y move. State
    = (x, y), so the point mazes cost almost nothing and a CPU can train on them in minutes.
    """

    action_dim = 2
    state_dim = 2
    speed = 0.5  # units per step: a 4-unit cell takes 8 steps to cross

    def __init__(self, layout, goal_cells=None, size=4.0):
        self.layout, self.size = layout, size
        self.walls = jnp.array([[c == "#" for c in row] for row in MAZE_LAYOUTS[layout]])
        self.start, self.goals = maze_start_and_goals(layout, goal_cells, size)

    def in_wall(self, xy):
        ij = jnp.round(xy / self.size).astype(jnp.int32)
        return self.walls[ij[0], ij[1]]

    def init(self, key, start=None, goals=None):
        """start: (2,) centre of the start cell (default R); goals: (G, 2) goal-cell centres (default the layout's).
        eval_stitching.py passes both to train on short corridor pairs."""
        start = self.start if start is None else start
        goals = self.goals if goals is None else goals
        k_start, k_cell, k_jitter = jax.random.split(key, 3)
        xy = start + jax.random.uniform(k_start, (2,), minval=-0.5, maxval=0.5)
        cell = jax.random.randint(k_cell, (), 0, len(goals))
        # a uniform point of the cell, not just near its centre: goals that reach the cell's edges lead agents
        # into neighbouring cells, which CRL needs to find the U-maze's far cell (docs/parity.md#notes-and-deviations)
        goal = goals[cell] + jax.random.uniform(k_jitter, (2,), minval=-self.size / 2, maxval=self.size / 2)
        return xy, goal

    def step(self, xy, action):
        move = self.speed * jnp.clip(action, -1.0, 1.0)
        x_moved = xy.at[0].add(move[0])
        xy = jnp.where(self.in_wall(x_moved), xy, x_moved)
        y_moved = xy.at[1].add(move[1])
        return jnp.where(self.in_wall(y_moved), xy, y_moved)

    def state(self, xy):
        return xy

    @functools.cached_property
    def render_system(self):
        point = GOAL_MARKER.replace("goal_marker", "point").replace("0.9 0.2 0.2", "0.2 0.4 0.9")
        xml = f'<mujoco><worldbody><geom type="plane" size="40 40 0.1"/>{maze_walls(self.layout, self.size)}'
        return brax_mjcf.loads(f"{xml}{point}{GOAL_MARKER}</worldbody></mujoco>")

    def render_frame(self, xy, goal):
        return viewer_frame(jnp.append(xy, 0.5)[None], jnp.array([[1.0, 0, 0, 0]]), goal)


class BraxArm(Task):
    """A brax arm stepped by brax's own environment class with the spring backend, so the class's backend
    settings (timestep, frames per step, actuator gears) come with it. Physics state = brax's pipeline state;
    actions in [-1, 1] are mapped onto the actuators' control range, as brax's classes do."""

    def __init__(self, name):
        self.env = brax_envs.get_environment(name, backend="spring")
        self.action_dim = self.env.action_size

    def step(self, pipeline_state, action):
        low, high = self.env.sys.actuator.ctrl_range.T
        ctrl = low + (jnp.clip(action, -1.0, 1.0) + 1) * (high - low) / 2
        return self.env.pipeline_step(pipeline_state, ctrl)

    @property
    def render_system(self):
        return self.env.sys

    def render_frame(self, pipeline_state, goal):
        return pipeline_state


class Reacher(BraxArm):
    """brax's two-link reacher; state = fingertip xyz and velocity, cos and sin of the joint angles (10).

    brax's `Reacher` sets timestep 0.005, 4 frames and actuator gear 25 for spring. The goal is a random
    point on the plane within reach; the target marker's slide joints are set to it so renders show it.
    """

    state_dim = 10

    def __init__(self):
        super().__init__("reacher")
        self.tip = brax_base.Transform.create(pos=jnp.array([0.11, 0.0, 0.0]))  # fingertip offset on link 1

    def init(self, key):
        k_q, k_qd, k_r, k_a = jax.random.split(key, 4)
        sys = self.env.sys
        radius = 0.2 * jnp.sqrt(jax.random.uniform(k_r))  # uniform on the disc of radius 0.2 (reach 0.21)
        angle = 2 * jnp.pi * jax.random.uniform(k_a)
        target = radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        q = sys.init_q + jax.random.uniform(k_q, (sys.q_size(),), minval=-0.1, maxval=0.1)
        qd = jax.random.uniform(k_qd, (sys.qd_size(),), minval=-0.005, maxval=0.005)
        pipeline_state = self.env.pipeline_init(q.at[2:].set(target), qd.at[2:].set(0.0))
        tip_z = self.state(pipeline_state)[2]  # the arm is planar: the fingertip height never changes
        return pipeline_state, jnp.append(target, tip_z)

    def state(self, pipeline_state):
        tip_pos = pipeline_state.x.take(1).do(self.tip).pos
        tip_vel = self.tip.do(pipeline_state.xd.take(1)).vel
        theta = pipeline_state.q[:2]
        return jnp.concatenate([tip_pos, tip_vel, jnp.cos(theta), jnp.sin(theta)])


class Pusher(BraxArm):
    """brax's 7-joint pusher arm; the goal is a position of the object. State = the benchmark's 20 numbers:
    joint angles (7), fingertip xyz, object xyz, joint velocities (7); the goal is state[10:13].

    brax's `Pusher` sets timestep 0.001, 50 frames and gear 20 for spring. `goal_region` bounds the offsets
    written to the goal marker's joints, which pusher.xml orders (slide y, slide x), as the benchmark samples
    them. The object starts where brax's `Pusher` puts it, moved out to 0.17 from the goal if closer. The goal's
    height is the object's (which only slides), so the 0.1 success radius is a distance on the table.
    """

    state_dim = 20

    def __init__(self, goal_region):
        super().__init__("pusher")
        self.goal_region = jnp.array(goal_region, dtype=jnp.float32)  # [[low y, low x], [high y, high x]]
        self.tip, self.object, self.goal = map(self.env.sys.link_names.index, ["r_wrist_flex_link", "object", "goal"])

    def positions(self, pipeline_state):  # centres of mass of the links
        return pipeline_state.x.vmap().do(brax_base.Transform.create(pos=self.env.sys.link.inertia.transform.pos)).pos

    def init(self, key):
        k_object, k_goal, k_qd = jax.random.split(key, 3)
        sys = self.env.sys
        goal = jax.random.uniform(k_goal, (2,), minval=self.goal_region[0], maxval=self.goal_region[1])
        obj = jax.random.uniform(k_object, (2,), minval=jnp.array([-0.3, -0.2]), maxval=jnp.array([0.0, 0.2]))
        gap = jnp.linalg.norm(obj - goal)
        obj = jnp.where(gap < 0.17, goal + (obj - goal) * 0.17 / jnp.maximum(gap, 1e-6), obj)
        q = sys.init_q.at[-4:].set(jnp.concatenate([obj, goal]))
        qd = jax.random.uniform(k_qd, (sys.qd_size(),), minval=-0.005, maxval=0.005).at[-4:].set(0.0)
        pipeline_state = self.env.pipeline_init(q, qd)
        pos = self.positions(pipeline_state)
        return pipeline_state, pos[self.goal].at[2].set(pos[self.object, 2])

    def state(self, pipeline_state):
        pos = self.positions(pipeline_state)
        q, qd = pipeline_state.q, pipeline_state.qd
        return jnp.concatenate([q[:7], pos[self.tip], pos[self.object], qd[:7]])


class Locomotion(Task):
    """brax's Ant or Humanoid on an open floor or in a maze of box walls; the goal is a torso position.

    brax's own class steps the robot, so its spring-backend settings come along: Ant timestep 0.005 and 10
    frames per step, Humanoid timestep 0.0015, 10 frames and its gear table (the XMLs' own timesteps are not
    stable with maze walls: docs/environments.md). brax's class also gives the observation (positions kept: the
    ant's state is q, qd = 29 numbers, torso xy first) and `done` when the torso height leaves the healthy range
    (Ant 0.2-1.0, Humanoid 1.0-2.0), which ends the episode. Mazes add walls to brax's XML and put the start at
    the layout's R cell. benchmark_humanoid makes brax's humanoid the benchmark's: every geom collides (with the
    floor and the walls), the goal marker is a body of the model, so the state holds its 2 slide joints and its
    link (268 numbers), and starts have no reset noise.
    """

    def __init__(
        self,
        robot,
        layout=None,
        goal_cells=None,
        size=4.0,
        wall_geoms=(),
        feet_touch=(),
        radius=(10.0, 10.0),
        goal_z=(),
        benchmark_humanoid=False,
        timestep=None,
    ):
        self.goal_body = benchmark_humanoid
        noise = {"reset_noise_scale": 0.0} if self.goal_body else {}
        self.env = brax_envs.get_environment(
            robot, backend="spring", exclude_current_positions_from_observation=False, **noise
        )
        self.layout, self.size = layout, size
        self.action_dim, self.radius, self.goal_z = self.env.action_size, radius, jnp.array(goal_z)
        root = ET.parse(os.path.join(os.path.dirname(brax_envs.__file__), "assets", f"{robot}.xml")).getroot()
        self.start, self.goals = jnp.zeros(2), None
        if self.goal_body:  # the benchmark's humanoid.xml: geoms default to contype 1, the goal is a body
            root.find("default/geom").set("contype", "1")
            reach = 100 if layout is not None else 20  # the slide joints' range, as in the benchmark
            joints = "".join(
                f'<joint name="target_{axis}" type="slide" axis="{v}" range="-{reach} {reach}" armature="0" '
                'damping="0" stiffness="0"/>'
                for axis, v in [("x", "1 0 0"), ("y", "0 1 0")]
            )
            body = f'<body name="target" pos="0 0 {goal_z[0]}">{joints}<geom name="target" type="sphere" size="0.5" '
            body += 'mass="1" contype="0" conaffinity="0" rgba="0.9 0.2 0.2 1"/></body>'
            root.find("worldbody").append(ET.fromstring(body))
        if layout is not None:
            for geom in root.iter("geom"):
                if geom.get("name") in wall_geoms:
                    geom.set("contype", "2")  # these collide with the walls (conaffinity 3) but not the floor
                if geom.get("name") in feet_touch:
                    geom.set("conaffinity", "1")  # these collide with the feet (contype 1)
            root.find("worldbody").extend(ET.fromstring(f"<walls>{maze_walls(layout, size)}</walls>"))
            self.start, self.goals = maze_start_and_goals(layout, goal_cells, size)
        self.xml = ET.tostring(root, encoding="unicode")
        sys = brax_mjcf.loads(self.xml)
        # keep what brax's class set for the backend (opt: timestep, solver; actuator: gears); start at R
        backend = {"opt": self.env.sys.opt, "actuator": self.env.sys.actuator}
        self.env.sys = sys.replace(**backend, init_q=sys.init_q.at[:2].set(self.start))
        if timestep is not None:
            self.env.sys = self.env.sys.tree_replace({"opt.timestep": timestep})

    def init(self, key, start=None, goals=None):
        """start: (2,) torso xy to start from (default R); goals: (G, 2) goal-cell centres (default the layout's).
        eval_stitching.py passes both to train on short corridor pairs."""
        goals = self.goals if goals is None else goals
        k_reset, k_cell, k_radius, k_angle = jax.random.split(key, 4)
        brax_state = self.env.reset(k_reset)
        if goals is not None:  # the centre of a uniformly chosen goal cell, as in the benchmark
            xy = goals[jax.random.randint(k_cell, (), 0, len(goals))]
        else:  # uniform angle; radius uniform in [radius[0], radius[1]]
            angle = 2 * jnp.pi * jax.random.uniform(k_angle)
            radius = jax.random.uniform(k_radius, minval=self.radius[0], maxval=self.radius[1])
            xy = radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        if start is not None or self.goal_body:  # move the torso (q[:2]) and the goal body (q[-2:]), observe again
            q, qd = brax_state.pipeline_state.q, brax_state.pipeline_state.qd
            q = q if start is None else q.at[:2].add(start - self.start)
            q = q.at[-2:].set(xy) if self.goal_body else q
            pipeline_state = self.env.pipeline_init(q, qd)
            observe = self.env._get_obs  # the humanoid's also reads the actuator forces of an action
            obs = observe(pipeline_state, jnp.zeros(self.action_dim)) if self.goal_body else observe(pipeline_state)
            brax_state = brax_state.replace(pipeline_state=pipeline_state, obs=obs)
        return brax_state, jnp.concatenate([xy, self.goal_z])

    def step(self, brax_state, action):
        return self.env.step(brax_state, jnp.clip(action, -1.0, 1.0))

    def state(self, brax_state):
        return brax_state.obs

    def terminated(self, brax_state):
        return brax_state.done > 0

    @functools.cached_property
    def render_system(self):
        if self.goal_body:  # the goal is drawn by the model's own marker
            return self.env.sys
        root = ET.fromstring(self.xml)
        for custom in root.iter("custom"):  # brax's init_qpos would miss the marker's two joints
            for init_qpos in custom.findall("numeric[@name='init_qpos']"):
                custom.remove(init_qpos)
        root.find("worldbody").append(ET.fromstring(GOAL_MARKER))
        return brax_mjcf.loads(ET.tostring(root, encoding="unicode"))

    def render_frame(self, brax_state, goal):
        if self.goal_body:
            return brax_state.pipeline_state
        return viewer_frame(brax_state.pipeline_state.x.pos, brax_state.pipeline_state.x.rot, goal)


# The Panda arm of the manipulation tasks, as the benchmark's panda_*.xml files build it from MuJoCo Menagerie's
# Franka Panda: Menagerie's body frames, joint limits and link inertials, the benchmark's actuators (joints 3-7
# with a gain below their stiffness, so they settle at 0.57 or 0.5 of their targets), a two-finger gripper
# opening 0-8 cm per finger, a 6 cm cube, 25 substeps of 0.002 s per env step with 6 solver iterations. Built in
# code from primitives: the benchmark's link meshes are visual only, and what collides (the hand capsule, the
# finger boxes, the cube, the table, the bin walls) is the same, through the same explicit contact pairs with
# MuJoCo's pair defaults. The hand has no mass of its own (the benchmark's loader fuses it into link 7).
PANDA_LINKS = (  # (frame, joint range, mass, centre of mass, full inertia, visual capsule) of link1 ... link7
    (
        'pos="0 0 0.333"',
        "-2.8973 2.8973",
        4.970684,
        "0.003875 0.002081 -0.04762",
        "0.70337 0.70661 0.0091170 -0.00013900 0.0067720 0.019169",
        "0 0 -0.19 0 0 0",
    ),
    (
        'quat="1 -1 0 0"',
        "-1.7628 1.7628",
        0.646926,
        "-0.003141 -0.02872 0.003495",
        "0.0079620 2.8110e-2 2.5995e-2 -3.925e-3 1.0254e-2 7.04e-4",
        "0 0 0 0 -0.2 0",
    ),
    (
        'pos="0 -0.316 0" quat="1 1 0 0"',
        "-2.8973 2.8973",
        3.228604,
        "2.7518e-2 3.9252e-2 -6.6502e-2",
        "3.7242e-2 3.6155e-2 1.083e-2 -4.761e-3 -1.1396e-2 -1.2805e-2",
        "0 0 -0.12 0.0825 0 0",
    ),
    (
        'pos="0.0825 0 0" quat="1 1 0 0"',
        "-3.0718 -0.0698",
        3.587895,
        "-5.317e-2 1.04419e-1 2.7454e-2",
        "2.5853e-2 1.9552e-2 2.8323e-2 7.796e-3 -1.332e-3 8.641e-3",
        "0 0 0 -0.0825 0.2 0",
    ),
    (
        'pos="-0.0825 0.384 0" quat="1 -1 0 0"',
        "-2.8973 2.8973",
        1.225946,
        "-1.1953e-2 4.1065e-2 -3.8437e-2",
        "3.5549e-2 2.9474e-2 8.627e-3 -2.117e-3 -4.037e-3 2.29e-4",
        "0 0 -0.22 0 0 0",
    ),
    (
        'quat="1 1 0 0"',
        "-0.0175 3.7525",
        1.666555,
        "6.0149e-2 -1.4117e-2 -1.0517e-2",
        "1.964e-3 4.354e-3 5.433e-3 1.09e-4 -1.158e-3 3.41e-4",
        "0 0 0 0.088 0 0",
    ),
    (
        'pos="0.088 0 0" quat="1 1 0 0"',
        "-2.8973 2.8973",
        0.735522,
        "1.0517e-2 -4.252e-3 6.1597e-2",
        "1.2516e-2 1.0027e-2 4.815e-3 -4.28e-4 -1.196e-3 -7.41e-4",
        "0 0 -0.02 0 0 0.08",
    ),
)
PANDA_ACTUATORS = (  # (gain, stiffness, damping, force limit) of joints 1-7: force = gain ctrl - stiffness q - damping qd
    (4500, 4500, 450, 87),
    (4500, 4500, 450, 87),
    (2000, 3500, 350, 87),
    (2000, 3500, 350, 87),
    (1000, 2000, 200, 12),
    (1000, 2000, 200, 12),
    (1000, 2000, 200, 12),
)
CUBE_HALF = 0.03  # the cube's half size: its centre rests 0.03 above the table


def panda_xml(cube, walls, pairs):
    """MJCF of the arm on a table (the z = 0 plane; base at the origin, facing +y), with the cube if `cube`, boxes
    `walls` = {name: (centre, half sizes)} and the contact pairs `pairs` (every other geom passes through all).

    The joints are those the benchmark simulates, not those its XML writes: the XML gives every joint damping 5 and
    armature 0.1, and joints 1, 3, 5 and 7 their range, through the default class of link0, a body without joints
    that brax's loader fuses into the world, class and all. So joints 1-7 have no damping and no armature, joints
    1, 3, 5 and 7 no limits (their actuators' control ranges still bound the targets); the fingers keep theirs."""
    links = ""
    for i, (frame, limits, mass, centre, inertia, capsule) in enumerate(PANDA_LINKS, 1):
        limited = f' range="{limits}"' if i in (2, 4, 6) else ""
        links += f'<body name="link{i}" {frame}><joint name="joint{i}"{limited}/>'
        links += f'<inertial mass="{mass}" pos="{centre}" fullinertia="{inertia}"/>'
        links += f'<geom type="capsule" fromto="{capsule}" size="0.05"/>'
    finger = lambda side, frame: (  # slides 0-0.08 from the hand's axis
        f'<body name="{side}_finger" pos="0 0 0.0584" {frame}><inertial mass="0.015" pos="0 0 0" '
        f'diaginertia="2.375e-6 2.375e-6 7.5e-7"/><joint name="{side}_finger" type="slide" axis="0 1 0" range="0 0.08" '
        'damping="5" armature="0.1"/>'
        f'<geom name="{side}_finger" type="box" size="0.015 0.005 0.04" pos="0 0.0055 0.035" rgba="0.25 0.25 0.25 1"/>'
        "</body>"
    )
    hand = (  # the hand's frame on link 7, fused into it as the benchmark's loader does (no mass of its own)
        '<frame name="hand" pos="0 0 0.107" quat="0.9238795 0 0 -0.3826834">'
        '<geom name="hand" type="capsule" size="0.04 0.06" pos="0 0 0.035" quat="1 1 0 0"/>'
        '<site name="grip" pos="0 0 0.1334"/>'  # between the fingertips (for scripted tests; not observed)
        + (finger("left", "") + finger("right", 'quat="0 0 0 1"') if cube else "")
        + "</frame>"
    )
    body = ""
    if cube:  # the benchmark drops it from 7 cm
        body = '<body name="cube" pos="0 0.6 0.07"><freejoint/><geom name="cube" type="box" '
        body += f'size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" rgba="0.2 0.4 0.9 1"/></body>'
    wall_geoms = "".join(
        f'<geom name="{name}" type="box" pos="{c}" size="{s}" rgba="0.7 0.5 0.3 1"/>' for name, (c, s) in walls.items()
    )
    actuators = "".join(
        f'<general joint="joint{i}" gainprm="{gain}" biasprm="0 -{kp} -{kv}" biastype="affine" '
        f'ctrlrange="{PANDA_LINKS[i - 1][1]}" forcerange="-{f} {f}"/>'
        for i, (gain, kp, kv, f) in enumerate(PANDA_ACTUATORS, 1)
    )
    if cube:  # ctrl 0-255 moves a finger's target over 0-0.08, as in the benchmark; the fingers move together
        actuators += "".join(
            f'<general joint="{s}_finger" gainprm="0.15686" biasprm="0 -500 -50" biastype="affine" ctrlrange="0 255" '
            'forcerange="-500 500"/>'
            for s in ("left", "right")
        )
    impratio = ' impratio="10"' if walls else ""  # the benchmark's binpick files set it
    return (
        '<mujoco model="panda"><compiler angle="radian" autolimits="true"/>'
        f'<option timestep="0.002" integrator="implicitfast" iterations="6" ls_iterations="12"{impratio}/>'
        '<default><geom contype="0" conaffinity="0" rgba="0.95 0.95 0.95 1"/></default>'
        '<worldbody><geom name="table" type="plane" size="1.5 1.5 0.05" rgba="0.6 0.55 0.5 1"/>'
        f'<geom type="capsule" fromto="0 0 0 0 0 0.14" size="0.07"/>{wall_geoms}{links}{hand}{"</body>" * 7}{body}'
        "</worldbody>"
        + (
            '<equality><joint joint1="left_finger" joint2="right_finger" solimp="0.95 0.99 0.001" solref="0.005 1"/>'
            "</equality>"
            if cube
            else ""
        )
        + "<contact>"
        + "".join(f'<pair geom1="{a}" geom2="{b}"/>' for a, b in pairs)
        + f"</contact><actuator>{actuators}</actuator></mujoco>"
    )


def bin_walls(name, centre, inner, height=0.066, thickness=0.01):
    """The four walls of a square bin (no floor: the table is its floor) of inner half-width `inner`."""
    (x, y), mid, out = centre, inner + thickness / 2, inner + thickness
    sides = [(0, -mid, out, thickness / 2), (0, mid, out, thickness / 2)]
    sides += [(mid, 0, thickness / 2, inner), (-mid, 0, thickness / 2, inner)]
    return {
        f"{name}{i}": (f"{x + dx} {y + dy} {height / 2}", f"{sx} {sy} {height / 2}")
        for i, (dx, dy, sx, sy) in enumerate(sides, 1)
    }


class PandaArm(Task):
    """The benchmark's arm tasks with MJX: push or pick a cube to a goal, or reach a goal with link 7.

    Action, as in the benchmark: targets for joints 1, 2, 4 and 6 mapped from [-1, 1] onto their ranges, joints 3
    and 5 held at target 0 and joint 7 at 1.4487; a fifth entry closes the gripper when > 0 (not for reach).
    State, the benchmark's: cube xyz (3), joint angles (7), link 7's origin (the wrist) xyz (3) and velocity (3),
    finger distance (1) = 17; reach drops the cube and the fingers = 13, and its goal is for link 7's origin.
    Episodes start at the benchmark's arm pose, fingers open 4 cm each, the cube dropped from 7 cm at a uniform
    point of `cube_region` ([[low x, y], [high x, y]]); goals are uniform in `goal_region` ([[low x, y, z],
    [high x, y, z]]; for the cube, z = its resting height). Episodes never end early.
    """

    home = (1.571, 0.742, 0.0, -1.571, 0.0, 3.054, 1.449)  # the benchmark's start pose, joints 1-7
    target_low = np.array([0.3491, 0.0, -3.0718, 2.3562], np.float32)  # joints 1, 2, 4, 6
    target_high = np.array([2.7925, 1.48353, -0.0698, 3.7525], np.float32)
    frames = 25

    def __init__(self, goal_region, cube_region=None, walls=None):
        self.cube, self.walls = cube_region is not None, walls or {}
        pairs = [("table", "hand")]
        if self.cube and not self.walls:
            pairs = [("cube", g) for g in ["table", "hand", "left_finger", "right_finger"]]
            pairs += [("table", "hand"), ("table", "left_finger"), ("table", "right_finger")]
            pairs += [("left_finger", "right_finger")]
        elif self.cube:  # the benchmark's binpick pairs (40), each once
            gripper = ["hand", "left_finger", "right_finger"]
            pairs = [("cube", g) for g in ["table", *self.walls, *gripper]] + [("table", g) for g in gripper]
            pairs += [(g, wall) for g in ["left_finger", "right_finger", "hand"] for wall in self.walls]
            pairs += [("left_finger", "right_finger")]
        self.xml = panda_xml(self.cube, self.walls, pairs)
        with contextlib.redirect_stdout(io.StringIO()):
            self.model = mujoco.MjModel.from_xml_string(self.xml)
        self.mjx_model = mjx.put_model(self.model)
        self.data = mjx.make_data(self.mjx_model)
        self.goal_region = jnp.array(goal_region, dtype=jnp.float32)
        self.cube_region = None if cube_region is None else jnp.array(cube_region, dtype=jnp.float32)
        self.action_dim, self.state_dim = (5, 17) if self.cube else (4, 13)
        self.wrist, self.grip = self.model.body("link7").id, self.model.site("grip").id
        self.wrist_root = self.model.body_rootid[self.wrist]
        self.fingers = [self.model.body(f"{side}_finger").id for side in ("left", "right")] if self.cube else []

    @property
    def compiler_options(self):
        # XLA:CPU's fusion emitters make MJX's forward kinematics exponentially slow in the depth of the body
        # tree; they stay on for every program that steps no arm, whose network updates they speed up
        # (docs/environments.md)
        return {"xla_cpu_use_fusion_emitters": False} if jax.default_backend() == "cpu" else {}

    def positions(self, data):  # body and site poses and Jacobian rows for the current qpos
        return mjx.com_pos(self.mjx_model, mjx.kinematics(self.mjx_model, data))

    def init(self, key):
        k_cube, k_goal = jax.random.split(key)
        qpos = jnp.array(self.home + ((0.04, 0.04) if self.cube else ()))
        if self.cube:
            cube_xy = jax.random.uniform(k_cube, (2,), minval=self.cube_region[0], maxval=self.cube_region[1])
            qpos = jnp.concatenate([qpos, cube_xy, jnp.array([0.07, 1.0, 0, 0, 0])])
        goal = jax.random.uniform(k_goal, (3,), minval=self.goal_region[0], maxval=self.goal_region[1])
        return self.positions(self.data.replace(qpos=qpos)), goal

    def step(self, data, action):
        action = jnp.clip(action, -1.0, 1.0)
        targets = self.target_low + (action[:4] + 1) * (self.target_high - self.target_low) / 2
        ctrl = jnp.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.4487]).at[jnp.array([0, 1, 3, 5])].set(targets)
        if self.cube:  # closed (target 0) when > 0, else open (255: 8 cm per finger)
            ctrl = jnp.concatenate([ctrl, jnp.full(2, jnp.where(action[4] > 0, 0.0, 255.0))])
        # no kinematics after the last substep: body poses and velocities stay those mjx.step computed before it
        # integrated, one substep (0.002 s) behind the joint angles, which is what the benchmark's brax pipeline
        # observes
        return jax.lax.fori_loop(0, self.frames, lambda _, d: mjx.step(self.mjx_model, d), data.replace(ctrl=ctrl))

    def state(self, data):
        wrist = data.xpos[self.wrist]
        cvel = data.cvel[self.wrist]  # (angular, linear) velocity at the subtree's centre of mass, as brax reads it
        wrist_velocity = cvel[3:] + jnp.cross(cvel[:3], wrist - data.subtree_com[self.wrist_root])
        arm = [data.qpos[:7], wrist, wrist_velocity]
        if not self.cube:
            return jnp.concatenate(arm)
        fingers = jnp.linalg.norm(data.xpos[self.fingers[0]] - data.xpos[self.fingers[1]])[None]  # their distance
        return jnp.concatenate([data.qpos[9:12], *arm, fingers])

    @functools.cached_property
    def render_system(self):  # the same bodies for brax's viewer, without contacts, equality and actuators
        xml = re.sub("<contact>.*</contact>|<actuator>.*</actuator>|<equality>.*</equality>", "", self.xml)
        return brax_mjcf.loads(xml.replace("</worldbody>", GOAL_MARKER.replace("0.5", "0.03") + "</worldbody>"))

    @functools.cached_property
    def render_bodies(self):  # the bodies brax's viewer kept (all but the goal marker)
        return jnp.array([self.model.body(name).id for name in self.render_system.link_names[:-1]])

    def render_frame(self, data, goal):
        return viewer_frame(data.xpos[self.render_bodies], data.xquat[self.render_bodies], goal)


def arm_push(cube_centre, goal_centre, spread):  # cube and goal uniform within +-spread of their centres (x, y)
    square = lambda c, z: [[c[0] - spread, c[1] - spread, *z], [c[0] + spread, c[1] + spread, *z]]
    return PandaArm(square(goal_centre, (CUBE_HALF,)), square(cube_centre, ()))


def arm_binpick(bin_x, cube_x, spread, inner):  # from the bin at x = -bin_x to the one at +bin_x, both at y = 0.6
    walls = bin_walls("bin_a", (-bin_x, 0.6), inner) | bin_walls("bin_b", (bin_x, 0.6), inner)
    square = lambda x, z: [[x - spread, 0.6 - spread, *z], [x + spread, 0.6 + spread, *z]]
    return PandaArm(square(bin_x, (CUBE_HALF,)), square(cube_x, ()), walls)


# The ant's geoms that meet the walls besides the feet (which collide already: contype 1 in brax's XML), as in
# the benchmark's ant_maze.xml: the torso and the four hip capsules. Every (geom, wall box) pair is a contact test
# per physics substep. That XML also lets the feet meet the torso, the hips and each other (conaffinity 1 on all
# nine: 26 more pairs); its open-floor ant.xml does not. The humanoid collides everywhere (benchmark_humanoid).
ANT_WALL_GEOMS = ("torso_geom", "aux_1_geom", "aux_2_geom", "aux_3_geom", "aux_4_geom")
ANT_FEET = ("left_foot_geom", "right_foot_geom", "third_foot_geom", "fourth_foot_geom")


def ant_maze(layout, goal_cells=None):
    return Locomotion(
        "ant", layout, goal_cells, size=4.0, wall_geoms=ANT_WALL_GEOMS, feet_touch=ANT_WALL_GEOMS + ANT_FEET
    )


def humanoid_maze(layout, goal_cells=None):  # the benchmark's humanoid mazes have 2-unit cells
    return Locomotion("humanoid", layout, goal_cells, size=2.0, goal_z=(1.25,), benchmark_humanoid=True)


# Humanoid state: brax's observation with positions kept, 268 numbers as in the benchmark: q 26 and qd 25 (the
# goal body's two slide joints included), per-link inertia 120 and velocity 72 about the centre of mass (12
# links, the goal body's among them), actuator forces 25. The goal height 1.25 is about the standing torso's.
def maze_ids(
    robot, make, layouts, state_dim, goal_indices, episode_length=1000, eval_goals=MAZE_EVAL_GOALS, fixed=True
):
    """`{robot}_{layout}` with goals in every G cell and `{robot}_{layout}_eval` with goals only in the layout's
    far cells (eval_goals), for each layout: the same walls, start and physics."""
    specs = {}
    for layout in layouts:
        for suffix, cells in [("", None), ("_eval", eval_goals[layout])]:
            make_maze = functools.partial(make, layout, cells)
            specs[f"{robot}_{layout}{suffix}"] = EnvSpec(make_maze, state_dim, goal_indices, 0.5, episode_length, fixed)
    return specs


HUMANOID_EVAL_GOALS = MAZE_EVAL_GOALS | {"big_maze": sorted(MAZE_EVAL_GOALS["big_maze"] + [(2, 5)])}


def default_eval_env_id(env_id):
    """Where a run is evaluated by default, as in the paper's code: a maze's far-goal split where that code has one
    (every layout but the hardest maze, whose split is ours), else env_id itself."""
    split = f"{env_id}_eval"
    return split if split in ENVIRONMENTS and "hardest" not in env_id else env_id


ENVIRONMENTS = {
    "reacher": EnvSpec(Reacher, 10, (0, 1, 2), 0.05, 1000),
    "pusher_easy": EnvSpec(lambda: Pusher([[-0.55, -0.2], [-0.25, 0.2]]), 20, (10, 11, 12), 0.1, 1000),
    "pusher_hard": EnvSpec(lambda: Pusher([[-0.65, -0.55], [0.35, 0.45]]), 20, (10, 11, 12), 0.1, 1000),
    **maze_ids("point", PointMaze, ["u_maze"], 2, (0, 1), episode_length=100, fixed=False),
    **maze_ids("point", PointMaze, ["big_maze"], 2, (0, 1), fixed=False),
    # point versions of the ant's longer layouts, for depth on a CPU: episodes at least twice the walk to the farthest far cell
    **maze_ids("point", PointMaze, ["u4_maze"], 2, (0, 1), episode_length=200, fixed=False),
    **maze_ids("point", PointMaze, ["u5_maze", "hardest_maze"], 2, (0, 1), episode_length=300, fixed=False),
    "ant": EnvSpec(lambda: Locomotion("ant"), 29, (0, 1), 0.5, 1000),
    **maze_ids("ant", ant_maze, ["u_maze", "u4_maze", "u5_maze", "big_maze", "hardest_maze"], 29, (0, 1)),
    # the open-floor humanoid steps 0.003 s x 10: the paper's code asks for 0.0015, but its brax (0.10.1) reads the
    # spring timestep from the XML's 0.003 unless set directly, as its humanoid mazes do (0.0015)
    "humanoid": EnvSpec(
        lambda: Locomotion("humanoid", radius=(1, 5), goal_z=(1.25,), benchmark_humanoid=True, timestep=0.003),
        268,
        (0, 1, 2),
        0.5,
        1000,
    ),
    **maze_ids("humanoid", humanoid_maze, ["u_maze", "big_maze"], 268, (0, 1, 2), eval_goals=HUMANOID_EVAL_GOALS),
    # Arm tasks (Panda + cube, MJX), as in the paper's code: success = the cube (reach: link 7's origin) within 0.1 of
    # the goal; cube and goal centres (x, y) and spreads: push easy (-0.1, 0.6) -> (0.1, 0.6) +-0.1, push hard
    # (-0.25, 0.65) -> (0.25, 0.65) +-0.25, binpick easy from (-0.15, 0.6) into the bin at (0.17, 0.6) +-0.09 (bins
    # of inner half-width 0.135), binpick hard (-0.3, 0.6) -> (0.3, 0.6) +-0.15 (0.185); reach (0, 0.5, 0.3) +-0.2.
    "arm_reach": EnvSpec(lambda: PandaArm([[-0.2, 0.3, 0.1], [0.2, 0.7, 0.5]]), 13, (7, 8, 9), 0.1, 1000),
    "arm_push_easy": EnvSpec(lambda: arm_push((-0.1, 0.6), (0.1, 0.6), 0.1), 17, (0, 1, 2), 0.1, 1000),
    "arm_push_hard": EnvSpec(lambda: arm_push((-0.25, 0.65), (0.25, 0.65), 0.25), 17, (0, 1, 2), 0.1, 1000),
    "arm_binpick_easy": EnvSpec(lambda: arm_binpick(0.17, -0.15, 0.09, 0.135), 17, (0, 1, 2), 0.1, 1000),
    "arm_binpick_hard": EnvSpec(lambda: arm_binpick(0.3, -0.3, 0.15, 0.185), 17, (0, 1, 2), 0.1, 1000),
}


if __name__ == "__main__":
    main()
