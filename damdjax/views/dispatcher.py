"""The dispatcher's single-agent view of `EdgeEnv`, with the gymnax `Environment` API.

    view = DispatcherView(EdgeEnv(EnvConfig(n_max=20, m_max=4, queue_capacity=8)))
    params = view.default_params
    obs, state = view.reset(key, params)                  # obs [F] float32
    obs, state, reward, terminated, truncated, info = view.step(key, state, action, params)
    mask = info["action_mask"]                            # [M] bool, also view.action_mask(state)

One `EdgeEnv.step` is an epoch: a dispatch of the head task (when one is needed) and a
pick per idle server. Here one `step` is one dispatch decision: the action (a server index
in `[0, M)`) dispatches the head task, the picks of that epoch and of every following epoch
up to the next dispatch decision come from a scheduling rule (default SJF,
`damdjax.heuristics.SCHEDULE_RULES`), played inside `step` by a `jax.lax.while_loop` of at
most `config.max_steps` epochs. So a gymnax agent learns dispatching while the servers
follow a fixed rule.

API (the gymnax 1.0 `Environment`'s method names and semantics; gymnax is not imported
by this module, so code that reads only these names, e.g. gymnax's `LogWrapper` and
`FlattenObservationWrapper`, wraps the view without gymnax being a dependency):

* `reset(key, params=None) -> (obs, state)`: a fresh instance from the env's generator,
  played by the rule up to its first dispatch decision (`reset_env`).
* `step(key, state, action, params=None) -> (obs, state, reward, terminated, truncated,
  info)`: `step_env`, then auto-reset: where the episode ended, the returned `obs` and
  `state` are those of a new episode (`reset_env` with a key split from `key`), and
  `info["final_observation"]` holds the last observation of the ended one.
* `observation_space(params)`: Box [F] float32, `F = F_t + M F_s`;
  `action_space(params)`: Discrete(M); `num_actions` = M; `default_params`; `name`.
  Space classes are gymnax's where gymnax is installed (its wrappers check them with
  `isinstance`), else this module's `Discrete` and `Box` (same attributes).

The state is the env's `EnvState` itself, so the heuristics (`damdjax.heuristics`) and
metrics (`damdjax.metrics`) read it directly.

Observation: `concat(obs.task [F_t], obs.servers [M, F_s] flattened)` as float32, the
features the dispatcher reads (`damdjax.envs.observation.TASK_FEATURES`,
`SERVER_FEATURES`); padded servers read 0. The valid actions are the mask
`action_mask(state)` [M] bool, also in `info["action_mask"]`, of the returned state.

Reward: the env's team reward summed over the epochs from this decision to the next one
(or the episode's end). It is Markov: it depends on the state, the action and the rule's
(deterministic for SJF) play. Each epoch's team reward is `-(time real tasks spent in the
system during the epoch) / tau - miss_penalty * (deadlines missed during it)`
(`damdjax.envs.dynamics.transition`), so the undiscounted return of an episode is the
env's team return: `-(sum of the tasks' response times) / tau - miss_penalty * (deadline
misses)`, less only the epochs played before the first dispatch decision at reset (none
when the first task's arrival is the first epoch, as it is for the env's generators).
With a discount per decision the view discounts by decisions, not by time.

The paper's dispatcher reward, `exp(-T_i / tau)` for the decision that dispatched task
`i` (`T_i` its response time), is delayed: it is known at the step where `i`'s result
reaches the AP, many decisions later. The view does not credit it (a gymnax step emits
one reward now); `info` carries what a user needs to credit it: `newly_done` [N] bool
(the tasks whose results reached the AP during this step), `response_time` [N] (their
`T_i`, 0 elsewhere), `task_reward` [N] float32 (`exp(-T_i / tau)` there, 0 elsewhere)
and `dispatched_task` [] int32 (the task this step's action dispatched, -1 where none).
Tasks are dispatched in index order, one per decision, so task `i`'s reward belongs to
the episode's decision `i` (0-based, counted from reset; with `max_epochs`, count the
steps whose `info["decision"]` is True): add `task_reward[i]` to that
decision's stored reward, as `train.dqn --reward response` does with its credit table.

Batched speed (`max_epochs`). Under `vmap` a `while_loop` runs until its last member is
done, so a batch of views plays, at every step, as many epochs as its slowest member needs
to reach its next decision: at the default setting a decision takes 2 epochs on average,
but the most of 1,024 envs about 21, and the batch plays about ten times the epochs it
uses (`python -m eval.bench` measures the views beside the raw env). With
`max_epochs=K` a step ends at the next decision or after `K` epochs, whichever comes
first; a step that starts where no dispatch is needed is then not a decision
(`info["decision"]` False): its action is ignored and its mask allows every real server.
The dynamics are unchanged (every episode ends as without a cap); only the agent sees
some steps where it has nothing to decide, which a learner should leave out of its loss
(weight by `info["decision"]`). The default (None) keeps one step per decision.

`info` (every key at every step, so the pytree structure is fixed under `jit`/`vmap`):
`decision` [] bool (this step's action dispatched a task: always True without
`max_epochs`, except on a finished state), `invalid_dispatch` [] int32 (1 where the chosen server was outside the mask and the env
replaced it by the lowest valid one), `episode_done` [] bool (the step ended an episode),
`epochs` [] int32 (env epochs this step played), `action_mask` [M] bool, the delayed
reward's `dispatched_task`, `newly_done`, `response_time`, `task_reward` (of the ended
episode at its last step), and gymnax's `terminated`, `truncated` [] bool and
`final_observation` [F].
`terminated` is the env's end of an episode, `truncated` its end by the step cap
(`EnvState.truncated`: a time limit, where a TD target bootstraps).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from damdjax.envs.config import EnvParams
from damdjax.envs.dynamics import dispatch_feasible, dispatch_needed
from damdjax.envs.env import EdgeEnv
from damdjax.envs.instance import Instance
from damdjax.envs.observation import SERVER_FEATURES, TASK_FEATURES, observe
from damdjax.envs.state import Action, EnvState
from damdjax.heuristics import SCHEDULE_RULES, ScheduleRule
from damdjax.views.play import add_completions, epoch_cap, play_until, select_tree


class Discrete:
    """Integers `0 .. n - 1` (gymnax's `spaces.Discrete`, used where gymnax is absent)."""

    def __init__(self, num_categories: int, *, dtype: Any = jnp.int32):
        self.n = int(num_categories)
        self.shape = ()
        self.dtype = jnp.dtype(dtype)

    def __repr__(self) -> str:
        return f"Discrete({self.n}, dtype={self.dtype.name})"

    def sample(self, key: jax.Array) -> jax.Array:
        """A uniform integer in `[0, n)` (ignores any action mask)."""
        return jax.random.randint(key, self.shape, 0, self.n, dtype=self.dtype)

    def contains(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return (x >= 0) & (x < self.n)


class Box:
    """An array of `shape` between `low` and `high` (gymnax's `spaces.Box`, used where
    gymnax is absent)."""

    def __init__(self, low, high, shape: tuple[int, ...], dtype: Any = jnp.float32):
        self.low = low
        self.high = high
        self.shape = tuple(shape)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"Box(low={self.low}, high={self.high}, shape={self.shape}, dtype={self.dtype})"

    def sample(self, key: jax.Array) -> jax.Array:
        """Uniform in `[low, high]` (finite bounds only)."""
        return jax.random.uniform(key, self.shape, minval=self.low,
                                  maxval=self.high).astype(self.dtype)

    def contains(self, x: jax.Array) -> jax.Array:
        return jnp.all(x >= self.low) & jnp.all(x <= self.high)


def _space_classes() -> tuple[type, type]:
    """`(Discrete, Box)`: gymnax's space classes where gymnax is installed (its wrappers
    check spaces with `isinstance`), else this module's. Imported on call, so importing
    the view never imports gymnax."""
    try:
        from gymnax.environments import spaces
    except ImportError:
        return Discrete, Box
    return spaces.Discrete, spaces.Box


class DispatcherView:
    """`EdgeEnv` seen by its dispatcher alone: one step per dispatch decision, the servers'
    picks from a scheduling rule (the module docstring has the API, observation, reward
    and info)."""

    def __init__(self, env: EdgeEnv | None = None, schedule: str | ScheduleRule = "sjf",
                 max_epochs: int | None = None):
        """`env`: the environment (default `EdgeEnv()`); `schedule`: the servers' rule, a
        name of `damdjax.heuristics.SCHEDULE_RULES` or a rule `(key, state) -> picks [M]`;
        `max_epochs`: None (a step ends at the next dispatch decision) or the most env
        epochs one step plays (the module docstring, "Batched speed"). ValueError for an
        unknown name or a bad `max_epochs`."""
        self._env = EdgeEnv() if env is None else env
        self._max_epochs = epoch_cap(self._env, max_epochs)
        if isinstance(schedule, str):
            if schedule not in SCHEDULE_RULES:
                raise ValueError(f"unknown scheduling rule {schedule!r}: use one of "
                                 f"{sorted(SCHEDULE_RULES)} or a rule (key, state) -> picks")
            schedule = SCHEDULE_RULES[schedule]
        self._schedule = schedule

    # --- properties of the gymnax API ---------------------------------------------------

    @property
    def env(self) -> EdgeEnv:
        """The viewed environment."""
        return self._env

    @property
    def schedule(self) -> ScheduleRule:
        """The servers' scheduling rule."""
        return self._schedule

    @property
    def max_epochs(self) -> int | None:
        """The most env epochs a step plays (None: up to the next decision)."""
        return self._max_epochs

    @property
    def name(self) -> str:
        return "EdgeDispatcher"

    @property
    def default_params(self) -> EnvParams:
        """The env's default params (`EdgeEnv.default_params`)."""
        return self._env.default_params

    @property
    def num_actions(self) -> int:
        """`M`: one action per server slot."""
        return self._env.config.m_max

    @property
    def task_size(self) -> int:
        """`F_t`: the head task's features at the front of the observation."""
        return len(TASK_FEATURES)

    @property
    def server_size(self) -> int:
        """`F_s`: one server's row of the observation."""
        return len(SERVER_FEATURES)

    @property
    def obs_size(self) -> int:
        """`F = F_t + M F_s`, the observation's length."""
        return self.task_size + self._env.config.m_max * self.server_size

    def split_obs(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(task [..., F_t], servers [..., M, F_s])` of observations [..., F] (for networks
        that score each server with shared weights)."""
        head = obs[..., :self.task_size]
        rows = obs[..., self.task_size:].reshape(*obs.shape[:-1], self.num_actions,
                                                  self.server_size)
        return head, rows

    def action_space(self, params: EnvParams | None = None):
        """Discrete(M) int32 (a server index); valid actions are `action_mask(state)`."""
        discrete, _ = _space_classes()
        return discrete(self.num_actions, dtype=jnp.int32)

    def observation_space(self, params: EnvParams | None = None):
        """Box [F] float32, unbounded (features are of order one, not clipped)."""
        _, box = _space_classes()
        return box(-np.inf, np.inf, (self.obs_size,), jnp.float32)

    # --- observation and mask ------------------------------------------------------------

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key=None
                ) -> jax.Array:
        """The dispatcher's features [F] float32: the head task's [F_t], then every
        server's [M, F_s] row by row."""
        params = self.default_params if params is None else params
        obs = observe(state, params.time_scale)
        return jnp.concatenate([obs.task.reshape(-1), obs.servers.reshape(-1)]
                               ).astype(jnp.float32)

    def action_mask(self, state: EnvState) -> jax.Array:
        """[M] bool, never empty: where a dispatch is needed, the servers that can take the
        head task (`Observation.dispatch_mask`); elsewhere (an episode over, or one that
        ended before any decision) every real server, whose action is then ignored."""
        needed = dispatch_needed(state)
        return jnp.where(needed, dispatch_feasible(state), state.instance.server_mask)

    def as_policy(self, dispatch: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
                  params: EnvParams | None = None) -> Callable[[jax.Array, EnvState], Action]:
        """A dispatcher written for the view, `dispatch(key, obs [F], mask [M]) -> server`,
        as a policy of the env, `(key, state) -> Action` (its dispatch, the view's rule's
        picks, with the key split as `damdjax.heuristics.pair` splits it), for what plays
        the env epoch by epoch (`damdjax.evaluation.play_named`, `evaluate_paired`,
        `rollout.play_batch`). Where no dispatch is needed the env ignores the dispatch."""
        params = self.default_params if params is None else params

        def policy(key: jax.Array, state: EnvState) -> Action:
            k_dispatch, k_pick = jax.random.split(key)
            server = dispatch(k_dispatch, self.get_obs(state, params), self.action_mask(state))
            return Action(dispatch=jnp.asarray(server, jnp.int32).reshape(()),
                          picks=self._schedule(k_pick, state))

        return policy

    # --- the rule's play between decisions -----------------------------------------------

    def _play_to_decision(self, key: jax.Array, state: EnvState, params: EnvParams,
                          played: int = 0) -> tuple[EnvState, jax.Array, jax.Array, dict]:
        """Play epochs with the rule's picks (no dispatch is needed in them) until a
        dispatch decision is needed, the episode is done, or `config.max_steps` epochs
        (`max_epochs - played` where `max_epochs` is set) (`damdjax.views.play.play_until`:
        `(state, summed team reward [], epochs [] int32, completions)`)."""
        dummy = jnp.zeros((), jnp.int32)
        cap = None if self._max_epochs is None else self._max_epochs - played
        return play_until(self._env, params, key, state,
                          lambda k, s: Action(dispatch=dummy, picks=self._schedule(k, s)),
                          dispatch_needed, cap)

    # --- reset and step ------------------------------------------------------------------

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        """A fresh instance, played by the rule to its first dispatch decision (the reward
        of those epochs, if any, is nobody's)."""
        k_env, k_play = jax.random.split(key)
        _, state = self._env.reset(k_env, params)
        state, _, _, _ = self._play_to_decision(k_play, state, params)
        return self.get_obs(state, params), state

    def reset(self, key: jax.Array, params: EnvParams | None = None
              ) -> tuple[jax.Array, EnvState]:
        """gymnax's `reset`: `reset_env` with `params` (default `default_params`)."""
        params = self.default_params if params is None else params
        return self.reset_env(key, params)

    def reset_to(self, instance: Instance, params: EnvParams | None = None,
                 key: jax.Array | None = None) -> tuple[jax.Array, EnvState]:
        """Start an episode of a given instance (`EdgeEnv.reset_to`), played by the rule to
        its first dispatch decision (`key` for the rule, default PRNGKey(0))."""
        params = self.default_params if params is None else params
        key = jax.random.PRNGKey(0) if key is None else key
        _, state = self._env.reset_to(instance, params)
        state, _, _, _ = self._play_to_decision(key, state, params)
        return self.get_obs(state, params), state

    def step_env(self, key: jax.Array, state: EnvState, action, params: EnvParams
                 ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict]:
        """One dispatch decision without auto-reset: dispatch the head task to `action`
        (replaced by the lowest valid server where it is invalid) with the rule's picks,
        then play the rule to the next decision. Returns `(obs [F], state, reward [],
        done [] bool, info)`; `info` holds `invalid_dispatch`, `epochs`, `truncated` and
        the delayed reward's parts (`dispatched_task`, `newly_done`, `response_time`,
        `task_reward`: the module docstring)."""
        k_pick, k_play = jax.random.split(key)
        decision = dispatch_needed(state) & ~state.done
        act = Action(dispatch=jnp.asarray(action, jnp.int32).reshape(()),
                     picks=self._schedule(k_pick, state))
        _, state, reward, _, env_info = self._env.step(k_pick, state, act, params)
        state, more, epochs, later = self._play_to_decision(k_play, state, params, played=1)
        # A step on a finished state plays nothing (the env keeps a done state as it is).
        done = add_completions(later, env_info)
        task_reward = jnp.where(done["newly_done"],
                                jnp.exp(-done["response_time"] / params.tau), 0.0)
        info = {"invalid_dispatch": env_info["invalid_dispatch"].astype(jnp.int32),
                "decision": decision,
                "epochs": epochs + 1,
                "truncated": state.truncated,
                "dispatched_task": env_info["dispatched_task"].astype(jnp.int32),
                **done,
                "task_reward": task_reward.astype(jnp.float32)}
        return self.get_obs(state, params), state, reward + more, state.done, info

    def step(self, key: jax.Array, state: EnvState, action, params: EnvParams | None = None
             ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, jax.Array, dict]:
        """gymnax's `step`: `step_env`, then auto-reset where the episode ended (gymnax 1.0's
        `Environment.step`). Returns `(obs [F], state, reward [], terminated [] bool,
        truncated [] bool, info)`; the obs and state are the new episode's where it
        ended."""
        params = self.default_params if params is None else params
        k_step, k_reset = jax.random.split(key)
        obs_st, state_st, reward, done, info = self.step_env(k_step, state, action, params)
        truncated = info["truncated"]
        terminated = done & ~truncated
        obs_re, state_re = self.reset_env(k_reset, params)
        state = select_tree(done, state_re, state_st)
        obs = jax.lax.select(done, obs_re, obs_st)
        info = {**info,
                "action_mask": self.action_mask(state),
                "episode_done": done,
                "terminated": terminated,
                "truncated": truncated,
                "final_observation": obs_st}
        return obs, state, reward.astype(jnp.float32), terminated, truncated, info

