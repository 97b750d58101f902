# docs: docs/sac_her.md -- SAC with hindsight relabelling, the paper's temporal-difference baseline
"""SAC + HER: soft actor-critic on a sparse goal-reaching reward, with hindsight relabelling.

The temporal-difference baseline of "1000 Layer Networks for Self-Supervised RL" (Wang et al., Sec. 4.3,
Fig. 4: depth helps CRL but not SAC). Twin Q-networks Q(s, a, g) with Polyak-averaged target networks,
reward r = 1[||achieved(s_{t+1}) - g|| < success radius], and HER "future" relabelling: a relabel_ratio of
each batch takes a future state of the same trajectory as its goal, the rest keep the commanded goal.
The actor and both Q-networks have the same residual trunk as crl_resnet.py (depth = 4 * num_blocks Dense
layers in its blocks), so `--num-blocks` lets you check the paper's claim.

Reading map. Study: ARGS, NETWORKS, REPLAY BUFFER (goal relabelling), LOSSES, TRAINING (make_train), EVALUATION
and MAIN (main(), the experiment). Skip on a first read: RUN PLUMBING (resume, processes, stop signals, orbax
checkpoints, logging) and ENVIRONMENTS (the goal-conditioned tasks), which come after main().

Siblings: identical to crl_resnet.py except NETWORKS (a Q-network instead of the two encoders), LOSSES
(TD target and HER relabelling instead of InfoNCE), TRAINING (target networks) and the flags they need.

Run:  python sac_her.py --num-blocks 4               (paper scale, one GPU)
CPU:  python sac_her.py --preset laptop                   (the quick-start's sizes on point_u_maze)
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
from typing import Any, Literal, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
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

    # Algorithm specific arguments: the environment, the networks, the schedule and the losses (Table 2's values)
    env_id: str = "ant_big_maze"
    """the environment id (see ENVIRONMENTS below or docs/environments.md)"""
    train_goals: Literal["env", "fixed", "resampled"] = "env"
    """goals after a reset in training: fixed (the paper's code), resampled, or env (fixed; point mazes resample)"""
    episode_length: Optional[int] = None
    """steps per episode; None uses the environment's own (1000 for the paper's environments)"""
    num_blocks: int = 1
    """residual blocks per network; depth = 4 * num_blocks Dense layers (64 blocks = 256 layers)"""
    actor_num_blocks: Optional[int] = None
    """residual blocks of the actor; None uses --num-blocks"""
    critic_num_blocks: Optional[int] = None
    """residual blocks of each of the twin Q-networks; None uses --num-blocks"""
    width: int = 256
    """units per Dense layer"""
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
    """discount of the TD target and of the future-state (HER goal) distribution"""
    actor_lr: float = 3e-4
    """actor learning rate (Adam)"""
    critic_lr: float = 3e-4
    """critic learning rate (Adam)"""
    alpha_lr: float = 3e-4
    """entropy temperature learning rate (Adam)"""
    relabel_ratio: float = 0.8
    """fraction of each batch whose goal is relabelled with a future state of the same trajectory (HER)"""
    tau: float = 0.005
    """Polyak step of the target Q-networks: target <- (1 - tau) target + tau Q after every update"""
    target_entropy_scale: float = 0.5
    """target entropy = -scale * action_dim"""
    num_seeds: int = 1
    """independent seeds trained in one jitted program (vmap); metrics: mean over seeds, _std, _per_seed"""
    remat: bool = False
    """recompute each residual block in the backward pass: activation memory O(1) in depth, ~1.3x compute"""
    scan_unroll: int = 1
    """scan steps over depth unrolled into one loop iteration: 2-4 speed up narrow nets on a CPU, not wide ones"""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the matmuls; parameters, LayerNorm, the residual stream and the losses stay float32"""
    preset: Optional[Literal["laptop", "laptop-reacher", "laptop-ant"]] = None
    """named defaults that the flags given override (PRESETS: laptop, laptop-reacher, laptop-ant, for a CPU)"""

    # Evaluation
    eval_env_id: Optional[str] = None
    """where evaluations run; None: the far-goal split {env_id}_eval where there is one (the paper's), else env_id"""
    num_eval_envs: int = 128
    """parallel evaluation environments (one episode each per evaluation)"""
    render: bool = False
    """after training, write runs/{run_name}/render.html (brax viewer) of three evaluation episodes"""
    render_every: int = 0
    """also render after every K-th epoch, to runs/{run_name}/render_epoch{N}.html (0: never); --track logs renders"""
    evaluate: Optional[str] = None
    """a run directory (runs/NAME) whose saved agent to evaluate instead of training (docs/crl_resnet.md)"""
    checkpoint: Literal["final", "best", "last"] = "final"
    """with --evaluate: the networks at the end of training, of the best evaluation, or of the last checkpoint"""

    # Run plumbing: tracking, checkpoints, resuming, processes and devices
    wandb_project_name: str = "scaling-crl"
    """the wandb project name"""
    wandb_entity: Optional[str] = None
    """the wandb entity (team or user); None uses your default entity"""
    wandb_mode: Literal["online", "offline"] = "online"
    """wandb mode: offline writes runs/{run_name}/wandb for a later `wandb sync` and needs no network"""
    save_model: bool = True
    """write checkpoints (the last two epochs, the best evaluation) and the final networks"""
    resume: Optional[str] = None
    """a run directory (runs/NAME) to continue from its last checkpoint, with its flags"""
    devices_split: Literal["data", "seeds"] = "data"
    """several devices: data splits each seed's envs, buffer and minibatches over all; seeds puts whole seeds on each"""
    coordinator_address: Optional[str] = None
    """HOST:PORT of process 0, for one run over several processes or hosts (docs/cluster.md); srun needs none"""
    num_processes: Optional[int] = None
    """processes in the run (with --coordinator-address)"""
    process_id: Optional[int] = None
    """this process's index, 0 to --num-processes - 1 (with --coordinator-address); process 0 writes the files"""


# --preset NAME: what a laptop run needs, in one word: these flags go before those given, which override them (the
# paper's Table 2 stays what no preset gives); args.json records the result, which --resume and --evaluate read.
PRESETS = {
    # learns to reach the U-maze's far cells: every seed of five reaches success 0.9 (docs/crl_resnet.md)
    "laptop": "--env-id point_u_maze --num-envs 256 --num-eval-envs 256 --total-env-steps 40000000 --num-epochs 40 "
    "--unroll-length 100 --batch-size 256 --num-sgd-batches-per-training-step 50 --max-replay-size 4000 "
    "--min-replay-size 100 --width 64 --num-blocks 2 --scan-unroll 2",
    # brax's reacher arm reaching points in its plane (docs/laptop_scale.md)
    "laptop-reacher": "--env-id reacher --episode-length 100 --num-envs 128 --num-eval-envs 128 "
    "--total-env-steps 4000000 --num-epochs 20 --unroll-length 50 --batch-size 256 "
    "--num-sgd-batches-per-training-step 50 --max-replay-size 2000 --min-replay-size 100 --width 64 --num-blocks 1",
    # crl_resnet.py's sizes for the ant on the open floor, where CRL walks to goals 10 away (docs/laptop_scale.md)
    "laptop-ant": "--env-id ant --episode-length 500 --num-envs 128 --num-eval-envs 64 --total-env-steps 12800000 "
    "--num-epochs 16 --unroll-length 50 --batch-size 256 --num-sgd-batches-per-training-step 160 "
    "--max-replay-size 4000 --min-replay-size 500 --width 64 --num-blocks 1",
}


def fail(message, status=2):
    """A one-line error, no traceback: status 2 for bad input (like argparse), 1 for a run that had to stop."""
    tqdm.tqdm.write(f"error: {message}", file=sys.stderr)  # on a line of its own, under a progress bar
    sys.exit(status)


def flag(name):
    return "--" + name.replace("_", "-")  # num_envs -> --num-envs


# --evaluate runs/NAME keeps the run's flags but these: what to evaluate, where, with how many episodes
EVALUATION_FLAGS = {"evaluate", "checkpoint", "eval_env_id", "num_eval_envs"}


def check_args(args):
    """Every inconsistency in the flags is a one-line error here, before anything is compiled."""
    for name in ["env_id", "eval_env_id"]:
        if getattr(args, name) not in [None, *ENVIRONMENTS]:
            fail(f"{flag(name)} {getattr(args, name)!r} is unknown; choose one of: {', '.join(ENVIRONMENTS)}")
    spec, eval_spec = ENVIRONMENTS[args.env_id], ENVIRONMENTS[args.eval_env_id or args.env_id]
    if (eval_spec.state_dim, eval_spec.goal_indices) != (spec.state_dim, spec.goal_indices):
        fail(f"--eval-env-id {args.eval_env_id} does not fit --env-id {args.env_id}: other states or goals")
    counts = ["num_seeds", "num_envs", "num_eval_envs", "num_epochs", "unroll_length", "batch_size", "width"]
    counts += ["num_sgd_batches_per_training_step", "max_replay_size", "min_replay_size"]
    for name in [*counts, "num_blocks", "actor_num_blocks", "critic_num_blocks"]:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            fail(f"{flag(name)} must be >= 1, got {getattr(args, name)}")
    episode = args.episode_length or ENVIRONMENTS[args.env_id].episode_length
    pool = args.num_envs * episode  # relabelled transitions sampled per training step (--num-envs x episode)
    plan, devices = schedule(args), jax.device_count()
    rules = [  # (flag, broken, what it must be)
        ("episode_length", episode < 2, ">= 2"),
        ("gamma", not 0 < args.gamma < 1, "in (0, 1)"),
        *[(name, getattr(args, name) <= 0, "> 0") for name in ["actor_lr", "critic_lr", "alpha_lr"]],
        ("target_entropy_scale", args.target_entropy_scale < 0, ">= 0"),
        ("relabel_ratio", not 0 <= args.relabel_ratio <= 1, "in [0, 1]"),
        ("tau", not 0 < args.tau <= 1, "in (0, 1]"),
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
            (
                name,
                args.devices_split == "data" and getattr(args, name) % devices,
                f"a multiple of the {devices} devices",
            )
            for name in ["num_envs", "batch_size"]
        ],
        (
            "num_seeds",
            args.devices_split == "seeds" and args.num_seeds % devices,
            f"a multiple of the {devices} devices with --devices-split seeds",
        ),
        ("total_env_steps", plan.training_steps_per_epoch < 1, f">= {plan.min_total_steps}: too small for an epoch"),
    ]
    for name, broken, must_be in rules:
        if broken:
            fail(f"{flag(name)} must be {must_be}, got {getattr(args, name)}")


def resolve_args(args):
    """The flags with what their None and "env" stand for, fixed once: args.json records them, and --resume and
    --evaluate read them back."""
    spec = ENVIRONMENTS[args.env_id]
    train_goals = ("fixed" if spec.fixed_goals else "resampled") if args.train_goals == "env" else args.train_goals
    return dataclasses.replace(
        args,
        actor_num_blocks=args.actor_num_blocks or args.num_blocks,
        critic_num_blocks=args.critic_num_blocks or args.num_blocks,
        train_goals=train_goals,
        episode_length=args.episode_length or spec.episode_length,
        eval_env_id=args.eval_env_id or default_eval_env_id(args.env_id),
    )


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


class QNetwork(nn.Module):
    """Q(s, a, g): residual trunk on concat(state, action, goal), then Dense(1)."""

    width: int
    num_blocks: int
    remat: bool = False
    scan_unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = ResidualTrunk(self.width, self.num_blocks, self.remat, self.scan_unroll, self.dtype)(x)
        return nn.Dense(1, kernel_init=dense_init, dtype=self.dtype)(x)[..., 0].astype(jnp.float32)


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
    q_network = QNetwork(args.width, args.critic_num_blocks, args.remat, args.scan_unroll, dtype)
    actor = Actor(env.action_dim, args.width, args.actor_num_blocks, args.remat, args.scan_unroll, dtype)
    return q_network, actor


def twin_q(q_network, critic_params, x):
    """(2, B) values of the twin Q-networks, whose parameters are stacked on a leading axis of 2."""
    return jax.vmap(q_network.apply, in_axes=(0, None))(critic_params, x)


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
def next_states(obs, traj_id, state_dim):
    """What SAC+HER reads beyond CRL's (state, action, goal), flat like them: the goal the episode commanded and
    s_{t+1}. After a reset (or at the window's end) the stored successor is another trajectory's first state, so
    such steps have no usable next state (has_next False)."""
    window = traj_id.shape[1]
    successor = jnp.minimum(jnp.arange(window) + 1, window - 1)  # (W,) index of s_{t+1} in the window
    extra = {
        "commanded_goal": obs[..., state_dim:],
        "next_state": obs[:, successor, :state_dim],
        "has_next": (traj_id[:, successor] == traj_id) & (jnp.arange(window) + 1 < window),
    }
    return flatten_windows(extra)


def her_relabel(transitions, key, relabel_ratio, goal_indices, success_radius):
    """HER "future": a relabel_ratio of rows take their future-state goal, the rest keep the commanded goal.

    The sparse reward is recomputed for the goal each row ends up with: r = 1[||achieved(s_{t+1}) - g|| < radius].
    """
    relabel = jax.random.uniform(key, transitions["goal"].shape[:1]) < relabel_ratio  # (B,)
    goal = jnp.where(relabel[:, None], transitions["goal"], transitions["commanded_goal"])
    achieved = transitions["next_state"][:, goal_indices]
    reward = (jnp.linalg.norm(achieved - goal, axis=-1) < success_radius).astype(jnp.float32)
    return {**transitions, "goal": goal, "reward": reward}


def sac_target(reward, next_q, next_log_prob, alpha, gamma):
    """y = r + gamma * (min_k Q'_k(s', a', g) - alpha log pi(a' | s', g)), a' ~ pi(. | s', g); next_q is (2, B)."""
    return reward + gamma * (jnp.min(next_q, axis=0) - alpha * next_log_prob)


def sample_tanh_gaussian(key, mean, log_std):
    """a = tanh(u), u ~ N(mean, std); log pi(a) includes the tanh change of variables."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    log_prob = jnp.sum(-0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)
    log_det = jnp.sum(2 * (jnp.log(2.0) - u - jax.nn.softplus(-2 * u)), -1)  # log(1 - tanh(u)^2), stably
    return jnp.tanh(u), log_prob - log_det


def make_losses(args, q_network, actor):
    def critic_loss(critic_params, target_critic_params, actor_params, log_alpha, batch, key):
        next_obs = jnp.concatenate([batch["next_state"], batch["goal"]], -1)
        next_action, next_log_prob = sample_tanh_gaussian(key, *actor.apply(actor_params, next_obs))
        next_sag = jnp.concatenate([batch["next_state"], next_action, batch["goal"]], -1)
        next_q = twin_q(q_network, target_critic_params, next_sag)  # (2, B)
        target = sac_target(batch["reward"], next_q, next_log_prob, jnp.exp(log_alpha), args.gamma)
        target = jax.lax.stop_gradient(target)
        q = twin_q(q_network, critic_params, jnp.concatenate([batch["state"], batch["action"], batch["goal"]], -1))
        # steps whose successor is a reset have no s_{t+1} in the buffer: they carry no TD error
        mask = batch["has_next"].astype(jnp.float32)
        loss = jnp.sum(mask * (q - target) ** 2) / jnp.maximum(jnp.sum(mask), 1.0)
        return loss, {"losses/q_mean": jnp.mean(q), "losses/reward": jnp.mean(batch["reward"])}

    def actor_loss(actor_params, critic_params, log_alpha, batch, key):
        mean, log_std = actor.apply(actor_params, jnp.concatenate([batch["state"], batch["goal"]], -1))
        action, log_prob = sample_tanh_gaussian(key, mean, log_std)
        q = twin_q(q_network, critic_params, jnp.concatenate([batch["state"], action, batch["goal"]], -1))
        alpha = jnp.exp(log_alpha)
        return jnp.mean(alpha * log_prob - jnp.min(q, axis=0)), log_prob

    def alpha_loss(log_alpha, log_prob, target_entropy):
        # raises alpha when the policy's entropy (-log_prob) falls below the target, lowers it above
        return jnp.mean(-jnp.exp(log_alpha) * jax.lax.stop_gradient(log_prob + target_entropy))

    return critic_loss, actor_loss, alpha_loss


# ==== TRAINING ====
# One training step, as crl_resnet.py's: COLLECT unroll_length steps in every environment with the stochastic
# policy, RELABEL one window per environment (future states as goals, then HER's mix with the commanded goals and
# the sparse reward), UPDATE the twin Q-networks, actor and temperature on num_sgd_batches_per_training_step
# minibatches, each update followed by a Polyak step of the target networks. An epoch is a scan of training steps.


@flax.struct.dataclass
class RunnerState:
    """Everything one seed's training carries from step to step (PureJaxRL's "runner state", `rs` in the code):
    the networks (target Q-networks too) and their optimiser states, the environments, the replay buffer, the
    random key."""

    actor_params: Any
    critic_params: Any  # twin Q-networks, parameters stacked on a leading axis of 2
    target_critic_params: Any
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
    q_network, actor = make_networks(args, env)
    critic_loss, actor_loss, alpha_loss = make_losses(args, q_network, actor)
    actor_opt, critic_opt, alpha_opt = optax.adam(args.actor_lr), optax.adam(args.critic_lr), optax.adam(args.alpha_lr)
    target_entropy = -args.target_entropy_scale * env.action_dim
    steps_per_epoch = schedule(args).training_steps_per_epoch

    def init(key):
        key, k_actor, k_q, k_env = jax.random.split(key, 4)
        actor_params = actor.init(k_actor, jnp.zeros((1, env.obs_dim)))
        sag = jnp.zeros((1, env.state_dim + env.action_dim + env.goal_dim))
        critic_params = jax.vmap(q_network.init, in_axes=(0, None))(jax.random.split(k_q, 2), sag)
        log_alpha = jnp.zeros(())
        return RunnerState(
            actor_params,
            critic_params,
            jax.tree.map(jnp.copy, critic_params),  # target networks start equal to the Q-networks
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
        """UPDATE on one minibatch: Q-networks, actor and temperature from the parameters before this step, then
        the target networks."""
        key, critic_key, actor_key = jax.random.split(rs.key, 3)
        (c_loss, c_info), c_grads = jax.value_and_grad(critic_loss, has_aux=True)(
            rs.critic_params, rs.target_critic_params, rs.actor_params, rs.log_alpha, batch, critic_key
        )
        (a_loss, log_prob), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(
            rs.actor_params, rs.critic_params, rs.log_alpha, batch, actor_key
        )
        al_loss, al_grad = jax.value_and_grad(alpha_loss)(rs.log_alpha, log_prob, target_entropy)
        c_updates, critic_opt_state = critic_opt.update(c_grads, rs.critic_opt_state)
        a_updates, actor_opt_state = actor_opt.update(a_grads, rs.actor_opt_state)
        al_update, alpha_opt_state = alpha_opt.update(al_grad, rs.alpha_opt_state)
        critic_params = optax.apply_updates(rs.critic_params, c_updates)
        rs = rs.replace(
            critic_params=critic_params,
            target_critic_params=optax.incremental_update(critic_params, rs.target_critic_params, args.tau),
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
        key, sample_key, her_key, perm_key = jax.random.split(rs.key, 4)
        k_start, k_future = jax.random.split(sample_key)
        obs, action, traj_id = sample_windows(rs.buffer, k_start, env.episode_length)
        transitions = relabel_with_future_states(
            obs, action, traj_id, k_future, args.gamma, env.state_dim, env.goal_indices
        )
        transitions |= next_states(obs, traj_id, env.state_dim)  # what the TD target and HER need beyond CRL's
        transitions = her_relabel(transitions, her_key, args.relabel_ratio, env.goal_indices, env.success_radius)
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
SUMMARY_FLAGS = ["env_id", "eval_env_id", "episode_length"]  # what summary.json says the score was measured on


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


def over_seeds_summary(per_seed):
    """{key: (num_seeds, ...) values} -> each key's mean over seeds, with several seeds also key_std, key_per_seed."""
    metrics = {k: float(np.mean(v)) for k, v in per_seed.items()}
    if len(next(iter(per_seed.values()))) > 1:
        metrics |= {f"{k}_std": float(np.std(v)) for k, v in per_seed.items()}
        metrics |= {f"{k}_per_seed": v.tolist() for k, v in per_seed.items()}
    return metrics


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


