"""Dispatch and scheduling heuristics as jittable policies: the paper's (nearest,
random, least load; FCFS, SJF, SDF) and the HEFT family's (earliest finish time;
critical path, least laxity).

Exact definitions in docs/model.md ("Heuristics", "Strong baselines"). Each works on the exact
environment state, inside `jit`, `vmap` and `lax.scan`:

* a dispatch rule `(key, state) -> server [] int32`;
* a scheduling rule `(key, state) -> slot per server [M] int32`;
* a policy `(key, state) -> Action` pairs one of each (`pair`).

Ties go to the lowest server index (dispatch) or lowest task index (scheduling).
EFT's estimate lives in `damdjax.eft`, where its design choices are parameters; the
family's other members (HEFT's insertion, PEFT, tuned points) are `damdjax.family`'s.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from damdjax.eft import eft_estimate, slot_finish_estimates  # noqa: F401 (re-exported)
from damdjax.envs.dynamics import dispatch_feasible, eligible_slots, least_load
from damdjax.envs.state import Action, EnvState
from damdjax.envs.times import never

DispatchRule = Callable[[jax.Array, EnvState], jax.Array]
ScheduleRule = Callable[[jax.Array, EnvState], jax.Array]
Policy = Callable[[jax.Array, EnvState], Action]


def argmin_masked(score: jax.Array, mask: jax.Array) -> jax.Array:
    """Lowest index of the smallest `score` among `mask` (0 if the mask is empty; scores
    are times or delays, below `never`)."""
    return jnp.argmin(jnp.where(mask, score, never(score.dtype))).astype(jnp.int32)


def nearest(key: jax.Array, state: EnvState) -> jax.Array:
    """Feasible server with the smallest propagation delay `k`."""
    del key
    return argmin_masked(state.instance.k, dispatch_feasible(state))


def least_loaded(key: jax.Array, state: EnvState) -> jax.Array:
    """Feasible server with the smallest estimated wait (damdjax.envs.dynamics.least_load)."""
    del key
    return argmin_masked(least_load(state), dispatch_feasible(state))


def random_uniform(u: jax.Array, feasible: jax.Array) -> jax.Array:
    """The feasible server at position `min(floor(u * c), c - 1)`, `c` feasible servers."""
    count = jnp.sum(feasible)
    position = jnp.minimum(jnp.floor(u * count).astype(jnp.int32), count - 1)
    rank = jnp.cumsum(feasible) - 1
    return jnp.argmax(feasible & (rank == position)).astype(jnp.int32)


def random_server(key: jax.Array, state: EnvState) -> jax.Array:
    """A feasible server uniformly at random (`u = uniform(key)`, see random_uniform)."""
    return random_uniform(jax.random.uniform(key), dispatch_feasible(state))


def earliest_finish(key: jax.Array, state: EnvState) -> jax.Array:
    """Feasible server where the head task's result is estimated back first (EFT)."""
    del key
    return argmin_masked(eft_estimate(state), dispatch_feasible(state))


def pick_by(score: jax.Array, state: EnvState) -> jax.Array:
    """Per server, the eligible slot with the smallest score, ties to the lowest task id.

    score: [M, Q]. Returns [M] int32 (slot 0 where nothing is eligible).
    Two plain reductions (a minimum, then an argmin among the tied): a one-pass variadic
    (score, task id, slot) reduction moves fewer bytes but ran slower on an H200.
    """
    eligible = eligible_slots(state)
    best = jnp.min(jnp.where(eligible, score, never(score.dtype)), axis=1, keepdims=True)
    tied = eligible & (score == best)
    big = jnp.iinfo(jnp.int32).max
    return jnp.argmin(jnp.where(tied, state.queue, big), axis=1).astype(jnp.int32)


def queued(values: jax.Array, state: EnvState) -> jax.Array:
    """Per-task values gathered onto the queue slots [M, Q] (`never` for empty slots)."""
    q = state.queue
    return jnp.where(q >= 0, values[jnp.clip(q, 0)], never(values.dtype))


def fcfs(key: jax.Array, state: EnvState) -> jax.Array:
    """Earliest arrival at the server."""
    del key
    return pick_by(queued(state.arrive, state), state)


