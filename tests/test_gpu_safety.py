"""What the paper's scale on a GPU needs, checked on a CPU: no conditional (a host sync per step on a GPU) in the
compiled programs, and critic distances that stay accurate when the default matmul precision is TF32."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST_COMPILE
from jax.extend import core as jax_core

import crl_resnet as crl


def conditionals(compiled):
    """Conditionals in a compiled program: XLA's GPU runtime copies each one's predicate to the host and waits."""
    return len(re.findall(r"\bconditional\(", compiled.as_text()))


def unknown_trip_whiles(compiled):
    """While loops whose trip count XLA does not know (it annotates the others with known_trip_count): the GPU
    runtime copies such a loop's predicate to the host and waits, at every iteration."""
    whiles = [line for line in compiled.as_text().splitlines() if re.search(r"\bwhile\(", line)]
    return sum("known_trip_count" not in line for line in whiles)


def host_syncs(compiled):
    return conditionals(compiled), unknown_trip_whiles(compiled)


def test_the_counts_see_a_cond_and_a_while_loop_of_unknown_trip_count_but_not_a_scan():
    def fn(x):
        x = jax.lax.scan(lambda c, _: (c * 1.5, None), x, None, length=7)[0]
        x = jax.lax.fori_loop(0, 5, lambda i, c: c + i, x)
        x = jax.lax.cond(x.sum() > 0, lambda y: y + 1, lambda y: y - 1, x)
        return jax.lax.while_loop(lambda c: c.sum() < 100.0, lambda c: c * 2 + 1, x)

    assert host_syncs(jax.jit(fn).lower(jnp.ones(3)).compile()) == (1, 1)
    assert host_syncs(jax.jit(jax.vmap(fn)).lower(jnp.ones((4, 3))).compile()) == (0, 1)  # a batched cond: select


def small_args():
    args = crl.Args(env_id="point_u_maze", num_envs=8, num_eval_envs=8, total_env_steps=8 * 100 + 2 * 8 * 100)
    args = crl.dataclasses.replace(args, num_epochs=2, unroll_length=100, batch_size=16, max_replay_size=300)
    args = crl.dataclasses.replace(args, num_sgd_batches_per_training_step=2, min_replay_size=100, width=8)
    args.actor_num_blocks = args.critic_num_blocks = 1
    return args


def test_resets_are_selects_wherever_a_conditional_would_cost_a_host_sync(monkeypatch):
    """A select on accelerators and for fixed goals; a cond only on a CPU with resampled goals (cheaper there)."""
    assert crl.GoalEnv("point_u_maze", fixed_goals=True).reset_select
    assert not crl.GoalEnv("point_u_maze", fixed_goals=False).reset_select
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert crl.GoalEnv("point_u_maze", fixed_goals=False).reset_select


@pytest.mark.parametrize("train_goals", ["resampled", pytest.param("fixed", marks=pytest.mark.slow)])
def test_the_compiled_epoch_has_no_conditionals_where_resets_are_selects(train_goals):
    """The whole epoch (collect, relabel, update), the prefill and the evaluation run without one conditional."""
    args = small_args()
    env = crl.GoalEnv(args.env_id, fixed_goals=train_goals == "fixed")
    env.reset_select = True  # what a GPU gets
    init, prefill, epoch, actor = crl.make_train(args, env)
    rs = jax.eval_shape(init, jax.random.PRNGKey(0))
    for program, example in [(prefill, rs), (epoch, rs)]:  # HLO's conditionals: LLVM's optimisations change none
        assert host_syncs(jax.jit(program).lower(example).compile(FAST_COMPILE)) == (0, 0)
    eval_env = crl.GoalEnv("point_u_maze_eval")
    eval_env.reset_select = True
    evaluate = crl.make_evaluate(args, eval_env, actor)
    assert host_syncs(jax.jit(evaluate).lower(rs.actor_params, jax.random.PRNGKey(0)).compile(FAST_COMPILE)) == (0, 0)
    env.reset_select = False  # the cond form, for contrast: one conditional per env step program
    assert conditionals(jax.jit(crl.make_train(args, env)[2]).lower(rs).compile(FAST_COMPILE)) >= 1


@pytest.mark.slow  # the robots' whole epochs are counted in -m slow below
def test_a_brax_environment_step_has_no_conditionals():
    """brax's physics adds none either (reacher: the cheapest brax robot to compile)."""
    env = crl.GoalEnv("reacher")
    env.reset_select = True
    step = lambda env_state: env.step(env_state, jnp.zeros((4, env.action_dim)))
    env_state = jax.eval_shape(lambda key: env.reset(key, 4), jax.random.PRNGKey(0))
    assert host_syncs(jax.jit(step).lower(env_state).compile()) == (0, 0)


