"""Tests of envs/workload.py: the job library of real jobs and the generator drawing from it.

The library is built from the committed real fixtures (tests/data: two WfCommons files and
the Alibaba excerpt, converted with damdjax.envs.convert's functions). Cheap by design: two
compilations (the vmapped library generator, and one vmapped episode against the
reference simulator); the rest is numpy or eager JAX on small arrays.
"""
from __future__ import annotations

import collections
import dataclasses
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from damdjax.envs import convert
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.generator import generate_servers
from damdjax.envs.generators import JobLibraryGenerator
from damdjax.envs.times import never
from damdjax.envs.instance_format import JobSpec, TaskSpec
from damdjax.envs.instance_padding import job_order
from damdjax.envs.workload import (JobLibrary, LibraryError, generate_from_library, library_from_specs,
                           load_library, required_config, save_library)

DATA = Path(__file__).resolve().parent / "data"  # tests/data/README.md
WF_FILES = sorted((DATA / "wfcommons").glob("*.json"))
ALIBABA = DATA / "alibaba-excerpt.csv"
BATCH = 4  # instances per generated batch (one compile of the vmapped generator)
SMALL = 10  # the generation tests draw from the jobs of at most this many tasks
PARAMS = EnvParams(num_tasks=30, num_servers=3, density=1.5)
QUEUE = 4
N_MAX, M_MAX = 32, 4


