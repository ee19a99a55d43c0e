"""A run's inputs kept in its run directory: the files a run reads by path and needs
again (its job library, a trained partner policy, its starting parameters) copied into
`RUN/inputs/` when the run starts, so that the run directory is self-contained.

    inputs/workload-<sha>.npz         the resolved job library (`save_library`: a
                                      wfcommons folder or Alibaba CSV becomes one file)
    inputs/scheduler-<sha>.msgpack    train.dqn --scheduler's policy file, as loaded
    inputs/dispatcher-<sha>.msgpack   train.mdqn --dispatcher's
    inputs/init_dispatcher-<sha>.msgpack, inputs/init_schedulers-<sha>.msgpack
    inputs/index.json                 each copy: the config field, the value the user
                                      gave, the copy's name and its sha256

config.json keeps the values the user gave (provenance); the run itself trains on a
*local* config, whose fields name the copies instead (`keep` for a new run,
`for_resume` for a resumed one). So a resume reads the run's own copies: an original
changed since does not change the run, a missing one does not block it. The starting
parameters are not read on a resume at all (the checkpoint holds the parameters): a
resumed local config has no init file. A copy's name holds its content's hash, so that
every per-process cache keyed by a path (`resolve_workload`, the compiled programs)
sees one content per name, also when a run directory is overwritten.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from damdjax.io import file_sha256, write_bytes_atomic, write_json_atomic
from damdjax.policies import (DISPATCHER_FILE, SCHEDULERS_FILE, is_dispatch_rule,
                              is_schedule_rule)
from damdjax.workloads import resolve_workload
from damdjax.envs.workload import save_library

INPUTS = "inputs"
INDEX = "index.json"
# The config fields that name a file read by path: field -> (whether a value names a rule
# instead, as the field's reader takes it; the file a run directory given for it holds).
POLICY_FIELDS = {"scheduler": (is_schedule_rule, SCHEDULERS_FILE),
                 "dispatcher": (is_dispatch_rule, DISPATCHER_FILE),
                 "init_dispatcher": (lambda value: False, DISPATCHER_FILE),
                 "init_schedulers": (lambda value: False, SCHEDULERS_FILE)}
INIT_FIELDS = ("init_dispatcher", "init_schedulers")
INPUT_FIELDS = ("workload", *POLICY_FIELDS)

def original(value: str) -> str:
    """The value the user gave for a local config's `value`, a copy's path or spec, read
    from the index beside the copy (the names a run's outputs show, e.g. eval.json's
    scheduler); `value` itself where it names no kept copy."""
    path = value.split(":", 1)[1] if value.startswith("library:") else value
    folder, name = os.path.split(path)
    if os.path.basename(folder) != INPUTS:
        return value
    try:
        with open(os.path.join(folder, INDEX)) as f:
            entries = json.load(f)["inputs"]
        return next((e["original"] for e in entries if e.get("copy") == name), value)
    except (OSError, ValueError, KeyError, TypeError):
        return value


def _is_rule(field: str, value: str) -> bool:
    return POLICY_FIELDS[field][0](value)


def _inputs(cfg, prefix: str = ""):
    """`(dotted field path, leaf field name, value)` of every input file `cfg` names
    (nested configs included: a pipeline's stages, a sweep's trainer config)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _inputs(value, f"{prefix}{f.name}.")
        elif (f.name in INPUT_FIELDS and isinstance(value, str) and value
              and not (f.name in POLICY_FIELDS and _is_rule(f.name, value))):
            yield f"{prefix}{f.name}", f.name, value


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _copy_workload(spec: str, folder: str) -> tuple[str, str]:
    """`(copy name, sha256)`: the library `spec` resolves to, saved in `folder`."""
    part = os.path.join(folder, "workload.npz")
    save_library(part, resolve_workload(spec))
    digest = file_sha256(part)
    name = f"workload-{digest[:16]}.npz"
    os.replace(part, os.path.join(folder, name))
    return name, digest


def _copy_policy(field: str, path: str, folder: str) -> tuple[str, str]:
    """`(copy name, sha256)`: the policy file `path` names (the file in it, for a run
    directory), copied into `folder`."""
    file = os.path.join(path, POLICY_FIELDS[field][1]) if os.path.isdir(path) else path
    with open(file, "rb") as f:
        data = f.read()
    digest = _sha256(data)
    name = f"{field}-{digest[:16]}.msgpack"
    write_bytes_atomic(data, os.path.join(folder, name))
    return name, digest


def local_value(run_dir: str, entry: dict) -> str:
    """The local config's value of an index entry: the copy's path (spec, for a workload)."""
    path = os.path.join(run_dir, INPUTS, entry["copy"])
    return f"library:{path}" if entry["kind"] == "workload" else path


def keep(cfg, run_dir: str):
    """A new run's inputs copied into `run_dir/inputs/` (with index.json); returns the
    local config, naming the copies. Nothing is written for a run that names no file."""
    entries, folder = [], os.path.join(run_dir, INPUTS)
    for path, field, value in _inputs(cfg):
        os.makedirs(folder, exist_ok=True)
        kind = "workload" if field == "workload" else "policy"
        name, digest = (_copy_workload(value, folder) if kind == "workload"
                        else _copy_policy(field, value, folder))
        entries.append({"field": path, "kind": kind, "original": value, "copy": name,
                        "sha256": digest})
    if not entries:
        return cfg
    write_json_atomic({"inputs": entries}, os.path.join(folder, INDEX))
    return _replaced(cfg, {e["field"]: local_value(run_dir, e) for e in entries})


