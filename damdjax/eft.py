"""The EFT family: earliest-finish-time dispatch with its design choices as parameters,
and PEFT's optimistic cost table (Arabnejad and Barbosa, 2014).

    est = eft_estimate(state, EftParams(wait=WAIT_INSERT, lookahead=1.0))   # [M]
    rule = eft_rule(EftParams(wait=WAIT_AHEAD), schedule="sjf")           # a DispatchRule
    table = optimistic_cost_table(state.instance)                         # [N, M]

Every EFT rule estimates, for each feasible server `n`, when the head task `h` would be
done if it went to `n` now, and sends it where that is smallest (ties to the lowest
index). The rules differ in four choices (docs/model.md, "The EFT family"), each a field
of `EftParams`:

* `holders`: how a dispatched-but-unstarted predecessor's finish is estimated: played on
  paper behind its server's other slot holders in task-index order (`HOLDERS_QUEUED`, 0),
  or as if it had its server to itself once the running task is done (`HOLDERS_ALONE`, 1);
* `wait`: when `n` could start `h`: after its last slot holder on paper (`WAIT_CHAIN`, 0),
  after the work of all its slot holders (`WAIT_LOAD`, 1), after the work of the holders
  the scheduling rule in use would run before `h` (`WAIT_AHEAD`, 2), or in the earliest
  idle gap of the paper schedule that fits `h` (`WAIT_INSERT`, 3: HEFT's insertion);
* `relay`: the weight of the return leg `k[n]` (1: the result back at the AP, 0: the
  finish at the server);
* `lookahead`: the weight of PEFT's optimistic cost `OCT[h, n]`, an optimistic estimate
  of the time from `h`'s finish on `n` to its job's last exit task's finish.

The defaults are `damdjax.heuristics`' `eft` rule, bitwise. Fields may be Python numbers
(the unused alternatives are never computed) or traced arrays (all are computed and one
is selected, so a grid of parameter vectors runs as one vmapped program:
`damdjax.tuning`).
"""
from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from damdjax.envs.dynamics import head_task, take
from damdjax.envs.state import EnvState
from damdjax.envs.times import never

HOLDERS_QUEUED, HOLDERS_ALONE = 0, 1
WAIT_CHAIN, WAIT_LOAD, WAIT_AHEAD, WAIT_INSERT = 0, 1, 2, 3
HOLDER_CHOICES = {"queued": HOLDERS_QUEUED, "alone": HOLDERS_ALONE}
WAIT_CHOICES = {"chain": WAIT_CHAIN, "load": WAIT_LOAD, "ahead": WAIT_AHEAD,
                "insert": WAIT_INSERT}
# The scheduling rules whose order WAIT_AHEAD can follow (damdjax.heuristics' names).
AHEAD_RULES = ("fcfs", "sjf", "sdf", "cp", "llf", "oct")


@struct.dataclass
class EftParams:
    """The design choices of an EFT dispatch rule (module docstring).

    holders: HOLDERS_QUEUED (0) or HOLDERS_ALONE (1). wait: WAIT_CHAIN (0), WAIT_LOAD (1),
    WAIT_AHEAD (2) or WAIT_INSERT (3). relay: weight of `k[n]` (>= 0). lookahead: weight
    of `OCT[h, n]` (>= 0). Python numbers are checked here (ValueError naming the bad
    field); traced ones are the caller's to keep in range.
    """

    holders: Any = HOLDERS_QUEUED
    wait: Any = WAIT_CHAIN
    relay: Any = 1.0
    lookahead: Any = 0.0

    def __post_init__(self):
        for name, allowed in (("holders", HOLDER_CHOICES), ("wait", WAIT_CHOICES)):
            v = getattr(self, name)
            if _concrete(v) is not None and _concrete(v) not in allowed.values():
                raise ValueError(f"EftParams.{name} must be one of "
                                 f"{sorted(allowed.values())} ({', '.join(allowed)}), got {v!r}")
        for name in ("relay", "lookahead"):
            v = _concrete(getattr(self, name))
            if v is not None and not (v >= 0 and v < float("inf")):
                raise ValueError(f"EftParams.{name} must be a finite number >= 0, got {v!r}")

    def label(self) -> str:
        """A short name of a concrete parameter vector, e.g. `queued/insert/r1/l0.5`."""
        h = {v: k for k, v in HOLDER_CHOICES.items()}[int(self.holders)]
        w = {v: k for k, v in WAIT_CHOICES.items()}[int(self.wait)]
        return f"{h}/{w}/r{float(self.relay):g}/l{float(self.lookahead):g}"

    def to_json(self) -> dict:
        return {"holders": int(self.holders), "wait": int(self.wait),
                "relay": float(self.relay), "lookahead": float(self.lookahead)}


