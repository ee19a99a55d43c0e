"""The paper's dispatch and scheduling heuristics as jittable policies.

Exact definitions in docs/model.md ("Heuristics"). Each works on the exact
environment state, inside `jit`, `vmap` and `lax.scan`:

* a dispatch rule `(key, state) -> server [] int32`;
* a scheduling rule `(key, state) -> slot per server [M] int32`;
* a policy `(key, state) -> Action` pairs one of each (:func:`pair`).

Ties go to the lowest server index (dispatch) or lowest task index (scheduling).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from envs.dynamics import dispatch_feasible, eligible_slots, least_load
from envs.state import Action, EnvState

DispatchRule = Callable[[jax.Array, EnvState], jax.Array]
ScheduleRule = Callable[[jax.Array, EnvState], jax.Array]
Policy = Callable[[jax.Array, EnvState], Action]


def _argmin_masked(score: jax.Array, mask: jax.Array) -> jax.Array:
    """Lowest index of the smallest `score` among `mask` (0 if the mask is empty)."""
    return jnp.argmin(jnp.where(mask, score, jnp.inf)).astype(jnp.int32)


def nearest(key: jax.Array, state: EnvState) -> jax.Array:
    """Feasible server with the smallest propagation delay `k`."""
    del key
    return _argmin_masked(state.instance.k, dispatch_feasible(state))


def least_loaded(key: jax.Array, state: EnvState) -> jax.Array:
    """Feasible server with the smallest estimated wait (envs.dynamics.least_load)."""
    del key
    return _argmin_masked(least_load(state), dispatch_feasible(state))


def random_uniform(u: jax.Array, feasible: jax.Array) -> jax.Array:
    """The feasible server at position `min(floor(u * c), c - 1)`, `c` feasible servers."""
    count = jnp.sum(feasible)
    position = jnp.minimum(jnp.floor(u * count).astype(jnp.int32), count - 1)
    rank = jnp.cumsum(feasible) - 1
    return jnp.argmax(feasible & (rank == position)).astype(jnp.int32)


def random_server(key: jax.Array, state: EnvState) -> jax.Array:
    """A feasible server uniformly at random (`u = uniform(key)`, see random_uniform)."""
    return random_uniform(jax.random.uniform(key), dispatch_feasible(state))


def _pick_by(score: jax.Array, state: EnvState) -> jax.Array:
    """Per server, the eligible slot with the smallest score, ties to the lowest task id.

    score: [M, Q]. Returns [M] int32 (slot 0 where nothing is eligible).
    """
    eligible = eligible_slots(state)
    best = jnp.min(jnp.where(eligible, score, jnp.inf), axis=1, keepdims=True)
    tied = eligible & (score == best)
    big = jnp.iinfo(jnp.int32).max
    return jnp.argmin(jnp.where(tied, state.queue, big), axis=1).astype(jnp.int32)


def _queued(values: jax.Array, state: EnvState) -> jax.Array:
    """Per-task values gathered onto the queue slots [M, Q] (+inf for empty slots)."""
    q = state.queue
    return jnp.where(q >= 0, values[jnp.clip(q, 0)], jnp.inf)


def fcfs(key: jax.Array, state: EnvState) -> jax.Array:
    """Earliest arrival at the server."""
    del key
    return _pick_by(_queued(state.arrive, state), state)


def sjf(key: jax.Array, state: EnvState) -> jax.Array:
    """Shortest processing time `work / cpu`."""
    del key
    return _pick_by(_queued(state.instance.work, state) / state.instance.cpu[:, None], state)


def sdf(key: jax.Array, state: EnvState) -> jax.Array:
    """Earliest deadline."""
    del key
    return _pick_by(_queued(state.instance.deadline, state), state)


DISPATCH_RULES: dict[str, DispatchRule] = {
    "nearest": nearest, "random": random_server, "least_load": least_loaded}
SCHEDULE_RULES: dict[str, ScheduleRule] = {"fcfs": fcfs, "sjf": sjf, "sdf": sdf}
_DISPATCH_LETTER = {"N": "nearest", "R": "random", "L": "least_load"}
_SCHEDULE_LETTER = {"F": "fcfs", "S": "sjf", "D": "sdf"}
# The paper's pairs; any letter pair (e.g. NS, LF) is accepted by `pair_from_name`.
PAPER_PAIRS = {"NF": ("nearest", "fcfs"), "RS": ("random", "sjf"), "LS": ("least_load", "sdf")}


def pair(dispatch: DispatchRule, schedule: ScheduleRule) -> Policy:
    """A joint policy from a dispatch rule and a scheduling rule (independent keys)."""
    def policy(key: jax.Array, state: EnvState) -> Action:
        k_d, k_s = jax.random.split(key)
        return Action(dispatch=dispatch(k_d, state), picks=schedule(k_s, state))
    return policy


def pair_names(name: str) -> tuple[str, str]:
    """'NF' -> ('nearest', 'fcfs'); also 'nearest+fcfs'. ValueError names a bad name."""
    upper = name.strip().upper()
    if "+" in name:
        d, s = (part.strip().lower().replace("-", "_") for part in name.split("+", 1))
    elif upper in PAPER_PAIRS:
        return PAPER_PAIRS[upper]
    elif len(upper) == 2 and upper[0] in _DISPATCH_LETTER and upper[1] in _SCHEDULE_LETTER:
        d, s = _DISPATCH_LETTER[upper[0]], _SCHEDULE_LETTER[upper[1]]
    else:
        d = s = None
    if d not in DISPATCH_RULES or s not in SCHEDULE_RULES:
        raise ValueError(
            f"unknown method {name!r}: use two letters, dispatch N(earest)/R(andom)/L(east load) "
            f"then schedule F(CFS)/S(JF)/D (SDF), e.g. NF, RS, LS, or 'nearest+fcfs'")
    return d, s


def pair_from_name(name: str) -> Policy:
    """The joint heuristic policy named `name` (see :func:`pair_names`)."""
    d, s = pair_names(name)
    return pair(DISPATCH_RULES[d], SCHEDULE_RULES[s])
