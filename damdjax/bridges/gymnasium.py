"""The dispatcher's view (`damdjax.views.DispatcherView`) as a `gymnasium.Env`, for code
outside JAX: numpy in, numpy out, the JAX reset and step compiled inside.

    env = DispatcherEnv(EnvConfig(n_max=20, m_max=4, queue_capacity=8),
                        EnvParams(num_tasks=20, num_servers=4))
    obs, info = env.reset(seed=0)                         # obs [F] float32 numpy
    action = policy(obs, env.action_masks())              # a server in [0, M)
    obs, reward, terminated, truncated, info = env.step(action)

    register()                                            # once, by hand: no import side effect
    env = gymnasium.make(ENV_ID, env=EnvConfig(...), params=EnvParams(...))

One `step` is one dispatch decision of `DispatcherView` (the servers' picks from its
scheduling rule, default SJF, up to the next decision); no auto-reset: after `terminated`
or `truncated`, call `reset` (a step on an ended episode raises `gymnasium.error.ResetNeeded`).

* `observation_space`: Box [F] float32, `F = F_t + M F_s` (`DispatcherView.get_obs`); its
  bounds are float32's finite range (the features are finite and unbounded, of order one).
* `action_space`: Discrete(M), a server index. The valid ones are `action_masks()` [M]
  bool numpy (sb3-contrib's MaskablePPO reads this method), also `info["action_mask"]`
  at every reset and step. A server outside the mask is replaced by the lowest valid one
  and flagged in `info["invalid_dispatch"]`; an action outside Discrete(M) raises
  ValueError.
* `reward`: the view's reward (the env's team reward summed over the decision's epochs);
  `terminated`, `truncated`: the view's (`truncated`: the env's step cap, a time limit).
* `info`: `action_mask`, and at a step also `invalid_dispatch` (0 or 1), `epochs` (env
  epochs the step played) and the paper's delayed reward's parts: `dispatched_task` (the
  task this step dispatched: the episode's decision `i` dispatches task `i`) and
  `task_reward` [N] float32 numpy (`exp(-T_i / tau)` of the tasks whose results reached
  the AP during the step, 0 elsewhere: add `task_reward[i]` to decision `i`'s reward to
  train on the paper's reward; `DispatcherView`'s docstring); at the step that ends an
  episode also `episode`: the final state's metrics (`damdjax.wrappers.episode_info`) as
  Python numbers, with `length` this env's steps in the episode (its decisions, as
  gymnasium's episode statistics count them) and `epochs` the env epochs they played.
* Seeding: `reset(seed=s)` reseeds `np_random` (gymnasium's `Env.reset`), which draws the
  episode's JAX key, so the same seed gives the same episode; `reset()` continues the
  generator. `state` is the view's `EnvState` (for the heuristics and metrics).
"""
from __future__ import annotations

from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces

from damdjax.envs.config import SEED_MAX, EnvConfig, EnvParams, check_params
from damdjax.envs.env import EdgeEnv
from damdjax.envs.state import EnvState
from damdjax.views.dispatcher import DispatcherView
from damdjax.wrappers import episode_info

ENV_ID = "damdjax/EdgeDispatcher-v0"


