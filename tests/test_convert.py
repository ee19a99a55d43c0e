"""Tests of envs/convert.py: real WfCommons and Alibaba jobs -> instance files.

The real data the tests read is committed under tests/data (tests/data/README.md: two
WfCommons files, LGPL-3.0, and an excerpt of whole jobs of the Alibaba CSV), so a fresh
clone tests the converter. One test, test_the_whole_shared_data, also reads the whole
data set, optional external data in ../shared/data beside the checkout (not part of the
repository), and is skipped where it is absent.

Cheap by design: the Alibaba excerpt is converted once (module fixture), and the JAX env
runs once (one compilation) on a converted WfCommons and a converted Alibaba instance
padded to one shape, against the reference simulator.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from damdjax.envs import convert
from damdjax.envs.instance_io import load_instance, save_instance
from damdjax.envs.instance_padding import padded_arrays

DATA = Path(__file__).resolve().parent / "data"  # committed: tests/data/README.md
WF = DATA / "wfcommons"
FORKJOIN = WF / "helloworld-forkjoin-10-chameleon.json"
SRASEARCH = WF / "srasearch-chameleon-10a-001.json"
ALIBABA = DATA / "alibaba-excerpt.csv"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the checkout
SHARED_WF = SHARED / "wfcommons"
SHARED_ALIBABA = SHARED / "alibaba-v2018-dags.csv"


def run(argv, capsys):
    """main(argv) in-process: (spec, stderr lines)."""
    spec = convert.main([str(a) for a in argv])
    return spec, capsys.readouterr().err.strip().splitlines()


# ---------------------------------------------------------------------------
# WfCommons: exactly the file's DAG
# ---------------------------------------------------------------------------


def test_forkjoin_is_exactly_the_files_dag(tmp_path, capsys):
    out = tmp_path / "fj.json"
    run(["wfcommons", FORKJOIN, "--out", out, "--time-unit", "2"], capsys)
    spec = load_instance(out)
    # An independent reading of the WfFormat file.
    with open(FORKJOIN) as f:
        doc = json.load(f)
    spec_tasks = doc["workflow"]["specification"]["tasks"]
    runtime = {t["id"]: t["runtimeInSeconds"] for t in doc["workflow"]["execution"]["tasks"]}
    file_bytes = {f["id"]: f["sizeInBytes"] for f in doc["workflow"]["specification"]["files"]}
    assert len(spec.jobs) == 1
    job = spec.jobs[0]
    assert job.name == FORKJOIN.name and job.meta["file"] == FORKJOIN.name
    assert len(job.tasks) == len(spec_tasks) == 10
    by_name = {t.name: t for t in job.tasks}
    assert set(by_name) == {t["id"] for t in spec_tasks}
    for raw in spec_tasks:
        task = by_name[raw["id"]]
        parents = {job.tasks[p].name for p in task.preds}
        assert parents == set(raw["parents"])
        assert len(task.preds) == len(raw["parents"])
        assert task.work * 2 == pytest.approx(runtime[raw["id"]], rel=1e-12)
        assert task.meta["runtime_s"] == runtime[raw["id"]]
        in_bytes = sum(file_bytes[name] for name in raw["inputFiles"])
        assert task.meta["input_bytes"] == in_bytes
        assert task.size == pytest.approx(in_bytes / 2 ** 28, rel=1e-12)
    # A fork-join: one root, eight middles, one join of fan-in 8.
    assert sorted(len(t.preds) for t in job.tasks) == [0] + [1] * 8 + [8]


def test_round_trip_and_deadlines_by_the_generators_rule(tmp_path, capsys):
    out = tmp_path / "wf.json"
    spec, _ = run(["wfcommons", FORKJOIN, SRASEARCH, "--out", out, "--jobs", "9",
                   "--seed", "3", "--slack", "1.5"], capsys)
    loaded = load_instance(out)
    assert loaded == spec
    save_instance(loaded, tmp_path / "again.json")
    assert load_instance(tmp_path / "again.json") == spec
    assert len(spec.jobs) == 9  # more than the two files: drawn with replacement
    assert {job.name for job in spec.jobs} == {FORKJOIN.name, SRASEARCH.name}
    arrivals = [job.arrival for job in spec.jobs]
    assert arrivals[0] == 0.0 and arrivals == sorted(arrivals)
    # Deadlines: arrival + slack * (ef + k_ref), ef the generator's critical path (JAX).
    import jax.numpy as jnp

    from damdjax.envs.generator import critical_path

    servers = spec.servers
    cpu_ref, bw_ref, k_ref = (float(np.mean([getattr(s, key) for s in servers]))
                              for key in ("cpu", "bw", "k"))
    arrays = padded_arrays(spec)
    depth = max(len(job.tasks) for job in spec.jobs)
    ef = np.asarray(critical_path(jnp.asarray(arrays["preds"]), jnp.asarray(arrays["size"]),
                                  jnp.asarray(arrays["work"]), cpu_ref, bw_ref, k_ref, depth))
    want = arrays["arrival"] + 1.5 * (ef + k_ref)
    np.testing.assert_allclose(arrays["deadline"], want, rtol=1e-5)


def test_default_data_unit_fits_the_committed_files():
    from damdjax.envs.config import EnvParams

    params = EnvParams()
    # The default data unit fits every task of the committed files into the smallest
    # memory (all six shipped files: test_the_whole_shared_data).
    largest = max(t.data for p in (FORKJOIN, SRASEARCH)
                  for t in convert.read_wfcommons(p).tasks)
    assert largest / convert.DEFAULTS.wfcommons_data_unit <= params.mem_low


def test_servers_file_is_used_as_given(tmp_path, capsys):
    servers = [{"name": "edge-a", "cpu": 2.0, "bw": 8.0, "mem": 30.0, "k": 0.2},
               {"cpu": 1.0, "bw": 4.0, "mem": 25.0, "k": 0.7}]
    path = tmp_path / "servers.json"
    path.write_text(json.dumps(servers))
    spec, _ = run(["wfcommons", FORKJOIN, "--out", tmp_path / "o.json", "--servers", path],
                  capsys)
    assert [(s.name, s.cpu, s.bw, s.mem, s.k) for s in spec.servers] == [
        ("edge-a", 2.0, 8.0, 30.0, 0.2), (None, 1.0, 4.0, 25.0, 0.7)]
    path.write_text(json.dumps([{"cpu": 1, "bw": 1, "mem": 1, "k": -1}]))
    with pytest.raises(SystemExit) as e:
        convert.main(["wfcommons", str(FORKJOIN), "--out", str(tmp_path / "o.json"),
                      "--servers", str(path)])
    assert e.value.code == 2
    assert "server 0: k must be > 0, got -1.0" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Alibaba: the CLI end to end on the real CSV (the committed excerpt of whole jobs)
# ---------------------------------------------------------------------------

ALIBABA_ARGS = ["--jobs", "4", "--arrivals", "trace", "--num-servers", "3", "--seed", "7"]
# The excerpt's real bad jobs (tests/data/README.md), in file order, with their reasons.
ALIBABA_SKIPPED = [
    "skipped job j_2205: truncated name: task R24_1_2_3_4_5_6_7_8_9_10_11_12_13_14_15_16_17_18_1"
    " has 50 characters",
    "skipped job j_3492: not terminated: task R2_1 is 'Running'",
    "skipped job j_6868: not terminated: task R3_1_2 is 'Failed'",
    "skipped job j_9485: truncated name: task M3_2_4_5_6_7_8_9_10_11_12_13_14_15_16_17_18_19_20_"
    " has 50 characters",
]


def convert_alibaba(csv_path, out):
    """main() on an Alibaba CSV with ALIBABA_ARGS: (spec, stderr lines)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        spec = convert.main(["alibaba", str(csv_path), "--out", str(out), *ALIBABA_ARGS])
    return spec, err.getvalue().strip().splitlines()


