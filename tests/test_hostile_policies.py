"""Hostile files and values: policy files, checkpoints and job libraries whose fields have
the wrong types, non-finite or out-of-range numbers, a removed checksum or a size that
expands without bound, and run configs whose network or n-step return cannot be run.
Each is refused with one line naming the file (or the flag) and the field, before
anything of its size is allocated or compiled.

The bad files are made with the project's own writers (`save_dispatcher`, `save_tree`,
`save_library`), then their content is edited (and, where the edit is a deliberate one,
the checksum recomputed by writing it back with `save_tree`), so each is what a damaged
or hand-edited file of today's format looks like.
"""
from __future__ import annotations

import io
import json
import zipfile

import jax
import msgpack
import numpy as np
import pytest

from damdjax import checkpoint, memory
from damdjax.checkpoint import load_tree_extra, read_file, read_state_dict, save_tree
from damdjax.hyper import Hyper, check_hyper
from damdjax.policies import (dispatcher_network, init_dispatcher, load_dispatcher,
                              resolve_dispatcher, save_dispatcher)
from damdjax.envs import workload
from damdjax.envs.config import EnvConfig
from damdjax.envs.workload import LibraryError, load_library, save_library
from damdjax.train import dqn, mdqn


def one_line_error(call, *args, **kwargs) -> str:
    """The message of the ValueError `call(*args, **kwargs)` raises; it must be one line."""
    with pytest.raises(ValueError) as exc:
        call(*args, **kwargs)
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# ---------------------------------------------------------------------------
# Policy files and checkpoints
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A valid dispatcher policy file (hidden (8,)) and its raw state dict."""
    path = tmp_path_factory.mktemp("policy") / "dispatcher.msgpack"
    net = dispatcher_network((8,))
    save_dispatcher(str(path), (8,), 10.0, init_dispatcher(net, jax.random.PRNGKey(0)))
    return path, read_state_dict(path)


def edited_policy(policy, tmp_path, meta=None, params=None):
    """The policy file with its meta (`meta(dict) -> JSON value`) and/or its raw params
    (`params(state) -> state`) edited, written back by `save_tree` (checksum valid)."""
    _, state = policy
    m = json.loads(state["meta"])
    p = jax.tree.map(np.array, state["params"])
    out = tmp_path / "edited.msgpack"
    save_tree({"meta": json.dumps(meta(m) if meta else m),
               "params": params(p) if params else p}, out)
    return str(out)


def set_leaf(value):
    def change(p):
        p["params"]["Dense_0"]["kernel"][2, 3] = value
        return p
    return change


RUNNER = {"params": {"w": np.ones((2, 3), np.float32)},
          "opt_state": {"mu": np.zeros((2, 3), np.float32)},
          "env_state": {"finish": np.full(4, np.inf, np.float32)}}   # inf by design


BAD_META = {
    "hidden a float": (lambda m: {**m, "hidden": [8.5]}, "'hidden'"),
    "hidden an int": (lambda m: {**m, "hidden": 8}, "'hidden'"),
    "hidden negative": (lambda m: {**m, "hidden": [-8]}, "'hidden'"),
    "hidden huge": (lambda m: {**m, "hidden": [2**31 - 1]}, "'hidden'"),
    "meta a list": (lambda m: [m], "meta must be a JSON object, got list"),
    "time_scale missing": (lambda m: {k: v for k, v in m.items() if k != "time_scale"},
                           "'time_scale' must be a finite number > 0"),
    "time_scale a string": (lambda m: {**m, "time_scale": "10"}, "'time_scale'"),
}


@pytest.mark.parametrize("case", list(BAD_META))
def test_policy_meta_of_the_wrong_type_is_a_one_line_error(policy, tmp_path, case):
    change, says = BAD_META[case]
    path = edited_policy(policy, tmp_path, meta=change)
    for load in (load_dispatcher, resolve_dispatcher):
        text = one_line_error(load, path)
        assert text.startswith(f"{path}: ") and says in text, text


def test_a_checkpoint_whose_extra_is_a_list_is_a_one_line_error(tmp_path):
    path = tmp_path / "checkpoint.msgpack"
    save_tree(RUNNER, path, extra={"rows": []})
    outer = msgpack.unpackb(path.read_bytes(), raw=False)
    outer["extra"] = b"[1, 2]"
    outer["sha256"] = checkpoint._digest(outer["extra"], b"".join(outer["payload"]))
    path.write_bytes(msgpack.packb(outer, use_bin_type=True))
    text = one_line_error(load_tree_extra, RUNNER, path)
    assert text.startswith(f"{path}: extra must be a JSON object, got list"), text


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_policy_with_non_finite_parameters_is_refused(policy, tmp_path, value):
    path = edited_policy(policy, tmp_path, params=set_leaf(value))
    text = one_line_error(load_dispatcher, path)
    assert text.startswith(f"{path}: params/params/Dense_0/kernel[2, 3] holds "
                           f"{np.float32(value)}"), text


def test_huge_finite_parameters_load(policy, tmp_path):
    """Only non-finite parameters are refused (damdjax.checkpoint says why): 1e38 is a
    float32 a network may hold."""
    path = edited_policy(policy, tmp_path, params=set_leaf(1e38))
    assert float(load_dispatcher(path)[1]["params"]["Dense_0"]["kernel"][2, 3]) == \
        pytest.approx(1e38, rel=1e-6)


@pytest.mark.parametrize("value", [float("nan"), 0.0, -1.0, float("inf"), 1e-300])
def test_a_policy_time_scale_must_be_finite_and_positive(policy, tmp_path, value):
    path = edited_policy(policy, tmp_path, meta=lambda m: {**m, "time_scale": value})
    text = one_line_error(resolve_dispatcher, path)
    assert text.startswith(f"{path}: meta field 'time_scale' must be a finite number > 0"), \
        text


def test_a_checkpoint_with_nan_parameters_is_refused_on_resume(tmp_path):
    """NaN in a network part (parameters, optimizer moments) is refused; infinities in the
    env state (an unfinished task's finish time) are by design and load."""
    path = tmp_path / "checkpoint.msgpack"
    save_tree(RUNNER, path)
    load_tree_extra(RUNNER, path)
    bad = jax.tree.map(np.array, RUNNER)
    bad["opt_state"]["mu"][1, 2] = np.nan
    save_tree(bad, path)
    text = one_line_error(load_tree_extra, RUNNER, path)
    assert text.startswith(f"{path}: /opt_state/mu[1, 2] holds nan"), text


def test_a_removed_checksum_is_refused_and_a_file_from_before_checksums_loads(
        policy, tmp_path, capsys):
    """Unwrapping a checksummed file (its payload written alone) or deleting its sha256
    refuses it; a bare file without the payload's mark (written before checksums)
    still loads, with a warning."""
    source, state = policy
    outer = msgpack.unpackb(source.read_bytes(), raw=False)
    unwrapped = tmp_path / "unwrapped.msgpack"
    unwrapped.write_bytes(b"".join(outer["payload"]))
    no_sha = tmp_path / "no_sha.msgpack"
    no_sha.write_bytes(msgpack.packb({k: v for k, v in outer.items() if k != "sha256"},
                                     use_bin_type=True))
    for path in (unwrapped, no_sha):
        text = one_line_error(load_dispatcher, str(path))
        assert text.startswith(f"{path}: a damdjax-msgpack file without its checksum"), text
    import flax.serialization
    old = tmp_path / "old.msgpack"
    old.write_bytes(flax.serialization.msgpack_serialize(state))
    capsys.readouterr()
    load_dispatcher(str(old))
    assert "without a checksum" in capsys.readouterr().err
    assert read_file(source)[1] == {}


# ---------------------------------------------------------------------------
# Job libraries
# ---------------------------------------------------------------------------

def arrays():
    """A valid library's arrays: a chain 0 -> 1 -> 2 and a single task."""
    return {"length": np.array([3, 1], np.int32),
            "size": np.array([[1.0, 2.0, 0.5], [4.0, 0.0, 0.0]]),
            "work": np.array([[1.0, 1.0, 3.0], [2.0, 0.0, 0.0]]),
            "preds": np.array([[[-1], [0], [1]], [[-1], [-1], [-1]]], np.int32),
            "names": np.array(["chain", "one"])}


def written(path, a):
    """`a` saved as a checksummed library file (the checksum recomputed over `a`)."""
    buffer = io.BytesIO()
    np.savez(buffer, **a, sha256=workload._digest(a))
    path.write_bytes(buffer.getvalue())
    return path


def changed(key, value, index=None):
    a = arrays()
    if index is None:
        a[key] = value
    else:
        a[key] = a[key].copy()
        a[key][index] = value
    return a


BAD_LIBRARIES = {
    "float16 sizes": (changed("size", arrays()["size"].astype(np.float16)),
                      "size must be float32 or float64, got dtype float16"),
    "size 1e-300": (changed("size", 1e-300, (0, 1)),
                    "size[0, 1] = 1e-300 is outside float32's normal range"),
    "work 1e-45": (changed("work", 1e-45, (1, 0)),
                   "work[1, 0] = 1e-45 is outside float32's normal range"),
    "work 1e300": (changed("work", 1e300, (0, 2)),
                   "work[0, 2] = 1e+300 is outside float32's normal range"),
    "a name of megabytes": (changed("names", np.array(["chain", "x" * 2**20])),
                            "names[1] is 1048576 characters long, more than 1024"),
}


@pytest.mark.parametrize("case", list(BAD_LIBRARIES))
def test_a_library_of_bad_dtypes_ranges_or_names_is_refused(tmp_path, case):
    a, says = BAD_LIBRARIES[case]
    path = written(tmp_path / "jobs.npz", a)
    text = one_line_error(load_library, path)
    assert text.startswith(f"{path}: ") and says in text, text


def test_a_library_expanding_beyond_the_limit_is_refused_before_reading(tmp_path,
                                                                         monkeypatch):
    """A bzip2-compressed library whose arrays decompress over 20,000-fold (60 MB of -1
    padding: a valid, checksummed library, trimmed on load) to more than
    LIBRARY_MAX_BYTES is refused from its zip directory, before a member is read; the
    limit is lowered to 1 MiB here to keep the test small."""
    monkeypatch.setattr(workload, "LIBRARY_MAX_BYTES", 2**20, raising=False)
    a = arrays()
    a["preds"] = np.full((2, 3, 15_000_000 // 6), -1, np.int32)
    a["preds"][0, 1, 0], a["preds"][0, 2, 0] = 0, 1
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as z:
        for key, value in {**a, "sha256": workload._digest(a)}.items():
            with z.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, value, allow_pickle=False)
    with zipfile.ZipFile(path) as z:
        assert sum(i.file_size for i in z.infolist()) > 20_000 * path.stat().st_size
    text = one_line_error(load_library, path)
    assert text.startswith(f"{path}: its arrays take ") and "LIBRARY_MAX_BYTES" in text, text


def test_a_library_is_read_without_pickle(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **{**arrays(), "names": np.array(["chain", "one"], dtype=object)})
    assert "cannot be read without pickle" in one_line_error(load_library, path)
    save_library(tmp_path / "good.npz", load_library(written(tmp_path / "w.npz", arrays())))


# ---------------------------------------------------------------------------
# Runs that cannot be run: widths, the networks' memory, n-step returns
# ---------------------------------------------------------------------------

TINY = dict(num_envs=3, num_tasks=7, num_servers=2, queue_capacity=5, buffer_capacity=11,
            batch_size=4)


@pytest.mark.parametrize("hidden", [(2**31 - 1,), (100_000, 100_000), (8,) * 65])
def test_hidden_widths_beyond_the_bounds_are_refused(hidden):
    text = one_line_error(dqn.DQNConfig.from_values, **TINY, hidden=hidden)
    assert text.startswith("hidden must be at most 64 widths of at most 65536"), text


@pytest.mark.parametrize("cls,extra", [(dqn.DQNConfig, {"eft_feature": True}),
                                       (mdqn.MDQNConfig, {}),
                                       (mdqn.MDQNConfig, {"share_params": True})])
def test_the_memory_estimate_counts_the_networks(cls, extra):
    """The networks' part equals what the trainer's `init` holds for them (online, target,
    optimizer state; `jax.eval_shape`), and wide networks exceed a device's memory by
    it alone."""
    mod = dqn if cls is dqn.DQNConfig else mdqn
    cfg = cls.from_values(**TINY, hidden=(8, 5), **extra)
    out = jax.eval_shape(mod.make_train(cfg).init, jax.random.PRNGKey(0),
                         Hyper.from_config(cfg))
    held = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(
        (out.params, out.target_params, out.opt_state)))
    what, got = cfg.memory_parts()[-1]
    assert got == held and what.startswith("the networks (--hidden 8,5: ")
    wide = cls.from_values(**TINY, hidden=(60_000, 60_000), **extra)
    text = one_line_error(memory.check_memory, wide.memory_parts(), (8 << 30, "test"))
    assert text.startswith("the networks (--hidden 60000,60000"), text


def test_n_step_beyond_an_episode_is_refused_in_configs_and_grids():
    """n_step is bounded by the step cap 2 n_max + 2 (here 16) wherever it is checked:
    a config and a sweep's grid point (`check_hyper`)."""
    dqn.DQNConfig.from_values(**TINY, n_step=16)
    for n_step in (17, 2**31 - 1):
        text = one_line_error(dqn.DQNConfig.from_values, **TINY, n_step=n_step)
        assert text == (f"n_step must be <= 16 (the episode's step cap 2 n_max + 2: no "
                        f"return spans more), got {n_step}"), text
    text = one_line_error(check_hyper, Hyper(n_step=2**31 - 1), EnvConfig(n_max=7))
    assert text.startswith("n_step must be <= 16"), text


@pytest.mark.parametrize("argv,says", [
    (["--hidden", "2147483647"], "--hidden must be at most 64 widths of at most 65536"),
    (["--hidden", "100000,100000"], "--hidden must be at most 64 widths"),
    (["--n-step", "2147483647"], "--n-step must be <= 202 (the episode's step cap"),
])
def test_the_flags_are_refused_in_one_line_before_compiling(argv, says, capsys, monkeypatch,
                                                             tmp_path):
    def boom(*args, **kwargs):
        raise AssertionError("compiled despite a bad flag")

    monkeypatch.setattr(jax, "jit", boom)
    with pytest.raises(SystemExit) as exc:
        dqn.main([*argv, "--run-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith("python -m train.dqn: error: "), err
    assert says in err[-1] and not any(tmp_path.iterdir()), err
