"""The gymnax-style environment API.

    env = EdgeEnv(EnvConfig())
    params = env.default_params
    obs, state = env.reset(key, params)                 # draws a fresh instance
    obs, state, reward, done, info = env.step(key, state, action, params)

All methods are pure and jittable (`config` is static, `params` a pytree).
`step` never resets: a finished state stays finished (reward 0); training
loops reset explicitly. `reward` is the team (scheduler) reward of the step;
the dispatcher's delayed reward is in `info` (docs/model.md, "Rewards").

`EdgeEnv(config, workload=lib)` draws each job from a job library of real jobs
(`damdjax.envs.workload`) instead of the random DAG model; `config` must fit the library
(`damdjax.envs.workload.required_config`).

`EdgeEnv(config, setting_range=(("density", 1.0, 6.0),))` draws that setting field per
episode, uniformly in [low, high] (integers for num_tasks and num_servers), in place of
`params`' value: a generalist's training envs (eval.figures --generalist).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.dynamics import reset_to_instance, transition
from damdjax.envs.generator import check_generator_config, generate
from damdjax.envs.instance import Instance
from damdjax.envs.observation import Observation, observe
from damdjax.envs.state import Action, EnvState
from damdjax.envs.workload import JobLibrary, check_library, generate_from_library


RANGE_FIELDS = ("num_tasks", "num_servers", "density", "slack")


def draw_setting(key: jax.Array, params: EnvParams, setting_range: tuple) -> EnvParams:
    """`params` with each `(field, low, high)` of `setting_range` drawn uniformly in
    [low, high] (num_tasks, num_servers: integers)."""
    values = {}
    for i, (field, low, high) in enumerate(setting_range):
        k = jax.random.fold_in(key, i)
        if field in ("num_tasks", "num_servers"):
            values[field] = jax.random.randint(k, (), int(low), int(high) + 1)
        else:
            values[field] = jax.random.uniform(k, (), minval=low, maxval=high)
    return params.replace(**values)


class EdgeEnv:
    """Dispatching and scheduling DAG tasks on edge servers (MODEL.md)."""

    def __init__(self, config: EnvConfig = EnvConfig(), workload: JobLibrary | None = None,
                 setting_range: tuple = ()):
        """`workload`: a job library to draw jobs from (a constant of the env), or None for
        the random generator. Raises ValueError if `config` does not fit the library (or,
        without one, has fewer successor slots than the generator's window).
        `setting_range`: `((field, low, high), ...)` of RANGE_FIELDS drawn per episode
        (ValueError for another field, low > high, or integers outside the padding)."""
        if workload is not None:
            check_library(workload, config)
        else:
            check_generator_config(config)
        for field, low, high in setting_range:
            if field not in RANGE_FIELDS or not 0 < low <= high:
                raise ValueError(f"setting range {field}={low}:{high}: the field must be one "
                                 f"of {', '.join(RANGE_FIELDS)} and 0 < low <= high")
            cap = {"num_tasks": config.n_max, "num_servers": config.m_max}.get(field)
            if cap is not None and (low != int(low) or high != int(high) or high > cap):
                raise ValueError(f"setting range {field}={low}:{high}: integers up to {cap}")
        self.config = config
        self.workload = workload
        self.setting_range = tuple(setting_range)

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def generate(self, key: jax.Array, params: EnvParams) -> Instance:
        """A fresh random instance padded to this env's sizes (jobs from the workload
        library when the env has one)."""
        if self.setting_range:
            key, k_draw = jax.random.split(key)
            params = draw_setting(k_draw, params, self.setting_range)
        if self.workload is not None:
            return generate_from_library(key, self.config, params, self.workload)
        return generate(key, self.config, params)

    def reset(self, key: jax.Array, params: EnvParams) -> tuple[Observation, EnvState]:
        """Draw an instance and move to its first epoch."""
        return self.reset_to(self.generate(key, params), params)

    def reset_to(self, instance: Instance, params: EnvParams) -> tuple[Observation, EnvState]:
        """Start an episode of a given instance (e.g. from an instance file)."""
        state = reset_to_instance(instance, self.config.queue_capacity)
        return observe(state, params.time_scale), state

    def step(self, key: jax.Array, state: EnvState, action: Action, params: EnvParams
             ) -> tuple[Observation, EnvState, jax.Array, jax.Array, dict]:
        """Apply one epoch's joint action; `key` is unused (the dynamics are deterministic)."""
        del key
        state, reward, info = transition(state, action, params.tau, params.miss_penalty)
        return observe(state, params.time_scale), state, reward, state.done, info

    def observe(self, state: EnvState, params: EnvParams) -> Observation:
        return observe(state, params.time_scale)

    def dummy_action(self) -> Action:
        """An all-zeros action (lowest valid choices after replacement)."""
        return Action(dispatch=jnp.zeros((), jnp.int32),
                      picks=jnp.zeros((self.config.m_max,), jnp.int32))
