"""The instance file format and its validation: the spec model (`InstanceSpec`,
`ServerSpec`, `JobSpec`, `TaskSpec`), `parse_instance` (a
decoded JSON object -> a validated spec), `check_times` (the times' range and
precision in a float type) and `InstanceError`.

Plain Python and numpy only (no JAX). Reading and writing the files:
`damdjax.envs.instance_io`; a spec as the simulators' inputs (environment order, padded
arrays): `damdjax.envs.instance_padding`.

File format (docs/model.md, "Instance files")::

    {"name": "trace-2024-05", "meta": {"source": "cluster A"},      (optional)
     "servers": [{"cpu": 1, "bw": 10, "mem": 100, "k": 0.5}, ...],
     "jobs": [{"arrival": 0, "name": "etl-17",                       (optional)
               "tasks": [{"size": 2, "work": 2, "deadline": 10},
                         {"size": 4, "deadline": 12, "preds": [0]}, ...]},
              ...]}

Required keys: `servers` and `jobs` (top level), `cpu`, `bw`, `mem`, `k`
(server), `arrival` and `tasks` (job), `size` and `deadline` (task).
Optional: `work` (defaults to `size`) and `preds` (defaults to no
predecessors; a present `preds` must be a list) on a task; `name` (a string)
and `meta` (any JSON value: object, list, string, number, boolean or null;
no NaN or infinity) on the top-level object, a server, a job and a task.
Any other key is an error (a misspelt key is never silently ignored).

Units: `cpu` work units per time unit, `bw` data units per time unit, `mem`
and `size` data units, `work` work units (defaults to `size`), `k`,
`arrival` and `deadline` time units (`deadline` absolute). `preds` are
*positions inside the same job* (0-based, in file order).

`name` and `meta` are free-form labels (say, where a converted real trace
came from). The simulators ignore them: they are kept in the specs (the
`name` / `meta` fields of `InstanceSpec`, `ServerSpec`,
`JobSpec`, `TaskSpec`, None when absent), written back by
`damdjax.envs.instance_io` (omitted when None), and take no part in the
simulators' inputs (`damdjax.envs.instance_padding`), so its `spec_from_arrays`
cannot recover them. `meta` is kept as a fresh copy in plain JSON form (lists,
dicts, str, int, float, bool, None; a tuple given to `parse_instance`
becomes a list); `"meta": null` is the same as no `meta`, while `"name": null`
is an error.

An `InstanceSpec` is kept exactly in file order (jobs as listed, tasks
of a job as listed), so it round-trips with the file. A predecessor may sit at
a later position in the file than its successor, as long as the job has no
cycle; jobs must be listed in nondecreasing arrival order.

Everything invalid raises `InstanceError` (a ValueError) with a
one-line message naming the job and task (positions in the file), or the
server, and the offending value.
"""

from __future__ import annotations

import decimal
import heapq
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "InstanceError",
    "ServerSpec",
    "TaskSpec",
    "JobSpec",
    "InstanceSpec",
    "parse_instance",
    "check_times",
    "PRECISION_BITS",
]

_SERVER_KEYS = ("cpu", "bw", "mem", "k")
_JOB_KEYS = ("arrival", "tasks")
_TASK_KEYS = ("size", "work", "deadline", "preds")
_TASK_REQUIRED = ("size", "deadline")
_TOP_KEYS = ("servers", "jobs")
# Optional free-form labels allowed on every level (ignored by the simulators).
_LABEL_KEYS = ("name", "meta")


class InstanceError(ValueError):
    """An invalid instance (file, JSON object, spec or arrays)."""


# --------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """One server: `cpu` work/time, `bw` data/time, `mem` data, `k` time (AP delay)."""

    cpu: float
    bw: float
    mem: float
    k: float
    name: str | None = None
    meta: Any = field(default=None, hash=False)


@dataclass(frozen=True)
class TaskSpec:
    """One task: `size` data, `work` work units, `deadline` absolute time,
    `preds` positions (in file order) of its predecessors inside its job.
    `name` / `meta`: optional free-form labels (ignored by the simulators)."""

    size: float
    work: float
    deadline: float
    preds: tuple[int, ...]
    name: str | None = None
    meta: Any = field(default=None, hash=False)


