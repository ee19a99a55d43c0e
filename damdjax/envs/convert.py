"""Real DAG workloads -> instance files: WfCommons workflows and Alibaba v2018 jobs.

Plain Python and numpy (the defaults read from damdjax.envs.config.EnvParams). Usage::

    python -m envs.convert wfcommons FILE... --out instance.json [--jobs N]
    python -m envs.convert alibaba CSV --out instance.json [--jobs N] [--arrivals trace]
    python -m envs.convert wfchef RECIPE --out instance.json [--tasks N] [--jobs J]

Units (docs/model.md, "Real workloads"): `--time-unit` seconds per time unit
(default 5 s); `work = runtime_s / time_unit` work units (the trace's machine
counts as a cpu-1 server); `size = raw data / data_unit` data units, where the
raw data is a task's input bytes (WfCommons, default data unit 2**28 bytes) or
its `plan_mem` (Alibaba, default 0.15 plan_mem). Deadlines follow the
generator's rule (`arrival + slack * (critical path on the mean server + k_ref)`).

Bad real data is never changed: a job with a cycle, an unknown parent, a task
without a runtime or with a negative one, a non-`Terminated` row and so on is skipped
with a one-line reason on stderr and a count per reason at the end; `--strict`
makes the first one an error (exit 2). Two documented floors (docs/model.md, "Real
workloads"), each counted on stderr with the task's meta keeping the recorded 0: a
runtime recorded as 0 s (under the trace's time resolution) counts as `--min-runtime`
seconds (default 0.5; `--strict` refuses it instead), and a WfCommons task that reads
no bytes counts as reading 1 byte (sizes must be > 0).

Input files are read bounded (damdjax.io): only regular files (a FIFO or a device is
refused before it is opened), at most WFCOMMONS_FILE_LIMIT / SERVERS_FILE_LIMIT bytes of
JSON nested at most damdjax.io.JSON_MAX_DEPTH levels, CSV lines of at most
ALIBABA_LINE_LIMIT characters without NUL bytes. A WfCommons file that fails is skipped
as malformed; a servers file or an Alibaba CSV that fails is a one-line error (exit 2).
`--out` may name none of the files read (the inputs and `--servers`).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import tempfile
import re
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from damdjax.io import MiB, ReadError, check_output, load_json_limited, open_regular
from damdjax.envs.config import SEED_MAX, SIZE_LIMITS, EnvParams
from damdjax.envs.instance_format import (  # private helpers: one cycle finder, one server check
    InstanceError, InstanceSpec, JobSpec, ServerSpec, TaskSpec, _find_cycle, _parse_server,
    _topological,
)
from damdjax.envs.instance_io import save_instance
from damdjax.envs.instance_padding import job_order

__all__ = [
    "Defaults", "DEFAULTS", "Skip", "RawTask", "RawJob", "SKIP_REASONS",
    "read_wfcommons", "read_alibaba", "draw_servers", "read_servers", "critical_path",
    "WFCOMMONS_FILE_LIMIT", "SERVERS_FILE_LIMIT", "ALIBABA_LINE_LIMIT",
    "poisson_arrivals", "trace_arrivals", "job_spec", "too_large", "skip_summary",
    "build_instance", "main",
]


@dataclass(frozen=True)
class Defaults:
    """The converter's calibrated units (docs/model.md, "Real workloads"); its setting
    (servers, density, slack, the server model) is `EnvParams`' defaults."""

    time_unit_s: float = 5.0  # seconds per time unit
    # Seconds a recorded runtime of 0 counts as: half of 1 s, the resolution of Alibaba's
    # times and of the WfCommons logs that record whole seconds (nf-core's).
    min_runtime_s: float = 0.5
    wfcommons_data_unit: float = float(2 ** 28)  # bytes per data unit (256 MiB)
    alibaba_data_unit: float = 0.15  # plan_mem per data unit


DEFAULTS = Defaults()

# Why a job is skipped (the short key printed and counted). A job with several problems
# is skipped for the first of them in this order.
SKIP_REASONS = (
    "malformed",             # WfCommons: not a WfFormat file (missing keys, bad JSON, not a
                             # regular file, too large); Alibaba: a row with too few or
                             # too many fields
    "not terminated",        # Alibaba: a row whose status is not Terminated
    "truncated name",        # Alibaba: a task name cut at the trace's 50 characters
    "bad task name",         # Alibaba: a task name that does not parse
    "no runtime",            # a task without a measured runtime
    "negative runtime",      # a runtime < 0 s (Alibaba: end_time before start_time)
    "zero runtime",          # a runtime of 0 s under --strict (else it counts as
                             # Defaults.min_runtime_s / --min-runtime)
    "bad size",              # no usable data size (unknown input file, negative bytes, no plan_mem)
    "duplicate task",        # a task id / number listed twice in one job
    "duplicate parent",      # a parent listed twice for one task
    "unknown parent",        # a parent that is not a task of the job
    "children disagree",     # WfCommons: a task's children do not match the parents
    "cycle",                 # the parents form a cycle
    "too large",             # a task larger than every server's memory
)

