# docs: docs/crl_offline.md -- contrastive RL from a fixed OGBench dataset, with deep residual encoders
"""Offline contrastive RL (CRL) on OGBench datasets, with residual networks up to 1024 layers deep.

The paper's offline experiment (Wang et al., "1000 Layer Networks for Self-Supervised RL", Sec. 4.10): CRL with
the residual sa_encoder, g_encoder and actor of crl_resnet.py (Fig. 2), trained from a fixed OGBench dataset
instead of data it collects, and evaluated on OGBench's five tasks per environment. The paper found no gain from
depth here, nor from deeper critics with a 4- or 8-layer actor (--critic-num-blocks, --actor-num-blocks), nor from
cold-initialising the critic encoders' last layers (--cold-init, Zheng et al. 2024).

The losses are OGBench's CRL (its impls/agents/crl.py), the method the paper's offline numbers compare with and the
one OGBench's published CRL results come from: a binary NCE critic (sigmoid cross-entropy of the logits
phi(s, a) . psi(g) / sqrt(d) against the identity) as an ensemble of two, and a DDPG+BC actor,
-Q(s, pi(s, g), g) / mean|Q| - bc_coef * log pi(a_data | s, g) with Q the ensemble's minimum. The online losses of
crl_resnet.py (InfoNCE with an L2 energy, an entropy-regularised actor) have no behaviour-cloning term, and an
offline actor without one chases the critic out of the data's support. Goals follow OGBench's goal sampling:
critic goals are future states of the same episode at a geometric offset (the relabelling of the online scripts),
actor goals future states at a uniform offset (and random dataset states on stitch datasets).

Reading map. Study: ARGS, NETWORKS, DATASET (goal sampling), LOSSES, TRAINING (make_train), EVALUATION and MAIN.
Skip on a first read: RUN PLUMBING (crl_resnet.py's: resume, processes, stop signals, orbax checkpoints, logging) and
ENVIRONMENTS (OGBench's environments and dataset files).

Data: python tools/make_ogbench_dataset.py --dataset pointmaze-medium-navigate-v0   (point mazes, made here), or
      OGBench's own files (ogbench.download_datasets, ~/.ogbench/data) for every other environment.
Run:  python crl_offline.py --dataset-path data/pointmaze-medium-navigate-v0.npz --critic-num-blocks 4
CPU:  python crl_offline.py --preset laptop
"""

import atexit
import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import pathlib
import re
import signal
import sys
import threading
import time
import zipfile
from typing import Any, Literal, Optional

os.environ.setdefault("MUJOCO_GL", "egl")  # OGBench's renders, offscreen (before anything imports mujoco)

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


