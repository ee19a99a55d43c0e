"""A PettingZoo `ParallelEnv` over the servers' view (`damdjax.views.SchedulersView`), for
multi-agent code outside JAX: numpy in and out, the view's `reset` and `step_env` jitted
inside.

    env = SchedulersParallelEnv(SchedulersView(EdgeEnv(EnvConfig(n_max=20, m_max=4,
                                                                 queue_capacity=8))))
    obs, infos = env.reset(seed=0)
    while env.agents:
        actions = {a: env.action_space(a).sample(mask=obs[a]["action_mask"])
                   for a in env.agents}
        obs, rewards, terminations, truncations, infos = env.step(actions)

Agents, steps and rewards are the view's (its module docstring): `server_0 ..
server_{M-1}`, all live from `reset` to the episode's end, when all end together
(`terminations` where the env ended it, `truncations` where its step cap did) and
`agents` becomes empty; there is no auto-reset (call `reset`). Every agent gets the team
reward (a float).

Observation of an agent: a dict, the action mask inside it as PettingZoo's classic
environments give it (and `pettingzoo.test`'s action sampling reads it):
`{"observation": [F] float32, "action_mask": [Q+1] int8}` (`observation_space(agent)`: a
gymnasium `Dict` of `Box(-inf, inf, (F,), float32)` and `Box(0, 1, (Q+1,), int8)`). The
mask allows the server's eligible queue slots where it has a pick decision, else only the
no-op `Q`. Actions: `Discrete(Q+1)` (`action_space(agent)`), a slot or the no-op; an agent
left out of the dict plays the no-op. `state()`: the view's world state [W] float32
(`state_space`), for centralised critics; `env_state`: the env's `EnvState` itself.

`infos[agent]`: `invalid_pick` (1 where the server had a decision and the action was not in
its mask: the env started its lowest eligible slot instead) and `epochs` (env epochs the
step played). `reset(seed)` seeds the episode keys (and the action spaces' samplers);
without a seed it goes on from the last key. `reset(options={"instance": inst})` plays a
given `damdjax.envs.instance.Instance` (of the env's padded sizes).
"""
from __future__ import annotations

import functools
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from pettingzoo import ParallelEnv

from damdjax.views.schedulers import SchedulersView