@dataclass(frozen=True)
class JobSpec:
    """One job: `arrival` time at the AP and its tasks, in file order.
    `name` / `meta`: optional free-form labels (ignored by the simulators)."""

    arrival: float
    tasks: tuple[TaskSpec, ...]
    name: str | None = None
    meta: Any = field(default=None, hash=False)


@dataclass(frozen=True)
class InstanceSpec:
    """A whole instance in file order: servers and jobs (nondecreasing arrival).
    `name` / `meta`: optional free-form labels (ignored by the simulators).

    `name` and `meta` take part in `==` (so a round trip keeps them) but not in
    `hash` (`meta` may hold lists and dicts)."""

    servers: tuple[ServerSpec, ...]
    jobs: tuple[JobSpec, ...]
    name: str | None = None
    meta: Any = field(default=None, hash=False)
    # The file's first arrival: the spec's times are the file's minus it (docs/model.md,
    # "Instance files"). Kept for reporting; not part of `==` (the same instance).
    time_offset: float = field(default=0.0, compare=False)

    @property
    def num_servers(self) -> int:
        """`M`, the number of servers."""
        return len(self.servers)

    @property
    def num_tasks(self) -> int:
        """`N`, the number of tasks over all jobs."""
        return sum(len(job.tasks) for job in self.jobs)


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """A short one-line rendering of a bad value for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _finite(value: Any, where: str, key: str) -> float:
    """`value` as a finite float (bools, strings, NaN and infinities refused; a Decimal,
    as `load_instance` reads JSON numbers, rounded once)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal)):
        raise InstanceError(f"{where}: {key} must be a finite number, got {_show(value)}")
    try:
        x = float(value)
    except (OverflowError, ValueError, TypeError):
        x = math.inf
    if not math.isfinite(x):
        raise InstanceError(f"{where}: {key} must be a finite number, got {_show(value)}")
    return x


# Decimal digits that make `a - b` (then rounded to a float) correctly rounded: every
# float and every midpoint between two floats has at most about 770 significant digits, and
# rounding to 1100 digits towards zero, unless that leaves a last digit 0 or 5
# (ROUND_05UP, the decimal "round to odd"), keeps the result on the exact difference's
# side of each midpoint. Unlike exact arithmetic (MAX_PREC), it takes bounded time and
# memory for literals far apart in exponent (`1e-999999999` against `5`).
_TIME_CONTEXT = decimal.Context(prec=1100, rounding=decimal.ROUND_05UP,
                                Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                                traps=[decimal.InvalidOperation])


def _time(value: Any, where: str, key: str, offset: decimal.Decimal) -> float:
    """A time of the file (`arrival`, `deadline`) minus `offset`, rounded once to a float
    as if computed exactly (so a large common offset costs no precision)."""
    _finite(value, where, key)
    with decimal.localcontext(_TIME_CONTEXT):
        return float(_exact(value) - offset)


def _exact(value: Any) -> decimal.Decimal:
    """A finite JSON number as an exact Decimal (a float's exact binary value)."""
    if isinstance(value, (int, float, decimal.Decimal)):
        return decimal.Decimal(value)
    return decimal.Decimal(float(value))


def _positive(value: Any, where: str, key: str) -> float:
    x = _finite(value, where, key)
    if not x > 0.0:
        raise InstanceError(f"{where}: {key} must be > 0, got {x!r}")
    return x


def _object(value: Any, where: str, keys: Sequence[str], required: Sequence[str]) -> Mapping:
    """Check that `value` is a mapping with all `required` keys and no key
    outside `keys` and the optional labels `name`, `meta`."""
    if not isinstance(value, Mapping):
        raise InstanceError(
            f"{where}: must be an object with keys {', '.join(keys)}, got {_type_name(value)}")
    allowed = tuple(keys) + _LABEL_KEYS
    unknown = [key for key in value if key not in allowed]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise InstanceError(
            f"{where}: unknown key{plural} {', '.join(_show(u) for u in unknown)} "
            f"(allowed: {', '.join(allowed)})")
    for key in required:
        if key not in value:
            raise InstanceError(f"{where}: missing required key {key!r}")
    return value