def register() -> str:
    """Register `ENV_ID` with gymnasium (`gymnasium.make(ENV_ID, **DispatcherEnv's
    arguments)`); a second call does nothing. Returns `ENV_ID`."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point=f"{__name__}:DispatcherEnv")
    return ENV_ID


class DispatcherEnv(gymnasium.Env):
    """`DispatcherView` as a gymnasium environment (the module docstring has the API)."""

    metadata = {"render_modes": []}

    def __init__(self, env: DispatcherView | EdgeEnv | EnvConfig | None = None,
                 params: EnvParams | None = None, schedule: str | None = None,
                 render_mode: str | None = None):
        """`env`: the view, or the `EdgeEnv` (an `EnvConfig` for `EdgeEnv(config)`, None
        for `EdgeEnv()`) for `DispatcherView(env, schedule)`; `schedule`: the servers'
        rule name (default "sjf"), only with an env; `params`: concrete params (default
        the view's `default_params`). TypeError for another `env`; ValueError for a
        schedule with a view, an unknown rule, a render mode, or params that do not fit
        the config (`check_params`)."""
        if render_mode is not None:
            raise ValueError(f"DispatcherEnv renders nothing: render_mode must be None, "
                             f"got {render_mode!r}")
        if isinstance(env, DispatcherView):
            if schedule is not None:
                raise ValueError(f"schedule={schedule!r} with a DispatcherView: the view "
                                 f"already has its rule")
            view = env
        else:
            if env is None or isinstance(env, EnvConfig):
                env = EdgeEnv() if env is None else EdgeEnv(env)
            elif not isinstance(env, EdgeEnv):
                raise TypeError(f"DispatcherEnv takes a DispatcherView, an EdgeEnv or an "
                                f"EnvConfig, got {type(env).__name__}")
            view = DispatcherView(env, "sjf" if schedule is None else schedule)
        params = view.default_params if params is None else params
        check_params(view.env.config, params)
        self._view = view
        self._params = params
        self.render_mode = None
        f32 = np.finfo(np.float32).max
        self.observation_space = spaces.Box(-f32, f32, (view.obs_size,), np.float32)
        self.action_space = spaces.Discrete(view.num_actions)
        self._reset_fn = jax.jit(self._reset_jax)
        self._step_fn = jax.jit(self._step_jax)
        self._key: jax.Array | None = None
        self._state: EnvState | None = None
        self._mask: np.ndarray | None = None
        self._ended = False
        self._decisions = 0

    @property
    def view(self) -> DispatcherView:
        """The JAX view this environment runs."""
        return self._view

    @property
    def params(self) -> EnvParams:
        """The env's params."""
        return self._params

    @property
    def state(self) -> EnvState:
        """The view's state of the current episode (after `reset`)."""
        if self._state is None:
            raise gymnasium.error.ResetNeeded("call reset() before reading the state")
        return self._state

    def action_masks(self) -> np.ndarray:
        """[M] bool: the servers the head task may go to (`DispatcherView.action_mask`)."""
        if self._mask is None:
            raise gymnasium.error.ResetNeeded("call reset() before asking for the mask")
        return self._mask.copy()

    # --- the compiled JAX parts ----------------------------------------------------------

    def _reset_jax(self, key, params):
        obs, state = self._view.reset_env(key, params)
        return obs, state, self._view.action_mask(state)

    def _step_jax(self, key, state, action, params):
        obs, state, reward, done, info = self._view.step_env(key, state, action, params)
        return (obs, state, reward, done, info, self._view.action_mask(state),
                episode_info(state))

    # --- gymnasium's API -----------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict]:
        """A fresh instance played to its first dispatch decision; `seed` reseeds
        `np_random`, which draws the episode's JAX key. ValueError for any option (none
        is known)."""
        super().reset(seed=seed)
        if options:
            raise ValueError(f"DispatcherEnv.reset takes no options, got {sorted(options)}")
        seed_key = int(self.np_random.integers(0, SEED_MAX, endpoint=True))
        k_reset, self._key = jax.random.split(jax.random.PRNGKey(seed_key))
        obs, self._state, mask = self._reset_fn(k_reset, self._params)
        self._mask = np.asarray(mask, bool)
        self._ended = False
        self._decisions = 0
        return np.array(obs, np.float32), {"action_mask": self._mask.copy()}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        """One dispatch decision: the head task to server `action` (module docstring)."""
        if self._state is None or self._ended:
            raise gymnasium.error.ResetNeeded("the episode is over or not started: "
                                              "call reset()")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be a server index in [0, {self.action_space.n}), "
                             f"got {action!r}")
        self._key, k_step = jax.random.split(self._key)
        obs, self._state, reward, done, info, mask, episode = self._step_fn(
            k_step, self._state, jnp.asarray(action, jnp.int32), self._params)
        truncated = bool(info["truncated"])
        terminated = bool(done) and not truncated
        self._ended = bool(done)
        self._mask = np.asarray(mask, bool)
        out = {"action_mask": self._mask.copy(),
               "invalid_dispatch": int(info["invalid_dispatch"]),
               "epochs": int(info["epochs"]),
               "dispatched_task": int(info["dispatched_task"]),
               "task_reward": np.asarray(info["task_reward"], np.float32)}
        self._decisions += 1
        if self._ended:
            stats = {name: np.asarray(v).item() for name, v in episode.items()}
            stats["epochs"] = stats.pop("length")       # the env's epochs
            out["episode"] = {**stats, "length": self._decisions}   # this env's steps
        return np.array(obs, np.float32), float(reward), terminated, truncated, out
