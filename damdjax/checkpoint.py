"""Pytrees to and from msgpack files, written atomically, checksummed and validated on load.

    save_tree(tree, path, extra={...})          # atomic replace; `extra`: JSON, covered too
    tree = load_tree(template, path)            # same structure, shapes and dtypes, or ValueError
    state, extra = read_file(path)              # the raw state dict and `extra`, checked

A file is a msgpack map `{"format": "damdjax-msgpack", "version": 2, "sha256",
"extra", "payload"}`: `payload` flax msgpack, cut into a list of pieces of at most
PAYLOAD_PIECE bytes (msgpack holds no single byte string of 4 GiB or more, and a
sweep's checkpoint of replay buffers can be larger), `extra` a JSON object's text (a
checkpoint's last metrics rows: damdjax.runner), `sha256` the digest of both (of the
whole payload, however cut). Version 1 files (one `payload` byte string) still load.

The payload is itself marked: the map `{"format": "damdjax-msgpack", "version": 2,
"tree": <the tree's state dict>}` (files written before the mark held the bare state
dict there, and still load). The mark is what tells a file written before checksums
(bare flax msgpack of the state dict: no wrapper, no mark) from a checksummed file
whose wrapper was removed or lost its `sha256`: the first loads unchecked, with a
one-line warning; the second is refused, as is any map carrying the wrapper's
`format` (or its `sha256` or `payload`) without a digest, so dropping one field never
turns the checksum off. (A checksummed file written before the mark, unwrapped by
hand, reads as a pre-checksum file: its payload is exactly one. The checksum guards
against damage, not against someone who rewrites the content: such a writer could as
well recompute the digest.)

Every read checks the digest: a damaged file (a flipped byte anywhere) is refused
with one line naming it, never loaded; so is a file whose `extra` is not a JSON object.

No pickle: msgpack holds only arrays, numbers, strings, lists and dicts.
`load_tree` checks every leaf against the template (a freshly initialised, or
`jax.eval_shape`'d, state of the same configuration), so a file from another
configuration is refused with a message naming the file and the leaf; and the
network parts of a runner state (NETWORK_KEYS: parameters, target parameters,
optimizer moments) must be finite (`check_finite`). Only non-finite values (NaN,
inf) are refused, not large finite ones: a NaN or an infinity is never what a
successful training leaves (it is a diverged run or a damaged file, and every
Q-value computed from it is NaN), while a finite weight has no natural bound (any
cutoff would be arbitrary and could refuse a real network).
"""
from __future__ import annotations

import hashlib
import json
import os

import flax.serialization
import jax
import msgpack
import numpy as np

from damdjax.io import json_loads_limited, open_regular, warn, write_bytes_atomic

FORMAT, VERSION = "damdjax-msgpack", 2
READ_VERSIONS = (1, 2)   # 1: `payload` one byte string; 2: a list of pieces
PAYLOAD_PIECE = 1 << 30  # bytes per payload piece (msgpack's byte strings end below 4 GiB)
_WRAPPER_KEYS = {"format", "version", "sha256", "extra", "payload"}
_MARK_KEYS = {"format", "version", "tree"}
# The parts of a trainer's runner state that hold networks (parameters, target
# parameters, Adam's moments): `load_tree` refuses a non-finite value there. The rest
# (env states, replay buffers) may hold infinities by design (an unfinished task's time).
NETWORK_KEYS = ("params", "target_params", "opt_state")


def _digest(extra: bytes, payload: bytes) -> str:
    h = hashlib.sha256(len(extra).to_bytes(8, "little"))
    h.update(extra)
    h.update(payload)
    return h.hexdigest()


