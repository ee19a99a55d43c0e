"""Instance files on disk: `load_instance` reads and validates a JSON instance
file, `save_instance` writes a spec back (`instance_to_json`, its JSON
object). The format and its checks: `damdjax.envs.instance_format`.

Plain Python (no JAX).

Reading decodes the JSON strictly: a key repeated in one object is an error, and
numbers are read exactly (as Decimals) before `parse_instance` validates them.
Only a regular file of bounded size, nesting and integer length is read
(`INSTANCE_FILE_LIMIT`, `damdjax.io.load_json_limited`).

Writing: `instance_to_json` always writes `work` and `preds` (`[]` for
a task without predecessors), and `name` and `meta` where they are not None,
so load -> save -> load gives an equal spec and a saved file without names or
meta is also valid for older readers. `save_instance` refuses a spec
that would not load, and writes one server or task per line, atomically.

Errors are `damdjax.envs.instance_format.InstanceError` (a ValueError).
"""

from __future__ import annotations

import copy
import decimal
import json
import os
from typing import Any, Mapping

from damdjax.io import (  # standard-library leaf module
    MiB, ReadError, load_json_limited, write_bytes_atomic,
)
from damdjax.envs.instance_format import (
    InstanceError, InstanceSpec, JobSpec, ServerSpec, TaskSpec, parse_instance,
)

__all__ = [
    "INSTANCE_FILE_LIMIT",
    "load_instance",
    "save_instance",
    "instance_to_json",
]


def _label_fields(spec: Any) -> dict[str, Any]:
    """`name` / `meta` of a spec as JSON keys, each omitted when None."""
    out: dict[str, Any] = {}
    if spec.name is not None:
        out["name"] = spec.name
    if spec.meta is not None:
        out["meta"] = copy.deepcopy(spec.meta)
    return out


def on_file_clock(time: float, offset: float) -> float:
    """A simulator time (time units) on its instance file's clock: `time + offset` (the
    file's first arrival, `InstanceSpec.time_offset`, which reading subtracted) computed
    exactly, then rounded once to a float64."""
    if not offset:
        return time
    with decimal.localcontext(decimal.Context(prec=decimal.MAX_PREC)):
        return float(decimal.Decimal(time) + decimal.Decimal(offset))


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
        return on_file_clock(x, spec.time_offset)

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


def _decimal(text: str) -> decimal.Decimal:
    """A JSON number with a fraction or exponent, exactly; InstanceError where its
    exponent is beyond what Decimal holds (about 10**18)."""
    try:
        return decimal.Decimal(text)
    except decimal.InvalidOperation:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise InstanceError(f"the number {shown} has an exponent out of range") from None


# An instance file's size limit: a task takes 100 to 250 bytes of JSON (with a converted
# trace's meta), so this holds a million tasks or more, beyond what the simulators' padded
# arrays are used with, while decoding it into Python objects already takes a few GiB.
INSTANCE_FILE_LIMIT = 256 * MiB


def load_instance(path: str | os.PathLike) -> InstanceSpec:
    """Read and validate a JSON instance file.

    Only a regular file of at most INSTANCE_FILE_LIMIT bytes is read, and its JSON may
    nest at most JSON_MAX_DEPTH levels and hold integers of at most JSON_MAX_INT_DIGITS
    digits (damdjax.io): a FIFO, a device, a huge file or a hostile literal is refused
    rather than hanging or exhausting memory or the stack.

    Raises:
        InstanceError: one line prefixed with `path`, for a missing or unreadable
            file, invalid JSON, or an invalid instance.
    """
    shown = os.fspath(path)
    try:
        obj = load_json_limited(path, INSTANCE_FILE_LIMIT, "instance file",
                                object_pairs_hook=_no_duplicate_keys,
                                parse_float=_decimal)
    except ReadError as e:
        raise InstanceError(str(e)) from None
    except InstanceError as e:
        raise InstanceError(f"{shown}: {e}") from None
    try:
        return parse_instance(obj)
    except InstanceError as e:
        raise InstanceError(f"{shown}: {e}") from None


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
