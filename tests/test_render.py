"""Renders decode: brax's HTML viewer of each kind of robot holds its links, one frame per step, the goal drawn."""

import base64
import json
import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST_COMPILE

import crl_resnet as crl


class DriftActor:
    """A fixed action, the same at every step (tanh of the mean): enough for a render to show motion."""

    def __init__(self, action_dim):
        self.action_dim = action_dim

    def apply(self, params, obs):
        return jnp.broadcast_to(params["mean"], obs.shape[:-1] + (self.action_dim,)), jnp.zeros(self.action_dim)


def decoded(path):
    html = path.read_text()
    return json.loads(zlib.decompress(base64.b64decode(re.search(r'var system = "([^"]+)"', html).group(1))))


@pytest.mark.parametrize(
    "env_id,first_link,marker",
    [
        ("point_u_maze", "point", "goal_marker"),
        pytest.param("ant_u_maze", "torso", "goal_marker", marks=pytest.mark.slow),  # brax: half a minute
        # the goal is a body of the humanoid's model, as in the benchmark; slow: the ant covers brax's renders
        pytest.param("humanoid_u_maze", "torso", "target", marks=pytest.mark.slow),
        pytest.param("arm_push_easy", "link1", "goal_marker", marks=pytest.mark.slow),  # MJX: a minute to compile
    ],
)
def test_every_kind_of_render_decodes_to_its_links_frames_and_goal(env_id, first_link, marker, tmp_path):
    env = crl.GoalEnv(env_id, episode_length=6)
    env.compiler_options = env.compiler_options | FAST_COMPILE  # values, not speed
    render = crl.make_render(env, DriftActor(env.action_dim), seed=0, num_episodes=2)
    params = {"mean": jnp.full((1, env.action_dim), 0.5)}  # (seeds, ...): seed 0 is drawn
    path = render(params, str(tmp_path / "render.html"))
    assert path == str(tmp_path / "render.html")
    system = decoded(tmp_path / "render.html")
    assert system["link_names"][0] == first_link and system["link_names"][-1] == marker
    pos = np.array([frame["pos"] for frame in system["states"]["x"]])  # (frames, links, 3)
    assert pos.shape[0] == 2 * 6 and np.all(np.isfinite(pos))
    assert np.abs(pos[5, :-1] - pos[0, :-1]).max() > 1e-3, "the robot moves within an episode"
    start = env.reset(jax.random.PRNGKey(0), 1)  # the render's starts and goals come from key `seed`
    goal = np.asarray(start.obs[0, env.state_dim :])
    np.testing.assert_allclose(pos[0, -1, : len(goal)], goal, atol=1e-4, err_msg="the goal marker sits on the goal")
    again = decoded(tmp_path / "render.html") if render(params, str(tmp_path / "render.html")) else None
    assert again == system, "the same starts and goals at every call"