# ==== ARGS ====
@dataclasses.dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment; runs are written to runs/{env_id}__{exp_name}__{seed}__{unix time}"""
    seed: int = 1
    """seed of the experiment (seed i of --num-seeds uses seed + i)"""
    track: bool = False
    """log to Weights & Biases (see --wandb-mode); when off, nothing is sent anywhere"""

    # Algorithm specific arguments: the data, the networks, the schedule and the losses (OGBench's CRL values)
    dataset_path: str = "data/pointmaze-medium-navigate-v0.npz"
    """an OGBench dataset (NAME.npz, NAME-val.npz beside it): tools/make_ogbench_dataset.py's, or OGBench's own"""
    env_id: Optional[str] = None
    """the OGBench environment evaluations run in; None: the dataset's (its name less the dataset type)"""
    episode_length: Optional[int] = None
    """evaluation steps per episode; None uses the environment's own (1000 in point and ant mazes)"""
    num_blocks: int = 1
    """residual blocks per network; depth = 4 * num_blocks Dense layers (1 block: the paper's depth 4)"""
    actor_num_blocks: Optional[int] = None
    """residual blocks of the actor; None uses --num-blocks"""
    critic_num_blocks: Optional[int] = None
    """residual blocks of sa_encoder and g_encoder; None uses --num-blocks"""
    width: int = 256
    """units per Dense layer"""
    repr_dim: int = 64
    """dimension of the representations phi(s, a) and psi(g)"""
    cold_init: bool = False
    """the last layer of sa_encoder and g_encoder in +-1e-12, zero biases (cold initialisation: Sec. 4.10's ablation)"""
    batch_size: int = 1024
    """transitions per minibatch, also the number of NCE negatives + 1 (OGBench's CRL: 1024)"""
    total_gradient_steps: int = 1_000_000
    """gradient steps in all, over every epoch (OGBench: 1M)"""
    num_epochs: int = 10
    """epochs, each followed by an evaluation (OGBench evaluates every 100k of its 1M steps)"""
    gamma: Optional[float] = None
    """discount of the future-state (critic goal) distribution; None: OGBench's for the dataset (OGBENCH_CRL)"""
    value_p_curgoal: float = 0.0
    """probability that a critic goal is the current state (OGBench's value_p_curgoal)"""
    value_p_randomgoal: float = 0.0
    """probability that a critic goal is a random dataset state; the rest are future states of the same episode"""
    actor_p_curgoal: float = 0.0
    """probability that an actor goal is the current state"""
    actor_p_randomgoal: Optional[float] = None
    """probability that an actor goal is a random dataset state; None: OGBench's for the dataset (OGBENCH_CRL)"""
    actor_lr: float = 3e-4
    """actor learning rate (Adam)"""
    critic_lr: float = 3e-4
    """critic learning rate (Adam)"""
    bc_coef: Optional[float] = None
    """weight of DDPG+BC's behaviour cloning term (OGBench's alpha); None: OGBench's for the dataset (OGBENCH_CRL)"""
    num_critics: int = 2
    """critics in the ensemble (OGBench: 2); the actor maximises their minimum"""
    num_seeds: int = 1
    """independent seeds trained in one jitted program (vmap); metrics: mean over seeds, _std, _per_seed"""
    remat: bool = False
    """recompute each residual block in the backward pass: activation memory O(1) in depth, ~1.3x compute"""
    scan_unroll: int = 1
    """scan steps over depth unrolled into one loop iteration: 2-4 speed up narrow nets on a CPU, not wide ones"""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the matmuls; parameters, LayerNorm, the residual stream and the losses stay float32"""
    preset: Optional[Literal["laptop"]] = None
    """named defaults that the flags given override (PRESETS: laptop, a CPU run on pointmaze-medium-navigate)"""

    # Evaluation
    num_eval_episodes: int = 50
    """evaluation episodes per task and seed (OGBench's published runs: 50 on each of the 5 tasks)"""
    render: bool = False
    """after training, write runs/{run_name}/render.html: one episode of each task (OGBench's MuJoCo renderer, EGL)"""
    render_every: int = 0
    """also render after every K-th epoch, to runs/{run_name}/render_epoch{N}.html (0: never); --track logs renders"""
    evaluate: Optional[str] = None
    """a run directory (runs/NAME) whose saved agent to evaluate instead of training (docs/crl_offline.md)"""
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
    """several devices: data splits each seed's minibatches over all; seeds puts whole seeds on each"""
    coordinator_address: Optional[str] = None
    """HOST:PORT of process 0, for one run over several processes or hosts (docs/cluster.md); srun needs none"""
    num_processes: Optional[int] = None
    """processes in the run (with --coordinator-address)"""
    process_id: Optional[int] = None
    """this process's index, 0 to --num-processes - 1 (with --coordinator-address); process 0 writes the files"""


# --preset NAME: what a laptop run needs, in one word: these flags go before those given, which override them (the
# OGBench settings stay what no preset gives); args.json records the result, which --resume and --evaluate read.
PRESETS = {
    # pointmaze-medium-navigate made by tools/make_ogbench_dataset.py, sized for a CPU (docs/crl_offline.md)
    "laptop": "--dataset-path data/pointmaze-medium-navigate-v0.npz --total-gradient-steps 10000 --num-epochs 10 "
    "--batch-size 256 --num-eval-episodes 5 --width 64 --num-blocks 1 --scan-unroll 2",
}


# --evaluate runs/NAME keeps the run's flags but these: what to evaluate, with how many episodes
EVALUATION_FLAGS = {"evaluate", "checkpoint", "num_eval_episodes"}


def fail(message, status=2):
    """A one-line error, no traceback: status 2 for bad input (like argparse), 1 for a run that had to stop."""
    tqdm.tqdm.write(f"error: {message}", file=sys.stderr)  # on a line of its own, under a progress bar
    sys.exit(status)


def flag(name):
    return "--" + name.replace("_", "-")  # num_envs -> --num-envs


def check_args(args):
    """Every inconsistency in the flags, the dataset file and the environment is a one-line error here, before
    anything is compiled."""
    counts = ["num_seeds", "num_epochs", "num_eval_episodes", "batch_size", "width", "repr_dim", "num_critics"]
    for name in [*counts, "total_gradient_steps", "num_blocks", "actor_num_blocks", "critic_num_blocks"]:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            fail(f"{flag(name)} must be >= 1, got {getattr(args, name)}")
    args = resolve_args(args)  # the checks below read what --env-id, --bc-coef, --actor-p-randomgoal stand for
    devices = jax.device_count()
    rules = [  # (flag, broken, what it must be)
        ("gamma", not 0 < args.gamma < 1, "in (0, 1)"),
        *[(name, getattr(args, name) <= 0, "> 0") for name in ["actor_lr", "critic_lr"]],
        ("bc_coef", args.bc_coef < 0, ">= 0"),
        ("episode_length", args.episode_length is not None and args.episode_length < 1, ">= 1"),
        ("total_gradient_steps", args.total_gradient_steps < args.num_epochs, ">= --num-epochs (one step an epoch)"),
        *[
            (f"{who}_p_{what}", not 0 <= getattr(args, f"{who}_p_{what}") <= 1, "in [0, 1]")
            for who in ["value", "actor"]
            for what in ["curgoal", "randomgoal"]
        ],
        *[
            (
                f"{who}_p_randomgoal",
                getattr(args, f"{who}_p_curgoal") + getattr(args, f"{who}_p_randomgoal") > 1,
                f"<= 1 - --{who}-p-curgoal (the rest are future states)",
            )
            for who in ["value", "actor"]
        ],
        (
            "batch_size",
            args.devices_split == "data" and args.batch_size % devices,
            f"a multiple of the {devices} devices",
        ),
        (
            "num_seeds",
            args.devices_split == "seeds" and args.num_seeds % devices,
            f"a multiple of the {devices} devices with --devices-split seeds",
        ),
    ]
    for name, broken, must_be in rules:
        if broken:
            fail(f"{flag(name)} must be {must_be}, got {getattr(args, name)}")
    env = OGBenchTask(args.env_id, args.episode_length)  # an unknown environment is a one-line error
    if env.goal_dim != env.obs_dim:
        fail(
            f"--env-id {args.env_id}: its goals have {env.goal_dim} numbers, its observations {env.obs_dim}; "
            "crl_offline.py's goals are dataset observations (OGBench's oraclerep environments are not supported)"
        )
    if args.render or args.render_every:  # no OpenGL here: one line now, not after training
        e = env.make(render_mode="rgb_array", width=16, height=16)
        env.reset(e, 0, options={"task_id": 1})
        renderer_frame(e)
        e.close()
    if args.evaluate:  # the saved agent needs the environment, not the dataset
        return
    data = read_dataset(args.dataset_path)
    dims = (data.obs.shape[1], data.action.shape[1])
    if dims != (env.obs_dim, env.action_dim):
        fail(
            f"--dataset-path {args.dataset_path} holds observations of {dims[0]} and actions of {dims[1]} numbers, "
            f"but --env-id {args.env_id} has {env.obs_dim} and {env.action_dim}: a dataset of another environment?"
        )
    if args.batch_size > data.obs.shape[0]:
        fail(f"--batch-size must be <= the {data.obs.shape[0]} transitions of the dataset, got {args.batch_size}")


# OGBench's CRL settings (its impls/hyperparameters.sh), read off a dataset's name, family-size-type-v0: the discount
# (0.995 where episodes are long: giant and humanoid mazes), the BC weight alpha by data type, else by family, else 0.1,
# and the share of actor goals drawn from anywhere in the dataset (stitch data: half, its episodes are short; explore:
# all). What a flag gives wins.
OGBENCH_ALPHA = {"play": 3.0, "explore": 0.003, "pointmaze": 0.03, "antsoccer": 0.3}
OGBENCH_CRL = {
    "gamma": lambda family, size, kind: 0.995 if size == "giant" or family == "humanoidmaze" else 0.99,
    "bc_coef": lambda family, size, kind: OGBENCH_ALPHA.get(kind, OGBENCH_ALPHA.get(family, 0.1)),
    "actor_p_randomgoal": lambda family, size, kind: {"stitch": 0.5, "explore": 1.0}.get(kind, 0.0),
}


def resolve_args(args):
    """The flags with what their None stands for, fixed once: args.json records them, and --resume and --evaluate
    read them back."""
    env_id = args.env_id or env_id_of(args.dataset_path)
    name = os.path.basename(args.dataset_path).removesuffix(".npz").removesuffix("-val").removeprefix("visual-")
    parts = name.split("-")  # e.g. antmaze-giant-stitch-v0, cube-double-play-v0, scene-play-v0
    family, size, kind = parts[0], parts[1] if len(parts) > 3 else "", parts[-2] if len(parts) > 2 else ""
    derived = {k: rule(family, size, kind) for k, rule in OGBENCH_CRL.items() if getattr(args, k) is None}
    return dataclasses.replace(
        args,
        env_id=env_id,
        episode_length=args.episode_length or OGBenchTask(env_id).episode_length,
        actor_num_blocks=args.actor_num_blocks or args.num_blocks,
        critic_num_blocks=args.critic_num_blocks or args.num_blocks,
        **derived,
    )


# ==== NETWORKS ====
# Every Dense layer: kernel init variance scaling 1/3, fan-in, uniform, and zero biases, as in the paper's code.
dense_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


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


def symmetric_uniform(scale):
    """Weights drawn from U(-scale, scale) (flax's uniform(scale) draws from [0, scale))."""
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -scale, scale)