_ALIBABA_NAME = re.compile(r"([A-Za-z]+)(\d+)((?:_\d+)*)")
_ALIBABA_NAME_LIMIT = 50  # the trace cuts task names at 50 characters
# File limits: the largest WfInstances workflows are tens of MiB of JSON, a servers file
# holds one short object per server; anything larger is not such a file, and is refused
# before it is decoded (decoding takes several times the file's size in memory).
WFCOMMONS_FILE_LIMIT = 256 * MiB
SERVERS_FILE_LIMIT = 64 * MiB
# The longest line of an Alibaba CSV, in characters: a batch_task row is under 200; a
# file without line breaks (binary, or zero-filled by a crash) is refused after this
# much rather than read whole into memory.
ALIBABA_LINE_LIMIT = MiB
# Characters that str.splitlines breaks at, escaped in messages (a task name of the data
# may hold any of them), so that every message stays one line.
_LINE_BREAKS = {c: repr(chr(c))[1:-1] for c in (0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85,
                                               0x2028, 0x2029)}


def _one_line(text: str) -> str:
    """`text` with its line breaks escaped (`\\n` for a newline)."""
    return str(text).translate(_LINE_BREAKS)


class Skip(Exception):
    """A job that cannot be converted: `job` (its name as in the data), `reason` (one of
    SKIP_REASONS) and a one-line `detail` (line breaks from the data escaped)."""

    def __init__(self, job: str, reason: str, detail: str):
        detail = _one_line(detail)
        super().__init__(f"{_one_line(job)}: {reason}: {detail}")
        self.job, self.reason, self.detail = job, reason, detail


@dataclass(frozen=True)
class RawTask:
    """A task as measured: `runtime_s` seconds, `data` raw (bytes or plan_mem),
    `preds` positions in its job."""

    name: str
    preds: tuple[int, ...]
    runtime_s: float
    data: float
    meta: dict = field(hash=False)


@dataclass(frozen=True)
class RawJob:
    """A validated job (acyclic, known parents, positive runtimes): tasks in source order;
    `start_s` the trace's start time in seconds (None for WfCommons)."""

    name: str
    tasks: tuple[RawTask, ...]
    start_s: float | None
    meta: dict = field(hash=False)


# --------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------


def _first(skips: Sequence[Skip]) -> Skip:
    """The skip to report: the earliest reason in SKIP_REASONS, then the first found."""
    return min(skips, key=lambda s: SKIP_REASONS.index(s.reason))


def _each(items, convert) -> tuple[list, list[Skip]]:
    """`convert` applied to every item: (results, the Skips raised)."""
    results, skips = [], []
    for item in items:
        try:
            results.append(convert(item))
        except Skip as s:
            skips.append(s)
    return results, skips


def _check_dag(job: str, names: Sequence[str], preds: Sequence[Sequence[int]]) -> None:
    """Raise Skip('cycle') naming the tasks of one cycle (instance_format's Kahn's order)."""
    _, left = _topological(preds)
    if left:
        cycle = _find_cycle(preds, left)
        raise Skip(job, "cycle", " -> ".join(names[i] for i in cycle))


def _check_parents(job: str, ids: Sequence[str], parents: Sequence[Sequence[str]],
                   names: Sequence[str] | None = None) -> list[tuple[int, ...]]:
    """Parent ids -> positions; Skip on a duplicate task id, a duplicate or unknown parent.
    `names` (default `ids`) label the tasks in the messages."""
    names = names or ids
    position: dict[str, int] = {}
    for i, task_id in enumerate(ids):
        if task_id in position:
            raise Skip(job, "duplicate task", f"task {names[i]} is listed twice")
        position[task_id] = i
    preds = []
    for name, ps in zip(names, parents):
        if len(set(ps)) < len(ps):
            raise Skip(job, "duplicate parent", f"task {name} lists a parent twice: {list(ps)}")
        for p in ps:
            if p not in position:
                raise Skip(job, "unknown parent", f"task {name} has parent {p}, not in the job")
        preds.append(tuple(position[p] for p in ps))
    return preds


def _runtime(job: str, task: str, value: Any, min_runtime_s: float | None) -> tuple[float, float]:
    """`(recorded, used)` seconds of a measured runtime: a recorded 0 (under the trace's
    time resolution) is used as `min_runtime_s` seconds (Skip('zero runtime') where that
    is None: --strict); Skip for a missing, non-finite or negative runtime."""
    if value is None or value == "":
        raise Skip(job, "no runtime", f"task {task} has no runtime")
    not_number = Skip(job, "no runtime", f"task {task} has runtime {_short(value)}, not a "
                      f"finite number")
    if isinstance(value, bool):
        raise not_number
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        raise not_number from None
    if not math.isfinite(seconds):
        raise Skip(job, "no runtime", f"task {task} has runtime {_short(value)}")
    if seconds < 0:
        raise Skip(job, "negative runtime", f"task {task} ran {seconds:g} s")
    if seconds == 0:
        if min_runtime_s is None:
            raise Skip(job, "zero runtime", f"task {task} ran 0 s (under the trace's time "
                       f"resolution; without --strict it counts as --min-runtime seconds)")
        return seconds, min_runtime_s
    return seconds, seconds


