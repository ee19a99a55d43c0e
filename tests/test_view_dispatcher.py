"""damdjax.views.dispatcher.DispatcherView: the dispatcher's single-agent gymnax view.

Checks that gymnax's own wrappers run it batched and compiled, that it is the same
environment (EFT through the view ends in the same task times as the ES pair played
epoch by epoch), and that compiled and eager steps agree.
"""
from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from damdjax import EdgeEnv, EnvConfig, EnvParams, pair_from_name
from damdjax.heuristics import DISPATCH_RULES
from damdjax.rollout import run_from_instance
from damdjax.views import DispatcherView

CONFIG = EnvConfig(n_max=20, m_max=4, queue_capacity=8)
PARAMS = EnvParams(num_tasks=20, num_servers=4)


@pytest.fixture(scope="module")
def view():
    return DispatcherView(EdgeEnv(CONFIG))


@pytest.fixture(scope="module")
def compiled(view):
    """The view's functions compiled once for the module's tests."""
    return {"reset": jax.jit(view.reset), "reset_to": jax.jit(view.reset_to),
            "step": jax.jit(view.step), "step_env": jax.jit(view.step_env),
            "eft": jax.jit(DISPATCH_RULES["eft"])}


def masked_sample(key, mask):
    """A uniform action among `mask` [..., M]."""
    return jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf)).astype(jnp.int32)