def _concrete(value):
    """`value` as a Python number when it is one (or a concrete 0-d array), else None."""
    if isinstance(value, (bool, int, float)):
        return value
    try:
        return value.item() if getattr(value, "shape", None) == () else None
    except (jax.errors.ConcretizationTypeError, TypeError):
        return None


def _select(choice, options: dict[int, Any]):
    """`options[choice]`, computing only that option when `choice` is a Python number,
    else every option and a select (options: choice -> zero-argument function)."""
    c = _concrete(choice)
    if c is not None:
        return options[int(c)]()
    values = {k: f() for k, f in options.items()}
    out = values[min(values)]
    for k, v in values.items():
        out = jnp.where(choice == k, v, out)
    return out


# Named points of the family (docs/model.md, "The EFT family"); every other point is named
# by its parameters, `eft[HOLDERS/WAIT/rRELAY/lLOOKAHEAD]`.
NAMED = {"eft": EftParams(), "heft": EftParams(wait=WAIT_INSERT),
         "peft": EftParams(wait=WAIT_INSERT, relay=0.0, lookahead=1.0)}
_PARAMS = re.compile(r"eft\[(\w+)/(\w+)/r([0-9.eE+-]+)/l([0-9.eE+-]+)\]$")


def dispatch_params(spec: str) -> EftParams:
    """The parameters an EFT-family dispatch name names: `eft`, `heft`, `peft` or
    `eft[HOLDERS/WAIT/rRELAY/lLOOKAHEAD]` (e.g. `eft[queued/load/r0/l0.25]`); a
    ValueError names the part that is wrong."""
    spec = spec.strip().lower()
    if spec in NAMED:
        return NAMED[spec]
    match = _PARAMS.match(spec)
    if not match:
        raise ValueError(f"unknown EFT-family dispatch {spec!r}: one of {', '.join(NAMED)} "
                         "or eft[HOLDERS/WAIT/rRELAY/lLOOKAHEAD], e.g. eft[queued/load/r0/l0.25]")
    holders, wait, relay, look = match.groups()
    for value, choices, what in ((holders, HOLDER_CHOICES, "HOLDERS"),
                                 (wait, WAIT_CHOICES, "WAIT")):
        if value not in choices:
            raise ValueError(f"{what} {value!r} in {spec!r}: one of {', '.join(choices)}")
    try:
        relay_f, look_f = float(relay), float(look)
    except ValueError:
        raise ValueError(f"relay {relay!r} or lookahead {look!r} in {spec!r} is not a "
                         "number") from None
    return EftParams(holders=HOLDER_CHOICES[holders], wait=WAIT_CHOICES[wait],
                     relay=relay_f, lookahead=look_f)


def dispatch_name(params: EftParams) -> str:
    """The name of a concrete parameter vector: a named point's, else `eft[LABEL]`."""
    for name, p in NAMED.items():
        if p.to_json() == params.to_json():
            return name
    return f"eft[{params.label()}]"


def holder_schedule(state: EnvState, holders=HOLDERS_QUEUED):
    """The slot holders (dispatched, not started) scheduled on paper.

    Every server plays its slot holders in increasing task index after its running task,
    each as soon as it has arrived, its predecessors' results are available and the
    previous one is done (the *chain*). The finish estimates that predecessors are read
    from are the chain's (`HOLDERS_QUEUED`) or each holder's as if alone on its server
    after the running task (`HOLDERS_ALONE`). One pass in increasing task index: a
    holder's predecessors and the holder before it on its server have smaller indices.

    Returns `(finish [N], chain_start [M, Q], chain_finish [M, Q], last [M])`: every
    task's finish, exact once started and estimated for holders (`never` for tasks not
    dispatched); the chain's start and finish of the holder in each slot (`never` for
    free slots); each server's chain end (`free[m]` without holders).
    """
    inst = state.instance
    q = state.queue                                            # [M, Q]
    n = state.server.shape[0]
    unset = never(state.time.dtype)
    lowest = -unset                                            # no input yet
    flat = q.reshape(-1)                                       # [M Q] task id or -1
    order = jnp.argsort(jnp.where(flat >= 0, flat, n))         # slots, holders by task id
    free = take(state.finish, state.running, state.time)       # [M]
    # [M Q] (as one array: XLA may divide by a broadcast as a multiplication by its
    # reciprocal, a last-bit difference from a lone division)
    run_time = (take(inst.work, q, 0.0) / inst.cpu[:, None]).reshape(-1)
    alone = _concrete(holders)

    def one(i, carry):   # the i-th holder in task order: task t in a slot of server m
        finish, last, starts, ends = carry
        slot = order[i]
        t, m = flat[slot], slot // q.shape[1]
        preds = inst.preds[t]                                  # [P]
        fp = take(finish, preds, lowest)
        pred_srv = take(state.server, preds, 0)
        avail = jnp.where(pred_srv == m, fp, (fp + inst.k[jnp.clip(pred_srv, 0)]) + inst.k[m])
        ready = jnp.max(jnp.where(preds >= 0, avail, lowest))
        start = jnp.maximum(jnp.maximum(state.arrive[t], ready), last[m])
        end = start + run_time[slot]
        if alone == HOLDERS_QUEUED:
            est = end
        else:
            est_alone = jnp.maximum(jnp.maximum(state.arrive[t], ready), free[m]) + run_time[slot]
            est = est_alone if alone == HOLDERS_ALONE else jnp.where(
                holders == HOLDERS_ALONE, est_alone, end)
        return (finish.at[t].set(est), last.at[m].set(end), starts.at[slot].set(start),
                ends.at[slot].set(end))

    blank = jnp.full(flat.shape, unset)
    finish, last, starts, ends = jax.lax.fori_loop(
        0, jnp.sum(flat >= 0), one, (state.finish, free, blank, blank))
    return finish, starts.reshape(q.shape), ends.reshape(q.shape), last


