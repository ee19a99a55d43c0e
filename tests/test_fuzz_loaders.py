"""Fuzzed loaders: a job library (.npz), a checkpoint, a policy file and a stored
config.json, each damaged by generated edits (truncation, flipped bytes, values of
another type, huge numbers, NaN, missing and unknown keys), either return a valid
object or raise a ValueError whose message is one line (naming the file, for files);
never another exception, and within the deadline (no allocation of a size the file
does not hold, no unbounded loop).

Files are made with the project's own writers and then damaged: as bytes (the
checksum then refuses most), or as content written back with the writer, so that the
checksum holds and the validation behind it is what is exercised.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from datetime import timedelta

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from damdjax.checkpoint import load_tree_extra, save_tree
from damdjax.policies import (dispatcher_network, init_dispatcher, load_dispatcher,
                              save_dispatcher)
from damdjax.envs import workload
from damdjax.envs.workload import JobLibrary, load_library
from damdjax.train import dqn

FUZZ = settings(max_examples=50, deadline=timedelta(seconds=3), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# Values of every JSON / msgpack type, the extremes of float32 and beyond.
NUMBERS = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(),
                    st.sampled_from([0, -1, 2**31 - 1, 2**31, 1e38, 1e300, -1e300, 1e-45,
                                     1e-300, float("nan"), float("inf")]))
JUNK = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=8),
                 st.lists(st.integers(-5, 5), max_size=3),
                 st.dictionaries(st.text(max_size=4), st.integers(-5, 5), max_size=2))
DTYPES = ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool",
          "complex64", "U3", "S3"]


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield d


def loads_or_refuses(load, *args, names: str | None = None):
    """`load(*args)`, or None where it raises a ValueError of one line (beginning with
    `names`, the file, where given); any other exception fails the test."""
    try:
        return load(*args)
    except ValueError as err:
        text = str(err)
        assert text and "\n" not in text, text
        assert names is None or text.startswith(names), text
        return None


@st.composite
def byte_damage(draw, data: bytes) -> bytes:
    """`data` truncated, or with a few bytes flipped."""
    if draw(st.booleans()):
        return data[:draw(st.integers(0, len(data) - 1))]
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
    return bytes(out)


def leaf_damage(draw, value: np.ndarray):
    """`value` (an array) with an element NaN / inf / huge, another dtype, another shape,
    or replaced by a value of another type."""
    how = draw(st.sampled_from(["element", "dtype", "shape", "junk"]))
    value = np.array(value)
    if how == "element" and value.size and value.dtype.kind in "fiu":
        v = draw(NUMBERS)
        try:
            with np.errstate(all="ignore"):
                value.reshape(-1)[draw(st.integers(0, value.size - 1))] = v
        except (OverflowError, ValueError):   # not representable in the dtype
            pass
        return value
    if how == "dtype":
        try:
            with np.errstate(all="ignore"):
                return value.astype(draw(st.sampled_from(DTYPES)))
        except ValueError:   # strings that are not numbers
            return value.astype("S")
    if how == "shape":
        return value.reshape(-1)[:draw(st.integers(0, value.size))]
    return draw(JUNK)


def tree_damage(draw, tree: dict) -> dict:
    """`tree` (nested dicts of arrays) with one leaf damaged, deleted, or a key added."""
    tree = jax.tree.map(np.array, tree)
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    path = draw(st.sampled_from(paths))
    parent = tree
    for key in path[:-1]:
        parent = parent[key.key]
    name = path[-1].key
    how = draw(st.sampled_from(["leaf", "leaf", "delete", "add"]))
    if how == "leaf":
        parent[name] = leaf_damage(draw, parent[name])
    elif how == "delete":
        del parent[name]
    else:
        parent[draw(st.text(min_size=1, max_size=4))] = draw(JUNK)
    return tree


# ---------------------------------------------------------------------------
# Job libraries
# ---------------------------------------------------------------------------

def library_arrays():
    return {"length": np.array([3, 1], np.int32),
            "size": np.array([[1.0, 2.0, 0.5], [4.0, 0.0, 0.0]]),
            "work": np.array([[1.0, 1.0, 3.0], [2.0, 0.0, 0.0]]),
            "preds": np.array([[[-1], [0], [1]], [[-1], [-1], [-1]]], np.int32),
            "names": np.array(["chain", "one"])}


@st.composite
def damaged_library(draw) -> bytes:
    arrays = library_arrays()
    buffer = io.BytesIO()
    if draw(st.booleans()):   # the file's bytes
        np.savez(buffer, **arrays, sha256=workload._digest(arrays))
        return draw(byte_damage(buffer.getvalue()))
    arrays = tree_damage(draw, arrays)   # the arrays, written with or without a checksum
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    try:
        checksum = {"sha256": workload._digest(arrays)} if draw(st.booleans()) else {}
    except KeyError:   # a field deleted: no digest to compute
        checksum = {}
    np.savez(buffer, **arrays, **checksum)
    return buffer.getvalue()


@FUZZ
@given(data=damaged_library())
def test_a_damaged_library_loads_or_is_refused_in_one_line(folder, data):
    path = os.path.join(folder, "jobs.npz")
    with open(path, "wb") as f:
        f.write(data)
    lib = loads_or_refuses(load_library, path, names=path)
    assert lib is None or isinstance(lib, JobLibrary)


# ---------------------------------------------------------------------------
# Checkpoints and policy files
# ---------------------------------------------------------------------------

RUNNER = {"params": {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)},
          "opt_state": {"count": np.int32(4), "mu": np.zeros((2, 3), np.float32)},
          "env_state": {"finish": np.full(4, np.inf, np.float32), "step": np.arange(4)}}


@st.composite
def damaged_file(draw, folder: str, tree: dict, edit) -> str:
    """A `save_tree` file of `tree`, its bytes damaged, or its content edited (`edit(draw,
    tree)`) and written back (checksum valid)."""
    path = os.path.join(folder, "file.msgpack")
    if draw(st.booleans()):
        save_tree(tree, path, extra={"rows": [{"chunk": 1}]})
        with open(path, "rb") as f:
            data = draw(byte_damage(f.read()))
        with open(path, "wb") as f:
            f.write(data)
        return path
    extra = draw(st.one_of(st.just({"rows": []}), JUNK))
    try:
        save_tree(edit(draw, tree), path, extra=extra)
    except (TypeError, ValueError, OverflowError):   # not something msgpack or JSON holds
        save_tree(tree, path, extra={"rows": draw(JUNK)})
    return path


@FUZZ
@given(data=st.data())
def test_a_damaged_checkpoint_loads_or_is_refused_in_one_line(folder, data):
    path = data.draw(damaged_file(folder, RUNNER, tree_damage))
    loads_or_refuses(load_tree_extra, RUNNER, path, names=path)


@pytest.fixture(scope="module")
def policy_state():
    net = dispatcher_network((4,))
    return {"hidden": [4], "time_scale": 10.0, "eft_feature": False,
            "params": jax.tree.map(np.asarray, init_dispatcher(net, jax.random.PRNGKey(0)))}


def policy_damage(draw, tree: dict) -> dict:
    """A policy tree with its meta's field (or the meta itself) or a parameter damaged."""
    meta = json.loads(tree["meta"])
    how = draw(st.sampled_from(["field", "field", "delete", "meta", "params"]))
    if how == "field":
        meta[draw(st.sampled_from(sorted(meta) + ["num_agents"]))] = draw(JUNK)
    elif how == "delete":
        del meta[draw(st.sampled_from(sorted(meta)))]
    elif how == "meta":
        meta = draw(JUNK)
    else:
        return {"meta": tree["meta"], "params": tree_damage(draw, tree["params"])}
    return {"meta": json.dumps(meta), "params": tree["params"]}