def write_summary(args, run_dir):
    """summary.json: a run's single number, the mean of SCORE over the last five evaluations (all of them if fewer),
    per seed and over seeds, as the paper scores runs (Sec. 4.1), with eval/success averaged the same way."""
    if jax.process_index() > 0:
        return
    logged = logged_metrics(run_dir)[-5:]
    per_seed = lambda key: np.mean([m.get(f"{key}_per_seed", [m[key]]) for m in logged], axis=0)
    score, success = per_seed(SCORE), per_seed("eval/success")
    summary = {"score": float(np.mean(score)), "score_std_over_seeds": float(np.std(score))}  # SCORE's
    summary |= {"score_per_seed": score.tolist(), "success": float(np.mean(success))}
    summary |= {"success_per_seed": success.tolist(), "epochs": [m["epoch"] for m in logged]}
    summary |= {STEPS.split("/")[1]: logged[-1][STEPS], **{k: getattr(args, k) for k in SUMMARY_FLAGS}}
    write_atomic(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=2).encode())
    said = {SCORE.split("/")[1]: score, "success": success}  # the score first (crl_offline's is success)
    each = lambda v: f" (per seed {', '.join(f'{x:.3g}' for x in v)})" if len(v) > 1 else ""
    parts = [f"{k} {np.mean(v):.3g}{each(v)}" for k, v in said.items()]
    print(f"{run_dir}/summary.json, the mean of the last {len(logged)} evaluations: {', '.join(parts)}")


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