def test_import_does_not_import_gymnax():
    code = ("import sys, damdjax.views; "
            "assert 'gymnax' not in sys.modules, 'gymnax imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_spaces_and_sizes(view, compiled):
    m = CONFIG.m_max
    assert view.num_actions == m
    assert view.action_space(PARAMS).n == m
    assert view.observation_space(PARAMS).shape == (view.obs_size,)
    obs, state = compiled["reset"](jax.random.PRNGKey(0), PARAMS)
    assert obs.shape == (view.obs_size,) and obs.dtype == jnp.float32
    mask = view.action_mask(state)
    assert mask.shape == (m,) and bool(mask.any())


def test_gymnax_wrappers_batched_and_compiled(view):
    """gymnax's LogWrapper over its FlattenObservationWrapper runs the view under
    jit(vmap) over 8 keys for 50 decisions with random valid actions; every dispatch is
    valid and every finished episode took one decision per task. gymnax is the extra
    `damdjax[gymnax]`, which the README's test command installs: missing, this fails."""
    import gymnax.wrappers.purerl as gymnax_wrappers
    from gymnax.environments import spaces
    env = gymnax_wrappers.LogWrapper(gymnax_wrappers.FlattenObservationWrapper(view))
    assert isinstance(env.observation_space(PARAMS), spaces.Box)
    assert env.observation_space(PARAMS).shape == (view.obs_size,)
    assert isinstance(env.action_space(PARAMS), spaces.Discrete)

    batch = 8
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    key = jax.random.PRNGKey(1)
    key, k_reset = jax.random.split(key)
    obs, state = reset(jax.random.split(k_reset, batch), PARAMS)
    assert obs.shape == (batch, view.obs_size)
    mask = jax.vmap(view.action_mask)(state.env_state)
    ended = 0
    for _ in range(50):
        key, k_act, k_step = jax.random.split(key, 3)
        action = masked_sample(k_act, mask)
        obs, state, reward, terminated, truncated, info = step(
            jax.random.split(k_step, batch), state, action, PARAMS)
        mask = info["action_mask"]
        assert obs.shape == (batch, view.obs_size) and obs.dtype == jnp.float32
        assert reward.shape == (batch,) and bool(jnp.all(jnp.isfinite(reward)))
        assert not bool(jnp.any(info["invalid_dispatch"]))
        assert bool(jnp.all(mask.any(axis=1)))
        assert bool(jnp.all(info["episode_done"] == (terminated | truncated)))
        done = np.asarray(info["returned_episode"])
        ended += int(done.sum())
        lengths = np.asarray(info["returned_episode_lengths"])[done]
        assert (lengths == PARAMS.num_tasks).all(), lengths
    # 20 tasks: one decision each, so every env ends two episodes in 50 decisions
    assert ended >= 2 * batch
    assert bool(jnp.all(state.returned_episode_valid))


def play_view(view, compiled, instance, key):
    """EFT through the view on `instance` until the episode ends (no auto-reset).
    Returns `(final state, summed reward, decisions)`."""
    eft, step_env = compiled["eft"], compiled["step_env"]
    _, state = compiled["reset_to"](instance, PARAMS)
    total, decisions = 0.0, 0
    while not bool(state.done):
        key, k_act, k_step = jax.random.split(key, 3)
        assert bool(view.action_mask(state).any())
        _, state, reward, done, info = step_env(k_step, state, eft(k_act, state), PARAMS)
        assert int(info["invalid_dispatch"]) == 0
        total += float(reward)
        decisions += 1
    return state, total, decisions


@pytest.mark.parametrize("seed", [0, 1])
def test_same_environment_as_the_es_pair(view, compiled, seed):
    """EFT dispatch with the view's SJF picks ends every task at the same times, on the
    same servers, as the ES pair (`pair_from_name('ES')`) played epoch by epoch on the
    same instance; the episode's summed reward is the env's team return."""
    instance = view.env.generate(jax.random.PRNGKey(100 + seed), PARAMS)
    direct, team_return = jax.jit(run_from_instance, static_argnums=(2, 3))(
        jax.random.PRNGKey(0), instance, pair_from_name("ES"), CONFIG.queue_capacity, PARAMS)
    state, total, decisions = play_view(view, compiled, instance, jax.random.PRNGKey(seed))
    assert decisions == int(jnp.sum(instance.task_mask))
    for field in ("server", "arrive", "start", "finish", "done_at", "time", "step"):
        np.testing.assert_array_equal(np.asarray(getattr(state, field)),
                                      np.asarray(getattr(direct, field)), err_msg=field)
    np.testing.assert_allclose(total, float(team_return), rtol=1e-5)


def test_invalid_dispatch_is_replaced_and_flagged(view, compiled):
    _, state = compiled["reset"](jax.random.PRNGKey(3), PARAMS)
    mask = view.action_mask(state)
    bad = jnp.argmin(mask).astype(jnp.int32)   # a masked server, else server 0
    _, after, _, _, info = compiled["step_env"](jax.random.PRNGKey(0), state, bad, PARAMS)
    assert int(info["invalid_dispatch"]) == int(~mask[bad])
    head = int(state.head)
    expected = int(bad) if bool(mask[bad]) else int(jnp.argmax(mask))
    assert int(after.server[head]) == expected


def test_jit_and_eager_agree(view, compiled):
    """Three decisions from one start, compiled and eager (`jax.disable_jit`), agree: the
    rule's `while_loop` and the dispatch give the same results whether XLA compiles them
    or JAX runs them op by op. (`step` adds only the auto-reset's selects to `step_env`;
    the eager generator of `reset_env` would double this test's time.)"""
    _, start = compiled["reset"](jax.random.PRNGKey(5), PARAMS)

    def play(step_env):
        state, out = start, []
        key = jax.random.PRNGKey(6)
        for _ in range(3):
            key, k_act, k_step = jax.random.split(key, 3)
            action = masked_sample(k_act, view.action_mask(state))
            obs, state, reward, done, info = step_env(k_step, state, action, PARAMS)
            out += [obs, reward, done, info["epochs"], info["invalid_dispatch"],
                    view.action_mask(state)]
        return out, state

    jitted, s_jit = play(compiled["step_env"])
    with jax.disable_jit():
        eager, s_eager = play(view.step_env)
    for a, b in zip(jitted, eager):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    for field in ("server", "start", "finish", "head", "step", "time"):
        np.testing.assert_allclose(np.asarray(getattr(s_jit, field)),
                                   np.asarray(getattr(s_eager, field)), rtol=1e-6)


def test_delayed_reward_credited_by_decision(view, compiled):
    """The paper's delayed reward from the view's `info`: decision `j` dispatches task `j`,
    every real task completes at exactly one step, and crediting `task_reward[i]` to
    decision `i` gives each decision `exp(-T_i / tau)` with `T_i = done_at - arrival` read
    from the final state (an independent computation of the same numbers)."""
    instance = view.env.generate(jax.random.PRNGKey(11), PARAMS)
    _, state = compiled["reset_to"](instance, PARAMS)
    eft, step_env = compiled["eft"], compiled["step_env"]
    key = jax.random.PRNGKey(12)
    n = CONFIG.n_max
    credited = np.zeros(n)
    completions = np.zeros(n, int)
    decision = 0
    while not bool(state.done):
        key, k_act, k_step = jax.random.split(key, 3)
        _, state, _, _, info = step_env(k_step, state, eft(k_act, state), PARAMS)
        assert int(info["dispatched_task"]) == decision
        done = np.asarray(info["newly_done"])
        completions += done
        credited += np.asarray(info["task_reward"])
        assert np.all(np.asarray(info["task_reward"])[~done] == 0.0)
        decision += 1
    real = np.asarray(instance.task_mask)
    assert decision == real.sum()
    np.testing.assert_array_equal(completions, real.astype(int))
    response = np.asarray(state.done_at - instance.arrival, np.float64)[real]
    np.testing.assert_allclose(credited[real], np.exp(-response / PARAMS.tau), rtol=1e-5)


def test_split_obs_and_as_policy(view, compiled):
    """`split_obs` gives back the env's own `task` and `servers` features; a dispatcher
    written for the view (here: the last valid server), turned into an env policy by
    `as_policy` and played epoch by epoch, ends every task where and when the same
    dispatcher played through the view does."""
    from damdjax.envs.observation import observe
    instance = view.env.generate(jax.random.PRNGKey(21), PARAMS)
    obs, state = compiled["reset_to"](instance, PARAMS)
    task, servers = view.split_obs(obs)
    raw = observe(state, PARAMS.time_scale)
    close = dict(rtol=1e-6, atol=1e-7)   # the compiled reset's observation: last bits
    np.testing.assert_allclose(task, raw.task, **close)
    np.testing.assert_allclose(servers, raw.servers, **close)
    assert view.split_obs(jnp.stack([obs, obs]))[1].shape == (2, CONFIG.m_max, view.server_size)

    def last_valid(key, obs, mask):
        return CONFIG.m_max - 1 - jnp.argmax(mask[::-1])

    direct, _ = jax.jit(run_from_instance, static_argnums=(2, 3))(
        jax.random.PRNGKey(0), instance, view.as_policy(last_valid, PARAMS),
        CONFIG.queue_capacity, PARAMS)
    step_env = compiled["step_env"]
    key = jax.random.PRNGKey(1)
    while not bool(state.done):
        key, k_act, k_step = jax.random.split(key, 3)
        action = last_valid(k_act, view.get_obs(state, PARAMS), view.action_mask(state))
        _, state, _, _, _ = step_env(k_step, state, action, PARAMS)
    for field in ("server", "start", "done_at"):
        np.testing.assert_array_equal(np.asarray(getattr(state, field)),
                                      np.asarray(getattr(direct, field)), err_msg=field)
