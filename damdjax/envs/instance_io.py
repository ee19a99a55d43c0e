"""Instance files: JSON workloads <-> validated specs <-> the simulators' inputs.

Plain Python and numpy only (no JAX): both the reference simulator
(`damdjax.envs.reference`) and the JAX environment (`damdjax.envs.instance`) consume it.

File format (MODEL.md, "Instance files")::

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
`name` / `meta` fields of :class:`InstanceSpec`, :class:`ServerSpec`,
:class:`JobSpec`, :class:`TaskSpec`, None when absent), written back by
:func:`instance_to_json` / :func:`save_instance` (omitted when None), and
take no part in :func:`flat_tasks`, :func:`servers_list` or
:func:`padded_arrays`, so :func:`spec_from_arrays` cannot recover them.
`meta` is kept as a fresh copy in plain JSON form (lists, dicts, str, int,
float, bool, None; a tuple given to :func:`parse_instance` becomes a list);
`"meta": null` is the same as no `meta`, while `"name": null` is an error.

Writing: :func:`instance_to_json` always writes `work` and `preds` (`[]` for
a task without predecessors), so load -> save -> load gives an equal spec
and a saved file without names or meta is also valid for older readers.

Ordering decision. An :class:`InstanceSpec` is kept exactly in file order
(jobs as listed, tasks of a job as listed), so it round-trips with the file.
A predecessor may sit at a later position in the file than its successor, as
long as the job has no cycle. The environment needs every predecessor to have
a smaller global index, so :func:`flat_tasks` and :func:`padded_arrays`
number the tasks globally: jobs in file order (which must be nondecreasing
arrival order), each job's tasks contiguous and in the *stable* topological
order of :func:`job_order` (Kahn's algorithm always taking the smallest
ready file position; a job already in topological order keeps its file
order). Each global task carries `job` and `pos` (its position in the file),
and :func:`global_index` maps file positions to global indices, so outputs
can be reported in file order. `padded_arrays` also returns `pos`, so that
:func:`spec_from_arrays` restores the file order exactly.

Everything invalid raises :class:`InstanceError` (a ValueError) with a
one-line message naming the job and task (positions in the file), or the
server, and the offending value.
"""

from __future__ import annotations

import collections
import copy
import decimal
import heapq
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from damdjax.io import write_bytes_atomic  # standard-library leaf module

