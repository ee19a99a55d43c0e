"""A run's metrics log (metrics.jsonl, one JSON row per chunk): its rows, the check of a
stored log, its repair to match a checkpoint, appends, and the progress line printed
for a row.
"""
from __future__ import annotations

import json
import os

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


def check_log(path: str) -> None:
    """ValueError naming `path` and the line where a metrics file holds a line that is not
    a JSON row (a torn last line, a killed append, is allowed: the resume drops it)."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
            row["chunk"]
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:   # no newline after it: a torn append
                continue
            raise ValueError(f"{path}: line {i + 1} is not a metrics row") from None


def _rows_text(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def append_rows(path: str, rows: list[dict]) -> None:
    """`rows` appended to the metrics file `path`, one line each."""
    with open(path, "a") as log:
        log.write(_rows_text(rows))


def repair_log(path: str, chunk: int, rows: list[dict] | None) -> None:
    """metrics.jsonl made to match a checkpoint of `chunk` holding `rows`: the rows of
    earlier chunks kept, the checkpoint's own rows in place of whatever the file holds for
    `chunk` (a missing or torn row restored), later rows dropped. `rows` None (an older
    checkpoint): rows past `chunk` dropped, a torn last line too."""
    text = open(path, "rb").read().decode(errors="replace") if os.path.exists(path) else ""
    kept = []
    for ln in text.split("\n"):
        try:
            row = json.loads(ln)
        except ValueError:
            continue   # blank, or the torn last line (check_log refused any other)
        if row["chunk"] < chunk or (rows is None and row["chunk"] == chunk):
            kept.append(row)
    new = _rows_text(kept + (rows or []))
    if new != text and (new or os.path.exists(path)):
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
