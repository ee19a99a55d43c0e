"""Atomic file writes (nothing half-written is ever left behind) and bounded reads of
the files a user names (regular files only, a size limit, JSON of a bounded depth; every
refusal one line).

A leaf module (standard library only), shared by the instance files, the converter, the
run directories and the benchmarks.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import sys
import tempfile
from itertools import accumulate

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


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


# --------------------------------------------------------------------------
# Reading files a user names: bounded, regular files only, one-line errors
# --------------------------------------------------------------------------

MiB = 2 ** 20
# How deep a JSON file may nest arrays and objects. The project's formats need at most
# 6 levels (an instance's task `preds`, a WfFormat task's `parents`), leaving the rest to
# free-form `meta`; 64 keeps every recursive walk of a decoded value (json itself,
# copy.deepcopy, json.dumps, the meta check) far below Python's recursion limit (1000),
# wherever in a program it is called from.
JSON_MAX_DEPTH = 64
# The longest integer literal a JSON file may hold, in digits. Every number of the
# formats is used as a float (largest about 1.8e308, 309 digits) or a position, so 1000
# digits loses nothing, and it stays below Python's own 4300-digit limit on converting
# integers to and from text (so writing a value back never trips it).
JSON_MAX_INT_DIGITS = 1000
_CHUNK = MiB  # bytes per read() of read_bytes_limited


class ReadError(ValueError):
    """A file that cannot be read as asked: the one-line message `PATH: REASON`; `path`
    and `reason` are kept apart for callers that name the file their own way."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def _check_regular(shown: str, mode: int, what: str) -> None:
    """ReadError unless `mode` is a regular file's: a FIFO would block, a device (say
    /dev/zero) never ends, a directory has no text."""
    if not stat.S_ISREG(mode):
        raise ReadError(shown, f"cannot read {what}: is {_kind(mode)}, not a regular file")


def _oserror(shown: str, what: str, err: OSError) -> ReadError:
    """The one-line ReadError of an OSError (its reason, without the repeated path)."""
    if isinstance(err, FileNotFoundError):
        return ReadError(shown, f"no such {what}")
    return ReadError(shown, f"cannot read {what}: {err.strerror or err}")


def open_regular(path: str | os.PathLike, what: str) -> int:
    """A read-only descriptor of `path`, refused (ReadError, one line) unless it is a
    regular file. Checked before opening (os.stat) and again on the open descriptor
    (os.fstat: the path may change in between); opened with O_NONBLOCK so that a FIFO
    put there meanwhile cannot block the open. The caller closes it."""
    shown = os.fspath(path)
    try:
        mode = os.stat(shown).st_mode
        _check_regular(shown, mode, what)
        fd = os.open(shown, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise _oserror(shown, what, err) from None
    except ReadError:
        raise
    except ValueError as err:  # a path with a NUL character
        raise ReadError(shown, f"cannot read {what}: {err}") from None
    try:
        _check_regular(shown, os.fstat(fd).st_mode, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes_limited(path: str | os.PathLike, limit_bytes: int, what: str) -> bytes:
    """The bytes of the regular file `path` (`what` names it in errors), refused with a
    one-line ReadError naming the path and the limit where it holds more than
    `limit_bytes`: at most `limit_bytes + 1` bytes are ever read, so a file that grows
    meanwhile cannot exhaust the memory either."""
    shown = os.fspath(path)
    fd = open_regular(path, what)
    try:
        chunks, total = [], 0
        if os.fstat(fd).st_size > limit_bytes:  # refused without reading it
            total = limit_bytes + 1
        while total <= limit_bytes:
            chunk = os.read(fd, min(_CHUNK, limit_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as err:
        raise _oserror(shown, what, err) from None
    finally:
        os.close(fd)
    if total > limit_bytes:
        raise ReadError(shown, f"cannot read {what}: larger than the limit of "
                        f"{_size(limit_bytes)}")
    return b"".join(chunks)


def _size(n: int) -> str:
    """`n` bytes in words (MiB where whole)."""
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n} bytes"


def read_text_limited(path: str | os.PathLike, limit_bytes: int, what: str) -> str:
    """The UTF-8 text of the regular file `path` (see read_bytes_limited); ReadError (one
    line naming the path and the first bad byte's offset) where it is not UTF-8."""
    data = read_bytes_limited(path, limit_bytes, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ReadError(os.fspath(path), f"cannot read {what}: not UTF-8 text (byte "
                        f"0x{data[err.start]:02x} at offset {err.start})") from None


# A JSON string, or an unterminated one to the end of the text: the closing quote is
# optional so that a match never fails and is retried from a later quote (quadratic time).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deep `text` nests JSON arrays and objects, computed without recursion (json's
    decoder recurses once per level). Brackets inside strings do not count; for text
    that is not valid JSON the result is an upper bound of what a decoder would reach."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


class _LongInteger(Exception):
    """An integer literal over JSON_MAX_INT_DIGITS (raised inside json's decoder)."""


def _json_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > JSON_MAX_INT_DIGITS:
        raise _LongInteger(digits)
    try:
        return int(text)
    except ValueError:  # sys.set_int_max_str_digits set below JSON_MAX_INT_DIGITS
        raise _LongInteger(digits) from None


def json_loads_limited(text: str, shown: str, max_depth: int = JSON_MAX_DEPTH,
                       **loads_kwargs):
    """json.loads(text, **loads_kwargs), refusing with a one-line ReadError (prefixed
    `shown`, the file's path) text nested deeper than `max_depth` (checked first, without
    recursion), an integer literal of more than JSON_MAX_INT_DIGITS digits, and invalid
    JSON (line and column). NaN and Infinity literals are decoded as json does; errors
    that `loads_kwargs`' hooks raise pass through."""
    depth = json_depth(text)
    if depth > max_depth:
        raise ReadError(shown, f"JSON nested {depth} levels deep, more than the limit "
                        f"of {max_depth}")
    try:
        return json.loads(text, parse_int=_json_int, **loads_kwargs)
    except json.JSONDecodeError as err:
        raise ReadError(shown, f"invalid JSON at line {err.lineno} column {err.colno}: "
                        f"{err.msg}") from None
    except _LongInteger as err:
        raise ReadError(shown, f"an integer of {err.args[0]} digits, more than the "
                        f"limit of {JSON_MAX_INT_DIGITS}") from None
    except RecursionError:  # a deep stack at the call: json recurses per level
        raise ReadError(shown, "JSON nested too deeply to decode here") from None


def load_json_limited(path: str | os.PathLike, limit_bytes: int, what: str,
                      max_depth: int = JSON_MAX_DEPTH, **loads_kwargs):
    """The JSON value of the regular file `path`: read_text_limited, then
    json_loads_limited (ReadError, one line naming the path, on every refusal)."""
    text = read_text_limited(path, limit_bytes, what)
    return json_loads_limited(text, os.fspath(path), max_depth, **loads_kwargs)