def save_tree(tree, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write `tree` (any pytree of arrays and scalars) to `path` as checksummed, marked
    flax msgpack with `extra` (a JSON-serialisable dict; covered by the checksum),
    atomically."""
    state = flax.serialization.to_state_dict(jax.device_get(tree))
    payload = flax.serialization.msgpack_serialize(
        {"format": FORMAT, "version": VERSION, "tree": state})
    text = json.dumps(extra or {}).encode()
    pieces = [payload[i:i + PAYLOAD_PIECE] for i in range(0, len(payload), PAYLOAD_PIECE)]
    data = msgpack.packb({"format": FORMAT, "version": VERSION, "sha256": _digest(text, payload),
                          "extra": text, "payload": pieces}, use_bin_type=True)
    write_bytes_atomic(data, path)


def _read_bytes(path: str) -> bytes:
    """The bytes of the regular file `path`; ValueError (one line naming it) where it is
    missing, not a regular file (a FIFO would block) or unreadable."""
    fd = open_regular(path, "file")   # ReadError (a ValueError): "PATH: no such file", ...
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read()
    except OSError as err:
        raise ValueError(f"{path}: unreadable ({err})") from None


def _is_wrapper(outer) -> bool:
    """Whether `outer` (the file's top msgpack value) claims to be a checksummed file:
    a map holding any of the wrapper's own keys (a bare state dict holds none)."""
    return isinstance(outer, dict) and bool(outer.keys() & {"format", "sha256", "payload"})


def _checked_payload(outer: dict, path: str) -> tuple[bytes, dict]:
    """`(payload bytes, extra)` of a wrapper map whose digest matches; ValueError naming
    `path` otherwise (a missing `sha256` said as such)."""
    if "sha256" not in outer:
        raise ValueError(f"{path}: a {FORMAT} file without its checksum (sha256): refused "
                         "(only files written before checksums load unchecked)")
    ok = (set(outer) == _WRAPPER_KEYS and outer["format"] == FORMAT
          and isinstance(outer["extra"], bytes) and isinstance(outer["sha256"], str))
    version = outer.get("version")
    if ok and (isinstance(version, bool) or version not in READ_VERSIONS):
        raise ValueError(f"{path}: format version {version!r} (damaged, or a newer "
                         f"damdjax's); this reads {', '.join(map(str, READ_VERSIONS))}")
    payload = outer.get("payload")
    if ok and version == 1:
        ok = isinstance(payload, bytes)
    elif ok:
        ok = isinstance(payload, list) and all(isinstance(x, bytes) for x in payload)
        payload = b"".join(payload) if ok else None
    if not ok or _digest(outer["extra"], payload) != outer["sha256"]:
        raise ValueError(f"{path}: damaged (checksum mismatch); not loaded")
    return payload, _extra(outer["extra"], path)


def _extra(text: bytes, path: str) -> dict:
    """The `extra` JSON object of a file; ValueError naming `path` and the field otherwise."""
    try:
        extra = json_loads_limited(text.decode("utf-8"), path)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: extra is not UTF-8 text; not loaded") from None
    except ValueError as err:
        raise ValueError(f"{str(err).splitlines()[0]} (in extra); not loaded") from None
    if not isinstance(extra, dict):
        raise ValueError(f"{path}: extra must be a JSON object, got {type(extra).__name__}; "
                         "not loaded")
    return extra


def _is_marked(state) -> bool:
    return (isinstance(state, dict) and set(state) == _MARK_KEYS
            and state["format"] == FORMAT)


def _restore(data: bytes, path: str):
    try:
        return flax.serialization.msgpack_restore(data)
    except Exception as err:  # msgpack and numpy raise many types on damaged data
        raise ValueError(f"{path}: not a msgpack checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None


def read_file(path: str | os.PathLike) -> tuple[dict, dict]:
    """`(raw state dict, extra)` of a `save_tree` file, its checksum verified; ValueError
    naming the file if it is missing, damaged, not one, or a checksummed one without its
    checksum. A file written before checksums (bare flax msgpack, unmarked) loads with a
    warning, `extra` {}."""
    path = os.fspath(path)
    data = _read_bytes(path)
    try:
        outer = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as err:  # msgpack raises several types on damaged data
        raise ValueError(f"{path}: damaged or not a msgpack file ({type(err).__name__})") from None
    if _is_wrapper(outer):
        payload, extra = _checked_payload(outer, path)
        state = _restore(payload, path)
        return (state["tree"] if _is_marked(state) else state), extra
    state = _restore(data, path)
    warn(f"{path}: written without a checksum (an older damdjax): loaded unchecked")
    return state, {}


def read_state_dict(path: str | os.PathLike) -> dict:
    """The raw msgpack state dict of `path` (`read_file`); ValueError naming the file if it
    is missing, damaged or unreadable."""
    return read_file(path)[0]


def _leaf(x) -> np.ndarray | None:
    """A state leaf as an array (numpy arrays and scalars, Python numbers); None for
    anything else (a list, a string, a map)."""
    if isinstance(x, (np.ndarray, np.generic, bool, int, float, complex)):
        return np.asarray(x)
    return None


def _spec(w) -> tuple[tuple, np.dtype]:
    """`(shape, dtype)` of a template leaf: an array, a `jax.ShapeDtypeStruct` (nothing
    allocated) or a Python number."""
    if hasattr(w, "shape") and hasattr(w, "dtype"):
        return tuple(w.shape), np.dtype(w.dtype)
    a = np.asarray(w)
    return a.shape, a.dtype


def restore(template, state: dict, path: str = "<state>", root: str = ""):
    """`template`'s structure filled from `state` (a state dict), every leaf checked.

    `template`'s leaves may be arrays or `jax.ShapeDtypeStruct`s (`jax.eval_shape` of an
    init: a file's shapes are then checked before anything of their size is made).
    Raises ValueError naming `path` and the first leaf whose key, type, shape or dtype
    kind differs from the template.
    """
    want = flax.serialization.to_state_dict(template)

    def check(w, s, where):
        if isinstance(w, dict):
            if not isinstance(s, dict):
                raise ValueError(f"{path}: {where or 'root'} should be a mapping")
            missing, extra = set(w) - set(s), set(s) - set(w)
            if missing or extra:
                raise ValueError(f"{path}: {where or 'root'} keys differ from this configuration "
                                 f"(missing {sorted(missing, key=str)[:5]}, unexpected "
                                 f"{sorted(extra, key=str)[:5]})")
            for k in w:
                check(w[k], s[k], f"{where}/{k}")
            return
        if w is None:
            if s is not None:   # e.g. a runner that carried a part it no longer does
                raise ValueError(f"{path}: {where} holds data that this configuration does "
                                 f"not carry (written by another version?)")
            return
        sa = _leaf(s)
        if sa is None:
            raise ValueError(f"{path}: {where} should be an array, got {type(s).__name__}")
        shape, dtype = _spec(w)
        if shape != sa.shape:
            raise ValueError(f"{path}: {where} has shape {sa.shape}, this configuration "
                             f"needs {shape}")
        if dtype.kind != sa.dtype.kind:
            raise ValueError(f"{path}: {where} has dtype {sa.dtype}, expected {dtype}")

    check(want, state, root)
    return flax.serialization.from_state_dict(template, state)


def check_finite(state, path: str, under: tuple[str, ...] | None = None,
                 where: str = "") -> None:
    """ValueError naming `path` and the first leaf of `state` (a state dict) holding NaN or
    an infinity, among the leaves below a key in `under` (None: every leaf)."""
    inside = under is None

    def walk(s, at, inside):
        if isinstance(s, dict):
            for k, v in s.items():
                walk(v, f"{at}/{k}", inside or k in under)
            return
        a = _leaf(s)
        if not inside or a is None or a.dtype.kind not in "fc":
            return
        bad = np.flatnonzero(~np.isfinite(a.ravel()))
        if bad.size:
            i = int(bad[0])
            index = np.unravel_index(i, a.shape) if a.ndim else ()
            raise ValueError(f"{path}: {at}{list(map(int, index)) if a.ndim else ''} holds "
                             f"{a.ravel()[i]} (parameters must be finite: a diverged run or a "
                             f"damaged file); not loaded")

    walk(state, where, inside)


def load_tree(template, path: str | os.PathLike, finite: tuple[str, ...] | None = NETWORK_KEYS):
    """Read `path` into `template`'s structure (see `restore`); ValueError on any mismatch
    or on a non-finite value below a key in `finite` (`check_finite`)."""
    return load_tree_extra(template, path, finite)[0]


def load_tree_extra(template, path: str | os.PathLike,
                    finite: tuple[str, ...] | None = NETWORK_KEYS):
    """`(tree, extra)`: `load_tree` and the file's `extra` (`save_tree`)."""
    state, extra = read_file(path)
    tree = restore(template, state, os.fspath(path))
    check_finite(state, os.fspath(path), finite)
    return tree, extra
