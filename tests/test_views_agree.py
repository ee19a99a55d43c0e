"""The views are the same environment: EFT dispatch with SJF picks played (a) epoch by
epoch on `EdgeEnv` (`heuristics.pair`), (b) through `DispatcherView` (each action EFT's
choice, its servers' rule SJF) and (c) through `SchedulersView` (each agent's action SJF's
pick, its dispatcher EFT) ends every task at the same time on the same server.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from damdjax import EdgeEnv, EnvConfig, EnvParams
from damdjax.envs.dynamics import pick_needed
from damdjax.envs.state import done_time
from damdjax.heuristics import DISPATCH_RULES, SCHEDULE_RULES, pair
from damdjax.rollout import run_from_instance
from damdjax.views import DispatcherView, SchedulersView

CONFIG = EnvConfig(n_max=20, m_max=4, queue_capacity=8)
PARAMS = EnvParams(num_tasks=20, num_servers=3)
EFT, SJF = DISPATCH_RULES["eft"], SCHEDULE_RULES["sjf"]


@pytest.fixture(scope="module")
def played():
    """The three ways of playing, each compiled once: `instance -> (final state, summed
    reward, reward before the first pick decision or None)`."""
    env = EdgeEnv(CONFIG)
    disp, sched = DispatcherView(env, schedule="sjf"), SchedulersView(env, "eft", PARAMS)
    direct = jax.jit(run_from_instance, static_argnums=(2, 3))
    d_reset, d_step = jax.jit(disp.reset_to), jax.jit(disp.step_env)
    s_reset, s_step = jax.jit(sched.reset_to), jax.jit(sched.step_env)
    eft, sjf = jax.jit(EFT), jax.jit(SJF)

    @jax.jit
    def before_first_pick(instance):
        """The env's team reward of the epochs the schedulers' view plays at reset."""
        def cond(c):
            return ~c[0].done & ~jnp.any(pick_needed(c[0]))

        def body(c):
            s, total = c
            action = pair(EFT, SJF)(jax.random.PRNGKey(0), s)
            _, s, r, _, _ = env.step(None, s, action, PARAMS)
            return s, total + r
        _, s = env.reset_to(instance, PARAMS)
        return jax.lax.while_loop(cond, body, (s, jnp.zeros((), s.time.dtype)))[1]

    def via_env(instance):
        state, total = direct(jax.random.PRNGKey(0), instance, pair(EFT, SJF),
                              CONFIG.queue_capacity, PARAMS)
        return state, float(total), float(before_first_pick(instance))

    def via_dispatcher(instance):
        _, state = d_reset(instance, PARAMS)
        total, key = 0.0, jax.random.PRNGKey(1)
        while not bool(state.done):
            key, k_act, k_step = jax.random.split(key, 3)
            _, state, reward, _, info = d_step(k_step, state, eft(k_act, state), PARAMS)
            assert int(info["invalid_dispatch"]) == 0
            total += float(reward)
        return state, total, None

    def via_schedulers(instance):
        _, state = s_reset(instance)
        total, key = 0.0, jax.random.PRNGKey(2)
        while not bool(state.done):
            key, k_act, k_step = jax.random.split(key, 3)
            avail = sched.avail_actions(state)
            picks = jnp.where(avail[:, sched.noop], sched.noop, sjf(k_act, state))
            actions = {a: picks[i] for i, a in enumerate(sched.agents)}
            _, state, rewards, dones, info = s_step(k_step, state, actions)
            assert not bool(jnp.any(info["invalid_picks"]))
            total += float(rewards[sched.agents[0]])
        return state, total, None

    return env, {"env": via_env, "dispatcher": via_dispatcher, "schedulers": via_schedulers}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_task_times(played, seed):
    """Same done times (`done_time`) and servers for every task, every real task done;
    the dispatcher's view sums to the env's team return, the schedulers' view to it less
    the epochs before the first pick decision."""
    env, ways = played
    instance = env.generate(jax.random.PRNGKey(200 + seed), PARAMS)
    results = {name: play(instance) for name, play in ways.items()}
    ref, team_return, before = results["env"]
    real = np.asarray(instance.task_mask)
    assert int(ref.unstarted) == 0 and not bool(ref.truncated)
    for name in ("dispatcher", "schedulers"):
        state = results[name][0]
        assert bool(state.done) and not bool(state.truncated), name
        np.testing.assert_array_equal(np.asarray(done_time(state))[real],
                                      np.asarray(done_time(ref))[real], err_msg=name)
        np.testing.assert_array_equal(np.asarray(state.server), np.asarray(ref.server),
                                      err_msg=name)
    np.testing.assert_allclose(results["dispatcher"][1], team_return, rtol=1e-5)
    np.testing.assert_allclose(results["schedulers"][1], team_return - before, rtol=1e-5)
    assert before < 0   # the first task's upload is played at reset


def test_capped_steps_play_the_same_episodes(played):
    """With `max_epochs` (2 for the dispatcher's view, 1 for the servers') an episode ends
    exactly as without it: the same done times and servers; the dispatcher's view decided
    once per task (its other steps are flagged `decision` False and change nothing), and a
    servers' step without a decision lets only the no-op through."""
    env, ways = played
    instance = env.generate(jax.random.PRNGKey(230), PARAMS)
    ref = ways["env"](instance)[0]
    real = np.asarray(instance.task_mask)

    disp = DispatcherView(env, schedule="sjf", max_epochs=2)
    d_reset, d_step, eft = jax.jit(disp.reset_to), jax.jit(disp.step_env), jax.jit(EFT)
    _, state = d_reset(instance, PARAMS)
    key, decisions, steps = jax.random.PRNGKey(1), 0, 0
    while not bool(state.done):
        key, k_act, k_step = jax.random.split(key, 3)
        _, state, _, _, info = d_step(k_step, state, eft(k_act, state), PARAMS)
        assert int(info["epochs"]) <= 2
        decisions += int(info["decision"])
        steps += 1
    assert decisions == real.sum() < steps
    np.testing.assert_array_equal(np.asarray(done_time(state))[real],
                                  np.asarray(done_time(ref))[real])

    sched = SchedulersView(env, "eft", PARAMS, max_epochs=1)
    s_reset, s_step, sjf = jax.jit(sched.reset_to), jax.jit(sched.step_env), jax.jit(SJF)
    _, state = s_reset(instance)
    idle = 0
    while not bool(state.done):
        key, k_act, k_step = jax.random.split(key, 3)
        avail = sched.avail_actions(state)
        idle += int(~jnp.any(avail[:, :sched.noop]))
        picks = jnp.where(avail[:, sched.noop], sched.noop, sjf(k_act, state))
        _, state, _, _, info = s_step(k_step, state, picks)
        assert int(info["epochs"][0]) == 1
        np.testing.assert_array_equal(info["decision"], ~avail[:, sched.noop])
    assert idle > 0
    np.testing.assert_array_equal(np.asarray(done_time(state))[real],
                                  np.asarray(done_time(ref))[real])
    np.testing.assert_array_equal(np.asarray(state.server), np.asarray(ref.server))