def _replaced(cfg, values: dict[str, str]):
    """`cfg` with the dotted fields of `values` set (nested configs rebuilt)."""
    nested: dict[str, dict] = {}
    changes = {}
    for path, value in values.items():
        head, dot, rest = path.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            changes[head] = value
    for head, inner in nested.items():
        changes[head] = _replaced(getattr(cfg, head), inner)
    return dataclasses.replace(cfg, **changes)


def read_index(run_dir: str) -> list[dict]:
    """The index entries of `run_dir` ([] for a run without inputs, e.g. one written
    before they were kept); ValueError (one line naming the file) where an entry is
    malformed, its copy missing or its content not the one recorded."""
    index = os.path.join(run_dir, INPUTS, INDEX)
    if not os.path.exists(index):
        return []
    try:
        with open(index) as f:
            entries = json.load(f)["inputs"]
        for e in entries:
            if not (isinstance(e["field"], str) and e["kind"] in ("workload", "policy")
                    and isinstance(e["original"], str) and isinstance(e["sha256"], str)):
                raise ValueError(e)
            if not isinstance(e["copy"], str) or os.path.basename(e["copy"]) != e["copy"] \
                    or e["copy"] in ("", ".", ".."):
                raise ValueError(e["copy"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{index} is not a valid inputs index") from None
    for e in entries:
        _check_copy(os.path.join(run_dir, INPUTS, e["copy"]), e["sha256"])
    return entries


def _check_copy(path: str, digest: str) -> None:
    """ValueError naming `path` unless it exists with sha256 `digest`."""
    try:
        ok = file_sha256(path) == digest
    except OSError:
        raise ValueError(f"the run's input copy {path} is missing or unreadable") from None
    if not ok:
        raise ValueError(f"the run's input copy {path} changed since the run started")


def _paths(d: dict, names, prefix: str = ""):
    """The dotted paths of every key of `names` in the nested dict `d`."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _paths(v, names, f"{prefix}{k}.")
        elif k in names:
            yield f"{prefix}{k}"


def _get(d: dict, path: str):
    for k in path.split("."):
        d = d[k]
    return d


def _set(d: dict, path: str, value) -> dict:
    """A copy of the nested dict `d` with the dotted `path` set to `value`."""
    head, dot, rest = path.partition(".")
    return {**d, head: _set(d[head], rest, value) if dot else value}


def for_resume(stored: dict, run_dir: str) -> dict:
    """The local config (as JSON) of a resumed run's stored config.json: its inputs the
    run's copies (`read_index`'s checks: ValueError), its init files none (the checkpoint
    holds the parameters). A `stored` that is no object is returned as it is (its
    config's reader refuses it)."""
    if not isinstance(stored, dict):
        return stored
    local = stored
    for entry in read_index(run_dir):
        try:
            local = _set(local, entry["field"], local_value(run_dir, entry))
        except (KeyError, TypeError):
            raise ValueError(f"{os.path.join(run_dir, INPUTS, INDEX)}: config.json has no "
                             f"field {entry['field']!r}") from None
    for path in _paths(stored, INIT_FIELDS):
        local = _set(local, path, "")
    return local


def as_stored(local: dict, stored: dict) -> dict:
    """The config.json of a local config `local` (as JSON): every input field back at
    the value the user gave (from `stored`, the config.json it was read from)."""
    for path in _paths(stored, INPUT_FIELDS):
        local = _set(local, path, _get(stored, path))
    return local


def input_files(run_dir: str) -> list[tuple[str, bytes]]:
    """`(name, bytes)` of `run_dir/inputs/`: its index.json first, then every copy it lists
    (checked: `read_index`); [] for a run without inputs. What the other processes of a
    multi-process run get from process 0 (`place_inputs`)."""
    entries = read_index(run_dir)
    if not entries:
        return []
    folder = os.path.join(run_dir, INPUTS)
    names = [INDEX, *dict.fromkeys(e["copy"] for e in entries)]
    out = []
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            out.append((name, f.read()))
    return out


def place_inputs(files: list[tuple[str, bytes]], folder: str) -> None:
    """The files of `input_files` written in `folder/inputs/` (atomically), then checked
    against their index (`read_index`: ValueError naming a copy whose content differs)."""
    if not files:
        return
    os.makedirs(os.path.join(folder, INPUTS), exist_ok=True)
    for name, data in files:
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise ValueError(f"an input copy's name {name!r} is not a plain file name")
        write_bytes_atomic(data, os.path.join(folder, INPUTS, name))
    read_index(folder)


def moved(local: dict, run_dir: str) -> dict:
    """A local config (as JSON) of another run directory, every input field that names a
    copy (not emptied: a resumed run's init files stay none) pointing at `run_dir`'s copy
    (`place_inputs`) instead."""
    for entry in read_index(run_dir):
        if _get(local, entry["field"]):
            local = _set(local, entry["field"], local_value(run_dir, entry))
    return local