def slot_finish_estimates(state: EnvState) -> jax.Array:
    """Every task's finish [N]: exact once started, the chain's estimate for slot holders
    (`holder_schedule` with `HOLDERS_QUEUED`), `never` for tasks not dispatched."""
    return holder_schedule(state)[0]


def optimistic_cost_table(inst) -> jax.Array:
    """PEFT's optimistic cost table [N, M] (time; docs/model.md, "The EFT family").

    `OCT[i, n] = max over successors s of min over real servers w of
    ((OCT[s, w] + work[s] / cpu[w]) + c(n, w))`, `c(n, w) = 0` if `w == n` else
    `k[n] + k[w]` (the relay of a result between two servers); 0 for a task without
    successors. Relaxed until nothing changes (each row is final once its successors'
    are), as `damdjax.envs.instance.upward_rank` is.
    """
    n = inst.succ.shape[0]
    m = inst.cpu.shape[0]
    unset = never(inst.work.dtype)
    proc = inst.work[:, None] / inst.cpu[None, :]                            # [N, M]
    relay = jnp.where(jnp.eye(m, dtype=bool), 0.0, inst.k[:, None] + inst.k[None, :])  # [n, w]
    is_succ = inst.succ > 0                                                  # [N, D]
    later = jnp.clip(jnp.arange(n)[:, None] + inst.succ.astype(jnp.int32), 0, n - 1)
    real = inst.server_mask                                                  # [M] (w)

    def relax(carry):
        table, _, it = carry
        through = table[later] + proc[later]                                 # [N, D, w]
        cost = through[:, :, None, :] + relay[None, None, :, :]              # [N, D, n, w]
        best = jnp.min(jnp.where(real, cost, unset), axis=-1)                # [N, D, n]
        new = jnp.max(jnp.where(is_succ[:, :, None], best, 0.0), axis=1)     # [N, n]
        return new, jnp.any(new != table), it + 1

    zero = jnp.zeros((n, m), inst.work.dtype)
    table, _, _ = jax.lax.while_loop(lambda c: c[1] & (c[2] <= n), relax,
                                     (zero, jnp.ones((), bool), 0))
    return table


def oct_rank(inst, table: jax.Array | None = None) -> jax.Array:
    """PEFT's task priority [N] (time): the mean of `OCT[i, n]` over the real servers
    (summed left to right in server order); the largest runs first. `table`: the
    instance's `optimistic_cost_table` where the caller has it."""
    table = optimistic_cost_table(inst) if table is None else table
    total = jnp.zeros(table.shape[0], table.dtype)
    for m in range(table.shape[1]):  # static, left to right
        total = total + jnp.where(inst.server_mask[m], table[:, m], 0.0)
    return total / jnp.sum(inst.server_mask).astype(table.dtype)


def rule_keys(schedule: str, state: EnvState, tasks: jax.Array, upload: jax.Array,
              table: jax.Array | None = None) -> jax.Array:
    """The order key of `schedule` for `tasks` [M, K] on each server [M] (smaller runs
    first; the rules of `damdjax.heuristics`, without the time for `llf`, which shifts
    every key alike): `upload` [M, K] is each task's arrival at the server (`fcfs`);
    `table` the optimistic cost table where the caller has it (`oct`)."""
    inst = state.instance
    c = lambda x: x[jnp.clip(tasks, 0)]
    if schedule == "fcfs":
        return upload
    if schedule == "sjf":
        return c(inst.work) / inst.cpu[:, None]
    if schedule == "sdf":
        return c(inst.deadline)
    if schedule == "cp":
        return -c(inst.rank)
    if schedule == "llf":
        return c(inst.deadline) - c(inst.work) / inst.cpu[:, None]
    if schedule == "oct":
        return -c(oct_rank(inst, table))
    raise ValueError(f"unknown scheduling rule {schedule!r} for the EFT wait; expected one "
                     f"of {AHEAD_RULES}")