class Encoder(nn.Module):
    """sa_encoder phi(s, a) or g_encoder psi(g): residual trunk, then Dense(repr_dim); with cold_init that last layer's
    weights are within +-1e-12 and its biases 0 (Zheng et al. 2024): every logit starts at ~0."""

    repr_dim: int
    width: int
    num_blocks: int
    remat: bool = False
    scan_unroll: int = 1
    dtype: Any = jnp.float32
    cold_init: bool = False

    @nn.compact
    def __call__(self, x):
        x = ResidualTrunk(self.width, self.num_blocks, self.remat, self.scan_unroll, self.dtype)(x)
        last_init = symmetric_uniform(1e-12) if self.cold_init else dense_init
        return nn.Dense(self.repr_dim, kernel_init=last_init, dtype=self.dtype)(x).astype(jnp.float32)


class Actor(nn.Module):
    """pi(a | s, g) = N(mean, I): residual trunk, then a Dense head for the mean (OGBench's constant std)."""

    action_dim: int
    width: int
    num_blocks: int
    remat: bool = False
    scan_unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, obs):
        x = ResidualTrunk(self.width, self.num_blocks, self.remat, self.scan_unroll, self.dtype)(obs)
        return nn.Dense(self.action_dim, kernel_init=dense_init, dtype=self.dtype)(x).astype(jnp.float32)


def make_networks(args, env):
    dtype = jnp.dtype(args.compute_dtype)
    trunk = (args.width, args.critic_num_blocks, args.remat, args.scan_unroll, dtype)
    sa_encoder = Encoder(args.repr_dim, *trunk, cold_init=args.cold_init)
    g_encoder = Encoder(args.repr_dim, *trunk, cold_init=args.cold_init)
    actor = Actor(env.action_dim, args.width, args.actor_num_blocks, *trunk[2:])
    return sa_encoder, g_encoder, actor


