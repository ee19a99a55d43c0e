"""damdjax.views.schedulers.SchedulersView: the servers' multi-agent JaxMARL view.

Checks that JaxMARL's own LogWrapper runs it batched and compiled, that its spaces and
available actions are the env's pick masks, that it auto-resets, and a hand-checked
no-op step.
"""
from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxmarl.wrappers.baselines import LogWrapper

from damdjax import EdgeEnv, EnvConfig, EnvParams
from damdjax.envs.observation import OWN_FEATURES, SLOT_FEATURES
from damdjax.views import SchedulersView

CONFIG = EnvConfig(n_max=20, m_max=4, queue_capacity=8)
# three real servers of four slots: server_3 is padded
PARAMS = EnvParams(num_tasks=20, num_servers=3)
M, Q = CONFIG.m_max, CONFIG.queue_capacity


@pytest.fixture(scope="module")
def view():
    return SchedulersView(EdgeEnv(CONFIG), params=PARAMS)


@pytest.fixture(scope="module")
def compiled(view):
    return {"reset": jax.jit(view.reset), "step_env": jax.jit(view.step_env),
            "reset_to": jax.jit(view.reset_to)}


def masked_sample(key, avail):
    """A uniform action among `avail` [..., Q+1] per agent."""
    return jax.random.categorical(key, jnp.where(avail, 0.0, -jnp.inf)).astype(jnp.int32)


def env_masks(view, state):
    """The env's own `(pick_needed [M], pick_mask [M, Q])` of `state`."""
    obs = view.env.observe(state, PARAMS)
    return obs.pick_needed, obs.pick_mask


