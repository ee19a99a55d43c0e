"""Runtimes recorded as 0 s (under a trace's time resolution) and the other audited fields
of real workloads (docs/model.md, "Real workloads"): floored, counted, raw value in meta,
refused by --strict; the JAX env and the reference simulator agree on the floored jobs.

Cheap by design: three hand-made WfFormat files (tests/data/wfcommons-zero, README.md
there) of 3 or 4 tasks, one env compilation for all of them.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest

from damdjax.envs import convert
from damdjax.envs.instance_io import load_instance
from test_convert import ALI_HEADER, ali_row, assert_env_matches_reference, run

ZERO = Path(__file__).resolve().parent / "data" / "wfcommons-zero"
ONE, ALL, CRITICAL = (ZERO / f"{n}-zero.json" for n in ("one", "all", "critical"))
ARGS = ["--num-servers", "3", "--seed", "1"]


def recorded(path: Path) -> dict[str, float]:
    """Task id -> runtimeInSeconds as the file records it (an independent reading)."""
    doc = json.loads(path.read_text())
    return {t["id"]: t["runtimeInSeconds"] for t in doc["workflow"]["execution"]["tasks"]}


@pytest.fixture(scope="module")
def floored(tmp_path_factory):
    """The three files converted with the default floor: (spec, stderr lines)."""
    out = tmp_path_factory.mktemp("zero") / "zero.json"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        spec = convert.main(["wfcommons", str(ONE), str(ALL), str(CRITICAL), "--out", str(out),
                             *ARGS])
    assert load_instance(out) == spec
    return spec, err.getvalue().splitlines()


def test_zero_runtimes_run_the_floor_counted_with_the_raw_value_in_meta(floored):
    spec, err = floored
    assert [job.name for job in spec.jobs] == [ONE.name, ALL.name, CRITICAL.name]
    assert "skipped 0 of 3 jobs" in err
    assert ("note: 5 tasks ran 0 s (under the trace's time resolution); each runs 0.5 s "
            "(--min-runtime; meta keeps runtime_s 0)") in err
    assert spec.meta["min_runtime_s"] == convert.DEFAULTS.min_runtime_s == 0.5
    for job, path in zip(spec.jobs, (ONE, ALL, CRITICAL)):
        runtimes = recorded(path)
        assert {t.name for t in job.tasks} == set(runtimes)
        for task in job.tasks:
            raw = runtimes[task.name]
            assert task.meta["runtime_s"] == raw               # the recorded value, 0 kept
            assert task.work == (raw or 0.5) / 5.0             # the floor only where 0
    assert sum(t.meta["runtime_s"] == 0 for j in spec.jobs for t in j.tasks) == 5


def test_the_floor_is_a_flag_and_enters_the_critical_path(floored, tmp_path, capsys):
    """A zero-runtime task on the critical path: the converted job equals the same file
    with that runtime written as the floor (work and deadlines), meta aside."""
    spec, _ = run(["wfcommons", CRITICAL, "--out", tmp_path / "a.json", *ARGS,
                   "--min-runtime", "2"], capsys)
    assert [t.work for t in spec.jobs[0].tasks] == [4.0, 0.4, 3.0]
    assert spec.meta["min_runtime_s"] == 2.0
    doc = json.loads(CRITICAL.read_text())
    for t in doc["workflow"]["execution"]["tasks"]:
        t["runtimeInSeconds"] = t["runtimeInSeconds"] or 2
    explicit = tmp_path / CRITICAL.name
    explicit.write_text(json.dumps(doc))
    same, err = run(["wfcommons", explicit, "--out", tmp_path / "b.json", *ARGS], capsys)
    assert not any("ran 0 s" in line for line in err)
    for a, b in zip(spec.jobs[0].tasks, same.jobs[0].tasks):
        assert (a.work, a.size, a.deadline, a.preds) == (b.work, b.size, b.deadline, b.preds)
    # On the critical path, the floor moves the last deadline by slack * work / cpu_ref.
    low = floored[0].jobs[2]                          # the same job at the 0.5 s floor
    cpu_ref = sum(s.cpu for s in spec.servers) / len(spec.servers)
    assert spec.servers == floored[0].servers
    late = (spec.jobs[0].tasks[2].deadline - spec.jobs[0].arrival
            - (low.tasks[2].deadline - low.arrival))
    assert late == pytest.approx(spec.meta["slack"] * (2.0 - 0.5) / 5.0 / cpu_ref, rel=1e-9)


@pytest.mark.parametrize("path, task", [(ONE, "multiqc_2"), (ALL, "check_1"),
                                        (CRITICAL, "index_2")])
def test_strict_refuses_a_zero_runtime(path, task, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        convert.main(["wfcommons", str(path), "--out", str(tmp_path / "o.json"), "--strict"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: job {path.name}: zero runtime: task {task} ran 0 s (under the "
                   f"trace's time resolution; without --strict it counts as --min-runtime "
                   f"seconds)"]
    assert not (tmp_path / "o.json").exists()


def test_alibaba_zero_runtime_is_floored_and_strict_refuses_it(tmp_path, capsys):
    path = tmp_path / "trace.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(ALI_HEADER)
        writer.writerows([ali_row("M1", "j_a", start=50, end=50),
                          ali_row("R2_1", "j_a", start=51, end=61)])
    spec, err = run(["alibaba", path, "--out", tmp_path / "o.json"], capsys)
    assert [(t.meta["runtime_s"], t.work) for t in spec.jobs[0].tasks] == [(0.0, 0.1), (10.0, 2.0)]
    assert any(line.startswith("note: 1 tasks ran 0 s") for line in err)
    with pytest.raises(SystemExit):
        convert.main(["alibaba", str(path), "--out", str(tmp_path / "s.json"), "--strict"])
    assert "zero runtime: task M1 ran 0 s" in capsys.readouterr().err


def test_a_task_with_two_execution_records_is_skipped(tmp_path, capsys):
    doc = json.loads(ONE.read_text())
    doc["workflow"]["execution"]["tasks"].append({"id": "trim_3", "runtimeInSeconds": 9})
    bad = tmp_path / "twice.json"
    bad.write_text(json.dumps(doc))
    _, err = run(["wfcommons", bad, ONE, "--out", tmp_path / "o.json"], capsys)
    assert ("skipped job twice.json: duplicate task: task trim_3 has 2 records in "
            "workflow.execution.tasks") in err


def test_env_and_reference_agree_on_floored_jobs(floored, tmp_path, capsys):
    spec = floored[0]
    one_job = {job.name: run(["wfcommons", ZERO / job.name, "--out", tmp_path / job.name,
                              *ARGS], capsys)[0] for job in spec.jobs}
    assert_env_matches_reference({"all three": spec, **one_job})