# ==== DATASET ====
# In place of the online scripts' replay buffer: a fixed dataset of episodes stored one after another (OGBench's
# format), on the devices whole, and OGBench's goal sampling in place of the buffer's relabelling.


@flax.struct.dataclass
class Dataset:
    """The transitions (s_t, a_t) of every episode, in order; episode_end[t]: the index of the last transition of
    t's episode, so that t's future states are t + 1 .. episode_end[t]."""

    obs: jax.Array  # (N, obs_dim)
    action: jax.Array  # (N, action_dim)
    episode_end: jax.Array  # (N,) int32


def on_every_device(tree, sharding):
    """numpy arrays as global arrays held whole by every device of every process (None stays None)."""
    put = lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return None if tree is None else jax.tree.map(put, tree)


def load_ogbench_file(path):
    """What ogbench.load_dataset(path) returns, read the same way: each episode's last row is dropped (its action
    leads nowhere), next_observations are the rows after, terminals mark each episode's last transition."""
    with np.load(path) as file:
        observations, actions = file["observations"].astype(np.float32), file["actions"].astype(np.float32)
        terminals = file["terminals"].astype(np.float32)
    keep = terminals == 0
    return {
        "observations": observations[keep],
        "actions": actions[keep],
        "terminals": np.append(terminals[1:], 1.0)[keep].astype(np.float32),
        "next_observations": observations[np.append(False, keep[:-1])],
    }


def make_dataset(loaded):
    """A Dataset (numpy) of load_ogbench_file's dict."""
    (terminal_locs,) = np.nonzero(loaded["terminals"] > 0)
    episode_end = terminal_locs[np.searchsorted(terminal_locs, np.arange(len(loaded["terminals"])))]
    return Dataset(loaded["observations"], loaded["actions"], episode_end.astype(np.int32))


def sample_goals(key, t, data, p_cur, p_random, gamma, geometric):
    """A goal index for each transition index t, OGBench's GCDataset.sample_goals: the current state with probability
    p_cur, a random dataset state with p_random, else a future state of t's own episode: t + k, k ~ Geometric(1 - gamma)
    cut at the episode's end (geometric=True; the online scripts' relabelling), or uniform over t + 1 .. end."""
    k_geom, k_uniform, k_random, k_pick_future, k_pick_current = jax.random.split(key, 5)
    end = data.episode_end[t]
    if geometric:
        future = jnp.minimum(t + jax.random.geometric(k_geom, 1 - gamma, t.shape, jnp.int32), end)
    else:
        u = jax.random.uniform(k_uniform, t.shape)
        future = jnp.round(jnp.minimum(t + 1, end) * u + end * (1 - u)).astype(jnp.int32)
    random = jax.random.randint(k_random, t.shape, 0, data.obs.shape[0])
    p_future = 1.0 - p_cur - p_random
    goal = jnp.where(jax.random.uniform(k_pick_future, t.shape) < p_future / (1.0 - p_cur + 1e-6), future, random)
    return jnp.where(jax.random.uniform(k_pick_current, t.shape) < p_cur, t, goal)


def sample_batch(key, data, args, batch_size):
    """batch_size transitions drawn uniformly, each with a critic goal (geometric offsets) and an actor goal
    (uniform offsets), as in OGBench's CRL."""
    k_t, k_value, k_actor = jax.random.split(key, 3)
    t = jax.random.randint(k_t, (batch_size,), 0, data.obs.shape[0])
    value_goal = sample_goals(k_value, t, data, args.value_p_curgoal, args.value_p_randomgoal, args.gamma, True)
    actor_goal = sample_goals(k_actor, t, data, args.actor_p_curgoal, args.actor_p_randomgoal, args.gamma, False)
    return {
        "obs": data.obs[t],
        "action": data.action[t],
        "value_goal": data.obs[value_goal],
        "actor_goal": data.obs[actor_goal],
    }


# ==== LOSSES ====
# OGBench's CRL (its impls/agents/crl.py) on residual encoders. Critic: binary NCE over the batch, logits
# L_ij = phi(s_i, a_i) . psi(g_j) / sqrt(d): each (s_i, a_i) against its own goal g_i (label 1) and the other rows'
# goals (label 0), for each critic of the ensemble. Actor: DDPG+BC, maximise Q(s, pi(s, g), g) scaled by its mean
# size, plus bc_coef times the log-likelihood of the dataset's action under N(pi(s, g), I).


