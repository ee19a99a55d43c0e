"""Wrappers over `EdgeEnv`'s gymnax-style API (`reset(key, params)`,
`step(key, state, action, params)`), in the manner of gymnax's wrappers.

    env = AutoReset(EpisodeStats(EdgeEnv(config)))
    obs, state = env.reset(key, params)
    obs, state, reward, done, info = env.step(key, state, action, params)
    # at a step that ends an episode: done, info["episode_done"], info["episode"] (the
    # ended episode's metrics) and the next episode's obs and state

No wrapper changes the state: each takes and returns the wrapped env's `EnvState`, so
the heuristics (`policy(key, state)`), the metrics and `damdjax.envs.checks` read a
wrapped env's state as they read the raw one's, and the wrappers compose in any order
(the order matters only where one reads what another replaced: see `AutoReset`).
`AutoReset` and `EpisodeStats` are pure and jittable and vmappable; `Checked` raises at
the Python boundary and is not.

Invalid actions: `EdgeEnv.step` already counts them in `info` (`invalid_dispatch` [] bool:
the dispatch broke its mask and was replaced by the lowest feasible server;
`invalid_picks` [] int32: servers whose pick broke its mask), and every wrapper passes
`info` on with those keys (and every other key of the raw step) unchanged.
Any attribute a wrapper does not define (`config`, `default_params`, `observe`,
`dummy_action`, `generator`, ...) is the wrapped env's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from damdjax.envs.checks import check_action
from damdjax.envs.config import EnvParams, check_params
from damdjax.envs.state import Action, EnvState
from damdjax.metrics import episode_metrics


class Wrapper:
    """Base wrapper: delegates `reset`, `step` and every other attribute to `env`."""

    def __init__(self, env):
        self._env = env

    @property
    def unwrapped(self):
        """The innermost env (the `EdgeEnv`)."""
        return getattr(self._env, "unwrapped", self._env)

    def __getattr__(self, name):
        if name == "_env":      # not yet set (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._env, name)

    def reset(self, key: jax.Array, params: EnvParams):
        return self._env.reset(key, params)

    def step(self, key: jax.Array, state: EnvState, action: Action, params: EnvParams):
        return self._env.step(key, state, action, params)


def episode_info(state: EnvState) -> dict[str, jax.Array]:
    """The metrics of the episode that ended in `state` (`damdjax.metrics.episode_metrics`:
    `avg_response_time` and `makespan` and `end_time` in time units, `deadline_miss_rate`,
    `utilisation` and `fairness` fractions in [0, 1]) and `length` [] int32, the
    episode's steps."""
    return {**episode_metrics(state), "length": state.step}


class EpisodeStats(Wrapper):
    """Reports the metrics of each episode at the step that ends it.

    `info["episode_done"]` [] bool: this step ended the episode (the state was live
    before the step and is done after it; stepping an already-finished state, which the
    raw env allows and leaves unchanged, ends nothing). `info["episode"]`: at such a
    step, `episode_info` of the final state (`episode_metrics`' METRIC_NAMES and
    `length`); at every other step, the same keys all 0 (float 0.0, int 0), never
    NaN or inf, so the dict can be summed or averaged with `episode_done` as a weight.
    The metrics are computed at every step and selected (one pass over the tasks, as
    cheap as the step itself; under `vmap` a branch would run anyway). No state of its
    own: the done flag of the incoming state says whether the episode was live.

    It must see the finished state, so it goes inside `AutoReset`
    (`AutoReset(EpisodeStats(env))`); wrapping an `AutoReset` raises ValueError, since
    the state it would read at an episode's end is already the next episode's.
    """

    def __init__(self, env):
        inner = env
        while isinstance(inner, Wrapper):
            if isinstance(inner, AutoReset):
                raise ValueError("EpisodeStats must be inside AutoReset "
                                 "(AutoReset(EpisodeStats(env))): over it, it would see the "
                                 "next episode's state where one ends")
            inner = inner._env
        super().__init__(env)

    def step(self, key, state, action, params):
        obs, new_state, reward, done, info = self._env.step(key, state, action, params)
        ended = jnp.asarray(done) & ~jnp.asarray(state.done)
        stats = episode_info(new_state)
        stats = jax.tree.map(lambda x: jnp.where(ended, x, jnp.zeros_like(x)), stats)
        return obs, new_state, reward, done, {**info, "episode_done": ended,
                                              "episode": stats}


class AutoReset(Wrapper):
    """Starts the next episode at the step that ends one.

    `step(key, ...)` splits `key` into `(step_key, reset_key)` (`jax.random.split(key)`),
    steps the wrapped env with `step_key` and, where the step ends the episode
    (`done`), returns `reset(reset_key, params)`'s observation and state in place of the
    finished ones; `reward` and `done` stay the ended step's. A rollout with the same
    keys therefore replays `env.reset(jax.random.split(key)[1], params)` at every end.

    The finished episode's state is not kept: an `EnvState` (the whole instance and
    every per-task array) in `info` at every step would double what a rollout stores.
    What the ended episode produced is kept instead, by wrappers inside this one: wrap
    `EpisodeStats` inside (`AutoReset(EpisodeStats(env))`) for its metrics in
    `info["episode"]`; the raw step's `info` (response times, invalid-action counts,
    `truncated`, ...) is passed on as the ended step gave it. `keep_final_obs=True` also
    puts the ended step's observation in `info["final_obs"]` (the observation a TD target
    bootstraps from after a truncated episode; one observation per step, about the size
    of `obs`).

    The reset runs under `lax.cond`: unbatched, only on the steps that end an episode;
    under `vmap` both branches run (the instance generator at every step), as in
    gymnax's auto-resetting environments.
    """

    def __init__(self, env, keep_final_obs: bool = False):
        super().__init__(env)
        self._keep_final_obs = bool(keep_final_obs)

    def step(self, key, state, action, params):
        step_key, reset_key = jax.random.split(key)
        obs, new_state, reward, done, info = self._env.step(step_key, state, action, params)
        if self._keep_final_obs:
            info = {**info, "final_obs": obs}
        obs, new_state = jax.lax.cond(
            jnp.asarray(done),
            lambda: self._env.reset(reset_key, params),
            lambda: (obs, new_state))
        return obs, new_state, reward, done, info


def _traced(tree) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


class Checked(Wrapper):
    """Raises on what the compiled env would silently repair (Python boundary only).

    `reset` first runs `check_params(config, params)` (ValueError naming the first
    nonsensical field); `step` first runs `damdjax.envs.checks.check_action` (ValueError
    naming the masked dispatch or pick, or a finished episode) and then the wrapped
    env's step. Inside `jit`, `vmap` or `scan` nothing can raise on values, so `Checked`
    refuses traced arguments (TypeError) and batched states (ValueError from the shape
    check); step an unbatched state outside `jit` (the wrapped env's own step may still
    be a compiled function).
    """

    def reset(self, key, params):
        if _traced(params):
            raise TypeError("Checked.reset runs at the Python boundary: call it outside "
                            "jit/vmap (traced params cannot be checked)")
        check_params(self.unwrapped.config, params)
        return self._env.reset(key, params)

    def step(self, key, state, action, params):
        if _traced((state, action)):
            raise TypeError("Checked.step runs at the Python boundary: call it outside "
                            "jit/vmap (a traced action cannot be checked)")
        if jnp.ndim(state.done) != 0:
            raise ValueError(f"Checked.step takes one unbatched state, got a batch of "
                             f"shape {jnp.shape(state.done)}")
        check_action(state, action)
        return self._env.step(key, state, action, params)
