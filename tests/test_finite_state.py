"""The environment holds no inf or NaN: its state (the instance included), observation,
reward and info are finite at every step, whatever the actions, and `jax_debug_infs` /
`jax_debug_nans` stay quiet in reset and step, jitted and op by op (times not set yet
hold `damdjax.envs.times.never`, a finite value).

(a) Whole episodes of the step-digest families (tests/test_step_digests.py; generated
instances, padded tasks and servers), one program: heuristic pairs, uniform integers
that are often out of range or infeasible, and a mix of both; every step's outputs are
checked after the scan. (b) Reset and steps under the debug flags, eager and jitted, in
float32 and float64, on the random DAG model and on a job library.
"""
from __future__ import annotations

import contextlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_step_digests import FAMILIES
from damdjax.heuristics import pair_from_name
from damdjax.metrics import episode_metrics
from damdjax.envs.config import EnvConfig
from damdjax.envs.env import EdgeEnv
from damdjax.envs.generators import JobLibraryGenerator
from damdjax.envs.state import Action
from damdjax.envs.times import never
from damdjax.envs.workload import JobLibrary, required_config

# Every dispatch rule and every scheduling rule at least once.
PAIRS = ("NF", "RS", "LD", "EC", "EX")
# Per episode, the chance that a step's action is uniform integers instead of the pair's.
WILD = (0.0, 0.5, 1.0)
QUEUE = 3


def mixed_policy(config: EnvConfig):
    """`(key, state, which [] int, wild [] float) -> Action`: pair PAIRS[which], or with
    probability `wild` uniform integers in [-2, size + 2) (out of range or infeasible)."""
    pairs = [pair_from_name(name) for name in PAIRS]

    def policy(key, state, which, wild):
        k_pair, k_coin, k_d, k_p = jax.random.split(key, 4)
        acts = [p(k_pair, state) for p in pairs]
        good = jax.tree.map(lambda *xs: jnp.stack(xs)[which], *acts)
        rand = Action(dispatch=jax.random.randint(k_d, (), -2, config.m_max + 2),
                      picks=jax.random.randint(k_p, (config.m_max,), -2,
                                               config.queue_capacity + 2))
        use = jax.random.uniform(k_coin) < wild
        return jax.tree.map(lambda r, g: jnp.where(use, r, g), rand, good)
    return policy