@pytest.fixture(scope="module")
def alibaba_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("ali") / "ali.json"
    spec, err = convert_alibaba(ALIBABA, out)
    return out, spec, err


def test_cli_end_to_end_on_the_alibaba_csv(alibaba_file):
    out, spec, err = alibaba_file
    loaded = load_instance(out)
    assert loaded == spec and len(loaded.jobs) == 4 and len(loaded.servers) == 3
    assert loaded.meta["skipped"] == {"not terminated": 2, "truncated name": 2}
    skipped = [line for line in err if line.startswith("skipped job ")]
    assert len(skipped) == len(ALIBABA_SKIPPED)  # in the CSV's file order
    for line, want in zip(skipped, ALIBABA_SKIPPED):
        assert line.startswith(want), (line, want)
    assert "skipped 4 of 36 jobs, not terminated 2, truncated name 2" in err
    # The first four valid jobs by start time, a 119-task job among them.
    assert [job.name for job in loaded.jobs] == ["j_1661", "j_2", "j_8781", "j_3623783"]
    assert [len(job.tasks) for job in loaded.jobs] == [7, 2, 16, 119]
    arrivals = [job.arrival for job in loaded.jobs]
    assert arrivals[0] == 0.0 and arrivals == sorted(arrivals)
    # Trace arrivals: the jobs' own start times, shifted and in time units (5 s).
    starts = [job.meta["start_time"] for job in loaded.jobs]
    assert arrivals == [pytest.approx((s - starts[0]) / 5.0) for s in starts]
    for job in loaded.jobs:
        for task in job.tasks:
            m = task.meta
            assert task.work == pytest.approx((m["end_time"] - m["start_time"]) / 5.0)
            assert task.size == pytest.approx(m["plan_mem"] / 0.15)


