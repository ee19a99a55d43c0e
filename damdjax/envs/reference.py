"""Plain-Python reference simulator of the edge model (docs/model.md).

This module is the ground truth the JAX environment is tested against, and the
baseline of the speed benchmark. It uses the Python standard library only and
imports nothing from the rest of the project, so that it stays independent of
the code it checks.

It runs one episode with a dispatch heuristic (``nearest``, ``random``,
``least_load``, ``eft`` and its family) and a scheduling heuristic (``fcfs``, ``sjf``,
``sdf``, ``cp``, ``llf``, ``oct``), epoch by epoch, exactly as docs/model.md defines a ``step``:

* the clock stands at an *epoch* ``t`` (a time at which some decision is
  needed, every event at ``t`` already handled: completions, job arrivals,
  arrivals at servers);
* the head task (lowest index not yet dispatched) is dispatched if its job has
  arrived and some server is feasible, feasibility judged before this epoch's
  picks free any queue slot;
* then every idle server with an eligible queued task picks one, the eligible
  sets judged before this epoch's dispatch; the picked task starts at ``t``;
* the clock advances to the next epoch by the closed form of docs/model.md,
  and every completion at or before it is applied.

Units: times (``arrival``, ``deadline``, ``k`` and every result time) are in
time units; ``size`` and ``mem`` in data units; ``bw`` in data units per time
unit; ``work`` in work units; ``cpu`` in work units per time unit.

All formulas are evaluated in the order docs/model.md writes them, so that the
JAX environment can reproduce the results to the last bit where it evaluates
them the same way:

* ``arrive[i] = (t + k[n]) + size[i] / bw[n]``
* ``finish[i] = start[i] + work[i] / cpu[n]``
* ``done[i] = finish[i] + k[n]``
* result of ``p`` (ran on ``m``) available on ``n``: ``finish[p]`` when
  ``m == n``, else ``(finish[p] + k[m]) + k[n]``
* ``mem_free[n] -= size[i]`` at dispatch, ``mem_free[n] += size[i]`` at the
  completion of ``i`` (incremental, in event order).

The HEFT-family rules (docs/model.md, "Strong baselines"), in the same spirit:

* ``eft`` dispatch: the slot holders (dispatched, not started) are played on
  paper per server in increasing task index from ``free[m]`` (the running
  task's finish, or ``t``): ``S[p] = max(arrive[p], R_m[p], prev)``,
  ``F[p] = S[p] + work[p] / cpu[m]``, estimates computed in increasing global
  task index; then ``A = (t + k[n]) + size[h] / bw[n]``, ``B`` the ``F`` of
  ``n``'s highest-index slot holder (or ``free[n]``),
  ``E[n] = (max(A, R_n[h], B) + work[h] / cpu[n]) + k[n]``; the smallest
  ``E`` wins, ties to the lowest server index.
* ``eft`` with ``eft={...}``: the EFT family's design choices (docs/model.md, "The EFT
  family"): ``holders`` ``"alone"`` estimates a holder as if alone on its server after
  the running task; ``wait`` ``"load"`` / ``"ahead"`` starts the head after ``free[n]``
  plus the work of all (or of the scheduling rule's earlier) holders over ``cpu[n]``,
  ``"insert"`` in the first idle gap of the chain that fits it; then
  ``E[n] = ((S + work[h] / cpu[n]) + relay * k[n]) + lookahead * OCT[h][n]``.
* ``oct`` scheduling: the largest ``oct_rank`` (PEFT's mean optimistic cost) first.
* ``cp`` scheduling: the largest ``upward_rank`` first (ties to the lowest
  task index), ``rank[i] = wbar[i] + max_s (cbar + rank[s])`` with
  ``wbar[i] = (work[i]/cpu[0] + work[i]/cpu[1] + ...) / M`` and
  ``cbar = 2.0 * ((k[0] + k[1] + ...) / M)`` (``0.0`` when ``M == 1``).
* ``llf`` scheduling: the smallest laxity ``(deadline[i] - t) - work[i] / cpu[n]``
  first (ties to the lowest task index).

``contention_free_bound`` gives every task's ``bound_done`` of docs/model.md
("The contention-free bound"), a lower bound on its ``done`` under every
method, and ``bound_response`` the episode's mean ``bound_done - arrival``.
Every sum in these runs left to right, in server or task index order.
"""

from __future__ import annotations

import math
import operator
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "DISPATCHERS",
    "SCHEDULERS",
    "ReferenceResult",
    "simulate",
    "compute_metrics",
    "upward_rank",
    "contention_free_bound",
    "bound_response",
    "optimistic_cost_table",
    "oct_rank",
    "EFT_DEFAULTS",
]