def assert_finite(tree, where: str) -> None:
    """`chex.assert_tree_all_finite`, naming the first bad leaf, value and index."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        x = np.asarray(leaf)
        if np.issubdtype(x.dtype, np.floating):
            bad = np.argwhere(~np.isfinite(x))
            assert not bad.size, (f"{where}{jax.tree_util.keystr(path)}: {x[tuple(bad[0])]} "
                                  f"at {bad[0].tolist()}")


def test_episodes_stay_finite_at_every_step():
    """Every family of the step digests (queue 3), each with three action mixes: the
    reset, every step's state (less its instance), observation, reward and info, the final
    state and its metrics are finite; padding holds `never`."""
    config = EnvConfig(queue_capacity=QUEUE)
    env = EdgeEnv(config)
    policy = mixed_policy(config)
    families = [f for group in FAMILIES.values() for f in group]
    # One episode per family and WILD, each with its own pair: [B] settings, keys, choices.
    settings = [params for _, _, _, params in families for _ in WILD]
    params = jax.tree.map(lambda *xs: jnp.asarray(xs), *settings)
    b = len(settings)
    keys = jax.random.split(jax.random.PRNGKey(11), b)
    which = jnp.arange(b, dtype=jnp.int32) % len(PAIRS)
    wild = jnp.asarray(WILD * len(families))

    def episode(key, p, which, wild):
        k_reset, k_run = jax.random.split(key)
        obs, state = env.reset(k_reset, p)

        def body(state, k):
            obs, state, reward, done, info = env.step(k, state, policy(k, state, which, wild), p)
            return state, (state.replace(instance=None), obs, reward, info)

        final, steps = jax.lax.scan(body, state, jax.random.split(k_run, config.max_steps))
        return (state, obs), steps, final, episode_metrics(final)

    first, steps, final, metrics = jax.device_get(jax.jit(jax.vmap(episode))(
        keys, params, which, wild))
    assert final.done.all() and not final.truncated.any()
    assert (final.unstarted == 0).all()
    assert_finite(first, "reset ")
    assert_finite(steps, "step ")
    assert_finite(final, "final ")
    assert_finite(metrics, "metrics ")
    # Padding tasks hold the sentinel, real unset times never appear at the end.
    real = final.instance.task_mask
    unset = never(final.time.dtype)
    assert (final.instance.arrival[~real] == unset).all()
    assert (final.start[real] < unset).all() and (final.start[~real] == unset).all()


def tiny_library() -> JobLibrary:
    """Two jobs: a chain of 3 and a fork-join of 4 (positions, -1 padding)."""
    preds = np.full((2, 4, 2), -1, np.int32)
    preds[0, 1, 0], preds[0, 2, 0] = 0, 1
    preds[1, 1, 0], preds[1, 2, 0], preds[1, 3] = 0, 0, (1, 2)
    size = np.array([[1.0, 2.0, 0.5, 0.0], [1.5, 0.75, 1.0, 2.0]])
    return JobLibrary(length=np.array([3, 4], np.int32), size=size, work=size * 2,
                      preds=preds, names=("chain", "fork-join"))


def make_env(name: str) -> EdgeEnv:
    """A small env (12 task slots, 4 server slots, 2 queue slots) of generator `name`."""
    if name == "random DAG":
        return EdgeEnv(EnvConfig(n_max=12, m_max=4, queue_capacity=2))
    lib = tiny_library()
    return EdgeEnv(required_config(lib, 12, 4, 2), JobLibraryGenerator(lib))


@contextlib.contextmanager
def debug_flags():
    """`jax_debug_infs` and `jax_debug_nans` on: every primitive run op by op, and every
    jitted program's outputs, raise FloatingPointError on an inf or a NaN."""
    with jax.debug_infs(True), jax.debug_nans(True):
        yield


def test_eager_reset_and_steps_under_debug_flags():
    """Op by op (float32): every intermediate value of the generator, reset, the policies
    and step, for both generators (they share most primitives' compilations)."""
    for name, wilds in (("random DAG", (0.0, 1.0, 0.0)), ("job library", (1.0,))):
        env = make_env(name)
        params = env.default_params.replace(num_tasks=10, num_servers=3)
        policy = mixed_policy(env.config)
        key = jax.random.PRNGKey(5)
        with debug_flags():
            obs, state = env.reset(key, params)
            for i, wild in enumerate(wilds):
                k = jax.random.fold_in(key, i)
                obs, state, reward, done, info = env.step(
                    k, state, policy(k, state, i % len(PAIRS), wild), params)
        assert_finite((obs, state, reward, info), f"{name} ")


@pytest.mark.parametrize("name,x64", [("random DAG", True), ("job library", False)],
                         ids=["random DAG-float64", "job library-float32"])
def test_jitted_episode_under_debug_flags(name, x64):
    """Jitted reset, policy, step and metrics to the episode's end: the programs' outputs
    (float32 on the random DAG model: test_episodes_stay_finite_at_every_step)."""
    with jax.enable_x64(x64):
        env = make_env(name)
        params = env.default_params.replace(num_tasks=10, num_servers=3)
        reset, step, act = jax.jit(env.reset), jax.jit(env.step), jax.jit(mixed_policy(env.config))
        key = jax.random.PRNGKey(6)
        with debug_flags():
            obs, state = reset(key, params)
            for i in range(env.config.max_steps):
                k = jax.random.fold_in(key, i)
                obs, state, reward, done, info = step(
                    k, state, act(k, state, i % len(PAIRS), 0.5), params)
                chex.assert_tree_all_finite((obs, state, reward, info))
                if bool(done):
                    break
            metrics = jax.jit(episode_metrics)(state)
        assert bool(state.done) and not bool(state.truncated)
        chex.assert_tree_all_finite(metrics)
        assert state.time.dtype == (jnp.float64 if x64 else jnp.float32)