def test_import_does_not_import_jaxmarl():
    code = ("import sys, damdjax.views; "
            "assert 'jaxmarl' not in sys.modules, 'jaxmarl imported'; "
            "assert 'pettingzoo' not in sys.modules, 'pettingzoo imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_spaces_agents_and_bad_names(view, compiled):
    assert view.num_agents == M
    assert view.agents == [f"server_{i}" for i in range(M)]
    assert view.agent_classes == {"server": view.agents}
    f = 2 * len(OWN_FEATURES) + Q * len(SLOT_FEATURES)
    assert view.obs_size == f
    for a in view.agents:
        assert view.action_space(a).n == Q + 1
        assert view.observation_space(a).shape == (f,)
        assert view.observation_space(a) is view.observation_spaces[a]
    obs, state = compiled["reset"](jax.random.PRNGKey(0))
    assert set(obs) == set(view.agents) | {"world_state"}
    assert obs["world_state"].shape == (view.world_state_size,)
    assert all(obs[a].shape == (f,) and obs[a].dtype == jnp.float32 for a in view.agents)
    np.testing.assert_array_equal(np.asarray(view.get_world_state(state)),
                                  np.asarray(obs["world_state"]))
    with pytest.raises(ValueError, match="'fifo'"):
        SchedulersView(EdgeEnv(CONFIG), dispatch="fifo")
    with pytest.raises(ValueError, match="'agent_0'"):
        view.action_space("agent_0")
    with pytest.raises(ValueError, match="agent_9"):
        view.stack_actions({"agent_9": 0})


def test_log_wrapper_batched_and_compiled(view):
    """JaxMARL's LogWrapper runs the view under jit(vmap) over 8 keys for 42 steps with
    random available actions. At every step: the available actions are the env's pick
    masks (a server with a decision: its eligible slots; else the no-op alone), some
    server has a decision, no pick is invalid, every agent gets the same reward, and where
    an episode ended the state is a new episode's first decision (auto-reset)."""
    env = LogWrapper(view)
    batch = 8
    reset = jax.jit(jax.vmap(env.reset))
    step = jax.jit(jax.vmap(env.step))
    key = jax.random.PRNGKey(1)
    key, k_reset = jax.random.split(key)
    obs, state = reset(jax.random.split(k_reset, batch))
    avail = jax.vmap(view.avail_actions)(state.env_state)
    masks = jax.jit(jax.vmap(lambda s: env_masks(view, s)))
    ended = 0
    num_real = int(PARAMS.num_tasks)
    for _ in range(42):
        s = state.env_state
        needed, mask = masks(s)
        np.testing.assert_array_equal(np.asarray(avail[..., :Q]),
                                      np.asarray(mask & needed[..., None]))
        np.testing.assert_array_equal(np.asarray(avail[..., Q]), np.asarray(~needed))
        assert bool(jnp.all(jnp.any(needed, axis=1) | s.done))
        assert not bool(jnp.any(needed[:, PARAMS.num_servers:]))   # the padded server
        key, k_act, k_step = jax.random.split(key, 3)
        action = masked_sample(k_act, avail)
        actions = {a: action[:, i] for i, a in enumerate(view.agents)}
        obs, state, rewards, dones, info = step(jax.random.split(k_step, batch), state,
                                                actions)
        avail = info["avail_actions"]
        assert avail.shape == (batch, M, Q + 1)
        assert all(obs[a].shape == (batch, view.obs_size) for a in view.agents)
        for k in ("invalid_picks", "epochs", "terminated", "truncated", "returned_episode"):
            assert info[k].shape == (batch, M), k
        assert not bool(jnp.any(info["invalid_picks"]))
        assert bool(jnp.all(info["epochs"] >= 1))
        r0 = rewards[view.agents[0]]
        assert bool(jnp.all(jnp.isfinite(r0))) and bool(jnp.all(r0 <= 0))
        for a in view.agents:
            np.testing.assert_array_equal(np.asarray(rewards[a]), np.asarray(r0))
            np.testing.assert_array_equal(np.asarray(dones[a]), np.asarray(dones["__all__"]))
        done = np.asarray(dones["__all__"])
        np.testing.assert_array_equal(
            done, np.asarray(info["terminated"][:, 0] | info["truncated"][:, 0]))
        # auto-reset: a new episode at its first pick decision, nothing started yet
        s = state.env_state
        fresh = np.asarray((s.unstarted == num_real) & ~s.done)
        assert fresh[done].all()
        ended += int(done.sum())
        np.testing.assert_array_equal(np.asarray(info["returned_episode"][:, 0]), done)
    # every step starts a task: 20 tasks end an episode in at most 20 steps
    assert ended >= 2 * batch
    returns = np.asarray(state.returned_episode_returns)
    assert (returns[:, :1] == returns).all() and (returns < 0).all()


def test_noop_by_hand(view, compiled):
    """At a first decision: every agent plays the no-op. Each server with a decision gets
    its lowest eligible slot's task started (the env's replacement), counted as invalid;
    the others (the padded one included) start nothing and are not counted. Then a slot
    action of a server without a decision is ignored."""
    _, state = compiled["reset"](jax.random.PRNGKey(7))
    needed, mask = (np.asarray(x) for x in env_masks(view, state))
    assert needed.any() and not needed[PARAMS.num_servers:].any()
    queue = np.asarray(state.queue)
    expected = {i: int(queue[i, np.argmax(mask[i])]) for i in range(M) if needed[i]}
    noops = {a: view.noop for a in view.agents}
    _, after, _, _, info = compiled["step_env"](jax.random.PRNGKey(0), state, noops)
    np.testing.assert_array_equal(np.asarray(info["invalid_picks"]), needed.astype(int))
    start = np.asarray(after.start)
    server = np.asarray(after.server)
    for i in range(M):
        if needed[i]:
            task = expected[i]
            assert server[task] == i and start[task] == float(state.time)
            # started: out of its queue
            assert task not in np.asarray(after.queue)[i]
    started_now = np.flatnonzero(start == float(state.time))
    assert sorted(started_now) == sorted(expected.values())

    # the same step with the no-op for the agents with a decision: a slot action of every
    # other agent is ignored and not counted
    actions = {a: (view.noop if needed[i] else 0) for i, a in enumerate(view.agents)}
    _, after2, _, _, info2 = compiled["step_env"](jax.random.PRNGKey(0), state, actions)
    np.testing.assert_array_equal(np.asarray(info2["invalid_picks"]), needed.astype(int))
    np.testing.assert_array_equal(np.asarray(after2.start), start)
    # an array [M] in agent order is the same action as the dict; a missing agent: no-op
    in_order = np.array([actions[a] for a in view.agents])
    np.testing.assert_array_equal(np.asarray(view.stack_actions(in_order)),
                                  np.asarray(view.stack_actions(actions)))
    np.testing.assert_array_equal(np.asarray(view.stack_actions({})), [view.noop] * M)


def test_split_obs_and_as_policy(view, compiled):
    """`split_obs` gives back the features the MDQN schedulers read
    (`damdjax.schedulers.scheduler_inputs`); schedulers written for the view (here: the
    last available slot), turned into an env policy by `as_policy` and played epoch by
    epoch, end every task where and when the same schedulers played through the view do."""
    from damdjax.envs.observation import observe
    from damdjax.rollout import run_from_instance
    from damdjax.schedulers import scheduler_inputs
    instance = view.env.generate(jax.random.PRNGKey(31), PARAMS)
    obs, state = compiled["reset_to"](instance)
    own, others, slots = view.split_obs(jnp.stack([obs[a] for a in view.agents]))
    ref = scheduler_inputs(observe(state, PARAMS.time_scale))
    close = dict(rtol=1e-6, atol=1e-7)   # the compiled reset's observation: last bits
    np.testing.assert_allclose(own, ref.own, **close)
    np.testing.assert_allclose(others, ref.others, **close)
    np.testing.assert_allclose(slots, ref.slots, **close)

    def last_available(key, agent_obs, avail):
        return Q - jnp.argmax(avail[:, ::-1], axis=1)

    direct, _ = jax.jit(run_from_instance, static_argnums=(2, 3))(
        jax.random.PRNGKey(0), instance, view.as_policy(last_available), Q, PARAMS)
    key = jax.random.PRNGKey(1)
    while not bool(state.done):
        key, k_act, k_step = jax.random.split(key, 3)
        agent_obs, _ = view.observations(state)
        picks = last_available(k_act, agent_obs, view.avail_actions(state))
        _, state, _, _, _ = compiled["step_env"](k_step, state, picks)
    for field in ("server", "start", "done_at"):
        np.testing.assert_array_equal(np.asarray(getattr(state, field)),
                                      np.asarray(getattr(direct, field)), err_msg=field)