# ==== MAIN ====
def main():
    """The experiment: num_seeds agents trained side by side for num_epochs epochs, each epoch followed by an
    evaluation; metrics, checkpoints and the final networks go to runs/NAME (docs/crl_resnet.md#what-a-run-writes)."""
    args = parse_args()  # the flags (with --preset's), or the saved flags of the run --resume or --evaluate names
    start_processes(args)  # one program over several processes when launched so (docs/cluster.md); else nothing
    check_args(args)  # every inconsistent flag is a one-line error here, before anything compiles
    args = resolve_args(args)  # what None and "env" stand for, as args.json records it
    if args.evaluate:  # --evaluate runs/NAME: no training, see evaluate_saved_agent below
        return evaluate_saved_agent(args)
    env = GoalEnv(args.env_id, args.episode_length, fixed_goals=args.train_goals == "fixed")
    eval_env = GoalEnv(args.eval_env_id, args.episode_length)
    plan = schedule(args)
    run_dir = open_run_dir(args)  # runs/NAME with args.json, or the run --resume continues
    stop = StopSignals(run_dir)  # SIGTERM, Ctrl-C, a dead process: the run ends with its files whole
    wandb = start_wandb(args, run_dir) if args.track else None
    print(
        f"{run_dir}: {args.env_id}, actor depth {4 * args.actor_num_blocks}, critic depth {4 * args.critic_num_blocks}"
        f" (Dense layers in the residual blocks of each twin Q), width {args.width}, {args.num_seeds} seed(s), "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s) in {jax.process_count()} process(es), split by "
        f"{args.devices_split}; evaluated on {args.eval_env_id} (fresh goals)\n"
        f"epoch = {plan.training_steps_per_epoch} training steps x {args.num_envs} envs x {args.unroll_length} steps "
        f"= {plan.env_steps_per_epoch} env steps; {args.num_epochs} epochs + {plan.prefill_steps} prefill = "
        f"{plan.total_steps}; {args.num_sgd_batches_per_training_step} SGD steps of {args.batch_size} per training step"
    )

    if hours := expected_cpu_hours(args, env):  # a run sized for a GPU, on a CPU: say what it costs here, go on
        print(f"no GPU: about {hours:.0f} h on this CPU (a training step timed); --preset laptop is sized for a CPU")

    # BUILD one runner state per seed, on the devices, and COMPILE prefill, epoch and evaluation once
    init, prefill, epoch, actor = make_train(args, env)
    evaluate = make_evaluate(args, eval_env, actor)
    seeds = np.arange(args.num_seeds) + args.seed
    init_all = jax.vmap(lambda s: init(jax.random.PRNGKey(s)))
    mesh = use_all_devices(args.devices_split)  # every device of every process
    shapes = jax.eval_shape(init_all, seeds)
    shardings = device_shardings(shapes, mesh, args.devices_split)
    like = jax.tree.map(lambda x, where: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where), shapes, shardings)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())  # metrics: every process has them
    eval_keys = np.asarray(jax.vmap(jax.random.PRNGKey)(seeds))
    n, options = args.num_seeds, env.compiler_options  # options: the environment's XLA flags
    compile_start = time.time()  # the runner state is donated: each program updates it in place
    prefill_fn = jax.jit(over_seeds(prefill, n), donate_argnums=0, out_shardings=shardings).lower(like).compile(options)
    epoch_fn = jax.jit(over_seeds(epoch, n), donate_argnums=0, out_shardings=(shardings, replicated))
    epoch_fn = epoch_fn.lower(like).compile(options)
    evaluate_fn = jax.jit(over_seeds(evaluate, n), out_shardings=replicated)
    evaluate_fn = evaluate_fn.lower(like.actor_params, eval_keys).compile(options)
    print(f"compiled in {time.time() - compile_start:.1f} s (prefill, one epoch, evaluation)")
    wait_for_every_process("compiled")  # several processes: each starts once all have compiled

    # PREFILL the replay buffer with the untrained policy, or continue a killed run from its last checkpoint
    checkpoints = Checkpoints(run_dir)  # runs/NAME/checkpoints/{epoch}, through orbax
    restored = checkpoints.restore(like) if args.resume else None  # None: no checkpoint yet, start afresh
    if restored is None:
        restored = prefill_fn(jax.jit(init_all, out_shardings=shardings)(seeds)), 0, -math.inf
    rs, first_epoch, best_score = restored

    # TRAIN AND EVALUATE, epoch by epoch; orbax writes an epoch's checkpoint while the next epoch runs
    env_steps = int(host_copy(rs.env_steps)[0])
    log = RunLog(args, run_dir, stop=stop, wandb=wandb, epoch=first_epoch, env_steps=env_steps, total=plan.total_steps)
    render = make_render(eval_env, actor, args.seed)  # seed 0's deterministic policy, compiled when first asked
    for epoch_index in range(first_epoch + 1, args.num_epochs + 1):
        if stop.agreed():  # a stop signal to any process: the epochs so far are written, --resume continues
            break
        epoch_start = time.time()
        rs, train_metrics = wait_until_ready(epoch_fn(rs))  # timed apart from the evaluation
        epoch_seconds = time.time() - epoch_start
        eval_epoch_keys = np.asarray(jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_keys, epoch_index))
        eval_metrics = evaluate_fn(rs.actor_params, eval_epoch_keys)
        metrics = over_seeds_summary(host_copy({**train_metrics, **eval_metrics}))
        metrics |= {"epoch": epoch_index, **log.progress_metrics(int(host_copy(rs.env_steps)[0]))}
        metrics["training/epoch_sps"] = plan.env_steps_per_epoch / epoch_seconds  # training alone
        checkpoints.wait()  # the last epoch's checkpoint is whole (a write that failed ends the run in one line)
        log.check(epoch_index, metrics)  # a non-finite loss stops the run here, with that checkpoint kept
        improved = metrics[SCORE] > best_score  # checkpoint_best: the best evaluation so far
        best_score = max(best_score, metrics[SCORE])
        if args.save_model:  # orbax copies the state off the devices now, and writes it while the next epoch runs
            checkpoints.save(epoch_index, rs, improved=improved, best_score=best_score, metrics=metrics)
        log.append(epoch_index, metrics)  # the epoch's line of metrics.jsonl, wandb and the console
        if args.render_every and epoch_index % args.render_every == 0:
            log.render(render(rs.actor_params, os.path.join(run_dir, f"render_epoch{epoch_index}.html")), epoch_index)
    if args.render and not stop.received:
        log.render(render(rs.actor_params, os.path.join(run_dir, "render.html")), args.num_epochs, "render_final")
    checkpoints.wait()
    log.close()  # after a stop signal, with epochs left, says how to resume and exits
    write_summary(args, run_dir)
    if args.save_model:
        save_params(os.path.join(run_dir, "final.msgpack"), checkpoint_params(rs))


