"""The EFT family as methods: named members, parameterized names, and playing a grid of
members as one compiled program.

    member = parse_member("eft[queued/load/r0/l0.25]+sjf")   # or "heft+sjf", "peft+oct"
    policy = member_policy(member)                            # (key, state) -> Action
    states = play_members([member, ...], keys, instances, queue_capacity)   # name -> [E]

A member is an EFT dispatch rule (`damdjax.eft.EftParams`) with a scheduling rule: one of
`damdjax.heuristics.SCHEDULE_RULES` or `oct`, PEFT's priority (the largest mean
optimistic cost first). Named dispatch rules: `eft` (the classic rule, `E` in the pair
letters), `heft` (HEFT's insertion-based EFT) and `peft` (PEFT: insertion-based finish at
the server plus the optimistic cost); every other point of the family is named by its
parameters, `eft[HOLDERS/WAIT/rRELAY/lLOOKAHEAD]` (`EftParams.label`). docs/model.md
("The EFT family") defines them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from damdjax.eft import (
    AHEAD_RULES, NAMED, EftParams, dispatch_name, dispatch_params, eft_estimate,
    optimistic_cost_table, oct_rank)
from damdjax.heuristics import (
    DISPATCH_RULES, SCHEDULE_RULES, DispatchRule, Policy, argmin_masked, pair, pair_label, pair_names,
    pick_by, queued)
from damdjax.rollout import play_pairs, run_from_instance
from damdjax.envs.config import EnvParams
from damdjax.envs.dynamics import dispatch_feasible
from damdjax.envs.state import Action, EnvState

SCHEDULES = AHEAD_RULES   # the classic rules and `oct`, in this order


@dataclass(frozen=True)
class Member:
    """One method of the family: an EFT dispatch rule and a scheduling rule."""

    params: EftParams
    schedule: str

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown scheduling rule {self.schedule!r} for an EFT-family "
                             f"method; expected one of {', '.join(SCHEDULES)}")

    @property
    def name(self) -> str:
        """`heft+sjf`, or `eft[queued/load/r0/l0.25]+sjf` off the named points."""
        return f"{dispatch_name(self.params)}+{self.schedule}"


def parse_member(name: str) -> Member:
    """The member `name` names (`heft+sjf`, `peft+oct`, `eft+oct`,
    `eft[queued/load/r0/l0.25]+sjf`); a ValueError names what is wrong."""
    if "+" not in name:
        raise ValueError(f"{name!r} is not an EFT-family method: write DISPATCH+SCHEDULE, "
                         f"DISPATCH one of {', '.join(NAMED)} or eft[HOLDERS/WAIT/rR/lL]")
    dispatch, schedule = (part.strip().lower() for part in name.rsplit("+", 1))
    return Member(dispatch_params(dispatch), schedule)


def oct_priority(table: jax.Array | None = None):
    """PEFT's scheduling rule: per server, the eligible task with the largest
    `damdjax.eft.oct_rank` (ties to the lowest task index). `table`: the instance's
    optimistic cost table, where the caller has it (else computed at every call)."""
    def rule(key: jax.Array, state: EnvState) -> jax.Array:
        del key
        return pick_by(queued(-oct_rank(state.instance, table), state), state)
    return rule


def _policy(params: EftParams, schedule, table: jax.Array | None) -> Policy:
    """A member's policy; `schedule` a name or a traced index into SCHEDULES (then every
    rule's picks are computed and one selected)."""
    rules = [oct_priority(table) if s == "oct" else SCHEDULE_RULES[s] for s in SCHEDULES]

    def policy(key: jax.Array, state: EnvState) -> Action:
        k_d, k_s = jax.random.split(key)   # as heuristics.pair
        est = eft_estimate(state, params, schedule, table)
        dispatch = argmin_masked(est, dispatch_feasible(state))
        if isinstance(schedule, str):
            picks = rules[SCHEDULES.index(schedule)](k_s, state)
        else:
            picks = jnp.stack([rule(k_s, state) for rule in rules])[schedule]
        return Action(dispatch=dispatch, picks=picks)
    return policy


def member_policy(member: Member, table: jax.Array | None = None) -> Policy:
    """The joint policy of `member`: its EFT dispatch and its scheduling rule (keys split
    as `damdjax.heuristics.pair` splits them). `table`: the instance's optimistic cost
    table where the caller has it (one instance's; else computed at each step)."""
    return _policy(member.params, member.schedule, table)


def _vector(member: Member) -> jax.Array:
    p = member.params
    return jnp.array([p.holders, p.wait, p.relay, p.lookahead, SCHEDULES.index(member.schedule)],
                     jnp.float32)


def _play_vector(vec: jax.Array, key: jax.Array, inst, queue_capacity: int,
                 params: EnvParams) -> EnvState:
    """One episode of `inst` under the member whose traced parameters are `vec` [5]."""
    p = EftParams(holders=vec[0].astype(jnp.int32), wait=vec[1].astype(jnp.int32),
                  relay=vec[2], lookahead=vec[3])
    table = optimistic_cost_table(inst)
    return run_from_instance(key, inst, _policy(p, vec[4].astype(jnp.int32), table),
                             queue_capacity, params)[0]


