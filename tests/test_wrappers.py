"""damdjax.wrappers: AutoReset and EpisodeStats under jit/vmap against the raw env stepped
by hand with the same keys and actions; Checked raising at the Python boundary."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.dynamics import dispatch_needed
from damdjax.envs.env import EdgeEnv
from damdjax.envs.state import Action
from damdjax.heuristics import pair_from_name
from damdjax.metrics import METRIC_NAMES, episode_metrics
from damdjax.wrappers import AutoReset, Checked, EpisodeStats, Wrapper

CONFIG = EnvConfig(n_max=12, m_max=3, queue_capacity=6)
PARAMS = EnvParams(num_tasks=12, num_servers=3)
POLICY = pair_from_name("ES")
RAW = EdgeEnv(CONFIG)
STEPS = 75          # an episode of 12 tasks lasts at most 2 * 12 + 2 = 26 steps: >= 3 episodes
BATCH = 2
BAD_DISPATCH = 99   # out of range: the env replaces it and counts it in info


def action_at(t, key, state):
    """The ES action, with an invalid dispatch at step 0 (counted, not raised, by the env)."""
    a = POLICY(key, state)
    return a.replace(dispatch=jnp.where(t == 0, BAD_DISPATCH, a.dispatch))


def step_keys(key):
    """(reset key, per-step keys [STEPS]); each step key splits into (policy, env step)."""
    k0, k = jax.random.split(key)
    return k0, jax.random.split(k, STEPS)


def wrapped_rollout(env, key):
    """Reset, then STEPS steps of `action_at` under `lax.scan`; per step: the returned
    obs, state, reward, done and info."""
    k0, keys = step_keys(key)
    _, state = env.reset(k0, PARAMS)

    def body(state, xs):
        t, k = xs
        k_pol, k_step = jax.random.split(k)
        obs, state, reward, done, info = env.step(k_step, state, action_at(t, k_pol, state),
                                                  PARAMS)
        return state, (obs, state, reward, done, info)

    return jax.lax.scan(body, state, (jnp.arange(STEPS), keys))[1]


raw_reset = jax.jit(RAW.reset)
raw_step = jax.jit(RAW.step)
raw_action = jax.jit(action_at)


@jax.jit
def raw_policy_step(t, k_pol, k_step, state):
    """`action_at`, then the raw env's step, and episode_metrics of the state it returns
    (one compiled program)."""
    obs, new, reward, done, _ = RAW.step(k_step, state, action_at(t, k_pol, state), PARAMS)
    return obs, new, reward, done, episode_metrics(new)


def manual_rollout(key, auto_reset: bool):
    """The raw env stepped one call at a time from Python, resetting by hand (when
    `auto_reset`) with the key AutoReset documents: `jax.random.split(step_key)[1]`.
    Per step: (final obs of the raw step, returned state, reward, done, the ended
    episode's metrics or None)."""
    k0, keys = step_keys(key)
    _, state = raw_reset(k0, PARAMS)
    k_pols, k_steps = np.moveaxis(np.asarray(jax.vmap(jax.random.split)(keys)), 1, 0)
    k_inner, k_resets = np.moveaxis(np.asarray(jax.vmap(jax.random.split)(k_steps)), 1, 0)
    out = []
    for t in range(STEPS):
        was_done = bool(state.done)
        obs, new, reward, done, metrics = raw_policy_step(t, k_pols[t], k_inner[t], state)
        ended = bool(done) and not was_done
        stats = None
        if ended:
            stats = {**metrics, "length": new.step}
        if auto_reset and bool(done):
            _, new = raw_reset(k_resets[t], PARAMS)
        out.append((obs, new, reward, done, stats))
        state = new
    return out


def assert_same(a, b):
    """Integer and bool leaves equal; float leaves equal to float32 rounding (the batched
    program and the unbatched one may round a fused expression differently in the last
    bit)."""
    def check(x, y):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_array_equal(x, y)
    jax.tree.map(check, a, b)


def check_stats(info, t, stats):
    """info["episode"] at step t: the metrics where an episode ended, zeros otherwise."""
    episode = jax.tree.map(lambda x: x[t], info["episode"])
    assert set(episode) == {*METRIC_NAMES, "length"}
    assert bool(info["episode_done"][t]) == (stats is not None)
    if stats is None:
        for name, value in episode.items():
            assert float(value) == 0.0, name
    else:
        for name, value in episode.items():
            np.testing.assert_allclose(value, stats[name], rtol=1e-6, err_msg=name)
            assert np.isfinite(value), name


@pytest.fixture(scope="module")
def auto_reset_run():
    env = AutoReset(EpisodeStats(RAW), keep_final_obs=True)
    keys = jax.random.split(jax.random.PRNGKey(3), BATCH)
    out = jax.jit(jax.vmap(lambda k: wrapped_rollout(env, k)))(keys)
    return keys, jax.tree.map(np.asarray, out)


def test_auto_reset_matches_manual_resets(auto_reset_run):
    keys, (obs, states, rewards, dones, info) = auto_reset_run
    for b in range(BATCH):
        manual = manual_rollout(keys[b], auto_reset=True)
        assert sum(bool(d) for _, _, _, d, _ in manual) >= 3   # three episodes at least
        pick = lambda tree, t: jax.tree.map(lambda x: x[b, t], tree)
        for t, (final_obs, state, reward, done, stats) in enumerate(manual):
            assert bool(dones[b, t]) == bool(done)
            assert_same(rewards[b, t], reward)
            assert_same(pick(states, t), state)
            assert_same(pick(info["final_obs"], t), final_obs)
            assert not bool(states.done[b, t])          # never hands back a finished state
            check_stats(jax.tree.map(lambda x: x[b], info), t, stats)
        # the returned obs is the new episode's where one ended
        assert_same(pick(obs, STEPS - 1), RAW.observe(manual[-1][1], PARAMS))


def test_invalid_action_counts_pass_through(auto_reset_run):
    _, (_, _, _, _, info) = auto_reset_run
    assert info["invalid_dispatch"].shape == info["invalid_picks"].shape == (BATCH, STEPS)
    assert info["invalid_dispatch"][:, 0].all()          # the bad dispatch, counted
    assert not info["invalid_dispatch"][:, 1:].any()     # ES is always valid
    assert info["invalid_picks"].sum() == 0


def test_episode_stats_at_the_done_step():
    """One episode, then steps of the finished state: the metrics appear once, at the
    step that ends it, equal to episode_metrics of the raw env's final state."""
    env = EpisodeStats(RAW)
    key = jax.random.PRNGKey(5)
    out = jax.jit(lambda k: wrapped_rollout(env, k))(key)
    _, _, _, dones, info = jax.tree.map(np.asarray, out)
    manual = manual_rollout(key, auto_reset=False)
    ends = [t for t, m in enumerate(manual) if m[4] is not None]
    assert len(ends) == 1 and ends[0] < STEPS - 1       # it ended, then steps went on
    for t, (_, _, _, done, stats) in enumerate(manual):
        assert bool(dones[t]) == bool(done)
        check_stats(info, t, stats)


class Compiled(Wrapper):
    """The raw env with compiled reset and step (Checked's checks run on the host)."""

    def reset(self, key, params):
        return raw_reset(key, params)

    def step(self, key, state, action, params):
        return raw_step(key, state, action, params)


def test_checked_raises_on_masked_actions_only():
    env = Checked(Compiled(RAW))
    params = PARAMS.replace(num_servers=2)        # server 2 is padding: always masked
    _, state = env.reset(jax.random.PRNGKey(1), params)
    assert bool(dispatch_needed(state))
    valid = raw_action(1, jax.random.PRNGKey(2), state)
    _, after, _, _, info = env.step(jax.random.PRNGKey(0), state, valid, params)
    assert not bool(info["invalid_dispatch"]) and int(after.step) == 1
    with pytest.raises(ValueError, match="dispatch to server 2"):
        env.step(jax.random.PRNGKey(0), state, valid.replace(dispatch=jnp.int32(2)), params)
    with pytest.raises(ValueError, match="picks must have shape"):
        env.step(jax.random.PRNGKey(0), state, Action(valid.dispatch, jnp.zeros(2, jnp.int32)),
                 params)
    with pytest.raises(TypeError, match="Python boundary"):
        jax.jit(env.step)(jax.random.PRNGKey(0), state, valid, params)
    with pytest.raises(ValueError, match="num_tasks"):
        env.reset(jax.random.PRNGKey(1), params.replace(num_tasks=13))


def test_wrappers_delegate():
    env = AutoReset(EpisodeStats(Checked(RAW)))
    assert env.config is CONFIG and env.unwrapped is RAW
    assert env.default_params == RAW.default_params
    with pytest.raises(ValueError, match="inside AutoReset"):
        EpisodeStats(Checked(AutoReset(RAW)))