def evaluate_saved_agent(args):
    """--evaluate runs/NAME: the run's saved agent (--checkpoint final, best or last), every seed of it, for
    num_eval_envs episodes on --eval-env-id (by default what the run was evaluated on), with fresh keys; nothing is
    trained and only the evaluation is compiled. Prints the metrics and writes them, with what they were measured
    on, to runs/NAME/evaluation__{eval env}__{checkpoint}.json; --render draws three episodes of seed 0 beside it."""
    env = GoalEnv(args.eval_env_id, args.episode_length)
    init, _, _, actor = make_train(args, env)  # the networks, to apply the saved parameters with
    seeds = jnp.arange(args.num_seeds) + args.seed
    shapes = jax.eval_shape(jax.vmap(lambda s: init(jax.random.PRNGKey(s))), seeds)  # to read checkpoint_last
    params, epoch = load_saved_actor(args.evaluate, args.checkpoint, shapes.actor_params)
    keys = jax.vmap(jax.random.PRNGKey)(seeds + 10_000)  # not the keys of the run's own evaluations
    evaluate = jax.jit(over_seeds(make_evaluate(args, env, actor), args.num_seeds))
    evaluate = evaluate.lower(params, keys).compile(env.compiler_options)
    metrics = over_seeds_summary(jax.device_get(evaluate(params, keys)))
    name = f"evaluation__{args.eval_env_id}__{args.checkpoint}"
    print(f"{args.evaluate}, {args.checkpoint} parameters (epoch {epoch}) on {args.eval_env_id}: {log_line(metrics)}")
    result = {"run": args.evaluate, "checkpoint": args.checkpoint, "epoch": epoch, "eval_env_id": args.eval_env_id}
    result |= {"episode_length": args.episode_length, "episodes_per_seed": args.num_eval_envs, "seeds": seeds.tolist()}
    path = os.path.join(args.evaluate, name + ".json")
    write_atomic(path, json.dumps(result | {"metrics": metrics}, indent=2).encode())
    print(f"wrote {path}")
    if args.render:
        print(f"wrote {make_render(env, actor, args.seed)(params, os.path.join(args.evaluate, name + '.html'))}")