@pytest.mark.slow
@pytest.mark.parametrize("env_id, whiles", [("ant_big_maze", 0), ("humanoid_u_maze", 0), ("arm_push_easy", 1)])
def test_the_robots_epoch_programs_have_no_conditional_and_only_the_arms_solver_loop(env_id, whiles):
    """The epoch program at tiny sizes: no conditional, and no while loop of unknown trip count but, in the arms,
    MJX's constraint solver, which stops when the solution stops improving (docs/gpu.md says what it costs)."""
    args = crl.dataclasses.replace(small_args(), env_id=env_id, episode_length=100)
    env = crl.GoalEnv(env_id, fixed_goals=True)
    rs = jax.eval_shape(crl.make_train(args, env)[0], jax.random.PRNGKey(0))
    epoch = crl.make_train(args, env)[2]
    assert host_syncs(jax.jit(epoch).lower(rs).compile(env.compiler_options)) == (0, whiles)


def tf32(x):
    """float32 rounded to TF32 (10 mantissa bits, to nearest even): what an NVIDIA tensor core reads from float32
    inputs when the matmul precision is JAX's default."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & ~np.uint64(0x1FFF)
    return bits.astype(np.uint32).view(np.float32)


def run_as_on_a_gpu(fn, *args, honour_precision=True):
    """fn's jaxpr evaluated with every default-precision matmul given TF32-rounded inputs, as a GPU computes it
    (accumulation stays float32); matmuls that ask for Precision.HIGHEST stay float32 unless honour_precision is
    off, which emulates a critic without that request."""

    def evaluate(jaxpr, consts, *values):
        env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, values))
        read = lambda v: v.val if isinstance(v, jax_core.Literal) else env[v]
        for eqn in jaxpr.eqns:
            inputs = [read(v) for v in eqn.invars]
            if "jaxpr" in eqn.params and eqn.primitive.name in ("pjit", "jit", "closed_call"):
                inner = eqn.params["jaxpr"]
                outputs = evaluate(inner.jaxpr, inner.consts, *inputs)
            else:
                highest = eqn.params.get("precision") == (jax.lax.Precision.HIGHEST,) * 2
                if eqn.primitive.name == "dot_general" and not (highest and honour_precision):
                    inputs = [tf32(x) for x in inputs]
                outputs = eqn.primitive.bind(*inputs, **eqn.params)
                outputs = outputs if eqn.primitive.multiple_results else [outputs]
            env |= dict(zip(eqn.outvars, outputs))
        return [read(v) for v in jaxpr.outvars]

    closed = jax.make_jaxpr(fn)(*args)
    return np.asarray(evaluate(closed.jaxpr, closed.consts, *args)[0])


def test_critic_distances_stay_accurate_where_the_default_matmul_precision_is_tf32():
    """Positive pairs 0.5 apart at ||phi|| = 30 (B = 512, repr 64): ||phi||^2 + ||psi||^2 - 2 phi.psi cancels, and
    TF32 inputs would move the positive logits by ~0.1; l2_energy's float32 product keeps them within 5e-3."""
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(512, 64))
    phi *= 30 / np.linalg.norm(phi, axis=1, keepdims=True)
    step = rng.normal(size=(512, 64))
    psi = phi + 0.5 * step / np.linalg.norm(step, axis=1, keepdims=True)
    exact = -np.sqrt(((phi[:, None] - psi[None]) ** 2).sum(-1))  # float64
    phi32, psi32 = jnp.asarray(phi, jnp.float32), jnp.asarray(psi, jnp.float32)
    error = lambda logits: np.abs(np.diag(logits) - np.diag(exact)).max()
    ours = error(run_as_on_a_gpu(crl.l2_energy, phi32, psi32))
    without_highest = error(run_as_on_a_gpu(crl.l2_energy, phi32, psi32, honour_precision=False))
    print(f"\npositive-logit error, TF32 default: {ours:.2e} (l2_energy), {without_highest:.2e} (plain product)")
    assert ours < 5e-3
    assert without_highest > 10 * ours, "the emulation must show what TF32 does to a plain product"
    np.testing.assert_allclose(np.asarray(crl.l2_energy(phi32, psi32)), exact, atol=5e-3)  # this CPU, float32