__all__ = [
    "InstanceError",
    "ServerSpec",
    "TaskSpec",
    "JobSpec",
    "InstanceSpec",
    "parse_instance",
    "load_instance",
    "save_instance",
    "instance_to_json",
    "job_order",
    "global_index",
    "flat_tasks",
    "servers_list",
    "padded_arrays",
    "spec_from_arrays",
    "max_job_size",
    "max_in_degree",
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


def _time(value: Any, where: str, key: str, offset: decimal.Decimal) -> float:
    """A time of the file (`arrival`, `deadline`) minus `offset`, computed exactly and
    rounded once (so a large common offset costs no precision)."""
    _finite(value, where, key)
    with decimal.localcontext(decimal.Context(prec=decimal.MAX_PREC)):
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


def _label_fields(spec: Any) -> dict[str, Any]:
    """`name` / `meta` of a spec as JSON keys, each omitted when None."""
    out: dict[str, Any] = {}
    if spec.name is not None:
        out["name"] = spec.name
    if spec.meta is not None:
        out["meta"] = copy.deepcopy(spec.meta)
    return out


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


def instance_to_json(spec: InstanceSpec) -> dict:
    """The JSON object of `spec` (file order).

    `work` and `preds` are always written (`"preds": []` for a task without
    predecessors); `name` and `meta` are written where they are not None
    (`name` first, `meta` after the level's own keys).
    """
    def server(s: ServerSpec) -> dict:
        out = {"name": s.name} if s.name is not None else {}
        out.update(cpu=s.cpu, bw=s.bw, mem=s.mem, k=s.k)
        if s.meta is not None:
            out["meta"] = copy.deepcopy(s.meta)
        return out

    def original(x: float) -> float:  # the file's time: the shift added back, rounded once
        if not spec.time_offset:
            return x
        with decimal.localcontext(decimal.Context(prec=decimal.MAX_PREC)):
            return float(decimal.Decimal(x) + decimal.Decimal(spec.time_offset))

    def task_(t: TaskSpec) -> dict:
        out = {"name": t.name} if t.name is not None else {}
        out.update(size=t.size, work=t.work, deadline=original(t.deadline),
                   preds=list(t.preds))
        if t.meta is not None:
            out["meta"] = copy.deepcopy(t.meta)
        return out

    def job_(job: JobSpec) -> dict:
        out = {"name": job.name} if job.name is not None else {}
        out["arrival"] = original(job.arrival)
        if job.meta is not None:
            out["meta"] = copy.deepcopy(job.meta)
        out["tasks"] = [task_(t) for t in job.tasks]
        return out

    top = _label_fields(spec)
    top["servers"] = [server(s) for s in spec.servers]
    top["jobs"] = [job_(job) for job in spec.jobs]
    return top


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise InstanceError(f"duplicate key {key!r} in a JSON object")
        out[key] = value
    return out


def load_instance(path: str | os.PathLike) -> InstanceSpec:
    """Read and validate a JSON instance file.

    Raises:
        InstanceError: prefixed with `path`, for a missing or unreadable
            file, invalid JSON, or an invalid instance.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise InstanceError(f"{os.fspath(path)}: no such instance file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InstanceError(f"{os.fspath(path)}: cannot read instance file: {e}") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys,
                         parse_float=decimal.Decimal)
    except json.JSONDecodeError as e:
        raise InstanceError(
            f"{os.fspath(path)}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except InstanceError as e:
        raise InstanceError(f"{os.fspath(path)}: {e}") from None
    try:
        return parse_instance(obj)
    except InstanceError as e:
        raise InstanceError(f"{os.fspath(path)}: {e}") from None


def _dumps(obj: dict) -> str:
    """JSON text with one server or task per line (valid JSON, easy to edit).

    The top-level and each job's `name` / `meta` go on the line that opens
    them; a `meta` stays on one line however large it is.
    """
    d = lambda x: json.dumps(x, allow_nan=False)  # noqa: E731

    def head(o: Mapping, skip: str) -> str:
        """`"key": value, ` for every key of `o` but `skip` (in `o`'s order)."""
        return "".join(f"{d(k)}: {d(v)}, " for k, v in o.items() if k != skip)

    top = {k: v for k, v in obj.items() if k != "jobs"}
    lines = [f'{{{head(top, "servers")}"servers": [']
    lines += [f"  {d(s)}," for s in obj["servers"]]
    lines[-1] = lines[-1][:-1]
    lines.append('], "jobs": [')
    for j, job in enumerate(obj["jobs"]):
        lines.append(f'  {{{head(job, "tasks")}"tasks": [')
        lines += [f"    {d(t)}," for t in job["tasks"]]
        lines[-1] = lines[-1][:-1]
        lines.append("  ]}" + ("," if j < len(obj["jobs"]) - 1 else ""))
    lines.append("]}")
    return "\n".join(lines) + "\n"


def save_instance(spec: InstanceSpec, path: str | os.PathLike) -> None:
    """Validate `spec` and write it as JSON atomically (temp file, fsync, os.replace)."""
    obj = instance_to_json(spec)
    parse_instance(obj)  # never write a file that would not load
    text = _dumps(obj)
    write_bytes_atomic(text.encode("utf-8"), path)


# --------------------------------------------------------------------------
# Environment order
# --------------------------------------------------------------------------


def job_order(job: JobSpec) -> list[int]:
    """File positions of `job`'s tasks in environment order (stable topological).

    Kahn's algorithm taking the smallest ready file position first: a job whose
    file order is already topological keeps it.
    """
    order, left = _topological([t.preds for t in job.tasks])
    if left:
        raise InstanceError(f"a job's predecessors form a cycle among tasks {sorted(left)}")
    return order


def global_index(spec: InstanceSpec) -> list[list[int]]:
    """`global_index(spec)[j][pos]`: the global task index of job `j`'s task at file position `pos`."""
    out: list[list[int]] = []
    base = 0
    for job in spec.jobs:
        g = [0] * len(job.tasks)
        for rank, pos in enumerate(job_order(job)):
            g[pos] = base + rank
        out.append(g)
        base += len(job.tasks)
    return out


def flat_tasks(spec: InstanceSpec) -> list[dict]:
    """The global task list in environment order (the reference simulator's `tasks`).

    Each dict: `size`, `work`, `arrival`, `deadline` (floats), `preds` (list of
    global indices, each smaller than the task's own, in file order), `job`
    (job index) and `pos` (position of the task in its job in the file).
    """
    gidx = global_index(spec)
    out: list[dict] = []
    for j, job in enumerate(spec.jobs):
        for pos in job_order(job):
            t = job.tasks[pos]
            out.append({
                "size": t.size, "work": t.work, "arrival": job.arrival,
                "deadline": t.deadline, "preds": [gidx[j][p] for p in t.preds],
                "job": j, "pos": pos,
            })
    return out


def servers_list(spec: InstanceSpec) -> list[dict]:
    """Servers as dicts `{cpu, bw, mem, k}` (the reference simulator's `servers`)."""
    return [{"cpu": s.cpu, "bw": s.bw, "mem": s.mem, "k": s.k} for s in spec.servers]


def max_job_size(spec: InstanceSpec) -> int:
    """Most tasks in one job (the generator's `j_max`; successor window `j_max - 1`)."""
    return max((len(job.tasks) for job in spec.jobs), default=0)


def max_in_degree(spec: InstanceSpec) -> int:
    """Most predecessors of one task (0 if there are no edges)."""
    return max((len(t.preds) for job in spec.jobs for t in job.tasks), default=0)


def max_out_degree(spec: InstanceSpec) -> int:
    """Most successors of one task (0 if there are no edges): the successor slots its
    instance needs (`damdjax.envs.instance.max_fan_out` of its arrays)."""
    counts = [collections.Counter(p for t in job.tasks for p in t.preds) for job in spec.jobs]
    return max((max(c.values(), default=0) for c in counts), default=0)


def _limit(value: int | None, default: int, name: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InstanceError(f"{name} must be an integer >= 1, got {_show(value)}")
    return int(value)


def padded_arrays(
    spec: InstanceSpec,
    *,
    n_max: int | None = None,
    m_max: int | None = None,
    p_max: int | None = None,
    j_max: int | None = None,
    dtype: Any = np.float64,
) -> dict[str, np.ndarray]:
    """Numpy arrays of `spec` in environment order, padded to the limits.

    Limits default to the instance's own sizes (`N` tasks, `M` servers, the
    largest in-degree but at least 1). `j_max`, if given, bounds the tasks of
    one job (the environment's successor window is `j_max - 1`).

    Returns (`F` = `dtype`):
        servers: `cpu, bw, mem, k` [m_max] F (padding 1), `server_mask` [m_max] bool;
        tasks: `size, work` [n_max] F (padding 0), `deadline` [n_max] F (padding
        +inf), `arrival` [n_max] F (padding +inf), `preds` [n_max, p_max] int32
        (global indices, padding -1), `task_mask` [n_max] bool, `job` [n_max]
        int32 and `pos` [n_max] int32 (file position in the job), both -1 padding.

    Raises:
        InstanceError: naming what is over a limit.
    """
    n, m = spec.num_tasks, spec.num_servers
    n_max = _limit(n_max, n, "n_max")
    m_max = _limit(m_max, m, "m_max")
    p_max = _limit(p_max, max(max_in_degree(spec), 1), "p_max")
    j_max = _limit(j_max, max_job_size(spec), "j_max")
    if n > n_max:
        raise InstanceError(f"{n} tasks exceed n_max={n_max}")
    if m > m_max:
        raise InstanceError(f"{m} servers exceed m_max={m_max}")
    for j, job in enumerate(spec.jobs):
        if len(job.tasks) > j_max:
            raise InstanceError(f"job {j}: {len(job.tasks)} tasks exceed j_max={j_max}")
        for t, task in enumerate(job.tasks):
            if len(task.preds) > p_max:
                raise InstanceError(
                    f"job {j}, task {t}: {len(task.preds)} predecessors exceed p_max={p_max}")

    out: dict[str, np.ndarray] = {}
    for key in _SERVER_KEYS:
        arr = np.ones(m_max, dtype)
        arr[:m] = [getattr(s, key) for s in spec.servers]
        out[key] = arr
    out["server_mask"] = np.arange(m_max) < m

    tasks = flat_tasks(spec)
    fill = {"size": 0.0, "work": 0.0, "deadline": np.inf, "arrival": np.inf}
    for key, pad in fill.items():
        arr = np.full(n_max, pad, dtype)
        arr[:n] = [t[key] for t in tasks]
        out[key] = arr
    preds = np.full((n_max, p_max), -1, np.int32)
    for i, t in enumerate(tasks):
        preds[i, :len(t["preds"])] = t["preds"]
    out["preds"] = preds
    out["task_mask"] = np.arange(n_max) < n
    for key in ("job", "pos"):
        arr = np.full(n_max, -1, np.int32)
        arr[:n] = [t[key] for t in tasks]
        out[key] = arr
    return out


def spec_from_arrays(arrays: Mapping[str, Any]) -> InstanceSpec:
    """The validated spec of (padded or unpadded) arrays with `padded_arrays`' keys.

    Real servers and tasks are those of `server_mask` / `task_mask` (all, if a
    mask is absent). Tasks of a job must be contiguous with one arrival time;
    `preds` (global indices, -1 padding) become positions inside the job. If
    `pos` is present the tasks of each job are put back in that file order,
    else they keep the arrays' order. The arrays hold no `name` or `meta`, so
    the spec has None on every level (it equals the original spec only if
    that had no names or meta).

    Raises:
        InstanceError: for arrays that do not describe a valid instance.
    """
    def get(key: str) -> np.ndarray:
        if key not in arrays:
            raise InstanceError(f"arrays: missing key {key!r}")
        return np.asarray(arrays[key])

    cpu = get("cpu")
    smask = (np.asarray(arrays["server_mask"], bool) if "server_mask" in arrays
             else np.ones(cpu.shape, bool))
    real_servers = np.flatnonzero(smask)
    server_cols = {key: get(key)[real_servers] for key in _SERVER_KEYS}
    servers = [{key: float(server_cols[key][i]) for key in _SERVER_KEYS}
               for i in range(len(real_servers))]

    size = get("size")
    tmask = (np.asarray(arrays["task_mask"], bool) if "task_mask" in arrays
             else np.ones(size.shape, bool))
    real = np.flatnonzero(tmask)
    compact = {int(g): i for i, g in enumerate(real)}  # global slot -> compact index
    cols = {key: get(key)[real] for key in ("size", "work", "arrival", "deadline", "job")}
    preds = get("preds")
    if preds.ndim == 1:
        preds = preds[:, None]
    preds = preds[real]
    pos_col = np.asarray(arrays["pos"])[real] if "pos" in arrays else None

    # Split the compact tasks into contiguous jobs.
    groups: list[list[int]] = []
    seen: set[int] = set()
    for i in range(len(real)):
        job_id = int(cols["job"][i])
        if groups and job_id == int(cols["job"][groups[-1][0]]):
            groups[-1].append(i)
            continue
        if job_id in seen:
            raise InstanceError(f"arrays: the tasks of job {job_id} are not contiguous")
        seen.add(job_id)
        groups.append([i])

    jobs = []
    for j, members in enumerate(groups):
        arrivals = {float(cols["arrival"][i]) for i in members}
        if len(arrivals) != 1:
            raise InstanceError(
                f"arrays: job {j}: its tasks have different arrivals {sorted(arrivals)}")
        if pos_col is None:
            file_pos = {i: r for r, i in enumerate(members)}
        else:
            file_pos = {i: int(pos_col[i]) for i in members}
            if sorted(file_pos.values()) != list(range(len(members))):
                raise InstanceError(
                    f"arrays: job {j}: pos {sorted(file_pos.values())} is not a "
                    f"permutation of 0..{len(members) - 1}")
        tasks: list[dict | None] = [None] * len(members)
        for i in members:
            ps = []
            for g in preds[i]:
                g = int(g)
                if g < 0:
                    continue
                if g not in compact or compact[g] not in file_pos:
                    raise InstanceError(
                        f"arrays: job {j}, task {file_pos[i]}: predecessor slot {g} "
                        f"is not a real task of the same job")
                ps.append(file_pos[compact[g]])
            tasks[file_pos[i]] = {"size": float(cols["size"][i]), "work": float(cols["work"][i]),
                                  "deadline": float(cols["deadline"][i]), "preds": ps}
        jobs.append({"arrival": arrivals.pop(), "tasks": tasks})
    return parse_instance({"servers": servers, "jobs": jobs})