def _short(value: Any) -> str:
    """A bad value of the data for a message: its repr, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------
# WfCommons
# --------------------------------------------------------------------------


def _wf_get(job: str, obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            raise Skip(job, "malformed", f"no {'.'.join(keys)} (not a WfFormat file)")
        obj = obj[key]
    return obj


def _file_bytes(value: Any) -> float | None:
    """A WfFormat file's `sizeInBytes` as a float, None unless a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        size = float(value)
    except OverflowError:
        return None
    return size if math.isfinite(size) and size >= 0 else None


def _wf_read(job: str, path: str | os.PathLike) -> dict:
    """The decoded WfFormat document (bounded: WFCOMMONS_FILE_LIMIT, damdjax.io's JSON
    limits); Skip('malformed') on any refusal."""
    try:
        doc = load_json_limited(path, WFCOMMONS_FILE_LIMIT, "WfFormat file")
    except ReadError as e:
        raise Skip(job, "malformed", e.reason) from None
    if not isinstance(doc, dict):
        raise Skip(job, "malformed", "not a JSON object (not a WfFormat file)")
    return doc


def _wf_children(job: str, names: Sequence[str], parents: Sequence[Sequence[str]],
                 spec_tasks: list) -> None:
    """Skip('children disagree') where every task lists `children` and they are not the
    reverse of the parents; Skip('malformed') where a `children` is not a list."""
    if not all("children" in t for t in spec_tasks):
        return
    if not all(isinstance(t["children"], list) for t in spec_tasks):
        raise Skip(job, "malformed", "a task's children is not a list (not a WfFormat file)")
    from_parents = {(p, name) for name, ps in zip(names, parents) for p in ps}
    from_children = {(name, str(c)) for name, t in zip(names, spec_tasks)
                     for c in t["children"]}
    if from_parents != from_children:
        edge = min(from_parents ^ from_children)
        raise Skip(job, "children disagree", f"children and parents disagree on the edge "
                   f"{edge[0]} -> {edge[1]}")


def read_wfcommons(path: str | os.PathLike,
                   min_runtime_s: float | None = DEFAULTS.min_runtime_s) -> RawJob:
    """One WfFormat (1.5, 1.6) workflow file -> one job: `runtime_s` = execution
    `runtimeInSeconds` (a recorded 0 counts as `min_runtime_s` seconds, None: Skip; meta
    keeps the recorded `runtime_s`),
    `data` = the sum of the task's input file sizes in bytes (at least 1 byte: a task
    that reads nothing counts as 1 byte; meta keeps the raw `input_bytes`). Raises Skip
    (one line) for any file that is not such a workflow: unreadable, not a regular file,
    over WFCOMMONS_FILE_LIMIT, invalid or too deeply nested JSON, wrong types."""
    job = os.path.basename(os.fspath(path))
    doc = _wf_read(job, path)
    spec_tasks = _wf_get(job, doc, "workflow", "specification", "tasks")
    files = _wf_get(job, doc, "workflow", "specification", "files")
    exec_tasks = _wf_get(job, doc, "workflow", "execution", "tasks")
    if not isinstance(spec_tasks, list) or not spec_tasks:
        raise Skip(job, "malformed", "workflow.specification.tasks is not a non-empty list")
    try:
        names = [str(t["id"]) for t in spec_tasks]
        parents = [[str(p) for p in t.get("parents", [])] for t in spec_tasks]
        inputs = [list(t.get("inputFiles", [])) for t in spec_tasks]
        file_bytes = {str(f["id"]): f.get("sizeInBytes") for f in files}
        runtimes: dict[str, Any] = {}
        for t in exec_tasks:
            runtimes.setdefault(str(t["id"]), []).append(t.get("runtimeInSeconds"))
    except (TypeError, KeyError, AttributeError) as e:
        raise Skip(job, "malformed", f"a task or file entry lacks {e} (not a WfFormat file)"
                   ) from None
    def task(i: int) -> RawTask:
        name = names[i]
        if name not in runtimes:
            raise Skip(job, "no runtime", f"task {name} is not in workflow.execution.tasks")
        if len(runtimes[name]) > 1:
            raise Skip(job, "duplicate task", f"task {name} has {len(runtimes[name])} "
                       f"records in workflow.execution.tasks")
        recorded, seconds = _runtime(job, name, runtimes[name][0], min_runtime_s)
        total = 0
        for file_id in inputs[i]:
            size = file_bytes.get(str(file_id))
            if _file_bytes(size) is None:
                raise Skip(job, "bad size", f"task {name} reads {file_id}, whose size is "
                           f"{_short(size)} bytes" if str(file_id) in file_bytes else
                           f"task {name} reads {file_id}, not in workflow.specification.files")
            total += size
        data = _file_bytes(total)
        if data is None:
            raise Skip(job, "bad size", f"task {name} reads {_short(total)} bytes in all, "
                       f"not a finite number")
        return RawTask(name=name, preds=(), runtime_s=seconds, data=max(data, 1.0),
                       meta={"id": name, "runtime_s": recorded, "input_bytes": total,
                             "input_files": len(inputs[i])})

    tasks, skips = _each(range(len(names)), task)
    try:
        preds = _check_parents(job, names, parents)
    except Skip as s:
        skips.append(s)
    if skips:
        raise _first(skips)
    _wf_children(job, names, parents, spec_tasks)
    tasks = [RawTask(name=t.name, preds=p, runtime_s=t.runtime_s, data=t.data, meta=t.meta)
             for t, p in zip(tasks, preds)]
    _check_dag(job, names, preds)
    meta = {"source": "wfcommons", "file": job, "workflow": str(doc.get("name", ""))}
    return RawJob(name=job, tasks=tuple(tasks), start_s=None, meta=meta)


