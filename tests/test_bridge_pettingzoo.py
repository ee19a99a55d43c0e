"""damdjax.bridges.pettingzoo.SchedulersParallelEnv: PettingZoo's own API test passes,
and an episode through it is the JAX view's (`SchedulersView`) with the same actions.
"""
from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from damdjax import EdgeEnv, EnvConfig, EnvParams
from damdjax.bridges.pettingzoo import SchedulersParallelEnv
from damdjax.envs.state import done_time
from damdjax.views import SchedulersView

CONFIG = EnvConfig(n_max=20, m_max=4, queue_capacity=8)
PARAMS = EnvParams(num_tasks=20, num_servers=3)


@pytest.fixture(scope="module")
def view():
    return SchedulersView(EdgeEnv(CONFIG), params=PARAMS)


@pytest.fixture(scope="module")
def bridge(view):
    return SchedulersParallelEnv(view, seed=3)


def test_parallel_api_test(bridge):
    """`pettingzoo.test.parallel_api_test` passes, its warnings (a live agent without an
    observation, an agent given one after its end, ...) counted as failures."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(bridge, num_cycles=200)


def test_spaces_and_misuse(view, bridge):
    q1 = view.num_actions
    obs, infos = bridge.reset(seed=0)
    assert bridge.agents == bridge.possible_agents == view.agents
    for a in bridge.agents:
        space = bridge.observation_space(a)
        assert space is bridge.observation_space(a)
        assert space.contains(obs[a]), a
        assert obs[a]["action_mask"].dtype == np.int8 and obs[a]["action_mask"].sum() >= 1
        assert bridge.action_space(a).n == q1
    assert bridge.state().shape == bridge.state_space.shape == (view.world_state_size,)
    with pytest.raises(ValueError, match="'agent_0'"):
        bridge.action_space("agent_0")
    with pytest.raises(ValueError, match="'human'"):
        SchedulersParallelEnv(view, render_mode="human")
    fresh = SchedulersParallelEnv(view)
    with pytest.raises(RuntimeError, match="reset"):
        fresh.step({})


def test_episode_equals_the_jax_view(view, bridge):
    """A random masked-action episode of one instance through the bridge: replayed with
    the same actions on the jitted view, the observations, masks, world states, rewards and
    ends agree at every step, and the final task times are the same."""
    instance = view.env.generate(jax.random.PRNGKey(11), PARAMS)
    rng = np.random.default_rng(0)
    obs, _ = bridge.reset(seed=5, options={"instance": instance})
    steps = []
    while bridge.agents:
        actions = {a: int(rng.choice(np.flatnonzero(obs[a]["action_mask"])))
                   for a in bridge.agents}
        obs, rewards, terms, truncs, infos = bridge.step(actions)
        steps.append((actions, obs, rewards, terms, truncs, infos, bridge.state()))
        assert all(infos[a]["invalid_pick"] == 0 for a in view.agents)
    assert terms[view.agents[0]] and not truncs[view.agents[0]]
    assert len(steps) <= PARAMS.num_tasks
    final_bridge = bridge.env_state

    reset_to, step_env = jax.jit(view.reset_to), jax.jit(view.step_env)
    _, state = reset_to(instance, jax.random.PRNGKey(0))
    for actions, b_obs, b_rew, b_term, b_trunc, b_info, b_world in steps:
        j_obs, state, j_rew, j_done, j_info = step_env(jax.random.PRNGKey(0), state, actions)
        avail = np.asarray(view.avail_actions(state))
        for i, a in enumerate(view.agents):
            np.testing.assert_array_equal(b_obs[a]["observation"], np.asarray(j_obs[a]))
            np.testing.assert_array_equal(b_obs[a]["action_mask"], avail[i].astype(np.int8))
            assert b_rew[a] == float(j_rew[a])
            assert b_term[a] == bool(j_done[a]) and b_trunc[a] is False
            assert b_info[a]["epochs"] == int(j_info["epochs"][i])
        np.testing.assert_array_equal(b_world, np.asarray(j_obs["world_state"]))
    assert bool(state.done)
    np.testing.assert_array_equal(np.asarray(done_time(state)),
                                  np.asarray(done_time(final_bridge)))
