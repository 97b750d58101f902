"""Every registered environment: finite observations of the declared shape, goals re-sampled at every reset.

Physics environments (brax ant, humanoid, pusher, MJX arms) cost tens of seconds to compile and ~1k-10k steps/s
on a CPU, so the default suite steps each of the paper's environments a few times and runs the longer physics
tests on `ant_u_maze` only; `python -m pytest -m slow` runs them for every environment.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import fast_jit
from scipy import stats

import crl_resnet as crl

CHEAP = [env_id for env_id in crl.ENVIRONMENTS if env_id.startswith("point") or env_id == "reacher"]
PHYSICS = [env_id for env_id in crl.ENVIRONMENTS if env_id not in CHEAP]
IN_DEFAULT_SUITE = {"ant_u_maze"}
MAZES = [env_id for env_id in crl.ENVIRONMENTS if "maze" in env_id]
# the default suite's share of the per-environment tests: each layout's training variant among the point mazes
# (their _eval variants differ only in the goals drawn, tested for all), the U-maze's ant; -m slow runs the rest
CORE = {env_id for env_id in CHEAP if not env_id.endswith("_eval") and env_id != "reacher"}


def physics_param(env_id):
    return pytest.param(env_id, marks=() if env_id in IN_DEFAULT_SUITE else pytest.mark.slow)


def cell_size(env_id):
    return 2.0 if env_id.startswith("humanoid") else 4.0


def layout_of(env_id):
    return env_id.split("_", 1)[1].removesuffix("_eval")


def random_rollout(env, num_envs, num_steps, seed=0, fast_compile=False):
    """Random actions, jitted; fast_compile skips LLVM's optimisations (half the compile time of a brax robot,
    slower steps): for short rollouts that check values, not speed."""

    def run(key):
        def step(env_state, key):
            action = jax.random.uniform(key, (num_envs, env.action_dim), minval=-1, maxval=1)
            env_state = env.step(env_state, action)
            return env_state, (env_state.obs, env_state.done)

        k_reset, k_steps = jax.random.split(key)
        return jax.lax.scan(step, env.reset(k_reset, num_envs), jax.random.split(k_steps, num_steps))

    key = jax.random.PRNGKey(seed)
    options = env.compiler_options | ({"xla_backend_optimization_level": 0} if fast_compile else {})
    return jax.jit(run).lower(key).compile(options)(key)


@pytest.mark.parametrize("env_id", [pytest.param(e, marks=pytest.mark.slow) if e not in CORE else e for e in CHEAP])
def test_reset_and_200_random_steps_are_finite_with_declared_shape(env_id):
    spec = crl.ENVIRONMENTS[env_id]
    env = crl.GoalEnv(env_id, episode_length=50)  # short episodes so automatic resets happen in the rollout
    final, (obs, done) = random_rollout(env, num_envs=16, num_steps=200)
    assert obs.shape == (200, 16, spec.state_dim + len(spec.goal_indices))
    assert np.all(np.isfinite(np.asarray(obs)))
    assert int(done.sum()) == 4 * 16, "every environment resets at each time limit"
    assert np.all(np.asarray(final.traj_id) == 4)
    goals = np.asarray(obs[..., spec.state_dim :])
    # goals are constant within an episode and re-sampled at each (automatic) reset
    assert np.all(goals[:49] == goals[:1])  # obs after steps 1..49; step 50 ends the episode and resets
    assert np.all(np.any(goals[49] != goals[48], axis=-1))
    assert len(np.unique(goals[0].round(5), axis=0)) == 16, "parallel environments get different goals"


# the environments of the paper's Table 1, each robot (ant, humanoid, pusher, arm) and every kind of contact set
# (ant maze walls, humanoid floor and walls, bins); the default suite steps the ant maze, `-m slow` every one
PAPER = ["ant_big_maze", *[pytest.param(e, marks=pytest.mark.slow) for e in ["humanoid", "humanoid_u_maze"]]]
PAPER += [pytest.param(e, marks=pytest.mark.slow) for e in ["pusher_easy", "arm_binpick_easy"]]


@pytest.mark.parametrize("env_id", PAPER)
def test_the_paper_environments_step_finite_at_their_declared_shape(env_id):
    spec = crl.ENVIRONMENTS[env_id]
    _, (obs, _) = random_rollout(crl.GoalEnv(env_id), num_envs=4, num_steps=5, fast_compile=True)
    obs = np.asarray(obs)
    assert obs.shape == (5, 4, spec.state_dim + len(spec.goal_indices)) and np.all(np.isfinite(obs))
    assert np.all(np.any(obs[-1, :, : spec.state_dim] != obs[0, :, : spec.state_dim], axis=-1)), "the robot moved"


@pytest.mark.parametrize(
    "env_id",
    [e if e in CORE else pytest.param(e, marks=pytest.mark.slow) for e in CHEAP] + [physics_param(e) for e in PHYSICS],
)
def test_goals_differ_across_resets(env_id):
    env = crl.GoalEnv(env_id)
    reset = fast_jit(env.reset, static_argnums=1, options=env.compiler_options)  # eager brax costs more
    a = reset(jax.random.PRNGKey(0), 64).obs[:, env.state_dim :]
    b = reset(jax.random.PRNGKey(1), 64).obs[:, env.state_dim :]
    differ = np.any(np.asarray(a) != np.asarray(b), axis=-1)
    if env_id.startswith(("ant_", "humanoid_")):  # goals are cell centres: a draw repeats the cell w.p. 1/cells
        assert differ.mean() > 0.3  # at least 2/3 expected (3 cells); a frozen goal gives 0
    else:
        assert np.all(differ)


@pytest.mark.parametrize(
    "env_id",
    [
        pytest.param(e, marks=pytest.mark.slow)
        if e.startswith(("humanoid", "ant")) and ("_u_" not in e or e == "humanoid_u_maze_eval")
        else e
        for e in MAZES
    ],
)
def test_maze_goals_come_only_from_the_goal_cells_and_eval_variants_only_from_the_far_ones(env_id):
    layout = layout_of(env_id)
    far = crl.HUMANOID_EVAL_GOALS if env_id.startswith("humanoid") else crl.MAZE_EVAL_GOALS  # the benchmark's splits
    expected = set(far[layout]) if env_id.endswith("_eval") else set(crl.maze_cells(layout, "G"))
    env = crl.GoalEnv(env_id)
    goals = np.asarray(fast_jit(jax.vmap(env.task.init))(jax.random.split(jax.random.PRNGKey(0), 2000))[1])
    cells, counts = np.unique(np.round(goals[:, :2] / cell_size(env_id)).astype(int), axis=0, return_counts=True)
    assert {tuple(c) for c in cells} == expected
    assert stats.chisquare(counts).pvalue > 1e-3, "goal cells are drawn uniformly"
    if env_id.startswith("humanoid"):
        assert np.all(goals[:, 2] == 1.25), "humanoid goals are at standing torso height"


def test_every_maze_has_eval_goals_inside_its_goal_cells():
    for layout, far in crl.MAZE_EVAL_GOALS.items():
        assert set(far) < set(crl.maze_cells(layout, "G")), layout


@pytest.mark.slow  # a minute per robot; the default suite steps the paper's environments above
@pytest.mark.parametrize("env_id", PHYSICS)
def test_1000_random_steps_at_64_envs_are_finite_with_goals_resampled_at_every_reset(env_id):
    spec = crl.ENVIRONMENTS[env_id]
    final, (obs, done) = random_rollout(crl.GoalEnv(env_id, episode_length=250), num_envs=64, num_steps=1000)
    obs, done = np.asarray(obs), np.asarray(done)
    assert obs.shape == (1000, 64, spec.state_dim + len(spec.goal_indices))
    assert np.all(np.isfinite(obs))
    resets = done.sum(0)
    assert np.all(resets >= 4), "every environment resets at least at each time limit"
    np.testing.assert_array_equal(np.asarray(final.traj_id), resets)  # one trajectory id per episode
    goals = obs[..., spec.state_dim :]
    same = np.all(goals[1:] == goals[:-1], axis=-1)
    assert np.all(same[~done[1:]]), "the goal is constant within an episode"
    assert np.mean(~same[done[1:]]) > 0.5, "and re-sampled at (almost) every reset"
    print(f"{env_id}: 1000 random steps x 64 envs finite; {int(resets.sum())} resets (250-step limit or termination)")


@pytest.mark.parametrize("robot", ["ant", pytest.param("humanoid", marks=pytest.mark.slow)])
def test_early_termination_when_the_torso_leaves_its_healthy_height(robot):
    low, high = {"ant": (0.2, 1.0), "humanoid": (1.0, 2.0)}[robot]  # brax's Ant and Humanoid healthy_z_range
    env = crl.GoalEnv(robot, episode_length=1000)
    state = fast_jit(env.reset, static_argnums=1)(jax.random.PRNGKey(0), 8)
    sim_state = state.sim_state
    q = sim_state.pipeline_state.q
    # torsos 0-1 upside down just above the floor (they sink: only the feet meet the floor), 2-3 lifted high
    q = q.at[:2, 2].set(low - 0.05).at[:2, 3:7].set(jnp.array([0.0, 1.0, 0.0, 0.0])).at[2:4, 2].set(high + 0.2)
    moved = fast_jit(jax.vmap(env.task.env.pipeline_init))(q, sim_state.pipeline_state.qd)  # the link poses
    state = state.replace(sim_state=sim_state.replace(pipeline_state=moved))
    nxt = fast_jit(env.step)(state, jnp.zeros((8, env.action_dim)))
    assert np.array_equal(np.asarray(nxt.done), [True] * 4 + [False] * 4)
    assert np.array_equal(np.asarray(nxt.traj_id), [1] * 4 + [0] * 4)
    assert np.array_equal(np.asarray(nxt.steps), [0] * 4 + [1] * 4)
    # the terminated environments restart healthy at the start, upright
    restarted = np.asarray(nxt.obs[:4, :3])
    assert np.all((restarted[:, 2] > low) & (restarted[:, 2] < high))
    start = np.asarray(state.obs[4:8, :2]).mean(0)
    assert np.all(np.abs(restarted[:, :2] - start) < 0.3)


class Stumbles:
    """Fake physics: state = (steps since reset, a random label of the trajectory); terminates after 3 steps."""

    action_dim = 2

    def init(self, key):
        return jnp.array([0.0, jax.random.uniform(key)]), jnp.zeros(2)

    def step(self, state, action):
        return state.at[0].add(1.0)

    def state(self, state):
        return state

    def terminated(self, state):
        return state[0] >= 3


def test_early_terminations_split_trajectories_in_the_replay_buffer(monkeypatch):
    monkeypatch.setitem(crl.ENVIRONMENTS, "stumbles", crl.EnvSpec(Stumbles, 2, (0, 1), 0.5, 100))
    env = crl.GoalEnv("stumbles")
    env_state, rows, step = env.reset(jax.random.PRNGKey(0), 4), [], jax.jit(env.step)
    for _ in range(40):
        rows.append(env_state)
        env_state = step(env_state, jnp.zeros((4, 2)))
    assert np.array_equal(np.asarray(rows[3].traj_id), [1] * 4), "termination after 3 steps starts trajectory 1"
    buffer = crl.buffer_init(40, 4, 4, 2)
    stack = lambda name: jnp.stack([getattr(r, name) for r in rows])
    buffer = crl.buffer_insert(buffer, stack("obs"), jnp.zeros((40, 4, 2)), stack("traj_id"))
    batch = crl.sample_transitions(buffer, jax.random.PRNGKey(1), 40, 0.9, 2, jnp.array([0, 1]))
    state, goal = np.asarray(batch["state"]), np.asarray(batch["goal"])
    assert np.all(goal[:, 1] == state[:, 1]), "relabelled goals come from the same trajectory"
    window_end = np.arange(len(state)) % 40 == 39  # flat order is (env, step in window)
    ends = (state[:, 0] == 2) | window_end
    assert np.all(goal[~ends, 0] > state[~ends, 0]), "a future step of the trajectory"
    assert np.all(goal[ends] == state[ends]), "a trajectory's last step falls back to itself"


@pytest.mark.parametrize(
    "env_id, healthy_z, min_depth",
    [
        # the torso sphere (radius 0.25) keeps its centre outside every wall; slow to keep the default suite in budget
        pytest.param("ant_u_maze", (0.2, 1.0), 0.2, marks=pytest.mark.slow),
        # the humanoid's walls are 1 unit tall, below its chest: it may lean over the top, never cross
        pytest.param("humanoid_u_maze", (1.0, 2.0), -0.5, marks=pytest.mark.slow),
    ],
)
def test_the_torso_cannot_pass_through_a_maze_wall(env_id, healthy_z, min_depth):
    """Start next to a wall, shove the torso into it at 2 m/s every 10 steps under random actions, and check
    its xy against every wall cell while the robot is healthy (an unhealthy step ends the episode)."""
    env = crl.GoalEnv(env_id)
    brax_env, size = env.task.env, cell_size(env_id)
    walls = np.argwhere(np.array([[c == "#" for c in row] for row in crl.MAZE_LAYOUTS["u_maze"]])) * size

    @jax.jit
    def shove(start, velocity, key):
        def one(key):
            q = brax_env.sys.init_q.at[:2].set(start)
            pipeline_state = brax_env.pipeline_init(q, jnp.zeros(brax_env.sys.qd_size()))

            def step(ps, xs):
                t, key = xs
                kick = lambda ps: brax_env.pipeline_init(ps.q, ps.qd.at[:2].set(velocity))
                ps = jax.lax.cond(t % 10 == 0, kick, lambda ps: ps, ps)
                action = jax.random.uniform(key, (env.action_dim,), minval=-1, maxval=1)
                ps = brax_env.pipeline_step(ps, action)
                return ps, ps.q[:3]

            return jax.lax.scan(step, pipeline_state, (jnp.arange(300), jax.random.split(key, 300)))[1]

        return jax.vmap(one)(jax.random.split(key, 16))

    # R is cell (1, 1): walls at x < 1.5 size (row 0), y < 1.5 size (column 0), and row 2 from (1, 2)
    pushes = [((1, 1), (-1, 0)), ((1, 1), (0, -1)), ((1, 1), (-0.7, -0.7)), ((1, 2), (1, 0))]
    for cell, direction in pushes:
        path = np.asarray(shove(jnp.array(cell) * size, 2.0 * jnp.array(direction), jax.random.PRNGKey(0)))
        assert np.all(np.isfinite(path))
        healthy = np.cumprod((path[..., 2] >= healthy_z[0]) & (path[..., 2] <= healthy_z[1]), axis=1).astype(bool)
        xy = path[..., :2][healthy]
        outside = np.abs(xy[:, None, :] - walls[None]) - size / 2  # per axis, > 0 outside the box
        signed = np.linalg.norm(np.maximum(outside, 0), axis=-1) + np.minimum(outside.max(-1), 0)
        assert signed.min() > min_depth, f"pushed {direction} from cell {cell}: torso {signed.min():.2f} into a wall"
        assert signed.min() < min_depth + 0.5, "the push brought the torso against the wall"


@pytest.mark.parametrize("name", list(crl.MAZE_LAYOUTS))
def test_point_never_enters_a_wall(name):
    maze = crl.PointMaze(name)
    walls = np.array([[c == "#" for c in row] for row in crl.MAZE_LAYOUTS[name]])

    @jax.jit
    def wander(key):
        def step(xy, key):  # long straight pushes, so the point presses into walls
            xy = maze.step(xy, jax.random.choice(key, jnp.array([[1.0, 0], [-1, 0], [0, 1], [0, -1], [1, 1]])))
            return xy, xy

        return jax.lax.scan(step, maze.start, jax.random.split(key, 3000))[1]

    path = np.asarray(jax.vmap(wander)(jax.random.split(jax.random.PRNGKey(0), 32))).reshape(-1, 2)
    cells = np.round(path / 4.0).astype(int)
    assert not walls[cells[:, 0], cells[:, 1]].any()
    assert len({tuple(c) for c in cells}) > 3, "the point moves through several cells"


def test_success_radius_is_applied_to_the_goal_indices():
    env = crl.GoalEnv("reacher", episode_length=10)
    state = fast_jit(env.reset, static_argnums=1)(jax.random.PRNGKey(0), 4)
    nxt = fast_jit(env.step)(state, jnp.zeros((4, 2)))
    tip = np.asarray(nxt.obs[:, :3])
    goal = np.asarray(state.obs[:, env.state_dim :])
    np.testing.assert_allclose(np.asarray(nxt.dist_to_goal), np.linalg.norm(tip - goal, axis=-1), rtol=1e-5)
    # the goal lies in the fingertip's plane (the spring backend lets the arm sag ~2 mm; the radius is 50 mm)
    np.testing.assert_allclose(goal[:, 2], tip[:, 2], atol=3e-3)


def goal_entity_position(env_id, sim_state):
    """Where the goal entity really is, read from the simulator state: torso (ant, humanoid) or object (pusher)."""
    if env_id.startswith("ant"):
        return sim_state.pipeline_state.x.pos[:, 0, :2]
    if env_id.startswith("humanoid"):
        return sim_state.pipeline_state.x.pos[:, 0]
    pusher = crl.ENVIRONMENTS[env_id].make()
    return jax.vmap(pusher.positions)(sim_state)[:, pusher.object]


@pytest.mark.parametrize(
    "env_id", ["ant_u_maze", pytest.param("humanoid", marks=pytest.mark.slow), physics_param("pusher_easy")]
)
def test_goal_indices_read_the_goal_entity_and_the_distance_uses_them(env_id):
    env = crl.GoalEnv(env_id, episode_length=10)
    state = fast_jit(env.reset, static_argnums=1, options=env.compiler_options)(jax.random.PRNGKey(0), 4)
    nxt = fast_jit(env.step, options=env.compiler_options)(state, 0.5 * jnp.ones((4, env.action_dim)))
    achieved = np.asarray(nxt.obs[:, env.goal_indices])
    np.testing.assert_allclose(achieved, np.asarray(goal_entity_position(env_id, nxt.sim_state)), atol=1e-5)
    goal = np.asarray(state.obs[:, env.state_dim :])
    np.testing.assert_allclose(np.asarray(nxt.dist_to_goal), np.linalg.norm(achieved - goal, axis=-1), rtol=1e-5)


@pytest.mark.parametrize("env_id", ["point_u_maze", pytest.param("ant_u_maze", marks=pytest.mark.slow)])
def test_maze_init_can_start_in_any_cell_with_given_goal_cells(env_id):
    """What eval_stitching.py relies on: init(key, start, goals) starts at `start` and draws goals from `goals`."""
    task = crl.ENVIRONMENTS[env_id].make()
    start, goal = jnp.array([12.0, 4.0]), jnp.array([[12.0, 12.0]])  # cells (3, 1) and (3, 3) of u_maze
    keys = jax.random.split(jax.random.PRNGKey(0), 64)
    states, goals = fast_jit(jax.vmap(lambda k: task.init(k, start, goal)))(keys)
    obs = fast_jit(jax.vmap(task.state))(states)
    assert np.all(np.abs(np.asarray(obs[:, :2]) - start) <= 0.5), "starts near the given cell's centre"
    assert np.all(np.abs(np.asarray(goals[:, :2]) - goal[0]) <= 2.0), "goals inside the given cell"
    if env_id == "ant_u_maze":  # the physics moved with the observation
        np.testing.assert_allclose(states.pipeline_state.q[:, :2], obs[:, :2], atol=1e-5)
        torso = states.pipeline_state.x.pos[:, 0, :2]
        np.testing.assert_allclose(torso, obs[:, :2], atol=1e-4)
        after = fast_jit(jax.vmap(task.step))(states, jnp.zeros((64, task.action_dim)))
        assert np.all(np.abs(np.asarray(after.obs[:, :2]) - start) <= 0.6), "and stays there when stepped"


def test_fixed_goals_restore_each_environments_first_start_and_goal_at_every_reset():
    """The paper's protocol (brax's AutoResetWrapper): each training environment keeps one start and goal."""
    for fixed in [True, False]:
        env = crl.GoalEnv("point_u_maze", episode_length=10, fixed_goals=fixed)
        final, (obs, done) = random_rollout(env, num_envs=32, num_steps=30)
        first = np.asarray(env.reset(jax.random.split(jax.random.PRNGKey(0))[0], 32).obs)  # random_rollout's reset
        restarts = np.asarray(obs)[np.asarray(done)].reshape(3, 32, -1)  # obs right after each automatic reset
        assert np.all(np.asarray(final.traj_id) == 3), "a new trajectory at every reset, fixed or not"
        if fixed:
            assert np.array_equal(restarts, np.broadcast_to(first, restarts.shape))
        else:
            assert not np.any(np.all(restarts[..., 2:] == first[:, 2:], axis=-1)), "fresh goals"


def test_point_mazes_last_twice_the_walk_to_their_farthest_evaluation_cell():
    point_mazes = [env_id for env_id in crl.ENVIRONMENTS if env_id.startswith("point") and env_id.endswith("_eval")]
    assert point_mazes == [f"point_{m}_maze_eval" for m in ["u", "big", "u4", "u5", "hardest"]]
    for env_id in point_mazes:
        layout, task = layout_of(env_id), crl.ENVIRONMENTS[env_id].make()
        rows = crl.MAZE_LAYOUTS[layout]
        cells = {(i, j): 0 for i, j in crl.maze_cells(layout, "R")}
        frontier = list(cells)
        while frontier:  # breadth-first: cells from R along the corridors
            i, j = frontier.pop(0)
            for n in [(i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)]:
                if rows[n[0]][n[1]] != "#" and n not in cells:
                    cells[n] = cells[(i, j)] + 1
                    frontier.append(n)
        farthest = max(cells[cell] for cell in crl.MAZE_EVAL_GOALS[layout])
        walk = farthest * task.size / task.speed  # steps at full speed from R's centre to the cell's centre
        assert 2 * walk <= crl.ENVIRONMENTS[env_id].episode_length, env_id


def test_paper_environments_default_to_fixed_goals_and_to_their_far_goal_evaluation():
    assert all(spec.fixed_goals != env_id.startswith("point") for env_id, spec in crl.ENVIRONMENTS.items())
    assert crl.default_eval_env_id("ant_big_maze") == "ant_big_maze_eval"
    assert crl.default_eval_env_id("ant_big_maze_eval") == "ant_big_maze_eval"
    assert (
        crl.default_eval_env_id("humanoid") == "humanoid"
        and crl.default_eval_env_id("arm_push_hard") == "arm_push_hard"
    )
    assert crl.default_eval_env_id("ant_hardest_maze") == "ant_hardest_maze", "its split is ours, not the paper's"
    # the splits of the paper's code: 9 far cells of the ant's big maze, the humanoid's 10 (with (2, 5))
    ant_far = {(1, 5), (1, 6), (2, 6), (5, 3), (5, 6), (6, 2), (6, 3), (6, 5), (6, 6)}
    for env_id, cells, size in [
        ("point_big_maze_eval", ant_far, 4.0),
        ("ant_big_maze_eval", ant_far, 4.0),
        ("humanoid_big_maze_eval", ant_far | {(2, 5)}, 2.0),
        ("ant_u4_maze_eval", {(4, 1), (5, 1), (5, 2), (5, 3)}, 4.0),
        ("ant_u5_maze_eval", {(4, 1), (4, 6)} | {(5, j) for j in range(1, 7)}, 4.0),
    ]:
        goals = np.asarray(crl.ENVIRONMENTS[env_id].make().goals) / size
        assert {tuple(c) for c in np.round(goals).astype(int).tolist()} == cells, env_id


@pytest.mark.parametrize("env_id,timestep", [("humanoid", 0.003), ("humanoid_big_maze", 0.0015)])
def test_the_humanoid_is_the_benchmarks_contacts_state_and_start(env_id, timestep):
    """Every body geom meets the floor and the walls; physics steps of 10 x 0.003 s on the open floor, 10 x 0.0015 s
    in mazes, as the paper's brax does; the goal marker is a body of the model, so the state is 268 numbers with its
    slide joints at q[24:26]; starts have no reset noise."""
    task = crl.ENVIRONMENTS[env_id].make()
    sys = task.env.sys
    assert (sys.opt.timestep, task.env.dt) == pytest.approx((timestep, 10 * timestep))
    body = [g for g in range(sys.ngeom) if sys.geom_bodyid[g] > 0]
    marker = sys.link_names.index("target") + 1  # MuJoCo body ids count the world first
    robot = [g for g in body if sys.geom_bodyid[g] != marker]
    world = [g for g in range(sys.ngeom) if sys.geom_bodyid[g] == 0]  # the floor and any maze walls
    assert len(robot) == 17 and all(sys.geom_contype[g] == 1 for g in robot), "every humanoid geom collides"
    assert all(sys.geom_conaffinity[g] & 1 for g in world), "the floor and every wall meet contype 1"
    assert all(sys.geom_contype[g] == sys.geom_conaffinity[g] == 0 for g in body if sys.geom_bodyid[g] == marker)
    if env_id == "humanoid_big_maze":
        assert len(world) == 1 + crl.maze_walls("big_maze", 2.0).count("<geom")
        return  # the state and starts are the open floor's (compiling a maze humanoid's reset costs a minute)
    env = crl.GoalEnv(env_id)
    obs = np.asarray(jax.jit(env.reset, static_argnums=1)(jax.random.PRNGKey(0), 8).obs)
    assert env.state_dim == 268 and obs.shape == (8, 271)
    np.testing.assert_array_equal(obs[:, 24:26], obs[:, 268:270])  # the goal body's slide joints hold the goal
    assert np.all(obs[:, :24] == obs[:1, :24]), "no reset noise: every episode starts in the same pose"


def test_compiler_options_the_installed_jaxlib_does_not_know_are_dropped_not_passed(monkeypatch):
    """jaxlib 0.11 removed xla_cpu_use_fusion_emitters, which the arms ask for on a CPU: an option XLA rejects as
    unknown is left out of env.compiler_options, a known one is kept, and a known one with a bad value still fails."""
    program = jax.jit(lambda x: x + 1).lower(1.0)
    with pytest.raises(jax.errors.JaxRuntimeError, match="No such compile option"):
        program.compile({"xla_no_such_option": True})  # what passing it on would do
    options = crl.known_compiler_options({"xla_no_such_option": True, "xla_backend_optimization_level": 1})
    assert options == {"xla_backend_optimization_level": 1}
    assert program.compile(options)(1.0) == 2.0
    with pytest.raises(jax.errors.JaxRuntimeError, match="not a valid"):
        crl.known_compiler_options({"xla_embed_ir_in_executable": "maybe"})
    monkeypatch.setattr(crl.PointMaze, "compiler_options", {"xla_no_such_option": True}, raising=False)
    assert crl.GoalEnv("point_u_maze").compiler_options == {}


def contact_pairs(env_id):
    """The geom pairs MJX tests for contact in a locomotion task, by geom name, every maze wall called "wall"."""
    from mujoco.mjx._src.collision_driver import geom_pairs  # what brax's contact step calls mjx.collision with

    model = crl.ENVIRONMENTS[env_id].make().env.sys.mj_model
    name = lambda g: model.geom(g).name if model.geom_bodyid[g] or model.geom(g).name == "floor" else "wall"
    return {frozenset((name(g1), name(g2))) for g1, g2, _ in geom_pairs(model)}


def test_the_ant_in_a_maze_touches_what_the_benchmarks_ant_maze_lets_it_touch():
    """The paper's ant_maze.xml (with its maze walls, through brax's loader and MJX's pair rules): the feet meet the
    floor; the torso, the hips and the feet meet the walls; the feet meet the torso, the hips and each other (26
    pairs its open-floor ant.xml, like brax's, does not have)."""
    torso_and_hips = ["torso_geom"] + [f"aux_{i}_geom" for i in range(1, 5)]
    feet = ["left_foot_geom", "right_foot_geom", "third_foot_geom", "fourth_foot_geom"]
    self_contacts = {frozenset((foot, other)) for foot in feet for other in torso_and_hips + feet if foot != other}
    expected = {frozenset(("floor", foot)) for foot in feet} | {frozenset(("wall", g)) for g in torso_and_hips + feet}
    assert len(self_contacts) == 26
    assert contact_pairs("ant_u_maze") == expected | self_contacts
    assert contact_pairs("ant") == {frozenset(("floor", foot)) for foot in feet}