DISPATCHERS: tuple[str, ...] = ("nearest", "random", "least_load", "eft")
SCHEDULERS: tuple[str, ...] = ("fcfs", "sjf", "sdf", "cp", "llf", "oct")
# The design choices of ``eft`` dispatch (docs/model.md, "The EFT family"); these
# values are the classic rule's.
EFT_DEFAULTS: dict[str, Any] = {"holders": "queued", "wait": "chain", "relay": 1.0,
                                "lookahead": 0.0}
_EFT_CHOICES = {"holders": ("queued", "alone"), "wait": ("chain", "load", "ahead", "insert")}

_INF = math.inf


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceResult:
    """The outcome of one episode (per-task lists are indexed by task).

    Attributes:
        server: server index each task ran on.
        dispatch_time: time each task left the AP (time units).
        arrive: time each task reached its server (time units).
        start: time each task started running (time units).
        finish: time each task finished running (time units).
        done: time each task's result was back at the AP (time units).
        response: ``done - arrival`` (time units).
        missed: ``done > deadline`` (strict).
        num_steps: number of epochs, i.e. of environment steps.
        num_decisions: number of dispatches plus number of picks (``2 N``).
        end_time: ``max(done)`` (time units).
        epoch_times: the clock at each epoch, in order (time units).
        metrics: ``avg_response_time``, ``deadline_miss_rate``, ``makespan``,
            ``utilisation``, ``fairness``, ``end_time`` (see ``compute_metrics``).
    """

    server: list[int]
    dispatch_time: list[float]
    arrive: list[float]
    start: list[float]
    finish: list[float]
    done: list[float]
    response: list[float]
    missed: list[bool]
    num_steps: int
    num_decisions: int
    end_time: float
    epoch_times: list[float]
    metrics: dict[str, float]


# --------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Server:
    cpu: float
    bw: float
    mem: float
    k: float


@dataclass(frozen=True)
class _Task:
    size: float
    work: float
    arrival: float
    deadline: float
    preds: tuple[int, ...]
    job: int


def _number(value: Any, what: str) -> float:
    """``value`` as a float that is not NaN, else a ValueError naming ``what``."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if math.isnan(x):
        raise ValueError(f"{what} is NaN")
    return x


def _integer(value: Any, what: str) -> int:
    """``value`` as an int (bools refused), else a ValueError naming ``what``."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def _field(record: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return record[key]
    except KeyError:
        raise ValueError(f"{what} has no {key!r}") from None
    except TypeError:
        raise ValueError(f"{what} must be a mapping, got {record!r}") from None


def _validate_servers(servers: Sequence[Mapping[str, Any]]) -> list[_Server]:
    out: list[_Server] = []
    for n, s in enumerate(servers):
        what = f"server {n}"
        vals = {}
        for key in ("cpu", "bw", "k"):
            x = _number(_field(s, key, what), f"{what} {key}")
            if not (0.0 < x < _INF):
                raise ValueError(f"{what} {key} must be positive and finite, got {x!r}")
            vals[key] = x
        mem = _number(_field(s, "mem", what), f"{what} mem")
        if not (0.0 <= mem < _INF):
            raise ValueError(f"{what} mem must be non-negative and finite, got {mem!r}")
        out.append(_Server(cpu=vals["cpu"], bw=vals["bw"], mem=mem, k=vals["k"]))
    if not out:
        raise ValueError("there must be at least one server")
    return out


