"""A uniformly random policy scored by the evaluation code of the scripts (make_evaluate): the floor that a trained
agent's eval/time_near_goal and eval/success must be read against.

    python tools/random_policy.py --env-id reacher --episode-length 100
    python tools/random_policy.py --env-id point_u_maze_eval --num-eval-envs 1024 --seeds 3
    python tools/random_policy.py --env-id pointmaze-medium-v0 --num-eval-envs 50   (OGBench: episodes per task)

Prints the metrics of each seed (num_eval_envs episodes each) and their mean; --out FILE also writes them as JSON.
"""

import argparse
import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import crl_resnet as crl  # every script shares its environments and make_evaluate's metrics


class RandomActions:
    """`env`, except that every step takes a uniformly random action in [-1, 1] instead of the policy's, drawn from
    a key folded with each environment's observation and step count: fresh at every step, also where the
    observation repeats (a point pushed into a corner)."""

    def __init__(self, env, seed):
        self.env, self.key = env, jax.random.PRNGKey(seed)

    def __getattr__(self, name):  # episode_length, success_radius, reset, compiler_options, ...
        return getattr(self.env, name)

    def step(self, env_state, action):
        bits = jax.lax.bitcast_convert_type(env_state.obs, jnp.uint32).sum(-1)  # one number per observation
        draw = lambda b, t: jax.random.uniform(
            jax.random.fold_in(jax.random.fold_in(self.key, b), t), action.shape[1:], minval=-1, maxval=1
        )
        return self.env.step(env_state, jax.vmap(draw)(bits, env_state.steps))


class ZeroActor:
    """The policy that RandomActions overrides: evaluation calls it, its actions are thrown away."""

    def __init__(self, action_dim):
        self.action_dim = action_dim

    def apply(self, _, obs):
        zeros = jnp.zeros((obs.shape[0], self.action_dim))
        return zeros, zeros


@functools.cache
def compiled_evaluate(env_id, num_envs, episode_length):
    """make_evaluate with random actions, compiled once for every seed: the seed is its argument."""
    env = crl.GoalEnv(env_id, episode_length)
    args = crl.Args(env_id=env_id, num_eval_envs=num_envs)
    actor = ZeroActor(env.action_dim)
    evaluate = lambda seed: crl.make_evaluate(args, RandomActions(env, seed), actor)(None, jax.random.PRNGKey(seed))
    return jax.jit(evaluate).lower(jnp.int32(0)).compile(env.compiler_options)


def random_policy_metrics(env_id, num_envs=256, seed=0, episode_length=None):
    """What make_evaluate, the code that scores every run, gives a uniformly random policy on env_id."""
    metrics = compiled_evaluate(env_id, num_envs, episode_length)(jnp.int32(seed))
    return {k: float(v) for k, v in metrics.items()}


def ogbench_random_metrics(env_id, episodes_per_task=50, seed=0, episode_length=None):
    """OGBench's evaluation (crl_offline.py's) of a uniformly random policy: success on each of env_id's tasks."""
    import crl_offline

    env = crl_offline.OGBenchTask(env_id, episode_length)
    np.random.seed(seed)  # OGBench's start noise
    by_task = []
    for task in range(1, env.num_tasks + 1):
        successes = []
        for _ in range(episodes_per_task):
            e = env.make()
            e.action_space.seed(int(np.random.randint(2**31)))
            e.reset(options={"task_id": task})
            done, info = False, {"success": 0.0}
            while not done:
                _, _, terminated, truncated, info = e.step(e.action_space.sample())
                done = terminated or truncated
            successes.append(info["success"])
        by_task.append(float(np.mean(successes)))
    return {"eval/success": float(np.mean(by_task))} | {f"eval/task{k}_success": v for k, v in enumerate(by_task, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--env-id", required=True, help="any registered environment, e.g. point_u_maze_eval, reacher, or OGBench's"
    )
    parser.add_argument("--episode-length", type=int, default=None, help="default: the environment's")
    parser.add_argument("--num-eval-envs", type=int, default=256, help="episodes per seed (OGBench: per task)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0 .. N-1")
    parser.add_argument("--out", default=None, help="also write the metrics to this JSON file")
    cli = parser.parse_args(argv)
    ogbench = "-" in cli.env_id  # OGBench's names (pointmaze-medium-v0) have dashes, this repository's do not
    if not ogbench and cli.env_id not in crl.ENVIRONMENTS:
        print(
            f"error: --env-id {cli.env_id} is not registered; choose one of {', '.join(crl.ENVIRONMENTS)}",
            file=sys.stderr,
        )
        sys.exit(2)
    if cli.num_eval_envs < 1 or cli.seeds < 1 or (cli.episode_length is not None and cli.episode_length < 1):
        print("error: --num-eval-envs, --seeds and --episode-length must be positive", file=sys.stderr)
        sys.exit(2)
    if cli.out and not os.path.isdir(os.path.dirname(os.path.abspath(cli.out))):
        print(f"error: --out {cli.out}: its folder does not exist", file=sys.stderr)
        sys.exit(2)
    metrics = ogbench_random_metrics if ogbench else random_policy_metrics
    per_seed = [metrics(cli.env_id, cli.num_eval_envs, s, cli.episode_length) for s in range(cli.seeds)]
    result = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
    result |= {f"{k}_per_seed": [m[k] for m in per_seed] for k in per_seed[0]}
    if ogbench:
        import crl_offline

        episode_length = cli.episode_length or crl_offline.OGBenchTask(cli.env_id).episode_length
    else:
        episode_length = cli.episode_length or crl.ENVIRONMENTS[cli.env_id].episode_length
    result |= {"env_id": cli.env_id, "episode_length": episode_length, "episodes_per_seed": cli.num_eval_envs}
    for k in per_seed[0]:
        print(f"{k}: {result[k]:.4g}  (per seed: {', '.join(f'{v:.4g}' for v in result[f'{k}_per_seed'])})")
    if cli.out:
        with open(cli.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
