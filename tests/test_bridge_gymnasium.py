"""damdjax.bridges.gymnasium.DispatcherEnv: the dispatcher's view as a gymnasium.Env.

Checks gymnasium's `check_env` (its warnings as errors), that an episode of random masked
actions gives what the JAX view gives for the same actions, that the same seed gives the
same episode, and the errors. One of the four server slots is padding, so the mask
always excludes one server.
"""
from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium
import jax
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from damdjax import EnvConfig, EnvParams
from damdjax.bridges.gymnasium import ENV_ID, DispatcherEnv, register
from damdjax.envs.state import done_time

CONFIG = EnvConfig(n_max=20, m_max=4, queue_capacity=8)
PARAMS = EnvParams(num_tasks=20, num_servers=3)


@pytest.fixture(scope="module")
def env():
    return DispatcherEnv(CONFIG, PARAMS)


def test_import_has_no_side_effects():
    """Importing the bridges imports neither library; importing the gymnasium bridge
    registers nothing."""
    code = ("import sys, damdjax.bridges; "
            "assert 'gymnasium' not in sys.modules and 'pettingzoo' not in sys.modules; "
            "import gymnasium, damdjax.bridges.gymnasium as b; "
            "assert b.ENV_ID not in gymnasium.registry, 'registered on import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_check_env_passes():
    """gymnasium's checker on the registered env made by `gymnasium.make` (a spec, so the
    render and close checks run too), every warning an error."""
    assert register() == ENV_ID and register() == ENV_ID
    made = gymnasium.make(ENV_ID, env=CONFIG, params=PARAMS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(made.unwrapped)
    made.close()


def play(env, seed, rng):
    """An episode from `reset(seed=seed)` with uniform masked actions drawn by `rng`.
    Returns `(start state, actions, observations, rewards, final info, ends)`, `ends`
    the `(terminated, truncated)` of every step."""
    obs, info = env.reset(seed=seed)
    start = env.state
    actions, observations, rewards, ends = [], [obs], [], []
    done = False
    while not done:
        mask = env.action_masks()
        np.testing.assert_array_equal(mask, info["action_mask"])
        assert mask.dtype == bool and mask.shape == (CONFIG.m_max,) and not mask[3]
        action = int(rng.choice(np.flatnonzero(mask)))
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs in env.observation_space and isinstance(reward, float)
        assert info["invalid_dispatch"] == 0
        actions.append(action)
        observations.append(obs)
        rewards.append(reward)
        ends.append((terminated, truncated))
        done = terminated or truncated
    return start, actions, observations, rewards, info, ends


def test_masked_episode_equals_the_jax_view(env):
    """The same actions through the JAX view's compiled `step_env` from the same start
    give the same observations and rewards (to float32 rounding: the bridge's compiled
    step also computes the mask and metrics, and XLA may fuse differently), the same end
    and the same task done times."""
    start, actions, observations, rewards, info, ends = play(env, 7, np.random.default_rng(0))
    # one decision per task, then the env's end: a termination
    assert len(actions) == PARAMS.num_tasks and ends[-1] == (True, False)
    assert info["episode"]["length"] == len(actions)          # this env's steps
    assert info["episode"]["epochs"] == int(env.state.step) > len(actions)
    view = env.view
    step_env = jax.jit(view.step_env)
    state = start
    close = dict(rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(observations[0], np.asarray(view.get_obs(state, PARAMS)), **close)
    for i, action in enumerate(actions):
        obs, state, reward, done, jax_info = step_env(jax.random.PRNGKey(i), state, action,
                                                      PARAMS)
        np.testing.assert_allclose(observations[i + 1], np.asarray(obs), **close)
        np.testing.assert_allclose(rewards[i], float(reward), **close)
        truncated = bool(jax_info["truncated"])
        assert ends[i] == (bool(done) and not truncated, truncated)
    np.testing.assert_array_equal(np.asarray(done_time(env.state)),
                                  np.asarray(done_time(state)))


def test_same_seed_same_episode(env):
    first = play(env, 11, np.random.default_rng(1))
    again = play(env, 11, np.random.default_rng(1))
    for a, b in zip(first[1:4] + first[5:], again[1:4] + again[5:]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other, _ = env.reset(seed=12)
    assert not np.array_equal(other, first[2][0])
    # unseeded resets continue the seeded generator: two envs seeded alike agree
    twin = DispatcherEnv(CONFIG, PARAMS)
    env.reset(seed=5)
    twin.reset(seed=5)
    np.testing.assert_array_equal(env.reset()[0], twin.reset()[0])


def test_masked_out_server_is_replaced_and_flagged(env):
    env.reset(seed=3)
    _, _, _, _, info = env.step(3)    # server slot 3 is padding
    assert info["invalid_dispatch"] == 1


def test_errors(env):
    fresh = DispatcherEnv(CONFIG, PARAMS)
    with pytest.raises(gymnasium.error.ResetNeeded):
        fresh.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"server index in \[0, 4\), got 4"):
        env.step(4)
    with pytest.raises(ValueError, match="no options"):
        env.reset(options={"instance": None})
    with pytest.raises(ValueError, match="render_mode"):
        DispatcherEnv(CONFIG, PARAMS, render_mode="human")
    with pytest.raises(ValueError, match="num_servers"):
        DispatcherEnv(CONFIG, EnvParams(num_tasks=20, num_servers=5))
    with pytest.raises(TypeError, match="DispatcherView, an EdgeEnv or an EnvConfig"):
        DispatcherEnv("edge")
    play(env, 0, np.random.default_rng(2))
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step(0)


def test_delayed_reward_can_be_credited(env):
    """Outside JAX, the paper's reward from `info`: step `i` dispatches task `i`, and the
    `task_reward` rows summed over the episode give every real task `exp(-T_i / tau)`, with
    `T_i` read from the final state."""
    env.reset(seed=3)
    rng = np.random.default_rng(1)
    credited = np.zeros(CONFIG.n_max, np.float64)
    i, done = 0, False
    while not done:
        action = int(rng.choice(np.flatnonzero(env.action_masks())))
        _, _, terminated, truncated, info = env.step(action)
        assert info["dispatched_task"] == i
        assert info["task_reward"].shape == (CONFIG.n_max,)
        credited += info["task_reward"]
        i, done = i + 1, terminated or truncated
    state = env.state
    real = np.asarray(state.instance.task_mask)
    response = np.asarray(done_time(state) - state.instance.arrival, np.float64)[real]
    np.testing.assert_allclose(credited[real], np.exp(-response / PARAMS.tau), rtol=1e-5)
    assert (credited[~real] == 0).all()