@FUZZ
@given(data=st.data())
def test_a_damaged_policy_file_loads_or_is_refused_in_one_line(folder, policy_state, data):
    saved = os.path.join(folder, "valid.msgpack")
    save_dispatcher(saved, policy_state["hidden"], policy_state["time_scale"],
                    policy_state["params"])
    from damdjax.checkpoint import read_state_dict
    path = data.draw(damaged_file(folder, read_state_dict(saved), policy_damage))
    loaded = loads_or_refuses(load_dispatcher, path, names=path)
    if loaded is not None:
        meta = loaded[2]
        assert np.isfinite(meta["time_scale"]) and meta["time_scale"] > 0
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(loaded[1]))


# ---------------------------------------------------------------------------
# Stored configs
# ---------------------------------------------------------------------------

BASE_CONFIG = dqn.DQNConfig.from_values(num_envs=3, num_tasks=7, num_servers=2,
                                        queue_capacity=5, buffer_capacity=11,
                                        batch_size=4, hidden=(8,)).to_json()


@st.composite
def damaged_config(draw) -> dict:
    """config.json's dict with a field (top level, or in env / env_config) set to a value
    of another type, deleted, or an unknown one added."""
    d = json.loads(json.dumps(BASE_CONFIG))
    where = d[draw(st.sampled_from(["env", "env_config"]))] if draw(st.booleans()) else d
    how = draw(st.sampled_from(["value", "value", "value", "delete", "add"]))
    if how == "value":
        where[draw(st.sampled_from(sorted(where)))] = draw(JUNK)
    elif how == "delete":
        del where[draw(st.sampled_from(sorted(where)))]
    else:
        where[draw(st.text(min_size=1, max_size=6))] = draw(JUNK)
    return d


@FUZZ
@given(d=damaged_config())
def test_a_damaged_stored_config_loads_or_is_refused_in_one_line(d):
    cfg = loads_or_refuses(dqn.DQNConfig.from_json, d)
    assert cfg is None or isinstance(cfg, dqn.DQNConfig)
