"""damdjax.views.joint.JointView: the whole epoch as one Jumanji environment.

Checks Jumanji's own smoke tests (specs under `jit` with the env static, an episode of
masked random actions with its finite check), that every observation, action, reward and
discount matches its spec and every mask row allows something, the timestep types
(termination, truncation by the step cap), and that it is the same environment: EFT+SJF's
joint actions through the view end every task at the same time as the pair played on
`EdgeEnv` directly.
"""
from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jumanji.testing.env_not_smoke import (
    check_env_does_not_smoke, check_env_specs_does_not_smoke)
from jumanji.types import StepType

from damdjax import EdgeEnv, EnvConfig, EnvParams, pair_from_name
from damdjax.envs.state import done_time
from damdjax.rollout import run_from_instance
from damdjax.views.joint import JointView, joint_action
from damdjax.wrappers import episode_info

CONFIG = EnvConfig(n_max=20, m_max=4, queue_capacity=8)
PARAMS = EnvParams(num_tasks=20, num_servers=4)


@pytest.fixture(scope="module")
def view():
    return JointView(EdgeEnv(CONFIG), PARAMS)


@pytest.fixture(scope="module")
def compiled(view):
    """The view's functions compiled once for the module's tests."""
    return {"reset": jax.jit(view.reset), "step": jax.jit(view.step)}


def masked_sample(key, obs):
    """A uniform valid action [1 + M]: per row of `obs.action_mask`, one allowed column."""
    logits = jnp.where(obs.action_mask, 0.0, -jnp.inf)
    return jax.random.categorical(key, logits).astype(jnp.int32)


def test_views_package_does_not_import_jumanji():
    code = ("import sys, damdjax.views; "
            "assert 'jumanji' not in sys.modules, 'jumanji imported'; "
            "assert 'damdjax.views.joint' not in sys.modules, 'joint imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_jumanji_specs_do_not_smoke(view):
    check_env_specs_does_not_smoke(view)
    m, q = CONFIG.m_max, CONFIG.queue_capacity
    assert view.action_spec.shape == (1 + m,)
    np.testing.assert_array_equal(view.action_spec.num_values, [m] + [q] * m)
    assert view.observation_spec.action_mask.shape == (1 + m, max(m, q))


def test_jumanji_episode_does_not_smoke(view):
    """Jumanji's episode check with its finite check on: the state and the timestep hold
    no inf or NaN at any step."""
    check_env_does_not_smoke(view, select_action=masked_sample)


def test_every_timestep_matches_its_specs(view, compiled):
    """An episode of masked random actions: every observation, action, reward and
    discount validates against its spec; every mask row allows an action, a row whose
    decision is not needed allows only the default 0; no action is replaced; the step
    types run FIRST, MID..., LAST with discount 0 at the end (a termination)."""
    state, ts = compiled["reset"](jax.random.PRNGKey(2))
    assert ts.step_type == StepType.FIRST and float(ts.discount) == 1.0
    key, steps = jax.random.PRNGKey(3), 0
    while True:
        obs = view.observation_spec.validate(ts.observation)
        view.reward_spec.validate(ts.reward)
        view.discount_spec.validate(ts.discount)
        mask = np.asarray(obs.action_mask)
        assert mask.any(axis=1).all()
        needed = np.concatenate([[bool(obs.dispatch_needed)], np.asarray(obs.pick_needed)])
        default = np.arange(mask.shape[1]) == 0
        assert (mask[~needed] == default).all()
        assert not mask[0, CONFIG.m_max:].any() and not mask[1:, CONFIG.queue_capacity:].any()
        if ts.last():
            break
        key, k = jax.random.split(key)
        action = view.action_spec.validate(masked_sample(k, ts.observation))
        state, ts = compiled["step"](state, action)
        steps += 1
        assert int(ts.extras["invalid_dispatch"]) == 0
        assert int(ts.extras["invalid_picks"]) == 0
        assert bool(ts.extras["episode_done"]) == bool(ts.last())
        assert ts.step_type in (StepType.MID, StepType.LAST)
    assert steps == int(state.env_state.step)
    assert not bool(state.env_state.truncated) and float(ts.discount) == 0.0
    expected = episode_info(state.env_state)
    for name, value in ts.extras["episode"].items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected[name]),
                                      err_msg=name)


def test_truncation_bootstraps(view, compiled):
    """A step that reaches the env's step cap ends the episode as a truncation: LAST
    with discount 1."""
    state, _ = compiled["reset"](jax.random.PRNGKey(4))
    cap = 2 * CONFIG.n_max + 2
    state = state.replace(env_state=state.env_state.replace(step=jnp.int32(cap - 1)))
    action = jnp.zeros((1 + CONFIG.m_max,), jnp.int32)
    state, ts = compiled["step"](state, action)
    assert bool(state.env_state.truncated)
    assert ts.last() and float(ts.discount) == 1.0 and bool(ts.extras["episode_done"])


@pytest.mark.parametrize("seed", [0, 1])
def test_same_environment_as_eft_sjf_on_edge_env(view, compiled, seed):
    """EFT+SJF's joint actions through the view end every task at the same time, on the
    same server, as `pair_from_name('EFT+SJF')` played on `EdgeEnv` from the same
    instance; the summed reward is the env's team return."""
    policy = jax.jit(pair_from_name("EFT+SJF"))
    state, ts = compiled["reset"](jax.random.PRNGKey(10 + seed))
    direct, team_return = jax.jit(run_from_instance, static_argnums=(2, 3))(
        jax.random.PRNGKey(0), state.env_state.instance, pair_from_name("EFT+SJF"),
        CONFIG.queue_capacity, PARAMS)
    key, total = jax.random.PRNGKey(seed), 0.0
    while not ts.last():
        key, k = jax.random.split(key)
        state, ts = compiled["step"](state, joint_action(policy(k, state.env_state)))
        total += float(ts.reward)
    np.testing.assert_array_equal(np.asarray(done_time(state.env_state)),
                                  np.asarray(done_time(direct)))
    np.testing.assert_array_equal(np.asarray(state.env_state.server), np.asarray(direct.server))
    np.testing.assert_allclose(total, float(team_return), rtol=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="EdgeEnv or an EnvConfig"):
        JointView("edge", PARAMS)
    with pytest.raises(ValueError, match="num_servers"):
        JointView(CONFIG, EnvParams(num_tasks=20, num_servers=5))