# ---------------------------------------------------------------------------
# JAX env against the reference simulator (one compilation for both sources)
# ---------------------------------------------------------------------------


def assert_env_matches_reference(specs: dict, queue_capacity: int = 4) -> None:
    """The JAX env (LS, float64; one compilation: every spec padded to one shape) and the
    reference simulator give the same schedule, rewards and metrics on each of `specs`
    (name -> InstanceSpec). Shared by the tests of converted and generated workloads."""
    import jax
    import jax.numpy as jnp

    from damdjax.heuristics import pair_from_name
    from damdjax.metrics import episode_metrics
    from damdjax.rollout import run_from_instance
    from damdjax.envs.instance import (instance_from_arrays, instance_to_arrays, max_fan_out,
                               max_pred_gap)
    from damdjax.envs.reference import simulate
    from test_differential import REWARDS, assert_same, reference_inputs

    with jax.enable_x64(True):
        n = max(s.num_tasks for s in specs.values())
        m = max(s.num_servers for s in specs.values())
        p = max(max(len(t.preds) for j in s.jobs for t in j.tasks) for s in specs.values())
        arrays = [padded_arrays(s, n_max=n, m_max=m, p_max=max(p, 1)) for s in specs.values()]
        window = max(max(max_pred_gap(a["preds"]) for a in arrays), 1)
        fan_out = max(max(max_fan_out(a["preds"]) for a in arrays), 1)  # one width to stack
        insts = [instance_from_arrays(a, window=window, dtype=jnp.float64, fan_out=fan_out)
                 for a in arrays]
        batch = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *insts)
        policy = pair_from_name("LS")

        def one(key, inst):
            state, total = run_from_instance(key, inst, policy, queue_capacity, REWARDS)
            return state, total, episode_metrics(state)

        keys = jax.random.split(jax.random.PRNGKey(0), len(insts))
        state, total, metrics = jax.device_get(jax.jit(jax.vmap(one))(keys, batch))
        host = instance_to_arrays(batch)
    for b, name in enumerate(specs):
        servers, tasks = reference_inputs(host, b)
        assert len(tasks) == specs[name].num_tasks
        ref = simulate(servers, tasks, queue_capacity=queue_capacity, dispatch="least_load",
                       schedule="sdf")
        assert_same(f"converted {name}", state, b, total, metrics, ref)


def test_jax_env_and_reference_agree_on_converted_instances(tmp_path, alibaba_file, capsys):
    wf, _ = run(["wfcommons", FORKJOIN, SRASEARCH, "--out",
                 tmp_path / "wf.json", "--jobs", "3", "--seed", "1", "--num-servers", "3"],
                capsys)
    assert_env_matches_reference({"wfcommons": wf, "alibaba": alibaba_file[1]})


# ---------------------------------------------------------------------------
# Bad real data: skipped with a reason, counted; --strict fails
# ---------------------------------------------------------------------------


def wf_doc(parents: dict[str, list[str]], runtimes: dict[str, object] | None = None) -> dict:
    """A minimal WfFormat document: tasks `parents` (id -> parent ids), 10 s each,
    each reading one 1 MB file."""
    runtimes = {t: 10.0 for t in parents} | (runtimes or {})
    tasks = [{"id": t, "name": t, "parents": ps, "inputFiles": [f"in-{t}"], "outputFiles": []}
             for t, ps in parents.items()]
    execution = [{"id": t, "runtimeInSeconds": r} for t, r in runtimes.items() if r != "absent"]
    return {"name": "hand-made", "workflow": {
        "specification": {"tasks": tasks,
                          "files": [{"id": f"in-{t}", "sizeInBytes": 10 ** 6} for t in parents]},
        "execution": {"tasks": execution}}}


