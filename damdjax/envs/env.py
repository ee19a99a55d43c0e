"""The gymnax-style environment API.

    env = EdgeEnv(EnvConfig())
    params = env.default_params
    obs, state = env.reset(key, params)                 # draws a fresh instance
    obs, state, reward, done, info = env.step(key, state, action, params)

All methods are pure and jittable (`config` is static, `params` a pytree).
`step` never resets: a finished state stays finished (reward 0); training
loops reset explicitly. `reward` is the team (scheduler) reward of the step;
the dispatcher's delayed reward is in `info` (docs/model.md, "Rewards").

Each episode's instance comes from the env's generator (`damdjax.envs.generators`):

    EdgeEnv(config)                                        the random DAG model
    EdgeEnv(config, JobLibraryGenerator(lib))              jobs from a job library of real
                                                           jobs (`config` must fit it:
                                                           `damdjax.envs.workload.required_config`)
    EdgeEnv(config, SettingRangeGenerator(RandomDAGGenerator(), (("density", 1.0, 6.0),)))
                                                           that setting field drawn per episode
                                                           (a generalist's training envs)

`params` must fit `config` (`num_tasks <= n_max`, `num_servers <= m_max`): where they are
concrete, `reset`, `reset_to`, `step` and `generate` raise ValueError otherwise
(`damdjax.envs.config.check_fits`); traced params (under `jit`/`vmap`) are not checked, so
callers check concrete params once with `check_params` before compiling.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from damdjax.envs.config import EnvConfig, EnvParams, check_fits
from damdjax.envs.dynamics import reset_to_instance, transition
from damdjax.envs.generators import Generator, RandomDAGGenerator
from damdjax.envs.instance import Instance
from damdjax.envs.observation import Observation, observe
from damdjax.envs.state import Action, EnvState


class EdgeEnv:
    """Dispatching and scheduling DAG tasks on edge servers (docs/model.md)."""

    def __init__(self, config: EnvConfig = EnvConfig(), generator: Generator | None = None):
        """`generator`: where each episode's instance comes from (a constant of the env;
        `damdjax.envs.generators`), None for the random DAG model. Raises TypeError for
        anything but a `Generator`, and the generator's ValueError where `config` cannot
        hold what it draws (`Generator.check`)."""
        generator = RandomDAGGenerator() if generator is None else generator
        if not isinstance(generator, Generator):
            raise TypeError(f"EdgeEnv's generator must be a damdjax.envs.generators.Generator "
                            f"(e.g. JobLibraryGenerator(lib) for a job library), got "
                            f"{type(generator).__name__}")
        generator.check(config)
        self._config = config
        self._generator = generator

    @property
    def config(self) -> EnvConfig:
        """The padded sizes (static)."""
        return self._config

    @property
    def generator(self) -> Generator:
        """Where each episode's instance comes from."""
        return self._generator

    @property
    def default_params(self) -> EnvParams:
        """`EnvParams`' defaults fitted to the config: `num_tasks = min(100, n_max)` and
        `num_servers = min(5, m_max)` (the defaults where they fit), every other field at
        its default. Passes `check_params(config, ...)`."""
        default = EnvParams()
        return default.replace(num_tasks=min(default.num_tasks, self._config.n_max),
                               num_servers=min(default.num_servers, self._config.m_max))

    def generate(self, key: jax.Array, params: EnvParams) -> Instance:
        """A fresh instance of the env's generator, padded to this env's sizes. ValueError
        if concrete `params` do not fit the config (`check_fits`; traced ones unchecked)."""
        check_fits(self._config, params)
        return self._generator(key, self._config, params)

    def reset(self, key: jax.Array, params: EnvParams) -> tuple[Observation, EnvState]:
        """Draw an instance and move to its first epoch. ValueError if concrete `params` do
        not fit the config (`check_fits`; traced ones unchecked)."""
        check_fits(self._config, params)
        return self._start(self._generator(key, self._config, params), params)

    def reset_to(self, instance: Instance, params: EnvParams) -> tuple[Observation, EnvState]:
        """Start an episode of a given instance (e.g. from an instance file). ValueError if
        concrete `params` do not fit the config (`check_fits`; traced ones unchecked)."""
        check_fits(self._config, params)
        return self._start(instance, params)

    def _start(self, instance: Instance, params: EnvParams) -> tuple[Observation, EnvState]:
        state = reset_to_instance(instance, self._config.queue_capacity)
        return observe(state, params.time_scale), state

    def step(self, key: jax.Array, state: EnvState, action: Action, params: EnvParams
             ) -> tuple[Observation, EnvState, jax.Array, jax.Array, dict]:
        """Apply one epoch's joint action; `key` is unused (the dynamics are deterministic).
        ValueError if concrete `params` do not fit the config (`check_fits`; traced ones
        unchecked)."""
        del key
        check_fits(self._config, params)
        state, reward, info = transition(state, action, params.tau, params.miss_penalty)
        return observe(state, params.time_scale), state, reward, state.done, info

    def observe(self, state: EnvState, params: EnvParams) -> Observation:
        return observe(state, params.time_scale)

    def dummy_action(self) -> Action:
        """An all-zeros action (lowest valid choices after replacement)."""
        return Action(dispatch=jnp.zeros((), jnp.int32),
                      picks=jnp.zeros((self.config.m_max,), jnp.int32))