def make_losses(args, sa_encoder, g_encoder, actor):
    def critic_repr(critic_params, obs, action, goal):
        """(phi, psi) of every critic of the ensemble: (num_critics, batch, repr_dim) each."""

        def one(params):
            phi = sa_encoder.apply(params["sa_encoder"], jnp.concatenate([obs, action], axis=-1))
            return phi, g_encoder.apply(params["g_encoder"], goal)

        return jax.vmap(one)(critic_params)

    def critic_loss(critic_params, batch):
        phi, psi = critic_repr(critic_params, batch["obs"], batch["action"], batch["value_goal"])
        logits = jnp.einsum("eik,ejk->eij", phi, psi) / jnp.sqrt(phi.shape[-1])  # (critics, B, B)
        eye = jnp.eye(logits.shape[-1])
        loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, eye))
        mean_logits = jnp.mean(logits, axis=0)
        info = {
            "critic/binary_accuracy": jnp.mean((mean_logits > 0) == eye),
            "critic/categorical_accuracy": jnp.mean(jnp.argmax(mean_logits, axis=1) == jnp.arange(eye.shape[0])),
            "critic/logits_pos": jnp.sum(mean_logits * eye) / jnp.sum(eye),
            "critic/logits_neg": jnp.sum(mean_logits * (1 - eye)) / jnp.sum(1 - eye),
        }
        return loss, info

    def actor_loss(actor_params, critic_params, batch):
        obs_goal = jnp.concatenate([batch["obs"], batch["actor_goal"]], axis=-1)
        mean = actor.apply(actor_params, obs_goal)
        phi, psi = critic_repr(critic_params, batch["obs"], jnp.clip(mean, -1, 1), batch["actor_goal"])
        # log Q: OGBench's critic outputs exp(phi . psi / sqrt(d)) and its actor maximises log max(Q, 1e-6)
        log_q = jnp.maximum(jnp.sum(phi * psi, axis=-1) / jnp.sqrt(phi.shape[-1]), jnp.log(1e-6))
        q = jnp.min(log_q, axis=0)  # the ensemble's minimum
        q_loss = -jnp.mean(q) / jax.lax.stop_gradient(jnp.mean(jnp.abs(q)) + 1e-6)  # the same scale on any task
        log_prob = jnp.sum(-0.5 * (batch["action"] - mean) ** 2 - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
        bc_loss = -args.bc_coef * jnp.mean(log_prob)
        info = {"actor/q_loss": q_loss, "actor/bc_loss": bc_loss, "actor/mse": jnp.mean((mean - batch["action"]) ** 2)}
        return q_loss + bc_loss, info

    return critic_loss, actor_loss


# ==== TRAINING ====
# One gradient step: SAMPLE a minibatch with its goals from the dataset, UPDATE the critics and the actor, each from
# the parameters before the step. An epoch is a scan of gradient steps (one compiled program, run num_epochs times
# by main()), then the losses on a minibatch of the validation file, when there is one.


@flax.struct.dataclass
class RunnerState:
    """Everything one seed's training carries from step to step (`rs` in the code): the networks, their optimiser
    states, the random key, the gradient steps so far."""

    actor_params: Any
    critic_params: Any  # {"sa_encoder": ..., "g_encoder": ...}, each with a leading axis of num_critics
    actor_opt_state: Any
    critic_opt_state: Any
    key: jax.Array
    gradient_steps: jax.Array


def make_train(args, env):
    """Returns init(key) -> rs and epoch(rs, data, val_data) -> (rs, metrics) for one seed, and the actor module
    (for evaluation). Each is a pure function of its inputs: main() jits them over seeds and devices."""
    sa_encoder, g_encoder, actor = make_networks(args, env)
    critic_loss, actor_loss = make_losses(args, sa_encoder, g_encoder, actor)
    actor_opt, critic_opt = optax.adam(args.actor_lr), optax.adam(args.critic_lr)
    steps_per_epoch = args.total_gradient_steps // args.num_epochs

    def init(key):
        key, k_actor, k_critics = jax.random.split(key, 3)
        actor_params = actor.init(k_actor, jnp.zeros((1, env.obs_dim + env.goal_dim)))

        def one_critic(k):
            k_sa, k_g = jax.random.split(k)
            return {
                "sa_encoder": sa_encoder.init(k_sa, jnp.zeros((1, env.obs_dim + env.action_dim))),
                "g_encoder": g_encoder.init(k_g, jnp.zeros((1, env.goal_dim))),
            }

        critic_params = jax.vmap(one_critic)(jax.random.split(k_critics, args.num_critics))
        return RunnerState(
            actor_params,
            critic_params,
            actor_opt.init(actor_params),
            critic_opt.init(critic_params),
            key,
            jnp.zeros((), dtype=jnp.int32),
        )

    def sgd_step(rs, data):
        key, batch_key = jax.random.split(rs.key)
        batch = split_over_devices(sample_batch(batch_key, data, args, args.batch_size), axis=0)
        (c_loss, c_info), c_grads = jax.value_and_grad(critic_loss, has_aux=True)(rs.critic_params, batch)
        (a_loss, a_info), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(
            rs.actor_params, rs.critic_params, batch
        )
        c_updates, critic_opt_state = critic_opt.update(c_grads, rs.critic_opt_state)
        a_updates, actor_opt_state = actor_opt.update(a_grads, rs.actor_opt_state)
        rs = rs.replace(
            critic_params=optax.apply_updates(rs.critic_params, c_updates),
            actor_params=optax.apply_updates(rs.actor_params, a_updates),
            critic_opt_state=critic_opt_state,
            actor_opt_state=actor_opt_state,
            key=key,
            gradient_steps=rs.gradient_steps + 1,
        )
        metrics = {
            "losses/critic_loss": c_loss,
            "losses/actor_loss": a_loss,
            # gradient health of deep nets: vanishing shows as a norm drifting to 0, explosion as a blow-up
            "gradients/critic_norm": optax.tree.norm(c_grads),
            "gradients/actor_norm": optax.tree.norm(a_grads),
            **c_info,
            **a_info,
        }
        return rs, metrics

    def epoch(rs, data, val_data):
        rs, metrics = jax.lax.scan(lambda r, _: sgd_step(r, data), rs, None, length=steps_per_epoch)
        metrics = jax.tree.map(jnp.mean, metrics)
        if val_data is not None:  # the losses on held-out episodes: overfitting shows as a gap to the training ones
            key, val_key = jax.random.split(rs.key)
            batch = sample_batch(val_key, val_data, args, args.batch_size)
            val_critic, _ = critic_loss(rs.critic_params, batch)
            val_actor, _ = actor_loss(rs.actor_params, rs.critic_params, batch)
            metrics |= {"validation/val_critic_loss": val_critic, "validation/val_actor_loss": val_actor}
            rs = rs.replace(key=key)
        return rs, metrics

    return init, epoch, actor


def checkpoint_params(rs):
    """The networks written to checkpoint_best and final: what evaluation loads."""
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
    """Where a (seeds, ...) RunnerState lives. data: on every device, each of which takes its share of every
    minibatch (split_over_devices in TRAINING); XLA adds the gradients' all-reduce. seeds: each device holds whole
    seeds, and the update communicates nothing. The dataset is on every device either way (on_every_device)."""
    if devices_split == "seeds":
        return jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("devices")), rs)
    return jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), rs)


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