def _validate_tasks(
    tasks: Sequence[Mapping[str, Any]], servers: list[_Server]
) -> list[_Task]:
    out: list[_Task] = []
    seen_jobs: set[int] = set()
    max_mem = max(s.mem for s in servers)
    for i, t in enumerate(tasks):
        what = f"task {i}"
        size = _number(_field(t, "size", what), f"{what} size")
        if not (0.0 <= size < _INF):
            raise ValueError(f"{what} size must be non-negative and finite, got {size!r}")
        if size > max_mem:
            raise ValueError(
                f"{what} size {size!r} exceeds every server's memory "
                f"(largest is {max_mem!r}): it could never be dispatched"
            )
        work_raw = t.get("work", size) if isinstance(t, Mapping) else size
        work = _number(size if work_raw is None else work_raw, f"{what} work")
        if not (0.0 <= work < _INF):
            raise ValueError(f"{what} work must be non-negative and finite, got {work!r}")
        arrival = _number(_field(t, "arrival", what), f"{what} arrival")
        if not (0.0 <= arrival < _INF):
            raise ValueError(
                f"{what} arrival must be non-negative and finite, got {arrival!r}"
            )
        deadline = _number(_field(t, "deadline", what), f"{what} deadline")
        job = _integer(_field(t, "job", what), f"{what} job")
        raw_preds = _field(t, "preds", what)
        if isinstance(raw_preds, (str, bytes)) or not isinstance(raw_preds, Iterable):
            raise ValueError(f"{what} preds must be a list of task indices, got {raw_preds!r}")
        preds: list[int] = []
        for p_raw in raw_preds:
            p = _integer(p_raw, f"{what} predecessor")
            if p < 0:
                raise ValueError(f"{what} has a negative predecessor index {p}")
            if p >= i:
                raise ValueError(
                    f"{what} has predecessor {p}, which is not smaller than its own "
                    f"index (predecessors must have smaller indices)"
                )
            if out[p].job != job:
                raise ValueError(
                    f"{what} (job {job}) has predecessor {p} from another job "
                    f"({out[p].job})"
                )
            if p not in preds:
                preds.append(p)
        if out:
            prev = out[-1]
            if job != prev.job:
                if job in seen_jobs:
                    raise ValueError(
                        f"{what}: the tasks of job {job} are not contiguous"
                    )
                if arrival < prev.arrival:
                    raise ValueError(
                        f"{what}: job {job} arrives at {arrival!r}, before the "
                        f"previous job {prev.job} ({prev.arrival!r}); jobs must be "
                        f"in nondecreasing arrival order"
                    )
            elif arrival != prev.arrival:
                raise ValueError(
                    f"{what}: arrival {arrival!r} differs from the arrival "
                    f"{prev.arrival!r} of the other tasks of job {job}"
                )
        seen_jobs.add(job)
        out.append(
            _Task(size=size, work=work, arrival=arrival, deadline=deadline,
                  preds=tuple(preds), job=job)
        )
    if not out:
        raise ValueError("there must be at least one task")
    return out


def _uniform_source(
    uniforms: Iterable[float] | None, seed: Any
) -> Callable[[], float]:
    """A function returning the next u in [0, 1] for a random dispatch."""
    if uniforms is None:
        rng = random.Random(seed)
        return rng.random
    it: Iterator[Any] = iter(uniforms)
    count = 0

    def draw() -> float:
        nonlocal count
        try:
            raw = next(it)
        except StopIteration:
            raise ValueError(
                f"uniforms exhausted after {count} random dispatch decisions"
            ) from None
        u = _number(raw, f"uniform number {count}")
        if not (0.0 <= u <= 1.0):
            raise ValueError(f"uniform number {count} is {u!r}, outside [0, 1]")
        count += 1
        return u

    return draw


# --------------------------------------------------------------------------
# Heuristics
# --------------------------------------------------------------------------


def _schedule_key(
    schedule: str, i: int, n: int, tasks: list[_Task], servers: list[_Server],
    arrive: list[float], t: float, rank: list[float] | None,
) -> tuple[float, int]:
    """Sort key of queued task ``i`` on server ``n`` at epoch ``t``; the smallest
    is picked (``rank`` is the instance's upward rank, needed by ``cp`` only)."""
    if schedule == "fcfs":
        return (arrive[i], i)
    if schedule == "sjf":
        return (tasks[i].work / servers[n].cpu, i)
    if schedule == "sdf":
        return (tasks[i].deadline, i)
    if schedule in ("cp", "oct"):
        assert rank is not None  # the upward rank for cp, PEFT's oct rank for oct
        return (-rank[i], i)  # largest rank first; negation is exact
    # llf: laxity, evaluated in the order docs/model.md writes it
    return ((tasks[i].deadline - t) - tasks[i].work / servers[n].cpu, i)


def _sum_left_to_right(values: Iterable[float]) -> float:
    """``(v[0] + v[1]) + v[2] ...`` (``builtins.sum`` may compensate on new Pythons)."""
    acc: float | None = None
    for v in values:
        acc = v if acc is None else acc + v
    if acc is None:
        raise ValueError("nothing to sum")
    return acc


