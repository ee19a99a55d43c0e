"""Atomic file writes: nothing half-written is ever left behind.

A leaf module (standard library only), shared by the instance files, the
run directories and the benchmarks.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile

TMP_PREFIX = ".tmp-"   # write_bytes_atomic's temp files (a killed write leaves one behind)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync and os.replace.

    The file is readable by others (0644); on any error the old file stays and
    no temp file is left.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o644)  # mkstemp creates 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_number(value):
    """`value` as a JSON number, or None where it is NaN or infinite (JSON has neither).

    Used for the undefined confidence interval of a single episode.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(obj, path: str | os.PathLike) -> None:
    """Write `obj` as indented JSON (no NaN: it is not JSON) to `path` atomically."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    write_bytes_atomic(text.encode("utf-8"), path)


def remove_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Delete the temp files a killed `write_bytes_atomic` left in `folder` and its
    subfolders (names starting TMP_PREFIX); returns their paths. Call it only where no
    other process writes (a run directory under its lock)."""
    gone = []
    for root, _, files in os.walk(os.fspath(folder)):
        for name in files:
            if name.startswith(TMP_PREFIX):
                path = os.path.join(root, name)
                os.unlink(path)
                gone.append(path)
    return gone


def check_output(out: str | os.PathLike, inputs=()) -> None:
    """ValueError (one line) unless `out` can be written without harming an input: not a
    folder, not any of `inputs` (the paths of the files read, compared after resolving
    links), and its folder exists and is writable. Call it before computing."""
    out = os.fspath(out)
    real = os.path.realpath(out)
    if os.path.isdir(out):
        raise ValueError(f"--out {out}: is a folder, not a file path")
    for src in inputs:
        if not src:
            continue
        src_real = os.path.realpath(os.fspath(src))
        if real == src_real:
            raise ValueError(f"--out {out}: would overwrite the input {os.fspath(src)}")
        if os.path.exists(out) and os.path.exists(src_real) and os.path.samefile(out, src_real):
            raise ValueError(f"--out {out}: is the input {os.fspath(src)}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ValueError(f"--out {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(out)
                                                    and not os.access(out, os.W_OK)):
        raise ValueError(f"--out {out}: not writable")


def warn(message: str) -> None:
    """One line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