# ==== EVALUATION ====
SCORE = "eval/success"  # what checkpoint_best and summary.json rank by: OGBench's score
STEPS = "training/gradient_steps"  # what metrics.jsonl and wandb count progress in
SUMMARY_FLAGS = ["env_id", "episode_length", "dataset_path"]  # what summary.json says the score was measured on


def make_evaluate(args, env, actor):
    """OGBench's evaluation: num_eval_episodes episodes of each of the environment's tasks (5 in every OGBench
    environment: a fixed start and goal each, with noise) per seed, the deterministic policy a = clip(mean, -1, 1),
    success = the goal reached before episode_length steps. Returns evaluate(actor_params, seed) ->
    {metric: (num_seeds,) values}, eval/success the mean over tasks and eval/task{k}_success each task's.

    OGBench's environments are plain MuJoCo on the CPU, stepped one by one; the policy is one jitted call per step
    for every episode of every seed at once (episodes that ended are stepped no more)."""
    policy = jax.jit(jax.vmap(lambda params, obs_goal: jnp.clip(actor.apply(params, obs_goal), -1, 1)))
    tasks = range(1, env.num_tasks + 1)
    episodes = [(task, e) for task in tasks for e in range(args.num_eval_episodes)]  # per seed
    pool = [env.make() for _ in episodes for _ in range(args.num_seeds)]  # made once, reset every evaluation

    def evaluate(actor_params, seed):
        params = host_copy(actor_params)
        obs_goal = np.zeros((args.num_seeds, len(episodes), env.obs_dim + env.goal_dim), np.float32)
        for i, e in enumerate(pool):
            s, k = divmod(i, len(episodes))
            ob, info = env.reset(e, seed * len(pool) + i, options={"task_id": episodes[k][0]})
            obs_goal[s, k] = np.concatenate([ob, info["goal"]])
        running = np.ones((args.num_seeds, len(episodes)), bool)
        success = np.zeros((args.num_seeds, len(episodes)))
        for _ in range(env.episode_length):
            actions = np.asarray(policy(params, obs_goal))
            for s, k in zip(*np.nonzero(running)):
                ob, _, terminated, _, info = pool[s * len(episodes) + k].step(actions[s, k])
                obs_goal[s, k, : env.obs_dim] = ob
                success[s, k], running[s, k] = info["success"], not terminated  # OGBench ends an episode at its goal
            if not running.any():
                break
        by_task = success.reshape(args.num_seeds, len(tasks), args.num_eval_episodes).mean(axis=2)
        metrics = {"eval/success": by_task.mean(axis=1)}
        metrics |= {f"eval/task{task}_success": by_task[:, j] for j, task in enumerate(tasks)}
        # every process ran the same episodes; process 0's numbers make sure they agree on the best epoch
        return metrics if jax.process_count() == 1 else multihost_utils.broadcast_one_to_all(metrics)

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


def make_render(env, actor, seed, every=5):
    """render(actor_params, path) -> path: an HTML page of animated GIFs, one episode of each task by seed 0's
    deterministic policy (actor_params has a leading seed axis), every `every`-th frame, through OGBench's MuJoCo
    renderer offscreen (MUJOCO_GL=egl by default; osmesa where EGL is missing), or a one-line error."""
    policy = jax.jit(lambda params, obs_goal: jnp.clip(actor.apply(params, obs_goal), -1, 1))

    def render(actor_params, path):
        import base64

        from PIL import Image  # pillow, which matplotlib installs

        params, pages = jax.tree.map(lambda x: x[0], host_copy(actor_params)), []
        for task in range(1, env.num_tasks + 1):
            e = env.make(render_mode="rgb_array", width=160, height=160)
            ob, info = env.reset(e, seed + task, options={"task_id": task})
            frames, done, t = [renderer_frame(e)], False, 0
            while not done:
                ob, _, terminated, truncated, _ = e.step(np.asarray(policy(params, np.concatenate([ob, info["goal"]]))))
                done, t = terminated or truncated, t + 1
                frames += [e.render()] if t % every == 0 or done else []
            e.close()
            gif = io.BytesIO()
            images = [Image.fromarray(f) for f in frames]
            images[0].save(gif, format="GIF", save_all=True, append_images=images[1:], duration=40, loop=0)
            src = "data:image/gif;base64," + base64.b64encode(gif.getvalue()).decode()
            pages.append(f'<figure><img src="{src}"><figcaption>task {task}, {t} steps</figcaption></figure>')
        if jax.process_index() == 0:
            write_atomic(path, ("<html><body style='display:flex'>" + "".join(pages) + "</body></html>").encode())
        return path

    return render


