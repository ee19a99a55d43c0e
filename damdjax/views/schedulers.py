"""The servers' multi-agent view of `EdgeEnv`, with the JaxMARL `MultiAgentEnv` API.

    view = SchedulersView(EdgeEnv(EnvConfig(n_max=20, m_max=4, queue_capacity=8)))
    obs, state = view.reset(key)                          # obs[agent] [F] float32
    avail = view.get_avail_actions(state)                 # avail[agent] [Q+1] bool
    actions = {a: jnp.argmax(avail[a]) for a in view.agents}
    obs, state, rewards, dones, info = view.step(key, state, actions)
    critic_in = obs["world_state"]                        # [W] float32

One `EdgeEnv.step` is an epoch: a dispatch of the head task (when one is needed) and a
pick per idle server. Here one `step` is one epoch where some server has a pick decision:
every agent's action is its server's pick of that epoch, the epoch's dispatch (if any)
and every following epoch with only a dispatch decision come from a dispatch rule
(default EFT, `damdjax.heuristics.DISPATCH_RULES`), played inside `step` by a
`jax.lax.while_loop` of at most `config.max_steps` epochs. So JaxMARL agents learn
scheduling while the dispatcher follows a fixed rule.

Agents: `server_0 .. server_{M-1}`, `M = config.m_max` (fixed: a padded server is an agent
whose only available action is the no-op). API (JaxMARL 0.2's `MultiAgentEnv` method and
attribute names and semantics; jaxmarl is not imported by this module, so code that reads
only these names, e.g. JaxMARL's `LogWrapper`, wraps the view without jaxmarl being a
dependency):

* `reset(key) -> (obs, state)`: a fresh instance from the env's generator, played by the
  dispatcher up to its first pick decision.
* `step(key, state, actions, reset_state=None) -> (obs, state, rewards, dones, info)`:
  `step_env`, then auto-reset as `MultiAgentEnv.step` does: where `dones["__all__"]`, the
  returned `obs` and `state` are those of a new episode (`reset` with a key split from
  `key`, or `reset_state` where given).
* `num_agents`, `agents`, `observation_spaces`, `action_spaces`,
  `observation_space(agent)`: Box [F] float32, `action_space(agent)`: Discrete(Q+1)
  int32, `get_avail_actions(state)`, `get_obs(state)`, `get_world_state(state)`,
  `agent_classes`, `name`. Space classes are gymnax's where gymnax is installed (JaxMARL's
  wrappers accept them), else `damdjax.views.dispatcher`'s `Discrete` and `Box`.

The state is the env's `EnvState` itself, so the heuristics (`damdjax.heuristics`) and
metrics (`damdjax.metrics`) read it directly. The env's params are the view's
(`params`, default the env's `default_params`), as JaxMARL's `reset(key)` takes none.

Actions: `actions[agent]` [] int, a queue slot in `[0, Q)` or the no-op `Q`; an array
[M] in agent order is accepted too, and an agent missing from the dict plays the no-op.
The available actions `get_avail_actions(state)[agent]` [Q+1] bool (`avail_actions(state)`
[M, Q+1] stacked) are the server's eligible slots (`Observation.pick_mask`) where it has a
decision (`Observation.pick_needed`), else the no-op alone. A server with a decision that
plays an unavailable action (the no-op included) gets its lowest eligible slot (the env's
replacement), counted in `info["invalid_picks"]`. The masks are those of the epoch's start,
as in the env's `Observation`: a task dispatched in the same epoch is never eligible at
once where its upload takes time (`k > 0`, as the generators draw it).

Observation of an agent: `concat(own [F_o], others [F_o], slots [Q, F_q] flattened)` as
float32, what the MDQN schedulers read (`damdjax.schedulers.scheduler_inputs`): its
server's own features (`OWN_FEATURES`), the mean of the other real servers' own rows, and
its queue slots' features (`SLOT_FEATURES`, whose `eligible` column is the pick mask); a
padded server reads 0 (but `others`). `obs["world_state"]` [W] float32 (also
`get_world_state(state)`), for centralised critics, as JaxMARL's SMAX and its MAPPO
baselines carry it: `concat(task [F_t], servers [M, F_s], own [M, F_o], slots [M, Q, F_q])`
flattened, every feature of the env's `Observation`; `W = F_t + M (F_s + F_o + Q F_q)`.

Rewards: every agent gets the team reward, the env's team reward summed over the epochs
from this decision to the next one (or the episode's end); as in `DispatcherView`, an
episode's undiscounted return is the env's team return less the epochs played before the
first pick decision at reset (the first tasks' uploads), which no agent's action affects.

`max_epochs=K` (None by default) ends a step at the next pick decision or after `K`
epochs, for batches under `vmap` (`DispatcherView`'s docstring, "Batched speed"); a step
that starts where no server has a decision then has every agent's only action the no-op.

`dones[agent]` and `dones["__all__"]`: the episode ended in this step (all agents end
together). `info` (every key at every step, every leaf with the agent axis first, [M],
as JaxMARL's wrappers add theirs): `decision` [M] bool (the server had a pick decision,
so the agent's action counted), `invalid_picks` [M] int32 (1 where the server had a
decision and the agent's action was not available), `epochs` [M] int32 (env epochs this
step played), `terminated`, `truncated` [M] bool (the env's end of the episode, or its end
by the step cap, `EnvState.truncated`: a time limit where a TD target bootstraps) and
`avail_actions` [M, Q+1] bool (of the returned state, the new episode's after a reset).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from damdjax.envs.config import EnvParams
from damdjax.envs.dynamics import eligible_slots, pick_needed
from damdjax.envs.env import EdgeEnv
from damdjax.envs.instance import Instance
from damdjax.envs.observation import (
    OWN_FEATURES, SERVER_FEATURES, SLOT_FEATURES, TASK_FEATURES, observe)
from damdjax.envs.state import Action, EnvState
from damdjax.heuristics import DISPATCH_RULES, DispatchRule
from damdjax.schedulers import scheduler_inputs
from damdjax.views.dispatcher import _space_classes
from damdjax.views.play import epoch_cap, play_until, select_tree


class SchedulersView:
    """`EdgeEnv` seen by its servers' schedulers: one step per epoch with a pick decision,
    the dispatch from a rule (the module docstring has the API, observation, reward and
    info)."""

    def __init__(self, env: EdgeEnv | None = None, dispatch: str | DispatchRule = "eft",
                 params: EnvParams | None = None, max_epochs: int | None = None):
        """`env`: the environment (default `EdgeEnv()`); `dispatch`: the dispatcher, a name
        of `damdjax.heuristics.DISPATCH_RULES` or a policy `(key, state) -> server [] int`;
        `params`: the env's params (default `env.default_params`); `max_epochs`: None (a
        step ends at the next pick decision) or the most env epochs one step plays (as
        `DispatcherView`'s: its module docstring, "Batched speed"). ValueError for an
        unknown name or a bad `max_epochs`."""
        self._env = EdgeEnv() if env is None else env
        self._max_epochs = epoch_cap(self._env, max_epochs)
        if isinstance(dispatch, str):
            if dispatch not in DISPATCH_RULES:
                raise ValueError(f"unknown dispatch rule {dispatch!r}: use one of "
                                 f"{sorted(DISPATCH_RULES)} or a policy (key, state) -> server")
            dispatch = DISPATCH_RULES[dispatch]
        self._dispatch = dispatch
        self._params = self._env.default_params if params is None else params
        config = self._env.config
        self.num_agents = config.m_max
        self.agents = [f"server_{i}" for i in range(config.m_max)]
        discrete, box = _space_classes()
        self.observation_spaces = {
            a: box(-np.inf, np.inf, (self.obs_size,), jnp.float32) for a in self.agents}
        self.action_spaces = {a: discrete(self.num_actions, dtype=jnp.int32)
                              for a in self.agents}

    # --- properties of the JaxMARL API ---------------------------------------------------

    @property
    def env(self) -> EdgeEnv:
        """The viewed environment."""
        return self._env

    @property
    def params(self) -> EnvParams:
        """The env's params every reset and step uses."""
        return self._params

    @property
    def dispatch(self) -> DispatchRule:
        """The dispatcher's policy `(key, state) -> server`."""
        return self._dispatch

    @property
    def name(self) -> str:
        return "EdgeSchedulers"

    @property
    def agent_classes(self) -> dict[str, list[str]]:
        """One class: every agent is a server."""
        return {"server": list(self.agents)}

    @property
    def num_actions(self) -> int:
        """`Q + 1`: a queue slot, or the no-op `Q`."""
        return self._env.config.queue_capacity + 1

    @property
    def noop(self) -> int:
        """`Q`, the action of a server without a decision."""
        return self._env.config.queue_capacity

    @property
    def own_size(self) -> int:
        """`F_o`: a server's own features (and the others' mean row after them)."""
        return len(OWN_FEATURES)

    @property
    def slot_size(self) -> int:
        """`F_q`: one queue slot's row of an agent's observation."""
        return len(SLOT_FEATURES)

    @property
    def obs_size(self) -> int:
        """`F = 2 F_o + Q F_q`, an agent's observation's length."""
        return 2 * self.own_size + self._env.config.queue_capacity * self.slot_size

    def split_obs(self, obs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """`(own [..., F_o], others [..., F_o], slots [..., Q, F_q])` of agents'
        observations [..., F] (for networks that score each slot with shared weights)."""
        o = self.own_size
        slots = obs[..., 2 * o:].reshape(*obs.shape[:-1], self.noop, self.slot_size)
        return obs[..., :o], obs[..., o:2 * o], slots

    @property
    def world_state_size(self) -> int:
        """`W = F_t + M (F_s + F_o + Q F_q)`, the world state's length."""
        c = self._env.config
        return len(TASK_FEATURES) + c.m_max * (
            len(SERVER_FEATURES) + len(OWN_FEATURES) + c.queue_capacity * len(SLOT_FEATURES))

    def agent_index(self, agent: str) -> int:
        """The server index of `agent` (`server_i` -> i). ValueError for an unknown name."""
        try:
            return self.agents.index(agent)
        except ValueError:
            raise ValueError(f"unknown agent {agent!r}: the agents are server_0 .. "
                             f"server_{self.num_agents - 1}") from None

    def observation_space(self, agent: str):
        """Box [F] float32, unbounded (features are of order one, not clipped)."""
        return self.observation_spaces[self.agents[self.agent_index(agent)]]

    def action_space(self, agent: str):
        """Discrete(Q+1) int32 (a queue slot, or the no-op Q); valid actions are
        `get_avail_actions(state)[agent]`."""
        return self.action_spaces[self.agents[self.agent_index(agent)]]

    # --- observations and masks ----------------------------------------------------------

    def observations(self, state: EnvState) -> tuple[jax.Array, jax.Array]:
        """`(agents' observations [M, F], world state [W])`, float32."""
        obs = observe(state, self._params.time_scale)
        view = scheduler_inputs(obs)
        m = self.num_agents
        agent_obs = jnp.concatenate(
            [view.own, view.others, view.slots.reshape(m, -1)], axis=1)
        world = jnp.concatenate([obs.task.reshape(-1), obs.servers.reshape(-1),
                                 obs.own.reshape(-1), obs.slots.reshape(-1)])
        return agent_obs.astype(jnp.float32), world.astype(jnp.float32)

    def get_obs(self, state: EnvState) -> dict[str, jax.Array]:
        """`{agent: [F], "world_state": [W]}` float32."""
        agent_obs, world = self.observations(state)
        return {**{a: agent_obs[i] for i, a in enumerate(self.agents)},
                "world_state": world}

    def get_world_state(self, state: EnvState) -> jax.Array:
        """The centralised critic's input [W] float32 (`obs["world_state"]`)."""
        return self.observations(state)[1]

    def avail_actions(self, state: EnvState) -> jax.Array:
        """[M, Q+1] bool, one True at least per row: a server's eligible slots where it
        has a pick decision, else the no-op alone."""
        eligible = eligible_slots(state) & state.instance.server_mask[:, None]
        needed = pick_needed(state, eligible)
        return jnp.concatenate([eligible & needed[:, None], ~needed[:, None]], axis=1)

    def get_avail_actions(self, state: EnvState) -> dict[str, jax.Array]:
        """`{agent: [Q+1] bool}` (`avail_actions` by agent)."""
        avail = self.avail_actions(state)
        return {a: avail[i] for i, a in enumerate(self.agents)}

    def stack_actions(self, actions) -> jax.Array:
        """The picks [M] int32 of a dict `{agent: [] int}` (a missing agent: the no-op) or
        of an array [M] in agent order."""
        if isinstance(actions, dict):
            unknown = set(actions) - set(self.agents)
            if unknown:
                raise ValueError(f"actions for unknown agents {sorted(unknown)}: the agents "
                                 f"are server_0 .. server_{self.num_agents - 1}")
            return jnp.stack([jnp.asarray(actions.get(a, self.noop), jnp.int32).reshape(())
                              for a in self.agents])
        return jnp.asarray(actions, jnp.int32).reshape(self.num_agents)

    def as_policy(self, pick: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
                  ) -> Callable[[jax.Array, EnvState], Action]:
        """Schedulers written for the view, `pick(key, obs [M, F], avail [M, Q+1]) -> picks
        [M]` (a slot, or the no-op `Q`), as a policy of the env, `(key, state) -> Action`
        (the view's dispatcher's dispatch, the key split as `damdjax.heuristics.pair`
        splits it), for what plays the env epoch by epoch (`damdjax.evaluation.play_named`,
        `evaluate_paired`). The env ignores the pick of a server without a decision."""
        def policy(key: jax.Array, state: EnvState) -> Action:
            k_dispatch, k_pick = jax.random.split(key)
            agent_obs, _ = self.observations(state)
            picks = jnp.asarray(pick(k_pick, agent_obs, self.avail_actions(state)), jnp.int32)
            return Action(dispatch=jnp.asarray(self._dispatch(k_dispatch, state), jnp.int32),
                          picks=picks.reshape(self.num_agents))

        return policy

    # --- the dispatcher's play between decisions -----------------------------------------

    def _play_to_decision(self, key: jax.Array, state: EnvState, played: int = 0
                          ) -> tuple[EnvState, jax.Array, jax.Array, dict]:
        """Play epochs with the dispatcher's choice (no pick is needed in them) until some
        server needs a pick, the episode is done, or `config.max_steps` epochs
        (`damdjax.views.play.play_until`: `(state, summed team reward [], epochs [] int32,
        completions)`)."""
        noop = jnp.full((self.num_agents,), self.noop, jnp.int32)
        cap = None if self._max_epochs is None else self._max_epochs - played
        return play_until(
            self._env, self._params, key, state,
            lambda k, s: Action(dispatch=jnp.asarray(self._dispatch(k, s), jnp.int32),
                                picks=noop),
            lambda s: jnp.any(pick_needed(s)), cap)

    # --- reset and step ------------------------------------------------------------------

    def reset(self, key: jax.Array) -> tuple[dict[str, jax.Array], EnvState]:
        """A fresh instance, played by the dispatcher to its first pick decision (the
        reward of those epochs is nobody's)."""
        k_env, k_play = jax.random.split(key)
        _, state = self._env.reset(k_env, self._params)
        state, _, _, _ = self._play_to_decision(k_play, state)
        return self.get_obs(state), state

    def reset_to(self, instance: Instance, key: jax.Array | None = None
                 ) -> tuple[dict[str, jax.Array], EnvState]:
        """Start an episode of a given instance (`EdgeEnv.reset_to`), played by the
        dispatcher to its first pick decision (`key` for the dispatcher, default
        PRNGKey(0))."""
        key = jax.random.PRNGKey(0) if key is None else key
        _, state = self._env.reset_to(instance, self._params)
        state, _, _, _ = self._play_to_decision(key, state)
        return self.get_obs(state), state

    def step_env(self, key: jax.Array, state: EnvState, actions
                 ) -> tuple[dict, EnvState, dict, dict, dict]:
        """One pick decision without auto-reset: the agents' picks (an unavailable one of a
        server with a decision replaced by its lowest eligible slot) with the dispatcher's
        choice, then the dispatcher's play to the next decision. Returns `(obs, state,
        rewards, dones, info)`; `info` holds `invalid_picks`, `epochs`, `truncated` [M]."""
        k_disp, k_play = jax.random.split(key)
        picks = self.stack_actions(actions)
        avail = self.avail_actions(state)
        rows = jnp.arange(self.num_agents)
        chosen = (picks >= 0) & (picks <= self.noop) & avail[rows, jnp.clip(picks, 0, self.noop)]
        invalid = ~avail[:, self.noop] & ~chosen
        live = ~state.done
        act = Action(dispatch=jnp.asarray(self._dispatch(k_disp, state), jnp.int32),
                     picks=picks)
        _, state, reward, _, _ = self._env.step(k_disp, state, act, self._params)
        state, more, epochs, _ = self._play_to_decision(k_play, state, played=1)
        # A step on a finished state plays nothing (the env keeps a done state as it is).
        m = self.num_agents
        info = {"decision": ~avail[:, self.noop] & live,
                "invalid_picks": (invalid & live).astype(jnp.int32),
                "epochs": jnp.broadcast_to(epochs + live, (m,)).astype(jnp.int32),
                "truncated": jnp.broadcast_to(state.truncated, (m,))}
        team = (reward + more).astype(jnp.float32)
        dones = {**{a: state.done for a in self.agents}, "__all__": state.done}
        return (self.get_obs(state), state, {a: team for a in self.agents}, dones, info)

    def step(self, key: jax.Array, state: EnvState, actions,
             reset_state: EnvState | None = None) -> tuple[dict, EnvState, dict, dict, dict]:
        """JaxMARL's `step`: `step_env`, then auto-reset where the episode ended (to
        `reset_state` where given, else a fresh `reset`). Returns `(obs, state, rewards,
        dones, info)`; the obs and state are the new episode's where it ended."""
        key, key_reset = jax.random.split(key)
        obs_st, state_st, rewards, dones, info = self.step_env(key, state, actions)
        if reset_state is None:
            obs_re, state_re = self.reset(key_reset)
        else:
            state_re = reset_state
            obs_re = self.get_obs(state_re)
        done = dones["__all__"]
        state = select_tree(done, state_re, state_st)
        obs = select_tree(done, obs_re, obs_st)
        m = self.num_agents
        info = {**info,
                "terminated": jnp.broadcast_to(done, (m,)) & ~info["truncated"],
                "avail_actions": self.avail_actions(state)}
        return obs, state, rewards, dones, info