WF_BAD = {
    "cycle": (wf_doc({"a": [], "b": ["a", "c"], "c": ["b"]}), "cycle: b -> c -> b"),
    "unknown parent": (wf_doc({"a": [], "b": ["ghost"]}),
                       "unknown parent: task b has parent ghost, not in the job"),
    "no runtime": (wf_doc({"a": [], "b": ["a"]}, {"b": "absent"}),
                   "no runtime: task b is not in workflow.execution.tasks"),
    "negative runtime": (wf_doc({"a": [], "b": ["a"]}, {"a": -1.5}),
                         "negative runtime: task a ran -1.5 s"),
}


@pytest.mark.parametrize("reason", list(WF_BAD))
def test_wfcommons_bad_job_is_skipped_with_its_reason(reason, tmp_path, capsys):
    doc, message = WF_BAD[reason]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(wf_doc({"a": [], "b": ["a"], "c": ["a", "b"]})))
    out = tmp_path / "out.json"
    spec, err = run(["wfcommons", good, bad, "--out", out], capsys)
    assert f"skipped job bad.json: {message}" in err
    assert f"skipped 1 of 2 jobs, {reason} 1" in err
    assert [job.name for job in load_instance(out).jobs] == ["good.json"]
    assert spec.meta["skipped"] == {reason: 1}
    with pytest.raises(SystemExit) as e:
        convert.main(["wfcommons", str(good), str(bad), "--out", str(tmp_path / "s.json"),
                      "--strict"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: job bad.json: {message}"]
    assert not (tmp_path / "s.json").exists()


ALI_HEADER = ["task_name", "instance_num", "job_name", "task_type", "status", "start_time",
              "end_time", "plan_cpu", "plan_mem"]


def ali_row(name, job, status="Terminated", start=100, end=110):
    return [name, "1.0", job, "1", status, str(start), str(end), "100.0", "0.3"]


ALI_BAD = {
    "cycle": ([ali_row("M1_3", "j_bad"), ali_row("R2_1", "j_bad"), ali_row("R3_2", "j_bad")],
              "cycle: M1_3 -> R2_1 -> R3_2 -> M1_3"),
    "unknown parent": ([ali_row("M1", "j_bad"), ali_row("R2_7", "j_bad")],
                       "unknown parent: task R2_7 has parent 7, not in the job"),
    "negative runtime": ([ali_row("M1", "j_bad", start=5, end=4)],
                         "negative runtime: task M1 ran -1 s"),
    "not terminated": ([ali_row("M1", "j_bad"), ali_row("R2_1", "j_bad", status="Running")],
                       "not terminated: task R2_1 is 'Running'"),
    "truncated name": ([ali_row("M1", "j_bad"), ali_row("R2_" + "_".join(["1"] * 24), "j_bad")],
                       "truncated name: task R2_1_1_1"),
}


@pytest.mark.parametrize("reason", list(ALI_BAD))
def test_alibaba_bad_job_is_skipped_with_its_reason(reason, tmp_path, capsys):
    rows, message = ALI_BAD[reason]
    path = tmp_path / "trace.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(ALI_HEADER)
        writer.writerows([ali_row("M1", "j_good", start=50, end=60),
                          ali_row("J2_1", "j_good", start=61, end=75)] + rows)
    out = tmp_path / "out.json"
    spec, err = run(["alibaba", path, "--out", out, "--arrivals", "trace"], capsys)
    assert any(line.startswith(f"skipped job j_bad: {message}") for line in err), err
    assert f"skipped 1 of 2 jobs, {reason} 1" in err
    assert [job.name for job in load_instance(out).jobs] == ["j_good"]
    assert spec.jobs[0].tasks[1].preds == (0,)
    with pytest.raises(SystemExit) as e:
        convert.main(["alibaba", str(path), "--out", str(tmp_path / "s.json"), "--strict"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: job j_bad: {message}")


@pytest.mark.parametrize("argv, message", [
    (["--density", "-1"], "argument --density: must be a finite number > 0, got '-1'"),
    (["--time-unit", "nan"], "argument --time-unit: must be a finite number > 0, got 'nan'"),
    (["--jobs", "0"], "argument --jobs: must be an integer >= 1, got '0'"),
    (["--seed", "x"], "argument --seed: must be an integer >= 0, got 'x'"),
    (["--arrivals", "trace"], "--arrivals trace needs the trace's job start times"),
    (["--arrivals", "burst"], "argument --arrivals: invalid choice: 'burst'"),
])
def test_bad_flags_are_one_line_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        convert.main(["wfcommons", str(FORKJOIN), "--out", str(tmp_path / "o.json"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not (tmp_path / "o.json").exists()


# ---------------------------------------------------------------------------
# The whole data set, optional external data in ../shared/data (absent on a fresh clone:
# skipped there)
# ---------------------------------------------------------------------------


def excerpt_jobs(valid: list[str], skips: list[convert.Skip], rows: dict[str, int]) -> list[str]:
    """The rule that cut tests/data/alibaba-excerpt.csv (tests/data/README.md): the first 30
    valid jobs by start time, then for each skip kind the 2 jobs with the fewest rows
    (ties in file order); `valid` and `skips` read with --strict (a runtime of 0 s is a
    skip, "zero runtime")."""
    names = valid[:30]
    for reason in ("not terminated", "truncated name", "zero runtime"):
        kind = sorted((s.job for s in skips if s.reason == reason), key=lambda j: rows[j])
        names += kind[:2]
    return names


@pytest.mark.skipif(not SHARED_ALIBABA.exists() or not SHARED_WF.is_dir(),
                    reason=f"the optional external data is not in {SHARED}")
def test_the_whole_shared_data(alibaba_file, tmp_path, monkeypatch):
    """Needs the whole data set, optional external data in ../shared/data beside the
    checkout (not part of the repository: all six WfCommons files, the whole Alibaba
    CSV); skipped where it is absent, e.g. a fresh clone in CI.
    Checks what only the whole data can show: the data unit's calibration on the largest
    input, the skip counts docs/model.md reports, and that tests/data is a faithful cut."""
    from damdjax.envs.config import EnvParams

    # The default data unit fits every task of the six files into the smallest memory.
    six = sorted(SHARED_WF.glob("*.json"))
    assert len(six) == 6
    largest = max(t.data for p in six for t in convert.read_wfcommons(p).tasks)
    assert largest / convert.DEFAULTS.wfcommons_data_unit <= EnvParams().mem_low
    # The committed WfCommons files and their LICENSE are the shipped ones, byte for byte.
    for name in (FORKJOIN.name, SRASEARCH.name, "LICENSE"):
        assert (WF / name).read_bytes() == (SHARED_WF / name).read_bytes(), name
    # The whole CSV: every skip, counted; the same first four jobs (and servers) as the
    # excerpt's. (main's one reading of the CSV is kept for the excerpt's rule below.)
    read = []
    real_read = convert.read_alibaba

    def read_once(path, min_runtime_s):
        read.append(real_read(path, min_runtime_s))
        return read[-1]

    monkeypatch.setattr(convert, "read_alibaba", read_once)
    spec, _ = convert_alibaba(SHARED_ALIBABA, tmp_path / "ali.json")
    assert len(read) == 1
    assert spec.meta["skipped"] == {"not terminated": 42, "truncated name": 197}
    floored = [t for j in read[0][0] for t in j.tasks if t.meta["runtime_s"] == 0]
    assert len(floored) == 646 and {t.runtime_s for t in floored} == {0.5}
    excerpt = alibaba_file[1]
    assert spec.jobs == excerpt.jobs and spec.servers == excerpt.servers
    # The excerpt: the header and every row of its jobs, in file order; its jobs by the rule.
    with open(SHARED_ALIBABA, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    with open(ALIBABA, newline="") as f:
        cut = f.read().splitlines(keepends=True)
    job_of = [line.split(",")[2] for line in lines[1:]]
    kept = {line.split(",")[2] for line in cut[1:]}
    assert cut == lines[:1] + [line for line, job in zip(lines[1:], job_of) if job in kept]
    valid, skips = real_read(SHARED_ALIBABA, None)  # the rule's reading: --strict
    assert Counter(s.reason for s in skips)["zero runtime"] == 215
    rows: dict[str, int] = {}
    for job in job_of:
        rows[job] = rows.get(job, 0) + 1
    assert kept == set(excerpt_jobs([j.name for j in valid], skips, rows))