def load_saved_actor(run_dir, which, actor_shapes):
    """(actor parameters with a leading seed axis, their epoch) of a run's final.msgpack (which="final"),
    checkpoint_best.msgpack ("best") or last checkpoint ("last": its actor_shapes part), or a one-line
    error. One process reads any of them, whatever devices and processes wrote them."""
    files = {"final": "final.msgpack", "best": "checkpoint_best.msgpack", "last": "checkpoints"}
    has = {k: os.path.isfile(os.path.join(run_dir, name)) for k, name in files.items()}
    has["last"] = bool(checkpoint_epochs(run_dir))
    if not has[which]:
        there = " or ".join(k for k in files if has[k])
        fail(
            f"--evaluate {run_dir} has no {files[which]} (--checkpoint {which}); it has: --checkpoint {there or 'none'}"
        )
    if which == "last":
        epoch = max(checkpoint_epochs(run_dir))
        return Checkpoints(run_dir, write=False).read(epoch, {"actor_params": actor_shapes})[0]["actor_params"], epoch
    path = os.path.join(run_dir, files[which])
    try:
        params = flax.serialization.msgpack_restore(pathlib.Path(path).read_bytes())["actor"]
    except (ValueError, KeyError, TypeError) as e:
        fail(f"cannot read {path} as this code's parameters: {type(e).__name__}: {e}", status=1)
    logged = logged_metrics(run_dir)
    best = max(logged, key=lambda m: m[SCORE], default={"epoch": 0})["epoch"]
    return params, best if which == "best" else len(logged)