@functools.partial(jax.jit, static_argnames=("queue_capacity", "params"))
def _play_grid(vectors, keys, instances, queue_capacity: int, params: EnvParams):
    """States [C, E] of every member `vectors` [C, 5] on every episode (keys [E]): one
    compilation per shape, shared by every call (tuning, then the held-out play)."""
    return jax.vmap(lambda v: jax.vmap(lambda k, i: _play_vector(
        v, k, i, queue_capacity, params))(keys, instances))(vectors)


def play_members(members, keys: jax.Array, instances, queue_capacity: int,
                 params: EnvParams = EnvParams(), chunk: int = 16, progress=None
                 ) -> dict[str, EnvState]:
    """Final states [E] of `instances` (leaves [E, ...]) under each member, keys [E].

    One compiled program for all members: their parameters are traced (every wait
    choice and every scheduling rule computed, one selected), `chunk` members at a time
    (the last chunk padded with copies), each episode's optimistic cost table computed
    once. Every member sees the same keys, so the comparison is paired. `progress(done,
    total)`, where given, is called after each chunk.
    """
    members = list(members)
    if not members:
        raise ValueError("play_members needs at least one member")
    vectors = jnp.stack([_vector(m) for m in members])
    chunk = min(chunk, len(members))
    out = {}
    for start in range(0, len(members), chunk):
        part = vectors[start:start + chunk]
        size = part.shape[0]
        states = jax.device_get(_play_grid(
            jnp.concatenate([part, jnp.broadcast_to(part[:1], (chunk - size, 5))]),
            keys, instances, queue_capacity, params))
        for j in range(size):
            out[members[start + j].name] = jax.tree.map(lambda x: x[j], states)
        if progress is not None:
            progress(min(start + chunk, len(members)), len(members))
    return out


def method_policy(name: str) -> tuple[Policy, str]:
    """`(policy, scheduling rule name)` of a classic pair (`damdjax.heuristics`' names:
    `ES`, `eft+sjf`) or a family member (`parse_member`); a ValueError names both
    grammars."""
    try:
        d, s = pair_names(name)
    except ValueError as classic:
        try:
            member = parse_member(name)
        except ValueError as family:
            raise ValueError(f"{classic}; or an EFT-family method: {family}") from None
        return member_policy(member), member.schedule
    return pair(DISPATCH_RULES[d], SCHEDULE_RULES[s]), s


def schedule_rule(name: str):
    """The scheduling rule named `name`: one of `damdjax.heuristics.SCHEDULE_RULES` or
    `oct` (`oct_priority`)."""
    if name == "oct":
        return oct_priority()
    if name not in SCHEDULE_RULES:
        raise ValueError(f"unknown scheduling rule {name!r}; expected one of {', '.join(SCHEDULES)}")
    return SCHEDULE_RULES[name]


def random_dispatch(name: str) -> bool:
    """Whether the method `name` dispatches at random (a classic pair of `random`)."""
    try:
        return pair_names(name)[0] == "random"
    except ValueError:
        return False


def canonical_name(name: str) -> str:
    """The name `eval.compare` shows for a method: a classic pair's `pair_label`, a
    family member's `Member.name` (ValueError as `method_policy`)."""
    method_policy(name)   # checks it
    try:
        return pair_label(*pair_names(name))
    except ValueError:
        return parse_member(name).name


def play_methods(names, keys: jax.Array, instances, queue_capacity: int,
                 params: EnvParams = EnvParams(), progress=None, chunked: dict | None = None
                 ) -> dict[str, EnvState]:
    """Final states [E] of `instances` under every method in `names` (classic pairs by
    `damdjax.rollout.play_pairs`, one compilation per dispatch rule; family members by
    `play_members`, one compilation for all), keyed by `canonical_name`. The same
    keys for all, so comparisons are paired. `chunked`: `play_pairs`' option; `progress`:
    `play_members`'."""
    names = list(dict.fromkeys(canonical_name(n) for n in names))
    classic, members = [], []
    for n in names:
        try:
            pair_names(n)
            classic.append(n)
        except ValueError:
            members.append(parse_member(n))
    out = {}
    if classic:
        out.update(play_pairs(classic, keys, instances, queue_capacity, params, chunked=chunked))
    if members:
        out.update(play_members(members, keys, instances, queue_capacity, params,
                                progress=progress))
    return {n: out[n] for n in names}


def dispatch_rule(spec: str, schedule: str = "fcfs") -> DispatchRule:
    """The EFT-family dispatch rule `spec` names (`damdjax.eft.dispatch_params`) as a
    `(key, state) -> server [] int32` rule; `schedule`: the scheduling rule in use, which
    only the `ahead` wait reads."""
    params = dispatch_params(spec)

    def rule(key: jax.Array, state: EnvState) -> jax.Array:
        del key
        return argmin_masked(eft_estimate(state, params, schedule), dispatch_feasible(state))
    return rule