def read_files(paths: Sequence[str | os.PathLike],
               min_runtime_s: float | None = DEFAULTS.min_runtime_s
               ) -> tuple[list[RawJob], list[Skip]]:
    """`(jobs, skips)` of WfFormat files, one job each (`read_wfcommons`), in their order."""
    return _each(paths, lambda path: read_wfcommons(path, min_runtime_s))


def read_wfchef(recipe: str, tasks: int, count: int, seed: int,
                min_runtime_s: float | None = DEFAULTS.min_runtime_s
                ) -> tuple[list[RawJob], list[Skip]]:
    """`(jobs, skips)`: `count` WfChef workflows of `recipe` (at most `tasks` tasks each,
    seeded by `seed`: `damdjax.envs.wfchef.write_workflows`, the 'workflows' extra) read
    by `read_wfcommons` from a temporary folder (its units and rules; a runtime of 0 s
    counts as `min_runtime_s` seconds, None refuses it), in generation order.
    `wfchef.WfChefError` for a recipe or size WfChef cannot serve."""
    from damdjax.envs import wfchef
    with tempfile.TemporaryDirectory(prefix="wfchef-") as folder:
        return read_files(wfchef.write_workflows(recipe, tasks, count, seed, folder),
                          min_runtime_s)


def floor_notes(jobs: Sequence[RawJob], min_runtime_s: float) -> list[str]:
    """One line per documented floor applied to `jobs`' tasks, with its count: runtimes
    recorded as 0 s (run as `min_runtime_s`), WfCommons inputs of 0 bytes (read as 1)."""
    tasks = [t for j in jobs for t in j.tasks]
    zero_runtime = sum(1 for t in tasks if t.meta["runtime_s"] == 0)
    zero_bytes = sum(1 for t in tasks if t.meta.get("input_bytes") == 0)
    notes = []
    if zero_runtime:
        notes.append(f"note: {zero_runtime} tasks ran 0 s (under the trace's time "
                     f"resolution); each runs {min_runtime_s:g} s (--min-runtime; meta keeps "
                     f"runtime_s 0)")
    if zero_bytes:
        notes.append(f"note: {zero_bytes} tasks read 0 bytes; each counts as 1 byte (sizes "
                     f"must be > 0; meta keeps input_bytes 0)")
    return notes


# --------------------------------------------------------------------------
# Alibaba v2018 batch_task
# --------------------------------------------------------------------------


_ALIBABA_COLUMNS = ("task_name", "job_name", "status", "start_time", "end_time", "plan_mem")


class _Malformed(str):
    """Why a CSV row has the wrong number of fields, kept in place of the row."""


def _alibaba_task(job: str, row: dict, min_runtime_s: float | None
                  ) -> tuple[str, str, list[str], RawTask]:
    """One row -> (number, name, parent numbers, task); Skip on bad data."""
    name = row["task_name"]
    if len(name) >= _ALIBABA_NAME_LIMIT:
        raise Skip(job, "truncated name", f"task {name} has {len(name)} characters (the trace "
                   f"cuts names at {_ALIBABA_NAME_LIMIT}, so its parents may be cut)")
    match = _ALIBABA_NAME.fullmatch(name)
    if not match:
        raise Skip(job, "bad task name", f"task {name!r} is not <letters><number>[_<parent>]...")
    number = match.group(2)
    parents = [p for p in match.group(3).split("_") if p]
    if not row.get("start_time") or not row.get("end_time"):
        raise Skip(job, "no runtime", f"task {name} has no start_time or end_time")
    try:
        start, end = float(row["start_time"]), float(row["end_time"])
    except ValueError:
        raise Skip(job, "no runtime", f"task {name} has start/end "
                   f"{row['start_time']!r}/{row['end_time']!r}") from None
    recorded, seconds = _runtime(job, name, end - start, min_runtime_s)
    try:
        plan_mem = float(row["plan_mem"])
    except (TypeError, ValueError):
        raise Skip(job, "bad size", f"task {name} has plan_mem {row.get('plan_mem')!r}") from None
    if not (math.isfinite(plan_mem) and plan_mem > 0):
        raise Skip(job, "bad size", f"task {name} has plan_mem {plan_mem:g}")
    meta = {"task_name": name, "runtime_s": recorded, "start_time": start, "end_time": end,
            "plan_mem": plan_mem, "plan_cpu": row.get("plan_cpu", ""),
            "instance_num": row.get("instance_num", "")}
    return number, name, parents, RawTask(name=name, preds=(), runtime_s=seconds,
                                          data=plan_mem, meta=meta)


