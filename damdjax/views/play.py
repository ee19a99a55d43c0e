"""What the views share: playing the epochs between two decisions of a view's agents, and
choosing between an ended episode's outputs and a fresh one's (auto-reset)."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from damdjax.envs.config import EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.state import Action, EnvState


def no_completions(state: EnvState) -> dict:
    """Nothing completed yet: `newly_done` [N] False, `response_time` [N] 0."""
    n = state.server.shape[0]
    return {"newly_done": jnp.zeros((n,), bool),
            "response_time": jnp.zeros((n,), state.time.dtype)}


def add_completions(done: dict, info: dict) -> dict:
    """`done` (`newly_done` [N] bool, `response_time` [N]) with one env step's completions
    (its `info`) added: a task completes once, so the sum is exact."""
    return {"newly_done": done["newly_done"] | info["newly_done"],
            "response_time": done["response_time"]
            + info["response_time"].astype(done["response_time"].dtype)}


def epoch_cap(env: EdgeEnv, max_epochs: int | None) -> int | None:
    """A view's `max_epochs` checked: None (play to the next decision), or an int >= 1
    (ValueError naming the value)."""
    if max_epochs is None:
        return None
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"max_epochs must be None or an integer >= 1, got {max_epochs!r}")
    return max_epochs


def play_until(env: EdgeEnv, params: EnvParams, key: jax.Array, state: EnvState,
               action_of: Callable[[jax.Array, EnvState], Action],
               decided: Callable[[EnvState], jax.Array], cap: int | None = None
               ) -> tuple[EnvState, jax.Array, jax.Array, dict]:
    """Step `env` with `action_of(key, state)` until `decided(state)` (a view's agents have
    a decision), the episode is done, or `cap` epochs (None: `config.max_steps`). Returns
    `(state, summed team reward [], epochs [] int32, completions)` (`add_completions`'
    dict)."""
    cap = env.config.max_steps if cap is None else cap

    def cond(carry):
        _, s, _, count, _ = carry
        return ~s.done & ~decided(s) & (count < cap)

    def body(carry):
        k, s, total, count, done = carry
        k, k_act = jax.random.split(k)
        _, s, r, _, info = env.step(k_act, s, action_of(k_act, s), params)
        return k, s, total + r, count + 1, add_completions(done, info)

    carry = (key, state, jnp.zeros((), state.time.dtype), jnp.zeros((), jnp.int32),
             no_completions(state))
    _, state, total, count, done = jax.lax.while_loop(cond, body, carry)
    return state, total, count, done


def select_tree(pred: jax.Array, on_true, on_false):
    """`on_true` where `pred` [] bool, else `on_false`, leaf by leaf (same structure)."""
    return jax.tree.map(lambda a, b: jax.lax.select(pred, a, b), on_true, on_false)