def _upward_rank(servers: list[_Server], tasks: list[_Task]) -> list[float]:
    """HEFT's ``rank_u`` of validated records (docs/model.md, ``cp``)."""
    m = len(servers)
    if m > 1:
        cbar = 2.0 * (_sum_left_to_right(s.k for s in servers) / m)
    else:
        cbar = 0.0  # one server: nothing is ever relayed
    succs = _successors(tasks)
    rank = [0.0] * len(tasks)
    for i in range(len(tasks) - 1, -1, -1):  # successors have larger indices
        w = tasks[i].work
        wbar = _sum_left_to_right(w / s.cpu for s in servers) / m
        if succs[i]:
            tail = -_INF
            for s_ in succs[i]:
                c = cbar + rank[s_]
                if c > tail:
                    tail = c
            rank[i] = wbar + tail
        else:
            rank[i] = wbar
    return rank


def _bound_done(servers: list[_Server], tasks: list[_Task]) -> list[float]:
    """``bound_done`` of validated records (docs/model.md, contention-free bound)."""
    n_srv = len(servers)
    f: list[list[float]] = []  # f[i][n]
    out: list[float] = []
    for tsk in tasks:
        row: list[float] = []
        for n, sv in enumerate(servers):
            up = (tsk.arrival + sv.k) + tsk.size / sv.bw
            ready = -_INF
            for p in tsk.preds:
                best = _INF
                for m in range(n_srv):
                    fp = f[p][m]
                    a = fp if m == n else (fp + servers[m].k) + sv.k
                    if a < best:
                        best = a
                if best > ready:
                    ready = best
            row.append(max(up, ready) + tsk.work / sv.cpu)
        f.append(row)
        bd = _INF
        for n, sv in enumerate(servers):
            d = row[n] + sv.k
            if d < bd:
                bd = d
        out.append(bd)
    return out


def _successors(tasks: list[_Task]) -> list[list[int]]:
    succs: list[list[int]] = [[] for _ in tasks]
    for i, tsk in enumerate(tasks):
        for p in tsk.preds:
            succs[p].append(i)
    return succs


def _optimistic_costs(servers: list[_Server], tasks: list[_Task]) -> list[list[float]]:
    """PEFT's ``OCT[i][n]`` of validated records (docs/model.md, "The EFT family")."""
    m = len(servers)
    succs = _successors(tasks)
    table = [[0.0] * m for _ in tasks]
    for i in range(len(tasks) - 1, -1, -1):  # successors have larger indices
        for n in range(m):
            worst = 0.0
            for s_ in succs[i]:
                best = _INF
                for w in range(m):
                    relay = 0.0 if w == n else servers[n].k + servers[w].k
                    c = (table[s_][w] + tasks[s_].work / servers[w].cpu) + relay
                    if c < best:
                        best = c
                if best > worst:
                    worst = best
            table[i][n] = worst
    return table


def _oct_rank(servers: list[_Server], table: list[list[float]]) -> list[float]:
    return [_sum_left_to_right(row) / len(servers) for row in table]


def optimistic_cost_table(
    servers: Sequence[Mapping[str, Any]], tasks: Sequence[Mapping[str, Any]]
) -> list[list[float]]:
    """PEFT's optimistic cost table ``OCT[i][n]`` (time units):
    ``max over successors s of min over servers w of
    ((OCT[s][w] + work[s] / cpu[w]) + c)``, ``c = 0.0`` if ``w == n`` else
    ``k[n] + k[w]``; ``0.0`` without successors. Inputs as for ``simulate``."""
    srv = _validate_servers(servers)
    return _optimistic_costs(srv, _validate_tasks(tasks, srv))


def oct_rank(
    servers: Sequence[Mapping[str, Any]], tasks: Sequence[Mapping[str, Any]]
) -> list[float]:
    """PEFT's priority of every task: ``(OCT[i][0] + OCT[i][1] + ...) / M`` (left to
    right); ``oct`` scheduling runs the largest first. Inputs as for ``simulate``."""
    srv = _validate_servers(servers)
    return _oct_rank(srv, _optimistic_costs(srv, _validate_tasks(tasks, srv)))