def _alibaba_job(job: str, rows: list[dict], min_runtime_s: float | None) -> RawJob:
    """The rows of one job -> a RawJob (tasks by task number); Skip on bad data."""
    for row in rows:
        if isinstance(row, _Malformed):
            raise Skip(job, "malformed", row)
    for row in rows:
        if row.get("status") != "Terminated":
            raise Skip(job, "not terminated", f"task {row['task_name']} is {row.get('status')!r}")
    parsed, skips = _each(rows, lambda row: _alibaba_task(job, row, min_runtime_s))
    if skips:
        raise _first(skips)
    parsed.sort(key=lambda x: int(x[0]))
    names = [name for _, name, _, _ in parsed]
    preds = _check_parents(job, [number for number, _, _, _ in parsed],
                           [parents for _, _, parents, _ in parsed], names)
    tasks = tuple(RawTask(name=t.name, preds=p, runtime_s=t.runtime_s, data=t.data, meta=t.meta)
                  for (_, _, _, t), p in zip(parsed, preds))
    _check_dag(job, names, preds)
    start = min(t.meta["start_time"] for t in tasks)
    return RawJob(name=job, tasks=tasks, start_s=start,
                  meta={"source": "alibaba", "job_name": job, "start_time": start})


def _lines(f, shown: str):
    """The lines of the text file `f` for csv, each checked: ValueError (one line naming
    the line) for a line over ALIBABA_LINE_LIMIT characters or holding a NUL byte (a
    binary or zero-filled file, not a CSV), or text that is not UTF-8."""
    number = 0
    while True:
        try:
            line = f.readline(ALIBABA_LINE_LIMIT + 1)
        except UnicodeDecodeError as e:  # decoded ahead in blocks: the line is a bound
            raise ValueError(f"{shown}: not UTF-8 text after line {number} ({e.reason})"
                             ) from None
        if not line:
            return
        number += 1
        if len(line) > ALIBABA_LINE_LIMIT:
            raise ValueError(f"{shown}: line {number} is longer than the limit of "
                             f"{ALIBABA_LINE_LIMIT} characters (not a batch_task CSV)")
        if "\0" in line:
            raise ValueError(f"{shown}: line {number} holds a NUL byte (not a text CSV)")
        yield line