def eft_estimate(state: EnvState, params: EftParams = EftParams(), schedule: str = "fcfs",
                 table: jax.Array | None = None) -> jax.Array:
    """[M] the head task's estimated done time per server under `params` (time).

    `E[n] = ((S[n] + work[h] / cpu[n]) + relay * k[n]) + lookahead * OCT[h, n]`, `S[n]` the
    start the `wait` choice gives (module docstring; `schedule` names the scheduling rule
    in use, read by `WAIT_AHEAD` only: one of AHEAD_RULES, or a traced index into it). `table`: the instance's
    `optimistic_cost_table` [N, M] where the caller has it (computed here when
    needed otherwise; the `oct` rule reads it too). Meaningful on feasible servers only.
    With the default parameters, the `eft` rule of docs/model.md ("EFT dispatch") bitwise.
    """
    inst = state.instance
    h, _ = head_task(state)
    finish, chain_start, chain_end, last = holder_schedule(state, params.holders)
    servers = jnp.arange(inst.cpu.shape[0])
    unset = never(state.time.dtype)
    upload = (state.time + inst.k) + inst.size[h] / inst.bw                 # [M]
    preds = inst.preds[h]                                                  # [P]
    lowest = -unset                                                        # no input yet
    fp = take(finish, preds, lowest)
    m = take(state.server, preds, 0)
    avail = jnp.where(m[None, :] == servers[:, None], fp[None, :],
                      (fp[None, :] + inst.k[jnp.clip(m, 0)][None, :]) + inst.k[:, None])
    ready = jnp.max(jnp.where(preds[None, :] >= 0, avail, lowest), axis=1)  # [M]
    run = inst.work[h] / inst.cpu                                          # [M]
    free = take(state.finish, state.running, state.time)                   # [M]
    q = state.queue
    held = q >= 0

    def after(backlog):
        return jnp.maximum(jnp.maximum(upload, ready), backlog)

    def chain():   # `last`: the chain's end, whichever estimate predecessors read
        return after(last)

    def work_of(counted):   # free + the counted holders' work, one server at a time
        return after(free + jnp.sum(jnp.where(counted, take(inst.work, q, 0.0), 0.0), axis=1)
                     / inst.cpu)

    def ahead():
        def before_head(rule):                                             # [M, Q]
            keys = rule_keys(rule, state, q, state.arrive[jnp.clip(q, 0)], table)
            mine = rule_keys(rule, state, jnp.full((q.shape[0], 1), h), upload[:, None], table)
            return keys <= mine
        if isinstance(schedule, str):
            counted = before_head(schedule)
        else:   # a traced index into AHEAD_RULES
            counted = jnp.stack([before_head(r) for r in AHEAD_RULES])[schedule]
        return work_of(held & counted)

    def insert():
        earliest = jnp.maximum(upload, ready)                              # [M]
        ids = jnp.where(held, q, -1)
        before = held[:, None, :] & (ids[:, None, :] < ids[:, :, None])    # [M, j, i]
        prev_end = jnp.maximum(free[:, None], jnp.max(
            jnp.where(before, chain_end[:, None, :], lowest), axis=2))     # [M, Q]
        cand = jnp.maximum(earliest[:, None], prev_end)
        fits = held & (cand + run[:, None] <= chain_start)
        gap = jnp.min(jnp.where(fits, cand, unset), axis=1)
        return jnp.minimum(gap, jnp.maximum(earliest, last))

    start = _select(params.wait, {WAIT_CHAIN: chain, WAIT_LOAD: lambda: work_of(held),
                                  WAIT_AHEAD: ahead, WAIT_INSERT: insert})
    est = (start + run) + _scaled(params.relay, inst.k)
    look = _concrete(params.lookahead)
    if look is None or look != 0:
        table = optimistic_cost_table(inst) if table is None else table
        est = est + _scaled(params.lookahead, table[h])
    return est


def _scaled(weight, x: jax.Array) -> jax.Array:
    """`weight * x`, as `x` itself where the weight is a Python 1 (bitwise the rule
    without the weight)."""
    w = _concrete(weight)
    return x if w is not None and w == 1 else weight * x