def save_params(path, params):
    """The networks in one flax msgpack file, gathered from every process: one process reads it anywhere (a laptop)."""
    params = host_copy(params)
    if jax.process_index() == 0:
        write_atomic(path, flax.serialization.to_bytes(params))


# ==== RUN PLUMBING ====
# Skip on a first read. As main() calls it: --resume and --evaluate, processes, signals, wandb, checkpoints, the log.


RESUME_MAY_CHANGE = {"track", "wandb_project_name", "wandb_entity", "wandb_mode", "render", "render_every", "resume"}
RESUME_MAY_CHANGE |= {"devices_split"}  # a checkpoint is restored onto any devices
LAUNCH_FLAGS = {"coordinator_address", "num_processes", "process_id"}  # this launch's own, never the saved run's
HEARTBEAT_S = 60  # a process silent this long is dead to jax.distributed's coordination service
WRITE_TIMEOUT_S = 1200  # how long the processes wait for each other's shards of a checkpoint (orbax's default)


def parse_args():
    """tyro.cli with --preset NAME's flags, or --resume / --evaluate runs/NAME's saved flags, as the defaults."""
    given = {}
    for name, value in zip(sys.argv, sys.argv[1:] + [None]):
        for option in ["--resume", "--evaluate", "--preset"]:
            if name.startswith(option + "=") or (name == option and value is not None):
                given[option] = name.split("=", 1)[1] if "=" in name else value
    if (preset := given.pop("--preset", None)) is not None and preset not in PRESETS:
        fail(f"--preset {preset} is not a preset: choose one of {', '.join(PRESETS)}")
    if not given:
        return tyro.cli(Args, args=PRESETS.get(preset, "").split() + sys.argv[1:])  # the last of a flag wins
    if len(given) > 1:
        fail("--resume and --evaluate cannot be combined: continue a run, or evaluate it")
    [(option, run)] = given.items()
    if not os.path.isfile(os.path.join(run, "args.json")):
        fail(f"{option} {run} is not a run directory (no args.json); give runs/NAME of an earlier run")
    saved = {k: v for k, v in json.loads(pathlib.Path(run, "args.json").read_text()).items() if k not in LAUNCH_FLAGS}
    if option == "--resume" and not saved.get("save_model", True):
        fail(f"--resume {run}: that run was made with --no-save-model, so it has no checkpoint to continue from")
    args = tyro.cli(Args, default=Args(**{k: v for k, v in saved.items() if k in Args.__dataclass_fields__}))
    may_change = RESUME_MAY_CHANGE | (EVALUATION_FLAGS if args.evaluate else set())
    for name, value in saved.items():
        if name not in may_change and getattr(args, name, value) != value:
            kept = "a resumed run keeps" if args.resume else "an evaluated run keeps"
            fail(f"{flag(name)} {getattr(args, name)} differs from the run in {run} ({value}); {kept} its flags")
    return args


def start_processes(args):
    """One program over several processes (jax.distributed, docs/cluster.md) when launched so: process 0 alone prints
    and writes the run's files. JAX's recoverable mode: a dead process does not abort the others (StopSignals)."""
    address = args.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address is None and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) < 2:
        for name in ["num_processes", "process_id"]:
            if getattr(args, name) is not None:
                fail(f"{flag(name)} needs --coordinator-address HOST:PORT (process 0's), with the other of the two")
        return
    if address and None in (args.num_processes, args.process_id):
        fail("--coordinator-address needs --num-processes N and --process-id I (0 to N - 1)")
    if address and not 0 <= args.process_id < args.num_processes:
        fail(f"--process-id must be in [0, {args.num_processes - 1}] (--num-processes), got {args.process_id}")
    jax.config.update("jax_enable_recoverability", True)
    try:
        jax.distributed.initialize(address, args.num_processes, args.process_id, heartbeat_timeout_seconds=HEARTBEAT_S)
    except Exception as e:  # noqa: BLE001 (a launch that did not come together, in one line)
        fail(f"the processes did not start together (jax.distributed.initialize: {str(e).strip().splitlines()[0]})")
    if jax.process_index() > 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)


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
