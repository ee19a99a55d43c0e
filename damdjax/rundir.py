"""The run directory: its files' names and paths, its marker, the lock that makes one
process its writer, and an --overwrite's old run set aside until the new run's first
checkpoint.

A run directory `RUN_DIR/NAME/` holds `config.json`, `metrics.jsonl` (one row
per chunk), `checkpoint.msgpack` (the whole runner state: resume is exact),
the trainer's policy file and the marker `.damdjax-run` (what `--overwrite`
requires before it deletes anything). It belongs to one process at a time:
`take` holds an exclusive `fcntl.flock` on `RUN_DIR/.NAME.lock` until `release`
(the end of a `held` block); a second command on the same name is refused with
one line naming the holder. `--overwrite` moves the old run aside
(`RUN_DIR/.NAME.replaced`, `set_aside`) and deletes it only once the new run's
first checkpoint exists (`settle`); a new run that fails or is stopped before
that puts it back (`release`; a killed one: the next command on the name does,
`recover`).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys

from damdjax.io import remove_stale_temps, warn, write_bytes_atomic

CHECKPOINT = "checkpoint.msgpack"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
MARKER = ".damdjax-run"          # says "a damdjax run directory": --overwrite may delete it

# run directory -> {"fd": lock file descriptor, "aside": the old run's path or None}: the
# runs this process holds.
_OPEN: dict[str, dict] = {}


def run_paths(run_dir: str) -> dict[str, str]:
    return {"config": os.path.join(run_dir, CONFIG), "checkpoint": os.path.join(run_dir, CHECKPOINT),
            "metrics": os.path.join(run_dir, METRICS)}


def _side_paths(run_dir: str) -> tuple[str, str]:
    """`(lock file, aside folder)` of `run_dir`: siblings `.NAME.lock`, `.NAME.replaced`."""
    parent, name = os.path.split(os.path.normpath(run_dir))
    return os.path.join(parent, f".{name}.lock"), os.path.join(parent, f".{name}.replaced")


def aside_path(run_dir: str) -> str:
    """Where an --overwrite keeps the earlier run of `run_dir`: `RUN_DIR/.NAME.replaced`."""
    return _side_paths(run_dir)[1]


def _lock(run_dir: str) -> int:
    """An exclusive flock on `run_dir`'s lock file (holder's pid and command written in
    it); ValueError naming the holder where another process has it."""
    path = _side_paths(run_dir)[0]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ValueError(f"run directory {run_dir} is in use by {holder} "
                         f"(lock {path}); wait for it or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:200]})\n".encode(), 0)
    return fd


def take(run_dir: str) -> None:
    """Lock `run_dir` for this process until `release` (ValueError naming the holder where
    another process has it)."""
    fd = _lock(run_dir)
    _OPEN[run_dir] = {"fd": fd, "aside": None}


def recover(run_dir: str) -> None:
    """Finish an --overwrite that a kill interrupted: the old run set aside comes back if
    the new one never reached its first checkpoint, else it is deleted."""
    aside = aside_path(run_dir)
    if not os.path.isdir(aside):
        return
    if os.path.exists(run_paths(run_dir)["checkpoint"]):
        shutil.rmtree(aside)
        return
    if os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    os.rename(aside, run_dir)
    warn(f"{run_dir}: an --overwrite was interrupted before its first checkpoint; "
         f"the earlier run is back")


def has_marker(run_dir: str) -> bool:
    """Whether `run_dir` holds the marker (MARKER) of a damdjax run directory."""
    return os.path.exists(os.path.join(run_dir, MARKER))


def write_marker(run_dir: str) -> None:
    """The marker (MARKER) written in `run_dir`."""
    write_bytes_atomic(b"damdjax run directory\n", os.path.join(run_dir, MARKER))


def remove_stale(run_dir: str) -> None:
    """The temp files that killed writes left in `run_dir` deleted, one line each."""
    for path in remove_stale_temps(run_dir):
        print(f"removed {path} (a write a kill interrupted)", flush=True)


def set_aside(run_dir: str) -> None:
    """The earlier run in `run_dir` (taken by `take`) moved aside (`aside_path`) until
    the new run's first checkpoint (`settle`) or its end (`release`)."""
    entry = _OPEN[run_dir]
    entry["aside"] = aside_path(run_dir)
    os.rename(run_dir, entry["aside"])


def release(run_dir: str) -> None:
    """Give up `run_dir` (see `held`)."""
    entry = _OPEN.pop(run_dir, None)
    if entry is None:
        return
    try:
        if entry["aside"] is not None:  # the new run never reached its first checkpoint
            if os.path.exists(run_paths(run_dir)["checkpoint"]):
                shutil.rmtree(entry["aside"])
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
                os.rename(entry["aside"], run_dir)
                print(f"{run_dir}: the new run made no checkpoint; the earlier run is kept",
                      file=sys.stderr, flush=True)
    finally:
        os.close(entry["fd"])


@contextlib.contextmanager
def held(run_dir: str):
    """The block that uses a run directory `take` took (`damdjax.runs.open_run`): on
    leaving it (normally or not) the lock is released and, where an --overwrite's new
    run made no checkpoint, the earlier run put back."""
    try:
        yield run_dir
    finally:
        release(run_dir)


def settle(run_dir: str) -> None:
    """A checkpoint now exists in `run_dir`: the run an --overwrite set aside is deleted."""
    for root, entry in _OPEN.items():
        if entry["aside"] is not None and os.path.abspath(root) == os.path.abspath(run_dir):
            shutil.rmtree(entry["aside"], ignore_errors=True)
            entry["aside"] = None