def _json_value(value: Any, where: str, at: str) -> Any:
    """A fresh plain-JSON copy of `value` (dict, list, str, int, float, bool, None).

    Refuses NaN and infinities, non-string object keys and anything that JSON
    cannot hold, naming the place inside `meta` (`at`).
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, (numbers.Real, decimal.Decimal)):
        try:
            x = float(value)
        except (OverflowError, ValueError, TypeError):
            x = math.inf
        if not math.isfinite(x):
            raise InstanceError(
                f"{where}: meta must be plain JSON, got {_show(value)} at {at} "
                f"(NaN and infinities are not JSON)")
        return x
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InstanceError(
                    f"{where}: meta must be plain JSON, got the non-string key "
                    f"{_show(key)} at {at}")
            out[key] = _json_value(item, where, f"{at}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_json_value(item, where, f"{at}[{i}]") for i, item in enumerate(value)]
    raise InstanceError(
        f"{where}: meta must be plain JSON, got {type(value).__name__} {_show(value)} at {at}")


def _labels(obj: Mapping, where: str) -> dict[str, Any]:
    """The optional `name` (a string) and `meta` (plain JSON) of `obj`, None when absent."""
    name = obj.get("name")
    if "name" in obj and not isinstance(name, str):
        raise InstanceError(f"{where}: name must be a string, got {_show(name)}")
    meta = None
    if "meta" in obj:
        try:
            meta = _json_value(obj["meta"], where, "meta")
        except RecursionError:
            raise InstanceError(f"{where}: meta is nested too deeply") from None
    return {"name": name, "meta": meta}


def _list(value: Any, where: str, what: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise InstanceError(f"{where}: {what} must be a list, got {_type_name(value)}")
    return list(value)


def _find_cycle(preds: Sequence[Sequence[int]], nodes: set[int]) -> list[int]:
    """A cycle (list of positions, first repeated at the end) among `nodes`.

    `nodes` are the positions left over by Kahn's algorithm: each has a
    predecessor inside `nodes`, so walking predecessors must revisit a node.
    """
    start = min(nodes)
    seen: dict[int, int] = {}
    path: list[int] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(p for p in preds[node] if p in nodes)
    cycle = path[seen[node]:]
    cycle.reverse()  # walked successor -> predecessor; report predecessor -> successor
    first = cycle.index(min(cycle))
    cycle = cycle[first:] + cycle[:first]
    return cycle + [cycle[0]]


def _topological(preds: Sequence[Sequence[int]]) -> tuple[list[int], set[int]]:
    """Stable Kahn's order of positions `0..L-1` and the set left over (cycles)."""
    n = len(preds)
    indegree = [len(p) for p in preds]
    succs: list[list[int]] = [[] for _ in range(n)]
    for i, ps in enumerate(preds):
        for p in ps:
            succs[p].append(i)
    ready = [i for i in range(n) if indegree[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for s in succs[i]:
            indegree[s] -= 1
            if indegree[s] == 0:
                heapq.heappush(ready, s)
    return order, set(range(n)) - set(order)


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


def _parse_server(n: int, raw: Any) -> ServerSpec:
    where = f"server {n}"
    obj = _object(raw, where, _SERVER_KEYS, _SERVER_KEYS)
    vals = {key: _positive(obj[key], where, key) for key in _SERVER_KEYS}
    return ServerSpec(**vals, **_labels(obj, where))


def _parse_task(j: int, t: int, raw: Any, num_tasks: int, max_mem: float,
                offset: decimal.Decimal = decimal.Decimal(0)) -> TaskSpec:
    where = f"job {j}, task {t}"
    obj = _object(raw, where, _TASK_KEYS, _TASK_REQUIRED)
    size = _positive(obj["size"], where, "size")
    work = _positive(obj["work"], where, "work") if "work" in obj else size
    deadline = _time(obj["deadline"], where, "deadline", offset)
    if size > max_mem:
        raise InstanceError(
            f"{where}: size {size!r} exceeds every server's memory (largest is "
            f"{max_mem!r}); it could never be dispatched")
    labels = _labels(obj, where)
    preds: list[int] = []
    for raw_p in _list(obj["preds"], where, "preds") if "preds" in obj else []:
        if isinstance(raw_p, bool) or not isinstance(raw_p, numbers.Integral):
            raise InstanceError(
                f"{where}: predecessor {_show(raw_p)} is not an integer position in the job")
        p = int(raw_p)
        if not 0 <= p < num_tasks:
            raise InstanceError(
                f"{where}: predecessor {p} does not exist (the job has {num_tasks} "
                f"task{'s' if num_tasks != 1 else ''})")
        if p == t:
            raise InstanceError(f"{where}: lists itself as a predecessor")
        if p in preds:
            raise InstanceError(f"{where}: predecessor {p} is listed twice")
        preds.append(p)
    return TaskSpec(size=size, work=work, deadline=deadline, preds=tuple(preds), **labels)


def _parse_job(j: int, raw: Any, max_mem: float,
               offset: decimal.Decimal = decimal.Decimal(0)) -> JobSpec:
    where = f"job {j}"
    obj = _object(raw, where, _JOB_KEYS, _JOB_KEYS)
    labels = _labels(obj, where)
    arrival = _finite(obj["arrival"], where, "arrival")
    if arrival < 0.0:
        raise InstanceError(f"{where}: arrival must be >= 0, got {arrival!r}")
    arrival = _time(obj["arrival"], where, "arrival", offset)
    raw_tasks = _list(obj["tasks"], where, "tasks")
    if not raw_tasks:
        raise InstanceError(f"{where}: has no tasks (every job needs at least one)")
    tasks = tuple(_parse_task(j, t, rt, len(raw_tasks), max_mem, offset)
                  for t, rt in enumerate(raw_tasks))
    preds = [task.preds for task in tasks]
    _, left = _topological(preds)
    if left:
        cycle = _find_cycle(preds, left)
        raise InstanceError(
            f"{where}: predecessors form a cycle: "
            + " -> ".join(f"task {c}" for c in cycle)
            + " (each task is a predecessor of the next)")
    return JobSpec(arrival=arrival, tasks=tasks, **labels)


def parse_instance(obj: Any) -> InstanceSpec:
    """Validate a decoded JSON instance and return its spec (file order kept).

    Raises:
        InstanceError: naming the server, or the job and task (file
            positions), and the offending value.
    """
    top = _object(obj, "instance", _TOP_KEYS, _TOP_KEYS)
    labels = _labels(top, "instance")
    raw_servers = _list(top["servers"], "instance", "'servers'")
    if not raw_servers:
        raise InstanceError("instance: 'servers' is empty (at least one server is needed)")
    servers = tuple(_parse_server(n, raw) for n, raw in enumerate(raw_servers))
    raw_jobs = _list(top["jobs"], "instance", "'jobs'")
    if not raw_jobs:
        raise InstanceError("instance: 'jobs' is empty (at least one task is needed)")
    max_mem = max(s.mem for s in servers)
    _parse_job(0, raw_jobs[0], max_mem)             # job 0 valid: its arrival is the offset
    offset = _exact(raw_jobs[0]["arrival"])
    jobs = tuple(_parse_job(j, raw, max_mem, offset) for j, raw in enumerate(raw_jobs))
    for j in range(1, len(jobs)):
        if jobs[j].arrival < jobs[j - 1].arrival:
            raise InstanceError(
                f"job {j}: arrives at {float(raw_jobs[j]['arrival'])!r}, before job {j - 1} "
                f"(arrives at {float(raw_jobs[j - 1]['arrival'])!r}); jobs must be listed in "
                f"nondecreasing arrival order")
    spec = InstanceSpec(servers=servers, jobs=jobs, **labels, time_offset=float(offset))
    check_times(spec, np.float64)
    return spec


PRECISION_BITS = 8    # bits of a typical task's duration kept at the instance's span


def check_times(spec: InstanceSpec, dtype: Any = np.float64) -> None:
    """Refuse (InstanceError, one line naming the server or the job and task) an instance
    whose derived times overflow or lose their precision in the float type `dtype`
    (docs/model.md, "Instance files"); times are the spec's, after the shift (first
    arrival 0).

    - Range: every delay `k[n]`, upload time `size / bw[n]` and processing time
      `work / cpu[n]` lies in [the smallest normal, the largest finite] of `dtype`
      (`mem` at most the largest finite), and the serial horizon (the last arrival plus,
      for every task, its longest upload and processing time and `4 max k`: a bound on
      any time the simulators compute, every task run one after another) is at most the
      square root of the largest finite, so the metrics' squares of response times
      (confidence intervals, fairness) stay finite too.
    - Precision: at the instance's span `H` (the largest `|deadline|` or arrival), the
      float spacing `H * eps` is at most `2**-PRECISION_BITS` (1/256) of the median task's
      processing time (on its fastest server): every time keeps about three significant
      digits of a typical task, so a schedule and a miss are decided as in exact
      arithmetic to about 0.4% rather than silently rounded away.
    """
    fi = np.finfo(dtype)
    name = np.dtype(dtype).name
    rng = f"[{fi.tiny:.3g}, {fi.max:.3g}]"
    k = np.array([s.k for s in spec.servers], np.float64)
    cpu = np.array([s.cpu for s in spec.servers], np.float64)
    bw = np.array([s.bw for s in spec.servers], np.float64)
    for n, kn in enumerate(k):
        if not fi.tiny <= kn <= fi.max:
            raise InstanceError(f"server {n}: k {float(kn)!r} is outside {name}'s range {rng}")
    for n, srv in enumerate(spec.servers):
        if not srv.mem <= fi.max:
            raise InstanceError(f"server {n}: mem {srv.mem!r} overflows {name} "
                                f"(largest {fi.max:.3g})")
    kmax = float(k.max())
    typical, own, total, span, s_where = [], [], 0.0, 0.0, ""
    with np.errstate(all="ignore"):
        for j, job in enumerate(spec.jobs):
            if abs(job.arrival) > span:
                span, s_where = abs(job.arrival), f"job {j}'s arrival"
            for t, task in enumerate(job.tasks):
                where = f"job {j}, task {t}"
                for what, num, den, key in (("upload time", task.size, bw, "size / bw"),
                                            ("processing time", task.work, cpu, "work / cpu")):
                    times = np.float64(num) / den
                    ok = (times >= fi.tiny) & (times <= fi.max)
                    for n, x in ([] if ok.all() else enumerate(times)):
                        if not fi.tiny <= x <= fi.max:
                            raise InstanceError(
                                f"{where}: {what} {key} = {num!r} / {float(den[n])!r} = "
                                f"{float(x):.3g} on server {n} is outside {name}'s range {rng}")
                    total += float(times.max())
                    own.append((f"{where}: longest {what}", float(times.max())))
                    if what == "processing time":
                        typical.append(float(times.min()))
                total += 4 * kmax
                if abs(task.deadline) > span:
                    span, s_where = abs(task.deadline), f"{where}'s deadline"
    serial = spec.jobs[-1].arrival + total
    if not serial <= np.sqrt(fi.max):
        parts = [(f"job {len(spec.jobs) - 1}: arrival", spec.jobs[-1].arrival),
                 (f"server {int(k.argmax())}: k", kmax)] + own
        where, value = max(parts, key=lambda x: x[1])
        raise InstanceError(
            f"{where} {value:.3g} puts the instance's serial horizon (the last arrival plus "
            f"every task's times) at {serial:.3g}, above {np.sqrt(fi.max):.3g}, where the "
            f"squares of response times overflow {name}")
    median = float(np.median(typical))
    if span * fi.eps > median * 2.0 ** -PRECISION_BITS:
        raise InstanceError(
            f"{s_where} {span:.6g} spans too much for {name}: its spacing there "
            f"({span * fi.eps:.3g}) exceeds 1/{2 ** PRECISION_BITS} of the median processing "
            f"time {median:.3g}; rescale the times or split the instance")
