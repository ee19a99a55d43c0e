"""Pytrees to and from msgpack files, written atomically and validated on load.

    save_tree(tree, path)                       # flax msgpack, atomic replace
    tree = load_tree(template, path)            # same structure, shapes and dtypes, or ValueError

No pickle: msgpack holds only arrays, numbers, strings, lists and dicts.
`load_tree` checks every leaf against the template (a freshly initialised
state of the same configuration), so a file from another configuration or a
damaged file is refused with a message naming the file and the leaf.
"""
from __future__ import annotations

import os

import flax.serialization
import jax
import numpy as np

from damdjax.io import write_bytes_atomic


def save_tree(tree, path: str | os.PathLike) -> None:
    """Write `tree` (any pytree of arrays and scalars) to `path` as flax msgpack, atomically."""
    write_bytes_atomic(flax.serialization.to_bytes(jax.device_get(tree)), path)


def read_state_dict(path: str | os.PathLike) -> dict:
    """The raw msgpack state dict of `path`; ValueError naming the file if unreadable."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        return flax.serialization.msgpack_restore(data)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as err:  # msgpack raises several types on damaged data
        raise ValueError(f"{path}: not a msgpack checkpoint ({type(err).__name__}: {err})") from None


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
    return restore(template, read_state_dict(path), os.fspath(path))