def sjf(key: jax.Array, state: EnvState) -> jax.Array:
    """Shortest processing time `work / cpu`."""
    del key
    return pick_by(queued(state.instance.work, state) / state.instance.cpu[:, None], state)


def sdf(key: jax.Array, state: EnvState) -> jax.Array:
    """Earliest deadline."""
    del key
    return pick_by(queued(state.instance.deadline, state), state)


def critical_path(key: jax.Array, state: EnvState) -> jax.Array:
    """Highest upward rank (`Instance.rank`: the longest mean path to the job's exit)."""
    del key
    return pick_by(queued(-state.instance.rank, state), state)


def least_laxity(key: jax.Array, state: EnvState) -> jax.Array:
    """Smallest laxity `(deadline - now) - work / cpu`."""
    del key
    inst = state.instance
    laxity = ((queued(inst.deadline, state) - state.time)
              - queued(inst.work, state) / inst.cpu[:, None])
    return pick_by(laxity, state)


def random_pick(key: jax.Array, state: EnvState) -> jax.Array:
    """Per server, an eligible slot uniformly at random (`random_uniform` with one uniform
    per server; slot 0 where nothing is eligible). A yardstick for what scheduling is
    worth at a setting (`damdjax.eval.spreads`), not one of `SCHEDULE_RULES`: the named
    pairs and the trainers' evaluations stay the deterministic rules."""
    eligible = eligible_slots(state)
    u = jax.random.uniform(key, (eligible.shape[0],))
    return jax.vmap(random_uniform)(u, eligible)


DISPATCH_RULES: dict[str, DispatchRule] = {
    "nearest": nearest, "random": random_server, "least_load": least_loaded,
    "eft": earliest_finish}
SCHEDULE_RULES: dict[str, ScheduleRule] = {
    "fcfs": fcfs, "sjf": sjf, "sdf": sdf, "cp": critical_path, "llf": least_laxity}
DISPATCH_LETTERS = {"N": "nearest", "R": "random", "L": "least_load", "E": "eft"}
SCHEDULE_LETTERS = {"F": "fcfs", "S": "sjf", "D": "sdf", "C": "cp", "X": "llf"}
# The paper's pairs; any letter pair (e.g. NS, LF) is accepted by `pair_from_name`.
PAPER_PAIRS = {"NF": ("nearest", "fcfs"), "RS": ("random", "sjf"), "LS": ("least_load", "sdf")}


def pair_label(dispatch: str, schedule: str) -> str:
    """The canonical name of a pair of rule names: its paper name (NF, RS, LS), else its
    two letters (e.g. EC), else, where those letters name a paper pair of other rules
    (LeastLoad + SJF: `LS` is the paper's LeastLoad + SDF), `dispatch+schedule`."""
    for name, rules in PAPER_PAIRS.items():
        if rules == (dispatch, schedule):
            return name
    letters = ({r: l for l, r in DISPATCH_LETTERS.items()}[dispatch]
               + {r: l for l, r in SCHEDULE_LETTERS.items()}[schedule])
    return f"{dispatch}+{schedule}" if letters in PAPER_PAIRS else letters


# Every dispatch rule with every scheduling rule, by canonical name (dispatch-major).
ALL_PAIRS = tuple(pair_label(d, s) for d in DISPATCH_RULES for s in SCHEDULE_RULES)


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
    elif len(upper) == 2 and upper[0] in DISPATCH_LETTERS and upper[1] in SCHEDULE_LETTERS:
        d, s = DISPATCH_LETTERS[upper[0]], SCHEDULE_LETTERS[upper[1]]
    else:
        d = s = None
    if d not in DISPATCH_RULES or s not in SCHEDULE_RULES:
        raise ValueError(
            f"unknown method {name!r}: use two letters, dispatch N(earest)/R(andom)/L(east load)/"
            f"E(FT) then schedule F(CFS)/S(JF)/D (SDF)/C(ritical path)/X (least laxity), e.g. "
            f"NF, RS, LS, EC, or 'eft+cp'")
    return d, s


def pair_from_name(name: str) -> Policy:
    """The joint heuristic policy named `name` (see `pair_names`)."""
    d, s = pair_names(name)
    return pair(DISPATCH_RULES[d], SCHEDULE_RULES[s])
