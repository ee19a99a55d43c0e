"""A run's metrics log (metrics.jsonl, one JSON row per chunk): its rows, the check of a
stored log, its repair to match a checkpoint, appends, and the progress line printed
for a row.
"""
from __future__ import annotations

import errno
import json
import os
import stat

from damdjax.io import write_bytes_atomic


def metrics_row(chunk: int, env_steps: int, updates: int, seconds: float,
                env_steps_per_chunk: int, metrics: dict) -> dict:
    """One run's metrics.jsonl row for a chunk: its counters, timing and `metrics` (scalars
    on the host: `episodes`, `avg_response_time`, `deadline_miss_rate`, ...), the two
    episode means None where no episode ended in the chunk (nothing to average)."""
    row = {"chunk": chunk, "env_steps": env_steps, "updates": updates, "seconds": seconds,
           "env_steps_per_s": env_steps_per_chunk / seconds,
           **{k: float(v) for k, v in metrics.items()}}
    if row["episodes"] == 0:
        row["avg_response_time"] = row["deadline_miss_rate"] = None
    return row


def _chunk_of(line: bytes | str) -> int | None:
    """The chunk of a metrics row (a JSON object whose "chunk" is an integer, "seconds" a
    number and "stage", where present, a string: what the commands read back); None for
    a line that is not one (blank, torn, or damaged)."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(row, dict):
        return None
    chunk, seconds = row.get("chunk"), row.get("seconds")
    if not (isinstance(chunk, int) and not isinstance(chunk, bool)
            and isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
            and isinstance(row.get("stage", ""), str)):
        return None
    return chunk


def _read(path: str) -> bytes | None:
    """The bytes of the metrics file `path` (None where there is none); ValueError naming
    it where it is not a regular file (a folder, a link: never followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise ValueError(f"{path} is {kind}; the metrics log must be a file of its own")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def check_log(path: str) -> None:
    """ValueError naming `path` and the line where a metrics file holds a line that is not
    a metrics row (a JSON object with an integer "chunk"; a torn last line, a killed
    append, is allowed: the resume drops it), or naming `path` where it is not a regular
    file."""
    data = _read(path)
    if data is None:
        return
    lines = data.split(b"\n")
    for i, ln in enumerate(lines):
        if not ln.strip() or _chunk_of(ln) is not None:
            continue
        if i == len(lines) - 1:   # no newline after it: a torn append
            continue
        raise ValueError(f"{path}: line {i + 1} is not a metrics row (a JSON object with an "
                         f"integer \"chunk\" and a number \"seconds\")")


def _rows_text(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def append_rows(path: str, rows: list[dict]) -> None:
    """`rows` appended to the metrics file `path`, one line each; the file is created
    where missing and never written through a link (ValueError naming it) nor, being
    opened without blocking, a pipe."""
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
             | os.O_CLOEXEC)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link; not appending to it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path} is not a regular file; not appending to it")
    with os.fdopen(fd, "a") as log:
        log.write(_rows_text(rows))


def repair_log(path: str, chunk: int, rows: list[dict] | None) -> None:
    """metrics.jsonl made to match a checkpoint of `chunk` holding `rows`: the rows of
    earlier chunks kept, the checkpoint's own rows in place of whatever the file holds for
    `chunk` (a missing or torn row restored), later rows dropped. `rows` None (an older
    checkpoint): rows past `chunk` dropped, a torn last line too."""
    data = _read(path)
    text = "" if data is None else data.decode(errors="replace")
    kept = []
    for ln in text.split("\n"):
        at = _chunk_of(ln)
        if at is None:
            continue   # blank, or the torn last line (check_log refused any other)
        if at < chunk or (rows is None and at == chunk):
            kept.append(json.loads(ln))
    new = _rows_text(kept + (rows or []))
    if new != text and (new or data is not None):
        write_bytes_atomic(new.encode(), path)


def _fmt(value, width: int, digits: int) -> str:
    """A number, or '-' (right-aligned) where there is none."""
    return f"{value:{width}.{digits}f}" if value is not None else "-".rjust(width)


def progress_line(row: dict) -> str:
    return (f"chunk {row['chunk']:>4}  env steps {row['env_steps']:>10}  "
            f"{row['env_steps_per_s']:>9.0f}/s  updates {row['updates']:>7}  "
            f"episodes {int(row['episodes']):>5}  resp {_fmt(row['avg_response_time'], 7, 3)}  "
            f"miss {_fmt(row['deadline_miss_rate'], 5, 3)}  loss {row['loss']:.4f}  "
            f"eps {row['epsilon']:.3f}")