def _alibaba_rows(path: str | os.PathLike) -> dict[str, list[dict]]:
    """The CSV's rows by job name, in file order. A row with too few or too many fields
    goes to its job (or, without a job name, to a job named after its line) as a
    _Malformed reason, which skips that job. ValueError (one line) for a file
    that is not a readable text CSV with the needed columns."""
    shown = os.fspath(path)
    fd = open_regular(path, "Alibaba CSV")  # ReadError, a ValueError
    with open(fd, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(_lines(f, shown))
        try:
            missing = set(_ALIBABA_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{shown}: missing column(s) {', '.join(sorted(missing))}")
            by_job: dict[str, list[dict]] = {}
            for row in reader:
                if None in row or None in row.values():
                    fields = sum(v is not None for k, v in row.items() if k is not None)
                    fields += len(row.get(None, ()))
                    job = row.get("job_name") or f"line {reader.line_num}"
                    row = _Malformed(f"line {reader.line_num} has {fields} fields, the header "
                                     f"{len(reader.fieldnames)}")
                else:
                    job = row["job_name"]
                by_job.setdefault(job, []).append(row)
        except csv.Error as e:  # the csv reader's own count: the DictReader's lags on error
            raise ValueError(f"{shown}: line {reader.reader.line_num}: {e}") from None
    return by_job


def read_alibaba(path: str | os.PathLike, min_runtime_s: float | None = DEFAULTS.min_runtime_s
                 ) -> tuple[list[RawJob], list[Skip]]:
    """An Alibaba v2018 batch_task CSV -> (valid jobs by start time, then file order;
    skipped jobs in file order). `runtime_s` = `end_time - start_time` seconds (whole
    seconds: a 0 counts as `min_runtime_s`, None: Skip; meta keeps the recorded 0),
    `data` = `plan_mem` (one instance's; `instance_num` only goes to meta). A job with a
    row of the wrong number of fields is skipped as malformed; ValueError (one line) for
    a file that is not a regular, readable UTF-8 CSV with the columns (lines at most
    ALIBABA_LINE_LIMIT characters, no NUL byte, fields within csv's size limit)."""
    jobs, skips = [], []
    for job, rows in _alibaba_rows(path).items():
        try:
            jobs.append(_alibaba_job(job, rows, min_runtime_s))
        except Skip as s:
            skips.append(s)
    jobs.sort(key=lambda j: j.start_s)  # stable: ties keep file order
    return jobs, skips


# --------------------------------------------------------------------------
# Servers, arrivals, deadlines
# --------------------------------------------------------------------------


def draw_servers(count: int, rng: np.random.Generator,
                 model: EnvParams = EnvParams()) -> list[ServerSpec]:
    """`count` servers from the generator's model (damdjax.envs.generator.generate_servers)
    at `model`'s ranges: `cpu` work/time, `bw` data/time, `mem` data uniform in their
    ranges; `k` time = `k_low + (k_high - k_low) * distance`, distance uniform over the
    unit disk; drawn with numpy's `rng` (the same distributions, not JAX's stream)."""
    def uniform(low, high):
        return low + (high - low) * rng.uniform(size=count)

    cpu = uniform(model.cpu_low, model.cpu_high)
    bw = uniform(model.bw_low, model.bw_high)
    mem = uniform(model.mem_low, model.mem_high)
    k = model.k_low + (model.k_high - model.k_low) * np.sqrt(rng.uniform(size=count))
    return [ServerSpec(cpu=float(c), bw=float(b), mem=float(m), k=float(d))
            for c, b, m, d in zip(cpu, bw, mem, k)]


def read_servers(path: str | os.PathLike) -> list[ServerSpec]:
    """A JSON list of server objects (`cpu`, `bw`, `mem`, `k`, optional `name`/`meta`),
    validated by instance_format; raises InstanceError (one line) naming the server, or
    the file where it is unreadable, not a regular file, over SERVERS_FILE_LIMIT, or not
    JSON within damdjax.io's limits."""
    shown = os.fspath(path)
    try:
        raw = load_json_limited(path, SERVERS_FILE_LIMIT, "servers file")
    except ReadError as e:
        raise InstanceError(str(e)) from None
    if not isinstance(raw, list) or not raw:
        raise InstanceError(f"{shown}: must be a non-empty JSON list of server objects")
    try:
        return [_parse_server(n, server) for n, server in enumerate(raw)]
    except InstanceError as e:
        raise InstanceError(f"{shown}: {e}") from None


def critical_path(job: JobSpec, cpu_ref: float, bw_ref: float, k_ref: float) -> list[float]:
    """The generator's unloaded finish time of each task (file order), time units from the
    job's arrival: `ef[i] = max(k_ref + size[i]/bw_ref, max_p ef[p]) + work[i]/cpu_ref`
    (damdjax.envs.generator.critical_path, exact in topological order)."""
    ef = [0.0] * len(job.tasks)
    for i in job_order(job):
        t = job.tasks[i]
        ready = max((ef[p] for p in t.preds), default=-math.inf)
        ef[i] = max(k_ref + t.size / bw_ref, ready) + t.work / cpu_ref
    return ef


def poisson_arrivals(job_sizes: Sequence[int], density: float,
                     rng: np.random.Generator) -> list[float]:
    """Job arrivals (time units) as the generator draws them: the first at 0, then gaps
    ~ Exp(mean = mean job size / density), so tasks arrive at `density` per time unit."""
    mean_size = float(np.mean(job_sizes))
    gaps = rng.exponential(size=len(job_sizes)) * mean_size / density
    gaps[0] = 0.0
    return [float(a) for a in np.cumsum(gaps)]


def trace_arrivals(starts_s: Sequence[float], time_unit_s: float) -> list[float]:
    """The trace's own job start times (seconds), shifted so the first is 0, in time units."""
    first = min(starts_s)
    return [(s - first) / time_unit_s for s in starts_s]


def job_spec(job: RawJob, time_unit_s: float, data_unit: float, arrival: float = 0.0
             ) -> JobSpec:
    """One job in the model's units, deadlines not yet set (0): `work = runtime_s /
    time_unit_s` work units, `size = data / data_unit` data units, arriving at `arrival`
    time units."""
    tasks = tuple(TaskSpec(size=t.data / data_unit, work=t.runtime_s / time_unit_s,
                           deadline=0.0, preds=t.preds, name=t.name, meta=t.meta)
                  for t in job.tasks)
    return JobSpec(arrival=arrival, tasks=tasks, name=job.name, meta=job.meta)


def too_large(job: RawJob, data_unit: float, memory: float) -> Skip | None:
    """Skip('too large') if a task of `job` needs more than `memory` data units, else None."""
    big = [t for t in job.tasks if t.data / data_unit > memory]
    if not big:
        return None
    return Skip(job.name, "too large", f"task {big[0].name} needs {big[0].data / data_unit:g} "
                f"data units, more than every server's memory (largest {memory:g})")


def skip_summary(skips: Sequence[Skip], kept: int) -> str:
    """`skipped S of T jobs, REASON COUNT, ...` (reasons in SKIP_REASONS order)."""
    counts = Counter(s.reason for s in skips)
    return (f"skipped {len(skips)} of {len(skips) + kept} jobs"
            + "".join(f", {r} {counts[r]}" for r in SKIP_REASONS if counts[r]))


def build_instance(jobs: Sequence[RawJob], arrivals: Sequence[float],
                   servers: Sequence[ServerSpec], time_unit_s: float, data_unit: float,
                   slack: float, name: str, meta: dict) -> InstanceSpec:
    """Jobs in arrival order -> an InstanceSpec: `work = runtime_s / time_unit_s`,
    `size = data / data_unit`, deadlines by the generator's rule over
    the mean of `servers` (`arrival + slack * (ef + k_ref)`)."""
    count = len(servers)
    cpu_ref = sum(s.cpu for s in servers) / count
    bw_ref = sum(s.bw for s in servers) / count
    k_ref = sum(s.k for s in servers) / count
    out = []
    for job, arrival in zip(jobs, arrivals):
        spec = job_spec(job, time_unit_s, data_unit, arrival)
        ef = critical_path(spec, cpu_ref, bw_ref, k_ref)
        tasks = tuple(replace(t, deadline=arrival + slack * (e + k_ref))
                      for t, e in zip(spec.tasks, ef))
        out.append(replace(spec, tasks=tasks))
    return InstanceSpec(servers=tuple(servers), jobs=tuple(out), name=name, meta=meta)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def int_in(low: int, high: int, why: str):
    """An argparse type: an integer in [low, high] (`why`: the reason for `high`), else
    argparse's one-line error naming the flag, the value and the limit."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high} ({why}), got {value}")
        return value
    return parse


# The workflows `envs.convert wfchef` generates without --jobs (and a `wfchef:` workload's).
WFCHEF_WORKFLOWS = 16
# Jobs: each holds a task, and an instance's tasks are the env's task slots (n_max, whose
# step cap 2 N + 2 must fit int32); servers: its server slots (int32); seeds: SEED_MAX.
_jobs = int_in(1, SIZE_LIMITS["n_max"], "each job holds a task; the step cap 2 N + 2 "
                "must fit int32")
_num_servers = int_in(1, SIZE_LIMITS["m_max"], "int32")
# The argparse type of every command's --seed (damdjax.cli.add_seed_flag).
seed_type = int_in(0, SEED_MAX, "the seed range of every CLI: PRNGKey keeps 32 bits")


def _parser() -> argparse.ArgumentParser:
    d, setting = DEFAULTS, EnvParams()
    parser = argparse.ArgumentParser(
        prog="python -m envs.convert",
        description="Convert real DAG workloads into an instance file (docs/model.md, "
                    "'Real workloads').")
    sub = parser.add_subparsers(dest="source", required=True)
    wf = sub.add_parser("wfcommons", help="WfCommons WfFormat workflow files (one job each)")
    wf.add_argument("inputs", nargs="+", metavar="FILE", help="WfFormat JSON files")
    ali = sub.add_parser("alibaba", help="an Alibaba v2018 batch_task CSV")
    ali.add_argument("inputs", nargs=1, metavar="CSV", help="the batch_task CSV")
    chef = sub.add_parser("wfchef", help="workflows generated by a WfChef recipe (the "
                                         "'workflows' extra: the wfcommons package)")
    chef.add_argument("inputs", nargs=1, metavar="RECIPE",
                      help="a recipe wfcommons ships (blast, bwa, cycles, epigenomics, genome, "
                           "montage, rnaseq, seismology, soykb, srasearch)")
    chef.add_argument("--tasks", type=_jobs, default=None,
                      help="at most this many tasks per workflow (default: the recipe's "
                           "smallest workflow)")
    for p, data_unit, what in ((wf, d.wfcommons_data_unit, "bytes"),
                               (ali, d.alibaba_data_unit, "plan_mem"),
                               (chef, d.wfcommons_data_unit, "bytes")):
        p.add_argument("--out", required=True, help="the instance file to write (atomically)")
        servers = p.add_mutually_exclusive_group()
        servers.add_argument("--num-servers", type=_num_servers, default=None,
                             help=f"draw M servers from the generator's model (default "
                                  f"{setting.num_servers})")
        servers.add_argument("--servers", default=None,
                             help="a JSON list of server objects (cpu, bw, mem, k)")
        p.add_argument("--jobs", type=_jobs, default=None,
                       help=f"jobs in the stream (default: every valid job once; wfchef: the "
                            f"workflows generated, default {WFCHEF_WORKFLOWS})")
        p.add_argument("--seed", type=seed_type, default=0,
                       help="seed of the servers, the job draw, Poisson arrivals and WfChef's "
                            "workflows, in [0, 2**32 - 1] (default 0)")
        p.add_argument("--density", type=_positive_float, default=setting.density,
                       help=f"Poisson arrivals: tasks per time unit (default "
                            f"{setting.density:g})")
        p.add_argument("--arrivals", choices=("poisson", "trace"), default="poisson",
                       help="Poisson at --density, or the trace's start times (alibaba only)")
        p.add_argument("--slack", type=_positive_float, default=setting.slack,
                       help=f"deadline = arrival + slack x critical path (default "
                            f"{setting.slack:g})")
        p.add_argument("--time-unit", type=_positive_float, default=d.time_unit_s,
                       help=f"seconds per time unit (default {d.time_unit_s:g})")
        p.add_argument("--data-unit", type=_positive_float, default=data_unit,
                       help=f"{what} per data unit (default {data_unit:g})")
        p.add_argument("--min-runtime", type=_positive_float, default=d.min_runtime_s,
                       help=f"seconds a runtime recorded as 0 counts as (under the trace's "
                            f"time resolution; default {d.min_runtime_s:g})")
        p.add_argument("--strict", action="store_true",
                       help="the first job that cannot be converted, or a runtime recorded "
                            "as 0, is an error (exit 2)")
    return parser


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _report(skip: Skip, strict: bool) -> None:
    if strict:
        _fail(f"job {skip}")
    print(f"skipped job {skip}", file=sys.stderr)


def _read_library(args) -> tuple[list[RawJob], list[Skip]]:
    floor = None if args.strict else args.min_runtime  # --strict refuses a recorded 0
    if args.source == "alibaba":
        try:
            return read_alibaba(args.inputs[0], floor)
        except ValueError as e:  # one line naming the file (ReadError too)
            _fail(str(e))
        except (OSError, KeyError) as e:
            _fail(f"{args.inputs[0]}: cannot read the CSV: {e}")
    if args.source == "wfchef":
        from damdjax.envs import wfchef
        try:
            return read_wfchef(args.inputs[0], _wfchef_tasks(args),
                               args.jobs or WFCHEF_WORKFLOWS, args.seed, floor)
        except wfchef.WfChefError as e:
            _fail(str(e))
    return read_files(args.inputs, floor)


def _wfchef_tasks(args) -> int:
    """`--tasks`, default the recipe's smallest workflow; checked (WfChefError)."""
    from damdjax.envs import wfchef
    tasks = args.tasks or wfchef.smallest_tasks(args.inputs[0])
    wfchef.check_size(args.inputs[0], tasks, SIZE_LIMITS["n_max"])
    return tasks


def _servers(args, rng: np.random.Generator) -> list[ServerSpec]:
    if args.servers is not None:
        try:
            return read_servers(args.servers)
        except InstanceError as e:
            _fail(str(e))
    return draw_servers(args.num_servers or EnvParams.num_servers, rng)


def _select(args, jobs: list[RawJob], rng: np.random.Generator) -> list[RawJob]:
    """WfCommons: a seeded draw (with replacement only where N exceeds the library);
    Alibaba: the first N valid jobs by start time; WfChef: the N generated. No --jobs:
    every valid job once."""
    if args.jobs is None or args.source == "wfchef":
        return jobs
    if args.source == "alibaba":
        if args.jobs > len(jobs):
            _fail(f"--jobs {args.jobs} exceeds the {len(jobs)} valid jobs")
        return jobs[:args.jobs]
    fewest = min(len(j.tasks) for j in jobs)
    if args.jobs * fewest > SIZE_LIMITS["n_max"]:
        _fail(f"--jobs {args.jobs} x at least {fewest} tasks per job = {args.jobs * fewest} "
              f"tasks, more than {SIZE_LIMITS['n_max']} (the step cap 2 N + 2 must fit int32)")
    picks = rng.choice(len(jobs), size=args.jobs, replace=args.jobs > len(jobs))
    return [jobs[int(i)] for i in picks]


def main(argv: Sequence[str] | None = None) -> InstanceSpec:
    """The command line; returns the spec written to --out. Exits 2 with one line on a
    bad flag or input (or the first skipped job under --strict)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.out is not None:  # before any work: never a file it reads, a writable folder
        try:
            files = args.inputs if args.source != "wfchef" else []  # a recipe is no file
            check_output(args.out, [*files, args.servers])
        except ValueError as err:
            parser.error(str(err))
    if args.arrivals == "trace" and args.source != "alibaba":
        parser.error("--arrivals trace needs the trace's job start times: alibaba only, "
                  f"got {args.source!r}")
    server_rng, draw_rng, arrival_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(3))
    servers = _servers(args, server_rng)
    library, skips = _read_library(args)
    max_mem = max(s.mem for s in servers)
    valid = []
    for skip in skips:
        _report(skip, args.strict)
    for job in library:
        skip = too_large(job, args.data_unit, max_mem)
        if skip:
            _report(skip, args.strict)
            skips.append(skip)
            continue
        valid.append(job)
    counts = Counter(s.reason for s in skips)
    print(skip_summary(skips, len(valid)), file=sys.stderr)
    if not valid:
        _fail(f"no valid job in {', '.join(args.inputs)}")
    jobs = _select(args, valid, draw_rng)
    if args.arrivals == "trace":
        order = sorted(range(len(jobs)), key=lambda i: jobs[i].start_s)
        jobs = [jobs[i] for i in order]
        arrivals = trace_arrivals([j.start_s for j in jobs], args.time_unit)
    else:
        arrivals = poisson_arrivals([len(j.tasks) for j in jobs], args.density, arrival_rng)
    for note in floor_notes(jobs, args.min_runtime):
        print(note, file=sys.stderr)
    data_of = "plan_mem" if args.source == "alibaba" else "bytes"
    inputs = ([f"wfchef:{args.inputs[0]}:{_wfchef_tasks(args)}"] if args.source == "wfchef"
              else [os.path.basename(p) for p in args.inputs])
    meta = {"source": args.source, "inputs": inputs, "time_unit_s": args.time_unit,
            "data_unit": args.data_unit, "data_unit_of": data_of,
            "min_runtime_s": None if args.strict else args.min_runtime,
            "seed": args.seed, "arrivals": args.arrivals, "density": args.density,
            "slack": args.slack, "servers": args.servers or f"drawn {len(servers)}",
            "skipped": {r: counts[r] for r in SKIP_REASONS if counts[r]}}
    spec = build_instance(jobs, arrivals, servers, args.time_unit, args.data_unit, args.slack,
                          name=f"{args.source}-{len(jobs)}-jobs", meta=meta)
    try:
        save_instance(spec, args.out)
    except (InstanceError, OSError) as e:
        _fail(f"{args.out}: {e}")
    print(f"wrote {args.out}: {len(jobs)} jobs, {spec.num_tasks} tasks, {len(servers)} servers",
          file=sys.stderr)
    return spec


if __name__ == "__main__":
    main()