class SchedulersParallelEnv(ParallelEnv):
    """`SchedulersView` as a PettingZoo `ParallelEnv` (the module docstring has the API)."""

    metadata = {"name": "damdjax_schedulers_v0", "render_modes": [],
                "is_parallelizable": True}

    def __init__(self, view: SchedulersView | None = None, seed: int | None = None,
                 render_mode: str | None = None):
        """`view`: the JAX view (default `SchedulersView()`); `seed`: the first episode's
        key where `reset` gets none (default: fresh entropy). ValueError for a
        `render_mode` (the env renders nothing)."""
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r} is not supported: the env renders "
                             f"nothing (metadata['render_modes'] is empty)")
        self.render_mode = None
        self.view = SchedulersView() if view is None else view
        self.possible_agents = list(self.view.agents)
        self.agents: list[str] = []
        q1, f = self.view.num_actions, self.view.obs_size
        self.observation_spaces = {a: gymnasium.spaces.Dict({
            "observation": gymnasium.spaces.Box(-np.inf, np.inf, (f,), np.float32),
            "action_mask": gymnasium.spaces.Box(0, 1, (q1,), np.int8)})
            for a in self.possible_agents}
        self.action_spaces = {a: gymnasium.spaces.Discrete(q1) for a in self.possible_agents}
        self.state_space = gymnasium.spaces.Box(-np.inf, np.inf, (self.view.world_state_size,),
                                                np.float32)
        seed = np.random.SeedSequence().generate_state(1)[0] if seed is None else seed
        self._key = jax.random.PRNGKey(int(seed))
        self._state = None
        self._world = None
        self._reset = jax.jit(functools.partial(self._outputs, self.view.reset))
        self._reset_to = jax.jit(functools.partial(self._outputs, self.view.reset_to))
        self._step = jax.jit(self._step_arrays)

    # --- spaces --------------------------------------------------------------------------

    def observation_space(self, agent: str) -> gymnasium.spaces.Dict:
        return self.observation_spaces[self.possible_agents[self.view.agent_index(agent)]]

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        return self.action_spaces[self.possible_agents[self.view.agent_index(agent)]]

    # --- the jitted parts ----------------------------------------------------------------

    def _outputs(self, start, *args):
        """`(state, agents' obs [M, F], world [W], avail [M, Q+1])` of `start(*args)`."""
        _, state = start(*args)
        agent_obs, world = self.view.observations(state)
        return state, agent_obs, world, self.view.avail_actions(state)

    def _step_arrays(self, key, state, picks):
        """One view step as arrays: `(state, obs [M, F], world [W], avail [M, Q+1],
        reward [], done [], truncated [], invalid [M], epochs [M])`."""
        _, state, rewards, dones, info = self.view.step_env(key, state, picks)
        agent_obs, world = self.view.observations(state)
        return (state, agent_obs, world, self.view.avail_actions(state),
                rewards[self.view.agents[0]], dones["__all__"], state.truncated,
                info["invalid_picks"], info["epochs"])

    def _agent_dicts(self, agent_obs: np.ndarray, avail: np.ndarray) -> dict[str, dict]:
        mask = avail.astype(np.int8)
        return {a: {"observation": np.array(agent_obs[i]), "action_mask": mask[i]}
                for i, a in enumerate(self.possible_agents)}

    # --- the ParallelEnv API -------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, dict], dict[str, dict]]:
        """A fresh episode (`options["instance"]`: of a given instance). Returns `(obs,
        infos)`."""
        if seed is not None:
            self._key = jax.random.PRNGKey(int(seed))
            for i, a in enumerate(self.possible_agents):
                self.action_spaces[a].seed(int(seed) + i)
        self._key, key = jax.random.split(self._key)
        instance = (options or {}).get("instance")
        if instance is None:
            out = self._reset(key)
        else:
            out = self._reset_to(instance, key)
        self._state = out[0]
        agent_obs, self._world, avail = jax.device_get(out[1:])
        self.agents = list(self.possible_agents)
        return (self._agent_dicts(agent_obs, avail),
                {a: {} for a in self.possible_agents})

    def step(self, actions: dict[str, Any]):
        """One pick decision of every live agent. Returns `(obs, rewards, terminations,
        truncations, infos)`, each keyed by agent. RuntimeError without a live episode
        (`reset` first)."""
        if not self.agents:
            raise RuntimeError("no live episode: call reset() first (the episode ended, or "
                               "none was started)")
        noop = self.view.noop
        picks = np.array([int(actions.get(a, noop)) for a in self.possible_agents], np.int32)
        self._key, key = jax.random.split(self._key)
        out = self._step(key, self._state, jnp.asarray(picks))
        self._state = out[0]
        agent_obs, self._world, avail, reward, done, truncated, invalid, epochs = (
            jax.device_get(out[1:]))
        done, truncated = bool(done), bool(truncated)
        agents = self.possible_agents
        obs = self._agent_dicts(agent_obs, avail)
        rewards = {a: float(reward) for a in agents}
        terminations = {a: done and not truncated for a in agents}
        truncations = {a: truncated for a in agents}
        infos = {a: {"invalid_pick": int(invalid[i]), "epochs": int(epochs[i])}
                 for i, a in enumerate(agents)}
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    @property
    def env_state(self):
        """The current `EnvState` (a JAX pytree; the heuristics and metrics read it), None
        before the first `reset`."""
        return self._state

    def state(self) -> np.ndarray:
        """The world state [W] float32 of the current state (`SchedulersView`'s)."""
        if self._world is None:
            raise RuntimeError("no state yet: call reset() first")
        return np.array(self._world)

    def render(self) -> None:
        """Nothing to render (`render_mode` is None)."""
        return None

    def close(self) -> None:
        """Nothing to release."""
