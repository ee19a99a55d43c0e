"""The whole epoch of `EdgeEnv` as one Jumanji `Environment`: the dispatcher's and every
server's decision in one multi-discrete action.

    view = JointView(EnvConfig(n_max=20, m_max=4, queue_capacity=8),
                     EnvParams(num_tasks=20, num_servers=4))
    state, timestep = jax.jit(view.reset)(key)          # state.key, state.env_state
    action = select(timestep.observation)               # [1 + M] int32 in the action mask
    state, timestep = jax.jit(view.step)(state, action)
    # a policy on the env's state: view.step(state, joint_action(policy(key, state.env_state)))

One `step` is one `EdgeEnv.step` (an epoch): a dispatch of the head task where one is
needed and a pick for every idle server that has an eligible task. The module imports
Jumanji; `damdjax.views` does not import this module, so the core install needs no
Jumanji.

API (Jumanji 1.x's `Environment`):

* `reset(key) -> (state, timestep)`: a fresh instance from the env's generator;
  `timestep.step_type` FIRST, reward 0, discount 1.
* `step(state, action) -> (state, timestep)`: one epoch. No auto-reset (Jumanji's
  `AutoResetWrapper` adds it: the state carries the key it splits); a finished state
  stays finished (reward 0).
* `observation_spec`, `action_spec`, `reward_spec` ([] float32), `discount_spec` ([]
  float32 in [0, 1]); `env`, `params`, `num_servers` (M), `queue_capacity` (Q).

State: `JointState(env_state, key)`: the env's `EnvState` (the heuristics and metrics read
it directly) and a PRNG key (Jumanji's convention; `EdgeEnv.step` is deterministic, so
`step` keeps it unchanged).

Observation (`JointObservation`, float32 features of `damdjax.envs.observation.observe`,
feature names in TASK_FEATURES, SERVER_FEATURES, SLOT_FEATURES, OWN_FEATURES):
the dispatcher's `task` [F_t] and `servers` [M, F_s]; the schedulers' `slots`
[M, Q, F_q] and `own` [M, F_o]; `dispatch_needed` [] bool, `pick_needed` [M] bool,
`server_mask` [M] bool; `action_mask` [1 + M, W] bool, `W = max(M, Q)`.

Action: [1 + M] int32 (`action_spec`: `MultiDiscreteArray` with `num_values = [M, Q, ...,
Q]`). Entry 0 is the server for the head task, entry `1 + m` the queue slot server `m`
starts. `joint_action(Action) -> [1 + M]` and `env_action([1 + M]) -> Action` convert.

Action mask (`joint_action_mask`): row 0 over servers (columns `>= M` False), rows `1 + m`
over server `m`'s queue slots (columns `>= Q` False), so one width `W` holds both. A row
whose decision is needed (`dispatch_needed`, `pick_needed[m]`) allows the env's mask
(`dispatch_mask`, `pick_mask[m]`); every other row allows only the default action 0,
which the env ignores. Every row has at least one True. An action outside the mask is
replaced by the env with the lowest valid choice and counted in `extras`.

Reward: the env's team reward of the epoch, `-(time real tasks spent in the system
during it) / tau - miss_penalty * (deadlines missed in it)`; the undiscounted return is the
env's team return.

Termination and truncation: the episode ends where `EdgeEnv` marks its state done;
where `env_state.truncated` (the step cap, a time limit) the last timestep is a
truncation (discount 1: a TD target bootstraps), otherwise a termination (discount 0).

`extras` (every key at every timestep, reset included, so the pytree is fixed under
`jit`, `vmap` and `lax.scan`): `invalid_dispatch` [] int32 and `invalid_picks` [] int32
(choices outside the mask that the env replaced), `episode_done` [] bool (this step ended
the episode) and `episode` (`damdjax.wrappers.episode_info` of the final state at that
step: the METRIC_NAMES of `damdjax.metrics` and `length`; zeros at every other step).
"""
from __future__ import annotations

from functools import cached_property
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from jumanji import specs
from jumanji.env import Environment
from jumanji.types import StepType, TimeStep

from damdjax.envs.config import EnvConfig, EnvParams, check_params
from damdjax.envs.env import EdgeEnv
from damdjax.envs.observation import (
    OWN_FEATURES, SERVER_FEATURES, SLOT_FEATURES, TASK_FEATURES, Observation)