@pytest.fixture(scope="module", autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def specs():
    """The fixtures converted as damdjax.envs.convert does (default units), 3 servers."""
    servers = convert.draw_servers(3, np.random.default_rng(0))
    wf_jobs = [convert.read_wfcommons(p) for p in WF_FILES]
    ali_jobs, _ = convert.read_alibaba(ALIBABA)
    d = convert.DEFAULTS

    def build(jobs, data_unit, name):
        arrivals = convert.poisson_arrivals([len(j.tasks) for j in jobs], EnvParams.density,
                                            np.random.default_rng(1))
        return convert.build_instance(jobs, arrivals, servers, d.time_unit_s, data_unit,
                                      EnvParams.slack, name, {})

    return (build(wf_jobs, d.wfcommons_data_unit, "wf"),
            build(ali_jobs, d.alibaba_data_unit, "ali"))


@pytest.fixture(scope="module")
def library(specs):
    return library_from_specs(specs)


@pytest.fixture(scope="module")
def small(specs):
    """The jobs of at most SMALL tasks: the WfCommons fork-join (fan-in 8), 15 Alibaba jobs."""
    return library_from_specs([job for spec in specs for job in spec.jobs
                               if len(job.tasks) <= SMALL])


@pytest.fixture(scope="module")
def drawn(small):
    """(config, keys [B], a jitted vmapped batch of library instances [B])."""
    config = required_config(small, n_max=N_MAX, m_max=M_MAX, queue_capacity=QUEUE)
    keys = jax.random.split(jax.random.PRNGKey(3), BATCH)
    batch = jax.jit(jax.vmap(lambda k: generate_from_library(k, config, PARAMS, small)))(keys)
    return config, keys, jax.device_get(batch)


def host(lib: JobLibrary) -> dict:
    return {"length": lib.length, "size": lib.size, "work": lib.work, "preds": lib.preds,
            "names": np.array(lib.names)}


# ---------------------------------------------------------------------------
# The library: built from specs, saved, loaded, validated
# ---------------------------------------------------------------------------


def test_library_holds_the_converted_jobs(specs, library):
    jobs = [job for spec in specs for job in spec.jobs]
    # 2 WfCommons jobs and 32 Alibaba ones; 2 of those hold a task recorded as 0 s, which
    # the converter floors (under --strict they are skipped: 30)
    assert library.num_jobs == len(jobs) == 34
    strict, _ = convert.read_alibaba(ALIBABA, None)
    assert len(strict) == len(jobs) - 2 - 2
    assert library.max_length == max(len(j.tasks) for j in jobs) == 119
    assert library.max_preds == max(len(t.preds) for j in jobs for t in j.tasks)
    assert library.names[:2] == tuple(p.name for p in WF_FILES)
    assert library.names[2] == "j_1661"  # the excerpt's first valid job by start time
    for j, job in enumerate(jobs):
        order = job_order(job)
        assert library.length[j] == len(job.tasks)
        np.testing.assert_array_equal(library.size[j, :len(order)],
                                      [job.tasks[p].size for p in order])
        np.testing.assert_array_equal(library.work[j, :len(order)],
                                      [job.tasks[p].work for p in order])
        for r, pos in enumerate(order):  # the same edges, renumbered
            got = {order[q] for q in library.preds[j, r] if q >= 0}
            assert got == set(job.tasks[pos].preds)
            assert all(q < r for q in library.preds[j, r] if q >= 0)
    forkjoin = library.names.index("helloworld-forkjoin-10-chameleon.json")
    assert sorted((library.preds[forkjoin] >= 0).sum(axis=1)[:10]) == [0] + [1] * 8 + [8]


def test_round_trip_through_npz(library, tmp_path):
    path = tmp_path / "jobs.npz"
    save_library(path, library)
    loaded = load_library(path)
    for key, value in host(library).items():
        got = host(loaded)[key]
        assert got.dtype == value.dtype and np.array_equal(got, value), key
    assert loaded.names == library.names
    assert [p.name for p in tmp_path.iterdir()] == ["jobs.npz"]  # no temporary file left


def good_arrays():
    """A valid hand-made library: a chain 0 -> 1 -> 2 and a single task."""
    return {"length": np.array([3, 1], np.int32),
            "size": np.array([[1.0, 2.0, 0.5], [4.0, 0.0, 0.0]]),
            "work": np.array([[1.0, 1.0, 3.0], [2.0, 0.0, 0.0]]),
            "preds": np.array([[[-1], [0], [1]], [[-1], [-1], [-1]]], np.int32),
            "names": np.array(["chain", "one"])}


def mutated(key, change):
    arrays = good_arrays()
    arrays[key] = change(arrays[key].copy())
    return arrays


def setitem(index, value):
    def change(arr):
        arr[index] = value
        return arr
    return change


BAD = {
    "pred not earlier": (mutated("preds", setitem((0, 1, 0), 1)),
                         "preds[0, 1, 0] = 1 is not an earlier task of the job (must be -1 or "
                         "in 0..0)"),
    "pred later": (mutated("preds", setitem((0, 1, 0), 2)), "preds[0, 1, 0] = 2 is not an"),
    "length 0": (mutated("length", setitem(1, 0)), "length[1] = 0 is not in 1..T=3"),
    "length over T": (mutated("length", setitem(1, 4)), "length[1] = 4 is not in 1..T=3"),
    "non-positive work": (mutated("work", setitem((0, 2), 0.0)),
                          "work[0, 2] = 0.0 must be finite and > 0 (job 'chain')"),
    "NaN size": (mutated("size", setitem((1, 0), np.nan)), "size[1, 0] = nan must be finite"),
    "shape mismatch": (mutated("work", lambda a: a[:, :2]),
                       "work has shape (2, 2), size has (2, 3)"),
    "preds shape": (mutated("preds", lambda a: a[:1]),
                    "preds must have shape [J, T, P] = [2, 3, P >= 1], got (1, 3, 1)"),
    "names shape": (mutated("names", lambda a: a[:1]),
                    "names must have shape [J] = [2], got (1,)"),
    "padding": (mutated("size", setitem((1, 2), 1.0)),
                "size[1, 2] = 1.0 lies beyond length[1] = 1 (padding must be 0)"),
    "pred padding": (mutated("preds", setitem((1, 1, 0), 0)),
                     "preds[1, 1, 0] = 0 lies beyond length[1] = 1 (padding must be -1)"),
    "float preds": (mutated("preds", lambda a: a.astype(float)),
                    "preds must hold integers, got dtype float64"),
    "missing": ({k: v for k, v in good_arrays().items() if k != "work"},
                "missing array 'work'"),
    "unknown": (good_arrays() | {"extra": np.zeros(2)}, "unknown array 'extra'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_is_a_one_line_error(case, tmp_path):
    arrays, message = BAD[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(LibraryError) as e:
        load_library(path)
    text = str(e.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_good_hand_made_file_loads_and_unreadable_files_are_refused(tmp_path):
    path = tmp_path / "good.npz"
    np.savez(path, **good_arrays())
    lib = load_library(path)
    assert lib.names == ("chain", "one") and lib.max_length == 3 and lib.max_preds == 1
    # Padding beyond the longest job and the widest fan-in is trimmed.
    wide = good_arrays()
    wide["size"], wide["work"] = (np.pad(wide[k], ((0, 0), (0, 2))) for k in ("size", "work"))
    wide["preds"] = np.pad(wide["preds"], ((0, 0), (0, 2), (0, 3)), constant_values=-1)
    np.savez(tmp_path / "wide.npz", **wide)
    trimmed = load_library(tmp_path / "wide.npz")
    for key, value in host(lib).items():
        assert np.array_equal(host(trimmed)[key], value), key
    pickled = good_arrays() | {"names": np.array(["chain", "one"], dtype=object)}
    np.savez(tmp_path / "pickle.npz", **pickled)
    with pytest.raises(LibraryError, match="array 'names' cannot be read without pickle"):
        load_library(tmp_path / "pickle.npz")
    with pytest.raises(LibraryError, match="no such library file"):
        load_library(tmp_path / "absent.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(LibraryError, match="text.npz: not a readable .npz file"):
        load_library(tmp_path / "text.npz")
    assert zipfile.is_zipfile(path)


def test_max_depth_is_the_longest_chain_of_tasks():
    """Hand-made jobs: a chain of 4, a fork-join of 5 (depth 3), a diamond under a chain
    (depth 5); and the fixtures' jobs against a recursive count."""
    preds = np.full((3, 6, 3), -1, np.int32)
    preds[0, 1:4, 0] = [0, 1, 2]                                   # 0-1-2-3
    preds[1, 1:4, 0] = 0; preds[1, 4, :3] = [1, 2, 3]              # fork-join
    preds[2, 1, 0] = 0; preds[2, 2:4, 0] = 1; preds[2, 4, :2] = [2, 3]; preds[2, 5, 0] = 4
    lib = JobLibrary(length=np.array([4, 5, 6], np.int32), size=np.ones((3, 6)),
                     work=np.ones((3, 6)), preds=preds, names=("a", "b", "c"))
    assert lib.max_depth == 5
    assert lib.replace(length=lib.length[:2], size=lib.size[:2], work=lib.work[:2],
                       preds=lib.preds[:2]).max_depth == 4
    single = JobLibrary(length=np.array([1], np.int32), size=np.ones((1, 1)),
                        work=np.ones((1, 1)), preds=np.full((1, 1, 1), -1, np.int32),
                        names=("s",))
    assert single.max_depth == 1


def test_max_depth_of_the_fixtures(library):
    def depth(j, t, memo):
        if (j, t) not in memo:
            memo[j, t] = 1 + max((depth(j, int(p), memo) for p in library.preds[j, t] if p >= 0),
                                 default=0)
        return memo[j, t]

    memo = {}
    want = max(depth(j, t, memo) for j in range(library.num_jobs)
               for t in range(int(library.length[j])))
    assert library.max_depth == want > 2


def test_offered_load_and_the_matched_density_by_hand():
    from damdjax.envs.config import offered_load
    from damdjax.envs.workload import matched_density, mean_task_work

    params = EnvParams()  # density 2, work = size ~ U[0.5, 4], 5 servers, cpu ~ U[1, 3]
    assert offered_load(params) == pytest.approx(2 * 2.25 / (5 * 2.0))
    preds = np.full((2, 3, 1), -1, np.int32)
    preds[1, 1:, 0] = [0, 1]
    lib = JobLibrary(length=np.array([1, 3], np.int32), size=np.ones((2, 3)),
                     work=np.array([[4.0, 0, 0], [1, 1, 1]]), preds=preds, names=("a", "b"))
    assert mean_task_work(lib) == pytest.approx((4 + 3) / 2 / 2)  # E[job work] / E[length]
    density = matched_density(lib, params)
    assert density == pytest.approx(2 * 2.25 / 1.75)
    assert offered_load(params.replace(density=density), 1.75) == pytest.approx(0.45)
    assert offered_load(params.replace(num_servers=10), 1.75) == pytest.approx(2 * 1.75 / 20)


def test_damaged_library_is_refused_and_one_without_a_checksum_warns(tmp_path, capsys):
    """A flipped byte inside a saved library's arrays: one line naming the file (the zip's
    own CRC misses flips in its headers and numpy's; the sha256 array covers the data);
    a file written without the checksum loads, saying it is unchecked."""
    path = tmp_path / "jobs.npz"
    np.savez(tmp_path / "plain.npz", **good_arrays())
    save_library(path, load_library(tmp_path / "plain.npz"))
    want = host(load_library(path))
    data = path.read_bytes()
    changed = []
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x10
        (tmp_path / "bad.npz").write_bytes(bytes(flipped))
        try:
            lib = load_library(tmp_path / "bad.npz")
        except LibraryError as err:
            assert str(err).startswith(str(tmp_path / "bad.npz")) and "\n" not in str(err)
            continue
        got = host(lib)
        if any(not np.array_equal(got[k], want[k]) for k in want):
            changed.append(i)
    assert changed == []
    capsys.readouterr()
    np.savez(tmp_path / "old.npz", **good_arrays())
    load_library(tmp_path / "old.npz")
    assert "without a checksum" in capsys.readouterr().err


def test_config_must_fit_the_library(small):
    config = required_config(small, n_max=30, m_max=3, queue_capacity=2)
    assert (config.j_max, config.p_max) == (small.max_length, small.max_preds)
    assert config.succ_window == small.max_length - 1
    assert config.fan_out == config.succ_slots == small.max_fan_out < config.succ_window
    EdgeEnv(config, JobLibraryGenerator(small))
    EdgeEnv(dataclasses.replace(config, fan_out=None),   # the window: wider
            JobLibraryGenerator(small))
    with pytest.raises(ValueError, match=f"j_max={SMALL - 1} is below the library's longest"):
        EdgeEnv(EnvConfig(j_max=SMALL - 1, p_max=small.max_preds),
                JobLibraryGenerator(small))
    with pytest.raises(ValueError, match="p_max=1 is below the library's widest fan-in"):
        EdgeEnv(EnvConfig(j_max=SMALL, p_max=1), JobLibraryGenerator(small))
    narrow = small.max_fan_out - 1
    with pytest.raises(ValueError, match=f"fan_out={narrow} is below the library's widest "
                                         f"fan-out \\({small.max_fan_out} successors"):
        EdgeEnv(dataclasses.replace(config, fan_out=narrow), JobLibraryGenerator(small))
    # The random generator's fan-out is bounded only by the window: a narrower list refused.
    with pytest.raises(ValueError, match=f"fan_out={narrow} is below the successor window"):
        EdgeEnv(dataclasses.replace(config, fan_out=narrow))


def test_memory_estimate_counts_the_successor_slots(small):
    """`damdjax.memory.env_state_bytes` of a library config (successor slots narrower than
    the window) against the state `reset` makes, to the byte."""
    from damdjax import memory

    config = required_config(small, n_max=N_MAX, m_max=M_MAX, queue_capacity=QUEUE)
    _, state = jax.eval_shape(EdgeEnv(config, JobLibraryGenerator(small)).reset,
                              jax.random.PRNGKey(0), PARAMS)
    assert state.instance.succ.shape == (N_MAX, small.max_fan_out)
    got = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
              for x in jax.tree_util.tree_leaves(state))
    assert memory.env_state_bytes(config, memory.float_bytes()) == got


def test_widest_fan_out_counts_successors_inside_each_job(specs, library, small):
    for lib, jobs in ((library, [job for spec in specs for job in spec.jobs]),
                      (small, [job for spec in specs for job in spec.jobs
                               if len(job.tasks) <= SMALL])):
        want = max(max(collections.Counter(p for t in job.tasks for p in t.preds).values(),
                       default=0) for job in jobs)
        assert lib.max_fan_out == max(want, 1)
    one = library_from_specs([JobSpec(arrival=0.0, tasks=(TaskSpec(size=1.0, work=1.0,
                                                                   deadline=9.0, preds=()),))])
    assert one.max_fan_out == 1  # no edge at all: one (empty) slot


# ---------------------------------------------------------------------------
# Drawing from the library
# ---------------------------------------------------------------------------


def test_generated_jobs_are_library_jobs(small, drawn):
    config, keys, batch = drawn
    n = PARAMS.num_tasks
    lib_local = []  # per library job: (sizes, works, frozensets of local preds)
    for j in range(small.num_jobs):
        length = int(small.length[j])
        lib_local.append((small.size[j, :length], small.work[j, :length],
                          [frozenset(int(p) for p in small.preds[j, t] if p >= 0)
                           for t in range(length)]))
    sources = set()
    for b in range(BATCH):
        mask = batch.task_mask[b]
        assert mask[:n].all() and not mask[n:].any()
        job = batch.job[b][:n]
        assert job[0] == 0 and (np.diff(job) >= 0).all() and (np.diff(job) <= 1).all()
        for jid in np.unique(job):
            idx = np.flatnonzero(job == jid)
            first, count = int(idx[0]), len(idx)
            cut = idx[-1] == n - 1  # the last job may be cut at num_tasks
            local = [frozenset(int(p) - first for p in batch.preds[b, i] if p >= 0) for i in idx]
            assert all(min(ps, default=0) >= 0 for ps in local), "a pred outside its job"
            match = [j for j, (size, work, preds) in enumerate(lib_local)
                     if (len(size) == count or (cut and len(size) > count))
                     and np.array_equal(size[:count], batch.size[b, idx])
                     and np.array_equal(work[:count], batch.work[b, idx])
                     and preds[:count] == local]
            assert match, f"instance {b}, job {jid}: no library job has its structure"
            sources.add(small.names[match[0]])
            assert len(set(batch.arrival[b, idx])) == 1
        # The successor lists hold every successor (none cut by the library's slots).
        preds = batch.preds[b]
        counts = np.bincount(preds[preds >= 0], minlength=config.n_max)
        np.testing.assert_array_equal((batch.succ[b] > 0).sum(axis=1), counts)
        np.testing.assert_array_equal(batch.num_succ[b], counts)
        # Deadlines by the generator's rule, recomputed independently.
        real = batch.server_mask[b]
        cpu_ref, bw_ref, k_ref = (float(np.mean(getattr(batch, f)[b][real]))
                                  for f in ("cpu", "bw", "k"))
        ef = np.zeros(n)
        for i in range(n):
            ready = max((ef[p] for p in batch.preds[b, i] if p >= 0), default=-np.inf)
            ef[i] = (max(k_ref + batch.size[b, i] / bw_ref, ready)
                     + batch.work[b, i] / cpu_ref)
        np.testing.assert_allclose(batch.deadline[b, :n],
                                   batch.arrival[b, :n] + PARAMS.slack * (ef + k_ref),
                                   rtol=1e-12)
        assert batch.arrival[b, 0] == 0 and (np.diff(batch.arrival[b, :n]) >= 0).all()
        # The servers are the random generator's for the same key.
        want = generate_servers(jax.random.split(keys[b], 4)[0], config, PARAMS, jnp.float64)
        # (op by op, to the last bit's fused rounding: assert_same_instance)
        for name, value in zip(("cpu", "bw", "mem", "k"), want):
            np.testing.assert_allclose(getattr(batch, name)[b], np.asarray(value),
                                       rtol=1e-14, atol=0, err_msg=name)
        np.testing.assert_array_equal(batch.server_mask[b], np.asarray(want[4]))
    assert len(sources) >= 5  # jobs come from many library jobs


def assert_same_instance(got, want, where):
    """Integers and booleans exactly; floats to 1e-14 (relative): compiled code may fuse
    `a + b * c` into one rounding where eager JAX rounds twice, a last-bit difference."""
    for name in want.__dataclass_fields__:
        a, b = np.asarray(getattr(got, name)), np.asarray(getattr(want, name))
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=0, err_msg=f"{where}: {name}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{where}: {name}")


def test_jit_equals_no_jit_and_vmap_equals_a_loop(small, drawn):
    config, keys, batch = drawn  # jit(vmap(generate_from_library)) over BATCH keys
    env = EdgeEnv(config, JobLibraryGenerator(small))
    for b in range(2):
        one = jax.device_get(env.generate(keys[b], PARAMS))  # eager, one key, via the env
        assert_same_instance(one, jax.tree.map(lambda x: x[b], batch), f"key {b}")


def test_jax_env_and_reference_agree_on_library_instances(drawn):
    from damdjax.heuristics import pair_from_name
    from damdjax.metrics import episode_metrics
    from damdjax.rollout import run_from_instance
    from damdjax.envs.instance import instance_to_arrays
    from damdjax.envs.reference import simulate
    from test_differential import REWARDS, assert_same, reference_inputs

    _, keys, batch = drawn
    policy = pair_from_name("LS")

    def one(key, inst):
        state, total = run_from_instance(key, inst, policy, QUEUE, REWARDS)
        return state, total, episode_metrics(state)

    state, total, metrics = jax.device_get(jax.jit(jax.vmap(one))(keys, batch))
    arrays = instance_to_arrays(batch)
    for b in range(BATCH):
        servers, tasks = reference_inputs(arrays, b)
        assert len(tasks) == PARAMS.num_tasks
        ref = simulate(servers, tasks, queue_capacity=QUEUE, dispatch="least_load",
                       schedule="sdf")
        assert_same(f"library instance {b}", state, b, total, metrics, ref)


# The random generator's output before the library generator was split out of it
# (damdjax.envs.generator at commit 28ba40b, compiled), float64, key 0 of split(PRNGKey(7), 16),
# at the library tests' padding (so eager JAX reuses the library tests' small programs).
RANDOM_CONFIG = EnvConfig(n_max=N_MAX, m_max=M_MAX, p_max=8, queue_capacity=QUEUE, j_max=SMALL)
RANDOM_EXPECTED = {
    "cpu": [2.2572815191849354, 1.2949480080701443, 1.586133804066654, 1.0],
    "bw": [7.96427202840329, 8.481602905233775, 13.14234159876069, 1.0],
    "mem": [36.456170324800155, 38.31971306302444, 22.650888980962467, 1.0],
    "k": [0.9771143942777126, 0.6107852616377315, 0.8795490043201948, 1.0],
    "server_mask": [True, True, True, False],
    "size": [3.03125, 1.671875, 0.78125, 2.96875, 3.671875, 2.5, 1.984375, 0.921875, 3.09375,
             0.515625, 1.0, 1.46875, 1.3125, 3.703125, 2.625, 2.25, 2.0, 1.140625, 1.9375,
             3.65625, 1.34375, 2.765625, 2.328125, 2.46875, 1.1875, 3.484375, 2.140625, 3.75,
             3.09375, 3.203125, 0.0, 0.0],
    "arrival": [0.0] + [2.733479968974178] * 8 + [14.093911916942103]
               + [19.697891455288342] * 5 + [25.27205511947964] + [25.857049584943276] * 2
               + [33.5480192964547] * 9 + [33.65250312732172] * 3 + [np.inf] * 2,
    "deadline": [9.305212496135793, 9.709963437122102, 10.850282761036631, 15.183496191911837,
                 16.209783583434913, 18.832518028438326, 21.728929111181227, 20.178094830657468,
                 26.244593633882754, 19.089637361284254, 25.523393909603183, 27.667194238562494,
                 29.582930702738903, 30.928507504958045, 34.75998043331086, 33.23891759953045,
                 33.3956400598469, 35.060506272762105, 40.97954177007151, 46.31623620599151,
                 48.277585443124494, 52.31431584978192, 55.712467435047216, 49.919645269561414,
                 57.4457528073973, 60.798291619706006, 58.836942382573014, 44.1889976382557,
                 48.70466216095723, 48.86430686630526, np.inf, np.inf],
    "rank": [1.8649324777544234, 16.222889802976255, 13.549327250518182, 11.423708776575586,
             8.673241792045166, 7.95226274136691, 4.7692083264295375, 4.115520653814585,
             1.9033846937905972, 0.3172307822984328, 8.876249464179079, 6.616048234109874,
             4.067455383769367, 5.53825264715301, 1.6149930735192946, 1.3842797773022524,
             3.577189629308153, 0.7017529426601695, 17.770591498432246, 14.933607027820436,
             11.039186616213849, 8.567498197945689, 5.221021864854578, 5.3075393509359685,
             0.7305921046872998, 2.1437110440166824, 1.3169883992389484, 5.922774807514747,
             1.9033846937905972, 1.970676071853901, 0.0, 0.0],
    "preds": [[], [], [1], [2], [1, 2], [1, 2, 3], [4, 5], [1, 2, 3, 4, 5], [2, 3, 5, 6, 7], [],
              [], [10], [10, 11], [10], [10, 11, 12, 13], [], [], [16], [], [18], [18, 19],
              [19, 20], [18, 21], [19], [18, 19, 20, 21, 22, 23], [18, 21, 22, 23], [22, 23],
              [], [27], [27], [], []],
    "task_mask": [True] * 30 + [False] * 2,
    "job": [0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7,
            7, 7, -1, -1],
}


def test_random_generator_is_unchanged(small):
    # The library tests' padding, with the whole window as successor slots (the random
    # generator's fan-out is bounded only by the window).
    assert RANDOM_CONFIG == dataclasses.replace(required_config(small, N_MAX, M_MAX, QUEUE),
                                                fan_out=None)
    key = jax.random.split(jax.random.PRNGKey(7), 16)[0]
    inst = jax.device_get(EdgeEnv(RANDOM_CONFIG).generate(key, PARAMS))  # eager
    expected = RANDOM_EXPECTED | {"work": RANDOM_EXPECTED["size"]}
    for name in ("arrival", "deadline"):  # padding holds the state's finite never, not inf
        expected[name] = np.where(np.isinf(expected[name]), never(inst.arrival.dtype),
                                  expected[name])
    expected["preds"] = [ps + [-1] * (RANDOM_CONFIG.p_max - len(ps)) for ps in expected["preds"]]
    want = inst.replace(**{name: np.asarray(value, getattr(inst, name).dtype)
                           for name, value in expected.items()})
    assert_same_instance(inst, want, "random generator")  # eager vs the compiled literals