# ==== MAIN ====
def main():
    """The experiment: num_seeds agents trained side by side from one dataset for num_epochs epochs, each epoch
    followed by an evaluation on OGBench's tasks; metrics, checkpoints and the final networks go to runs/NAME
    (docs/crl_offline.md#what-a-run-writes)."""
    args = parse_args()  # the flags (with --preset's), or the saved flags of the run --resume or --evaluate names
    start_processes(args)  # one program over several processes when launched so (docs/cluster.md); else nothing
    check_args(args)  # also reads the dataset: a bad file is a one-line error before anything compiles
    args = resolve_args(args)  # what None stands for, as args.json records it
    if args.evaluate:  # --evaluate runs/NAME: no training, see evaluate_saved_agent below
        return evaluate_saved_agent(args)
    env = OGBenchTask(args.env_id, args.episode_length)
    data, val_data = read_dataset(args.dataset_path), read_dataset(val_path(args.dataset_path), missing_ok=True)
    steps_per_epoch = args.total_gradient_steps // args.num_epochs
    total_steps = steps_per_epoch * args.num_epochs
    run_dir = open_run_dir(args)  # runs/NAME with args.json, or the run --resume continues
    stop = StopSignals(run_dir)  # SIGTERM, Ctrl-C, a dead process: the run ends with its files whole
    wandb = start_wandb(args, run_dir) if args.track else None
    print(
        f"{run_dir}: {args.dataset_path} ({data.obs.shape[0]} transitions"
        f"{f', {val_data.obs.shape[0]} for validation' if val_data else ', no validation file'}), evaluated on "
        f"{args.env_id}'s {env.num_tasks} tasks x {args.num_eval_episodes} episodes\nactor depth "
        f"{4 * args.actor_num_blocks}, critic depth {4 * args.critic_num_blocks} (Dense layers in the residual "
        f"blocks){', cold-initialised' if args.cold_init else ''}, width {args.width}, {args.num_critics} critics, "
        f"{args.num_seeds} seed(s), {jax.device_count()} {jax.devices()[0].platform} device(s) in "
        f"{jax.process_count()} process(es), split by {args.devices_split}\n"
        f"{args.num_epochs} epochs x {steps_per_epoch} gradient steps of {args.batch_size} = {total_steps}; gamma "
        f"{args.gamma}, bc_coef {args.bc_coef}, actor goals random {args.actor_p_randomgoal} (OGBench's for the data)"
    )

    # BUILD one runner state per seed, on the devices, the dataset on every device, and COMPILE an epoch once
    init, epoch, actor = make_train(args, env)
    evaluate = make_evaluate(args, env, actor)
    seeds = np.arange(args.num_seeds) + args.seed
    init_all = jax.vmap(lambda s: init(jax.random.PRNGKey(s)))
    mesh = use_all_devices(args.devices_split)  # every device of every process
    shapes = jax.eval_shape(init_all, seeds)
    shardings = device_shardings(shapes, mesh, args.devices_split)
    like = jax.tree.map(lambda x, where: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=where), shapes, shardings)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())  # metrics: every process has them
    n = args.num_seeds
    data, val_data = on_every_device(data, replicated), on_every_device(val_data, replicated)
    compile_start = time.time()  # the runner state is donated: each epoch updates it in place
    epoch_all = lambda rs, data, val: over_seeds(lambda r: epoch(r, data, val), n)(rs)
    epoch_fn = jax.jit(epoch_all, donate_argnums=0, out_shardings=(shardings, replicated))
    epoch_fn = epoch_fn.lower(like, data, val_data).compile()
    print(f"compiled in {time.time() - compile_start:.1f} s (one epoch)")
    wait_for_every_process("compiled")  # several processes: each starts once all have compiled

    # START from the untrained networks, or continue a killed run from its last checkpoint
    checkpoints = Checkpoints(run_dir)  # runs/NAME/checkpoints/{epoch}, through orbax
    restored = checkpoints.restore(like) if args.resume else None  # None: no checkpoint yet, start afresh
    if restored is None:
        restored = jax.jit(init_all, out_shardings=shardings)(seeds), 0, -math.inf
    rs, first_epoch, best_score = restored

    # TRAIN AND EVALUATE, epoch by epoch; orbax writes an epoch's checkpoint while the next epoch runs
    steps = int(host_copy(rs.gradient_steps)[0])
    log = RunLog(args, run_dir, stop=stop, wandb=wandb, epoch=first_epoch, env_steps=steps, total=total_steps)
    render = make_render(env, actor, args.seed)  # seed 0's deterministic policy on each task
    for epoch_index in range(first_epoch + 1, args.num_epochs + 1):
        if stop.agreed():  # a stop signal to any process: the epochs so far are written, --resume continues
            break
        epoch_start = time.time()
        rs, train_metrics = wait_until_ready(epoch_fn(rs, data, val_data))  # timed apart from the evaluation
        epoch_seconds = time.time() - epoch_start
        eval_metrics = evaluate(rs.actor_params, args.seed * 1_000 + epoch_index)
        metrics = over_seeds_summary(host_copy(train_metrics) | eval_metrics)
        metrics |= {"epoch": epoch_index, **log.progress_metrics(int(host_copy(rs.gradient_steps)[0]))}
        metrics["training/epoch_sps"] = steps_per_epoch / epoch_seconds  # gradient steps per second, training alone
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
    num_eval_episodes episodes of each task, with other start noise than the run's own evaluations; nothing is
    trained. Prints the metrics and writes them to runs/NAME/evaluation__{env}__{checkpoint}.json; --render draws
    one episode of each task by seed 0 beside it."""
    env = OGBenchTask(args.env_id, args.episode_length)
    init, _, actor = make_train(args, env)  # the networks, to apply the saved parameters with
    seeds = jnp.arange(args.num_seeds) + args.seed
    shapes = jax.eval_shape(jax.vmap(lambda s: init(jax.random.PRNGKey(s))), seeds)  # to read checkpoint_last
    params, epoch = load_saved_actor(args.evaluate, args.checkpoint, shapes.actor_params)
    metrics = over_seeds_summary(make_evaluate(args, env, actor)(params, args.seed * 1_000 + 10_000))
    name = f"evaluation__{args.env_id}__{args.checkpoint}"
    print(f"{args.evaluate}, {args.checkpoint} parameters (epoch {epoch}) on {args.env_id}: {log_line(metrics)}")
    result = {"run": args.evaluate, "checkpoint": args.checkpoint, "epoch": epoch, "env_id": args.env_id}
    result |= {"episode_length": args.episode_length, "episodes_per_task": args.num_eval_episodes}
    result |= {"seeds": seeds.tolist()}
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
# OGBench's goal-conditioned environments (the `ogbench` package: plain MuJoCo, stepped on the CPU) and its dataset
# files. In place of the online scripts' brax environments: nothing here runs on the accelerator.


def import_ogbench():
    """gymnasium, with every OGBench environment registered (importing ogbench does it)."""
    import gymnasium
    import ogbench  # noqa: F401

    return gymnasium


def env_id_of(dataset_path):
    """OGBench's naming: the dataset pointmaze-medium-navigate-v0.npz was collected in pointmaze-medium-v0."""
    parts = os.path.basename(dataset_path).removesuffix(".npz").split("-")
    return "-".join(parts[:-2] + parts[-1:]) if len(parts) >= 3 else "-".join(parts)


