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
(`envs.workload`) instead of the random DAG model; `config` must fit the library
(`envs.workload.required_config`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from envs.config import EnvConfig, EnvParams
from envs.dynamics import reset_to_instance, transition
from envs.generator import generate
from envs.instance import Instance
from envs.observation import Observation, observe
from envs.state import Action, EnvState
from envs.workload import JobLibrary, check_library, generate_from_library


class EdgeEnv:
    """Dispatching and scheduling DAG tasks on edge servers (MODEL.md)."""

    def __init__(self, config: EnvConfig = EnvConfig(), workload: JobLibrary | None = None):
        """`workload`: a job library to draw jobs from (a constant of the env), or None for
        the random generator. Raises ValueError if `config` does not fit the library."""
        if workload is not None:
            check_library(workload, config)
        self.config = config
        self.workload = workload

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def generate(self, key: jax.Array, params: EnvParams) -> Instance:
        """A fresh random instance padded to this env's sizes (jobs from the workload
        library when the env has one)."""
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
