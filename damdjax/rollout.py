"""Whole episodes under one policy, compiled: `run_episode` and its batch form."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from envs.dynamics import reset_to_instance, transition
from envs.instance import Instance
from envs.state import EnvState
from damdjax.heuristics import Policy


def run_from_instance(key: jax.Array, instance: Instance, policy: Policy, queue_capacity: int,
                      tau=10.0, miss_penalty=1.0) -> tuple[EnvState, jax.Array]:
    """Play one episode of `instance` to the end with `policy`.

    Returns `(final state, total team reward [])`. Jittable; vmap it over
    keys and instances for a batch (the batched loop runs until every episode
    is done; finished ones stand still).
    """
    state = reset_to_instance(instance, queue_capacity)

    def cond(carry):
        return ~carry[1].done

    def body(carry):
        key, state, total = carry
        key, k_act = jax.random.split(key)
        state, reward, _ = transition(state, policy(k_act, state), tau, miss_penalty)
        return key, state, total + reward

    _, state, total = jax.lax.while_loop(
        cond, body, (key, state, jnp.zeros((), state.time.dtype)))
    return state, total
