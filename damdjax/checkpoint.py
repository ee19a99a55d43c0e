"""Pytrees to and from msgpack files, written atomically, checksummed and validated on load.

    save_tree(tree, path, extra={...})          # atomic replace; `extra`: JSON, covered too
    tree = load_tree(template, path)            # same structure, shapes and dtypes, or ValueError
    state, extra = read_file(path)              # the raw state dict and `extra`, checked

A file is a msgpack map `{"format": "damdjax-msgpack", "version": 2, "sha256",
"extra", "payload"}`: `payload` the tree as flax msgpack, cut into a list of pieces
of at most PAYLOAD_PIECE bytes (msgpack holds no single byte string of 4 GiB or
more, and a sweep's checkpoint of replay buffers can be larger), `extra` a JSON
text (a checkpoint's last metrics rows: damdjax.runner), `sha256` the digest of both
(of the whole payload, however cut). Version 1 files (one `payload` byte string)
still load.
Every read checks the digest: a damaged file (a flipped byte anywhere) is
refused with one line naming it, never loaded. A file written before checksums
(bare flax msgpack) still loads, with a one-line warning that it is unchecked.

No pickle: msgpack holds only arrays, numbers, strings, lists and dicts.
`load_tree` checks every leaf against the template (a freshly initialised
state of the same configuration), so a file from another configuration is
refused with a message naming the file and the leaf.
"""
from __future__ import annotations

import hashlib
import json
import os

import flax.serialization
import jax
import msgpack
import numpy as np

from damdjax.io import warn, write_bytes_atomic

FORMAT, VERSION = "damdjax-msgpack", 2
READ_VERSIONS = (1, 2)   # 1: `payload` one byte string; 2: a list of pieces
PAYLOAD_PIECE = 1 << 30  # bytes per payload piece (msgpack's byte strings end below 4 GiB)
_WRAPPER_KEYS = {"format", "version", "sha256", "extra", "payload"}


def _digest(extra: bytes, payload: bytes) -> str:
    h = hashlib.sha256(len(extra).to_bytes(8, "little"))
    h.update(extra)
    h.update(payload)
    return h.hexdigest()


def save_tree(tree, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write `tree` (any pytree of arrays and scalars) to `path` as checksummed flax msgpack
    with `extra` (JSON-serialisable; covered by the checksum), atomically."""
    payload = flax.serialization.to_bytes(jax.device_get(tree))
    text = json.dumps(extra or {}).encode()
    pieces = [payload[i:i + PAYLOAD_PIECE] for i in range(0, len(payload), PAYLOAD_PIECE)]
    data = msgpack.packb({"format": FORMAT, "version": VERSION, "sha256": _digest(text, payload),
                          "extra": text, "payload": pieces}, use_bin_type=True)
    write_bytes_atomic(data, path)


def read_file(path: str | os.PathLike) -> tuple[dict, dict]:
    """`(raw state dict, extra)` of a `save_tree` file, its checksum verified; ValueError
    naming the file if it is missing, damaged or not one. A file without a checksum (an
    older version's) loads with a warning, `extra` {}."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as err:
        raise ValueError(f"{path}: unreadable ({err})") from None
    try:
        outer = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as err:  # msgpack raises several types on damaged data
        raise ValueError(f"{path}: damaged or not a msgpack file ({type(err).__name__})") from None
    if isinstance(outer, dict) and outer.keys() & {"sha256", "payload"}:
        ok = (set(outer) == _WRAPPER_KEYS and outer["format"] == FORMAT
              and isinstance(outer["extra"], bytes))
        if ok and outer["version"] not in READ_VERSIONS:
            raise ValueError(f"{path}: format version {outer['version']} (damaged, or a newer "
                             f"damdjax's); this reads {', '.join(map(str, READ_VERSIONS))}")
        payload = outer.get("payload")
        if ok and outer["version"] == 1:
            ok = isinstance(payload, bytes)
        elif ok:
            ok = isinstance(payload, list) and all(isinstance(x, bytes) for x in payload)
            payload = b"".join(payload) if ok else None
        if not ok or _digest(outer["extra"], payload) != outer["sha256"]:
            raise ValueError(f"{path}: damaged (checksum mismatch); not loaded")
        data, extra = payload, json.loads(outer["extra"])
    else:
        warn(f"{path}: written without a checksum (an older damdjax): loaded unchecked")
        extra = {}
    try:
        return flax.serialization.msgpack_restore(data), extra
    except Exception as err:
        raise ValueError(f"{path}: not a msgpack checkpoint ({type(err).__name__}: {err})") from None


def read_state_dict(path: str | os.PathLike) -> dict:
    """The raw msgpack state dict of `path` (`read_file`); ValueError naming the file if it
    is missing, damaged or unreadable."""
    return read_file(path)[0]


def restore(template, state: dict, path: str = "<state>"):
    """`template`'s structure filled from `state` (a state dict), every leaf checked.

    Raises ValueError naming `path` and the first leaf whose key, shape or
    dtype kind differs from the template.
    """
    want = flax.serialization.to_state_dict(template)

    def check(w, s, where):
        if isinstance(w, dict):
            if not isinstance(s, dict):
                raise ValueError(f"{path}: {where or 'root'} should be a mapping")
            missing, extra = set(w) - set(s), set(s) - set(w)
            if missing or extra:
                raise ValueError(f"{path}: {where or 'root'} keys differ from this configuration "
                                 f"(missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]})")
            for k in w:
                check(w[k], s[k], f"{where}/{k}")
            return
        if w is None:
            if s is not None:   # e.g. a runner that carried a part it no longer does
                raise ValueError(f"{path}: {where} holds data that this configuration does "
                                 f"not carry (written by another version?)")
            return
        wa, sa = np.asarray(w), np.asarray(s)
        if wa.shape != sa.shape:
            raise ValueError(f"{path}: {where} has shape {sa.shape}, this configuration "
                             f"needs {wa.shape}")
        if wa.dtype.kind != sa.dtype.kind:
            raise ValueError(f"{path}: {where} has dtype {sa.dtype}, expected {wa.dtype}")

    check(want, state, "")
    return flax.serialization.from_state_dict(template, state)


def load_tree(template, path: str | os.PathLike):
    """Read `path` into `template`'s structure (see `restore`); ValueError on any mismatch."""
    return load_tree_extra(template, path)[0]


def load_tree_extra(template, path: str | os.PathLike):
    """`(tree, extra)`: `load_tree` and the file's `extra` (`save_tree`)."""
    state, extra = read_file(path)
    return restore(template, state, os.fspath(path)), extra