from damdjax.envs.state import Action, EnvState
from damdjax.wrappers import EpisodeStats, episode_info


@struct.dataclass
class JointState:
    """`env_state`: the env's `EnvState`; `key`: Jumanji's PRNG key (for auto-reset)."""

    env_state: EnvState
    key: jax.Array


class JointObservation(NamedTuple):
    """What the joint agent sees (module docstring): features float32, masks bool."""

    task: jax.Array             # [F_t] the head task, for the dispatcher
    servers: jax.Array          # [M, F_s] each server, for the dispatcher
    slots: jax.Array            # [M, Q, F_q] each queue slot, for its server
    own: jax.Array              # [M, F_o] each server's own state
    dispatch_needed: jax.Array  # [] bool
    pick_needed: jax.Array      # [M] bool
    server_mask: jax.Array      # [M] bool
    action_mask: jax.Array      # [1 + M, max(M, Q)] bool


def joint_action_mask(obs: Observation) -> jax.Array:
    """[1 + M, max(M, Q)] bool from the env's observation (module docstring): row 0 the
    dispatch, row `1 + m` server `m`'s pick; a row whose decision is not needed allows
    only column 0."""
    m, q = obs.pick_mask.shape
    width = max(m, q)
    default = jnp.arange(width) == 0
    dispatch = jnp.where(obs.dispatch_needed,
                         jnp.pad(obs.dispatch_mask, (0, width - m)), default)
    picks = jnp.where(obs.pick_needed[:, None],
                      jnp.pad(obs.pick_mask, ((0, 0), (0, width - q))), default)
    return jnp.concatenate([dispatch[None], picks], axis=0)


def joint_observation(obs: Observation) -> JointObservation:
    """The env's observation as the joint agent's: features as float32, the needed flags,
    the server mask and `joint_action_mask`."""
    f32 = lambda x: x.astype(jnp.float32)
    return JointObservation(
        task=f32(obs.task), servers=f32(obs.servers), slots=f32(obs.slots), own=f32(obs.own),
        dispatch_needed=obs.dispatch_needed, pick_needed=obs.pick_needed,
        server_mask=obs.server_mask, action_mask=joint_action_mask(obs))


def joint_action(action: Action) -> jax.Array:
    """`Action` -> [1 + M] int32: `[dispatch, picks...]`."""
    return jnp.concatenate([jnp.asarray(action.dispatch, jnp.int32).reshape(1),
                            jnp.asarray(action.picks, jnp.int32)])


def env_action(action: jax.Array) -> Action:
    """[1 + M] int32 -> the env's `Action` (`dispatch = action[0]`, `picks = action[1:]`)."""
    action = jnp.asarray(action, jnp.int32)
    return Action(dispatch=action[0], picks=action[1:])