def val_path(dataset_path):
    """OGBench's validation file beside a dataset: NAME-val.npz."""
    return dataset_path.removesuffix(".npz") + "-val.npz"


class OGBenchTask:
    """An OGBench environment's sizes, tasks and episode length, and make() for a fresh copy of it."""

    def __init__(self, env_id, episode_length=None):
        gymnasium = import_ogbench()
        if env_id not in gymnasium.envs.registry:
            known = ", ".join([k for k in gymnasium.envs.registry if k.startswith(("pointmaze", "antmaze"))][:8])
            fail(f"--env-id {env_id!r} is not an OGBench environment (its dataset's name sets it); e.g. {known}")
        probe = gymnasium.make(env_id)
        _, info = probe.reset(options={"task_id": 1})
        self.env_id, self.goal_dim = env_id, info["goal"].shape[0]
        self.obs_dim, self.action_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
        self.num_tasks = probe.unwrapped.num_tasks
        self.episode_length = episode_length or probe.spec.max_episode_steps
        probe.close()

    def make(self, **kwargs):
        return import_ogbench().make(self.env_id, max_episode_steps=self.episode_length, **kwargs)

    @staticmethod
    def reset(e, seed, options):
        """e.reset, its random start the same on every machine and process for a seed: OGBench's maze draws its start
        noise from numpy's global generator, its settling steps from the action space's."""
        np.random.seed(seed % 2**32)
        e.action_space.seed(seed % 2**32)
        return e.reset(seed=seed % 2**32, options=options)


def renderer_frame(e):
    """e.render(), or a one-line error where MuJoCo finds no OpenGL to render offscreen with."""
    try:
        return e.render()
    except Exception as error:  # noqa: BLE001 (no OpenGL here: one line)
        fail(f"--render: OGBench's renderer did not start ({error!r}); try MUJOCO_GL=osmesa, or run without it")


def read_dataset(path, missing_ok=False):
    """A Dataset of an OGBench file, or a one-line error saying what was expected (None for a missing file when
    missing_ok: the validation file is optional)."""
    how = "make one with tools/make_ogbench_dataset.py, or get OGBench's with ogbench.download_datasets([NAME])"
    if not os.path.isfile(path):
        if missing_ok:
            return None
        fail(f"--dataset-path {path}: no such file; {how}")
    try:
        loaded = load_ogbench_file(path)
    except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as e:
        fail(f"--dataset-path: cannot read {path} as an OGBench dataset ({type(e).__name__}: {e}); {how}")
    obs, action, terminals = loaded["observations"], loaded["actions"], loaded["terminals"]
    if obs.ndim != 2 or action.ndim != 2 or not len(obs) == len(action) == len(terminals) or len(obs) == 0:
        shapes = f"observations {obs.shape}, actions {action.shape}, terminals {terminals.shape}"
        fail(
            f"--dataset-path {path}: expected observations (N, obs), actions (N, act) and terminals (N,), got {shapes}"
        )
    return make_dataset(loaded)


if __name__ == "__main__":
    main()
