"""Atomic file writes: nothing half-written is ever left behind.

A leaf module (standard library only), shared by the instance files, the
run directories and the benchmarks.
"""
from __future__ import annotations

import json
import math
import os
import tempfile


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync and os.replace.

    The file is readable by others (0644); on any error the old file stays and
    no temp file is left.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
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