def _eft_params(eft: Mapping[str, Any] | None) -> dict[str, Any]:
    """``EFT_DEFAULTS`` updated with ``eft``, checked (ValueError naming a bad entry)."""
    out = dict(EFT_DEFAULTS)
    for key, value in (eft or {}).items():
        if key not in out:
            raise ValueError(f"unknown eft parameter {key!r}; expected {sorted(out)}")
        out[key] = value
    for key, allowed in _EFT_CHOICES.items():
        if out[key] not in allowed:
            raise ValueError(f"eft {key} must be one of {allowed}, got {out[key]!r}")
    for key in ("relay", "lookahead"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < _INF:
            raise ValueError(f"eft {key} must be a finite number >= 0, got {v!r}")
        out[key] = float(v)
    return out


def upward_rank(
    servers: Sequence[Mapping[str, Any]], tasks: Sequence[Mapping[str, Any]]
) -> list[float]:
    """HEFT's upward rank of every task (time units), as ``cp`` uses it.

    ``rank[i] = wbar[i] + max over successors s of (cbar + rank[s])`` (just
    ``wbar[i]`` without successors), where
    ``wbar[i] = (work[i]/cpu[0] + work[i]/cpu[1] + ...) / M`` and
    ``cbar = 2.0 * ((k[0] + k[1] + ...) / M)``, or ``0.0`` with one server;
    sums left to right in server order. Inputs as for ``simulate`` (validated
    the same way).
    """
    srv = _validate_servers(servers)
    return _upward_rank(srv, _validate_tasks(tasks, srv))


def contention_free_bound(
    servers: Sequence[Mapping[str, Any]], tasks: Sequence[Mapping[str, Any]]
) -> list[float]:
    """``bound_done[i]`` of every task (time units): docs/model.md's bound.

    In task index order, for every server ``n``:
    ``up[i, n] = (arrival[i] + k[n]) + size[i] / bw[n]``;
    ``R[i, n]`` = max over predecessors ``p`` of the min over servers ``m`` of
    ``f[p, m]`` if ``m == n`` else ``(f[p, m] + k[m]) + k[n]`` (``-inf``
    without predecessors); ``f[i, n] = max(up[i, n], R[i, n]) + work[i] / cpu[n]``;
    and ``bound_done[i] = min over n of (f[i, n] + k[n])``. Every ``simulate``
    run has ``done[i] >= bound_done[i]``. Inputs as for ``simulate`` (validated
    the same way).
    """
    srv = _validate_servers(servers)
    return _bound_done(srv, _validate_tasks(tasks, srv))


def bound_response(
    servers: Sequence[Mapping[str, Any]], tasks: Sequence[Mapping[str, Any]]
) -> float:
    """The episode's mean bound response (time units):
    ``((bound_done[0] - arrival[0]) + (bound_done[1] - arrival[1]) + ...) / N``,
    summed left to right in task order (the ``bound`` row of ``eval.compare``
    averages this over episodes). Inputs as for ``simulate``."""
    srv = _validate_servers(servers)
    tk = _validate_tasks(tasks, srv)
    bd = _bound_done(srv, tk)
    return _sum_left_to_right(bd[i] - tk[i].arrival for i in range(len(tk))) / len(tk)


# --------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------


def simulate(
    servers: Sequence[Mapping[str, Any]],
    tasks: Sequence[Mapping[str, Any]],
    *,
    queue_capacity: int,
    dispatch: str,
    schedule: str,
    uniforms: Iterable[float] | None = None,
    seed: Any = None,
    eft: Mapping[str, Any] | None = None,
) -> ReferenceResult:
    """Run one episode with the given heuristics and return its results.

    Args:
        servers: mappings with ``cpu`` (work units per time unit), ``bw`` (data
            units per time unit), ``mem`` (data units) and ``k`` (time units).
        tasks: mappings with ``size`` (data units), ``work`` (work units,
            defaults to ``size``), ``arrival`` and ``deadline`` (absolute, time
            units), ``preds`` (global indices, each smaller than the task's) and
            ``job`` (int; jobs contiguous, in nondecreasing arrival order).
        queue_capacity: ``Q >= 1`` queue slots per server.
        dispatch: ``"nearest"``, ``"random"``, ``"least_load"`` or ``"eft"``
            (earliest estimated result time, docs/model.md).
        schedule: ``"fcfs"``, ``"sjf"``, ``"sdf"``, ``"cp"`` (highest upward
            rank first, see ``upward_rank``), ``"llf"`` (least laxity
            ``(deadline - t) - work / cpu`` first) or ``"oct"`` (highest
            ``oct_rank`` first, PEFT's priority).
        uniforms: for ``random``, the numbers ``u`` in [0, 1) to use, one per
            dispatch decision; if None, ``random.Random(seed).random()``.
        seed: seed of the fallback generator for ``random``.
        eft: for ``eft``, the design choices that differ from ``EFT_DEFAULTS``
            (docs/model.md, "The EFT family"): ``holders`` (``"queued"`` or
            ``"alone"``), ``wait`` (``"chain"``, ``"load"``, ``"ahead"``,
            ``"insert"``), ``relay`` and ``lookahead`` (numbers >= 0).

    Raises:
        ValueError: for an invalid instance, capacity, heuristic name, or
            exhausted ``uniforms``.
        RuntimeError: if the simulation stalls or passes its step cap (a bug
            guard; it never loops forever).
    """
    if dispatch not in DISPATCHERS:
        raise ValueError(
            f"unknown dispatch heuristic {dispatch!r}; expected one of {DISPATCHERS}"
        )
    if schedule not in SCHEDULERS:
        raise ValueError(
            f"unknown scheduling heuristic {schedule!r}; expected one of {SCHEDULERS}"
        )
    q_cap = _integer(queue_capacity, "queue_capacity")
    if q_cap < 1:
        raise ValueError(f"queue_capacity must be >= 1, got {q_cap}")
    srv = _validate_servers(servers)
    tk = _validate_tasks(tasks, srv)
    draw = _uniform_source(uniforms, seed) if dispatch == "random" else None
    ep = _eft_params(eft)
    octs = (_optimistic_costs(srv, tk)
            if schedule == "oct" or (dispatch == "eft" and ep["lookahead"] != 0.0)
            or (dispatch == "eft" and ep["wait"] == "ahead") else None)
    upward = _upward_rank(srv, tk) if schedule == "cp" or ep["wait"] == "ahead" else None
    priority = {"cp": upward, "oct": _oct_rank(srv, octs) if octs is not None else None}
    rank = priority.get(schedule)

    n_tasks, n_srv = len(tk), len(srv)
    cpu = [s.cpu for s in srv]
    kk = [s.k for s in srv]

    server = [-1] * n_tasks
    dispatch_time = [_INF] * n_tasks
    arrive = [_INF] * n_tasks
    start = [_INF] * n_tasks
    finish = [_INF] * n_tasks
    done = [_INF] * n_tasks
    # max(arrive, ready) once every predecessor has started, else None.
    eligible_at: list[float | None] = [None] * n_tasks

    mem_free = [s.mem for s in srv]
    queued: list[list[int]] = [[] for _ in range(n_srv)]  # slot holders, by index
    running: list[int | None] = [None] * n_srv
    head = 0
    n_dispatches = 0
    n_picks = 0
    epoch_times: list[float] = []
    step_cap = 2 * n_tasks + 2

    def eligibility_time(i: int) -> float:
        """``max(arrive[i], ready[i])``, or inf while a predecessor has not started."""
        e = eligible_at[i]
        if e is not None:
            return e
        n = server[i]
        ready = -_INF
        for p in tk[i].preds:
            if start[p] == _INF:
                return _INF
            m = server[p]
            avail = finish[p] if m == n else (finish[p] + kk[m]) + kk[n]
            if avail > ready:
                ready = avail
        e = max(arrive[i], ready)
        eligible_at[i] = e
        return e

    def feasible_servers(h: int) -> list[int]:
        size = tk[h].size
        return [
            n for n in range(n_srv)
            if mem_free[n] >= size and len(queued[n]) < q_cap
        ]

    def least_load(n: int, t: float) -> float:
        r = running[n]
        rem = 0.0 if r is None else tk[r].work - (t - start[r]) * cpu[n]
        q = 0.0
        for i in queued[n]:  # increasing task index
            q += tk[i].work
        return (rem + q) / cpu[n]

    def inputs_at(i: int, n: int, f_of: Callable[[int], float]) -> float:
        """``R_n[i]`` of EFT: inputs of ``i`` available on ``n`` (``-inf`` if none)."""
        ready = -_INF
        for p in tk[i].preds:
            m = server[p]
            fp = f_of(p)
            avail = fp if m == n else (fp + kk[m]) + kk[n]
            if avail > ready:
                ready = avail
        return ready

    def ahead_key(i: int, n: int, at_server: float) -> float:
        """The order key of ``i`` on ``n`` under the scheduling rule in use, for the
        ``ahead`` wait (``at_server``: its arrival there; ``llf`` without ``t``)."""
        if schedule == "fcfs":
            return at_server
        if schedule == "sjf":
            return tk[i].work / cpu[n]
        if schedule == "sdf":
            return tk[i].deadline
        if schedule == "llf":
            return tk[i].deadline - tk[i].work / cpu[n]
        ranks = priority[schedule]
        assert ranks is not None
        return -ranks[i]

    def eft_choice(feasible: list[int], t: float) -> int:
        """Smallest estimated done time ``E[n]`` of the head task (docs/model.md, "EFT
        dispatch" and "The EFT family")."""
        h = head
        est: dict[int, float] = {}  # F of the slot holders that inputs are read from
        chain: dict[int, tuple[float, float]] = {}  # each holder's (start, finish) on paper

        def f_of(p: int) -> float:
            return finish[p] if start[p] != _INF else est[p]

        # free[m], then F of m's latest slot holder played so far (prev / the chain's end).
        free = [t if running[m] is None else finish[running[m]] for m in range(n_srv)]
        last = list(free)
        holders = sorted(i for m in range(n_srv) for i in queued[m])
        for p in holders:  # increasing global index: predecessors come first
            m = server[p]
            ready_p = max(arrive[p], inputs_at(p, m, f_of))
            s_p = max(ready_p, last[m])
            f_p = s_p + tk[p].work / cpu[m]
            chain[p] = (s_p, f_p)
            est[p] = f_p if ep["holders"] == "queued" else max(ready_p, free[m]) + tk[p].work / cpu[m]
            last[m] = f_p
        best_n, best_e = -1, _INF
        for n in feasible:  # increasing server index: strict < keeps the lowest
            a = (t + kk[n]) + tk[h].size / srv[n].bw
            earliest = max(a, inputs_at(h, n, f_of))
            run = tk[h].work / cpu[n]
            wait = ep["wait"]
            if wait == "chain":
                s_h = max(earliest, last[n])
            elif wait in ("load", "ahead"):
                mine = ahead_key(h, n, a) if wait == "ahead" else 0.0
                work = 0.0
                for i in queued[n]:  # increasing task index
                    if wait == "load" or ahead_key(i, n, arrive[i]) <= mine:
                        work += tk[i].work
                s_h = max(earliest, free[n] + work / cpu[n])
            else:  # insert: the earliest idle gap of the chain that fits, else its end
                s_h = max(earliest, last[n])
                prev = free[n]
                for i in queued[n]:
                    c = max(earliest, prev)
                    if c + run <= chain[i][0]:
                        s_h = c
                        break
                    prev = chain[i][1]
            e = (s_h + run) + ep["relay"] * kk[n]
            if ep["lookahead"] != 0.0:
                assert octs is not None
                e = e + ep["lookahead"] * octs[h][n]
            if best_n < 0 or e < best_e:
                best_n, best_e = n, e
        return best_n

    def choose_server(feasible: list[int], t: float) -> int:
        if dispatch == "nearest":
            return min(feasible, key=lambda n: (kk[n], n))
        if dispatch == "least_load":
            return min(feasible, key=lambda n: (least_load(n, t), n))
        if dispatch == "eft":
            return eft_choice(feasible, t)
        assert draw is not None
        u = draw()
        c = len(feasible)
        return feasible[min(math.floor(u * c), c - 1)]

    def next_epoch(t: float) -> float:
        """Earliest time >= t at which a decision is needed (inf if never)."""
        best = _INF
        if head < n_tasks:
            h = tk[head]
            for n in range(n_srv):
                if len(queued[n]) >= q_cap:
                    continue
                if mem_free[n] >= h.size:
                    cand = max(t, h.arrival)
                else:
                    r = running[n]
                    # Memory after r completes (all of it if nothing else is held).
                    freed = (srv[n].mem if not queued[n]
                             else mem_free[n] + tk[r].size) if r is not None else 0.0
                    if r is not None and freed >= h.size:
                        cand = max(t, h.arrival, finish[r])
                    else:
                        continue
                if cand < best:
                    best = cand
        for n in range(n_srv):
            if not queued[n]:
                continue
            r = running[n]
            idle = t if r is None else finish[r]
            earliest = min(eligibility_time(i) for i in queued[n])
            cand = max(idle, earliest)
            if cand < best:
                best = cand
        return best

    t = tk[0].arrival
    while True:
        if len(epoch_times) >= step_cap:
            raise RuntimeError(
                f"step cap {step_cap} reached at t={t!r} with {n_tasks} tasks "
                f"(head {head}); this is a bug"
            )
        # ---- decisions needed at t (both judged on the state before any) ----
        feasible: list[int] = []
        if head < n_tasks and tk[head].arrival <= t:
            feasible = feasible_servers(head)
        picks: list[tuple[int, list[int]]] = []
        for n in range(n_srv):
            if running[n] is None and queued[n]:
                elig = [i for i in queued[n] if eligibility_time(i) <= t]
                if elig:
                    picks.append((n, elig))
        if not feasible and not picks:
            raise RuntimeError(f"no decision needed at epoch t={t!r}; this is a bug")
        epoch_times.append(t)

        # ---- 1. dispatch the head task ----
        if feasible:
            i = head
            n = choose_server(feasible, t)
            server[i] = n
            dispatch_time[i] = t
            arrive[i] = (t + kk[n]) + tk[i].size / srv[n].bw
            mem_free[n] -= tk[i].size
            queued[n].append(i)  # indices increase, so the list stays sorted
            head += 1
            n_dispatches += 1

        # ---- 2. every server that needs a pick starts one eligible task ----
        for n, elig in picks:
            i = min(elig, key=lambda j: _schedule_key(
                schedule, j, n, tk, srv, arrive, t, rank))
            queued[n].remove(i)
            running[n] = i
            start[i] = t
            finish[i] = t + tk[i].work / cpu[n]
            done[i] = finish[i] + kk[n]
            n_picks += 1

        if head == n_tasks and not any(queued):
            break  # every task started: no decision will ever be needed again

        # ---- advance to the next epoch, applying completions up to it ----
        t_next = next_epoch(t)
        if t_next == _INF:
            raise RuntimeError(
                f"simulation stalled at t={t!r}: head task {head} can never be "
                f"dispatched and no queued task can ever start (memory freed "
                f"incrementally may have drifted below a task's size)"
            )
        if t_next < t:
            raise RuntimeError(f"clock went back from {t!r} to {t_next!r}; this is a bug")
        for n in range(n_srv):
            r = running[n]
            if r is not None and finish[r] <= t_next:
                mem_free[n] += tk[r].size
                running[n] = None
                if not queued[n]:
                    # Nothing holds memory on n: drop any rounding drift (docs/model.md).
                    mem_free[n] = srv[n].mem
        t = t_next

    response = [done[i] - tk[i].arrival for i in range(n_tasks)]
    missed = [done[i] > tk[i].deadline for i in range(n_tasks)]
    end_time = max(done)
    metrics = compute_metrics(
        servers=srv, tasks=tk, server=server, start=start, finish=finish,
        done=done, end_time=end_time,
    )
    return ReferenceResult(
        server=server,
        dispatch_time=dispatch_time,
        arrive=arrive,
        start=start,
        finish=finish,
        done=done,
        response=response,
        missed=missed,
        num_steps=len(epoch_times),
        num_decisions=n_dispatches + n_picks,
        end_time=end_time,
        epoch_times=epoch_times,
        metrics=metrics,
    )


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def compute_metrics(
    *,
    servers: Sequence[Any],
    tasks: Sequence[Any],
    server: Sequence[int],
    start: Sequence[float],
    finish: Sequence[float],
    done: Sequence[float],
    end_time: float,
) -> dict[str, float]:
    """Episode metrics of docs/model.md (times in time units).

    ``servers`` and ``tasks`` are validated records (attributes ``arrival``,
    ``deadline``, ``job``) as built by ``simulate``. Sums run left to right in
    task (or job, or server) index order:

    * ``avg_response_time``: mean of ``done - arrival``;
    * ``deadline_miss_rate``: share of tasks with ``done > deadline``;
    * ``makespan``: mean over jobs of ``max done - arrival`` of the job;
    * ``utilisation``: mean over servers of busy time / ``end_time``, the busy
      time being the sum of ``finish - start`` of the server's tasks;
    * ``fairness``: Jain's index ``(sum T)^2 / (N * sum T^2)``;
    * ``end_time``: ``max done`` (repeated here so every metric is in one dict).
    """
    n_tasks = len(tasks)
    resp = [done[i] - tasks[i].arrival for i in range(n_tasks)]
    misses = sum(1 for i in range(n_tasks) if done[i] > tasks[i].deadline)

    job_end: dict[int, float] = {}
    job_arrival: dict[int, float] = {}
    for i, tsk in enumerate(tasks):
        job_arrival.setdefault(tsk.job, tsk.arrival)
        job_end[tsk.job] = max(job_end.get(tsk.job, -_INF), done[i])
    spans = [job_end[j] - job_arrival[j] for j in job_end]  # insertion = job order

    busy = [0.0] * len(servers)
    for i in range(n_tasks):
        busy[server[i]] += finish[i] - start[i]
    util = [b / end_time for b in busy] if end_time > 0 else [0.0] * len(busy)

    total = sum(resp)
    total_sq = sum(x * x for x in resp)
    fairness = (total * total) / (n_tasks * total_sq) if total_sq > 0 else 1.0

    return {
        "avg_response_time": total / n_tasks,
        "deadline_miss_rate": misses / n_tasks,
        "makespan": sum(spans) / len(spans),
        "utilisation": sum(util) / len(util),
        "fairness": fairness,
        "end_time": end_time,
    }