class JointView(Environment):
    """`EdgeEnv` as one Jumanji environment whose action is the whole epoch's joint
    decision (the module docstring has the API, observation, action mask, reward and
    extras)."""

    def __init__(self, env: EdgeEnv | EnvConfig | None = None,
                 params: EnvParams | None = None):
        """`env`: the environment, or an `EnvConfig` for `EdgeEnv(config)` (default
        `EdgeEnv()`); `params`: its params (default `env.default_params`), concrete: a
        Jumanji environment holds its params. TypeError for another `env`; ValueError
        naming a param that does not fit the config (`check_params`)."""
        if env is None:
            env = EdgeEnv()
        elif isinstance(env, EnvConfig):
            env = EdgeEnv(env)
        elif not isinstance(env, EdgeEnv):
            raise TypeError(f"JointView takes an EdgeEnv or an EnvConfig, got "
                            f"{type(env).__name__}")
        params = env.default_params if params is None else params
        if not isinstance(params, EnvParams):
            raise TypeError(f"JointView's params must be EnvParams, got {type(params).__name__}")
        check_params(env.config, params)
        self._env = env
        self._stats = EpisodeStats(env)
        self._params = params
        super().__init__()

    def __repr__(self) -> str:
        c = self._env.config
        return f"JointView(n_max={c.n_max}, m_max={c.m_max}, queue_capacity={c.queue_capacity})"

    # --- sizes ---------------------------------------------------------------------------

    @property
    def env(self) -> EdgeEnv:
        """The viewed environment."""
        return self._env

    @property
    def params(self) -> EnvParams:
        """The env's params."""
        return self._params

    @property
    def num_servers(self) -> int:
        """`M`, the server slots."""
        return self._env.config.m_max

    @property
    def queue_capacity(self) -> int:
        """`Q`, the queue slots per server."""
        return self._env.config.queue_capacity

    # --- specs ---------------------------------------------------------------------------

    @cached_property
    def observation_spec(self) -> specs.Spec[JointObservation]:
        """Specs of `JointObservation`'s fields (features unbounded float32, masks bool)."""
        m, q = self.num_servers, self.queue_capacity

        def feats(shape, name):
            return specs.Array(shape, jnp.float32, name)

        def mask(shape, name):
            return specs.BoundedArray(shape, bool, False, True, name)

        return specs.Spec(
            JointObservation, "ObservationSpec",
            task=feats((len(TASK_FEATURES),), "task"),
            servers=feats((m, len(SERVER_FEATURES)), "servers"),
            slots=feats((m, q, len(SLOT_FEATURES)), "slots"),
            own=feats((m, len(OWN_FEATURES)), "own"),
            dispatch_needed=mask((), "dispatch_needed"),
            pick_needed=mask((m,), "pick_needed"),
            server_mask=mask((m,), "server_mask"),
            action_mask=mask((1 + m, max(m, q)), "action_mask"))

    @cached_property
    def action_spec(self) -> specs.MultiDiscreteArray:
        """[1 + M] int32: a server in `[0, M)`, then a queue slot in `[0, Q)` per server."""
        m, q = self.num_servers, self.queue_capacity
        num_values = jnp.asarray([m] + [q] * m, jnp.int32)
        return specs.MultiDiscreteArray(num_values, jnp.int32, "action")

    @cached_property
    def reward_spec(self) -> specs.Array:
        """[] float32: the epoch's team reward."""
        return specs.Array((), jnp.float32, "reward")

    @cached_property
    def discount_spec(self) -> specs.BoundedArray:
        """[] float32 in [0, 1]: 0 at a termination, else 1."""
        return specs.BoundedArray((), jnp.float32, 0.0, 1.0, "discount")

    # --- observation ---------------------------------------------------------------------

    def observation(self, env_state: EnvState) -> JointObservation:
        """The joint agent's observation of the env's state."""
        return joint_observation(self._env.observe(env_state, self._params))
    # --- reset and step ------------------------------------------------------------------

    def reset(self, key: jax.Array) -> tuple[JointState, TimeStep[JointObservation]]:
        """A fresh instance from the env's generator at its first epoch."""
        k_state, k_env = jax.random.split(key)
        _, env_state = self._env.reset(k_env, self._params)
        episode = jax.tree.map(jnp.zeros_like, episode_info(env_state))
        extras = {"invalid_dispatch": jnp.zeros((), jnp.int32),
                  "invalid_picks": jnp.zeros((), jnp.int32),
                  "episode_done": jnp.zeros((), bool), "episode": episode}
        timestep = TimeStep(step_type=StepType.FIRST, reward=jnp.zeros((), jnp.float32),
                            discount=jnp.ones((), jnp.float32),
                            observation=self.observation(env_state), extras=extras)
        return JointState(env_state=env_state, key=k_state), timestep

    def step(self, state: JointState, action: jax.Array
             ) -> tuple[JointState, TimeStep[JointObservation]]:
        """One epoch with the joint `action` [1 + M] int32 (module docstring)."""
        obs, env_state, reward, done, info = self._stats.step(
            state.key, state.env_state, env_action(action), self._params)
        terminated = done & ~env_state.truncated
        timestep = TimeStep(
            step_type=jnp.where(done, StepType.LAST, StepType.MID),
            reward=reward.astype(jnp.float32),
            discount=jnp.where(terminated, 0.0, 1.0).astype(jnp.float32),
            observation=joint_observation(obs),
            extras={"invalid_dispatch": info["invalid_dispatch"].astype(jnp.int32),
                    "invalid_picks": info["invalid_picks"].astype(jnp.int32),
                    "episode_done": info["episode_done"], "episode": info["episode"]})
        return state.replace(env_state=env_state), timestep
