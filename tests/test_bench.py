"""Tests of the benchmark entry point (eval/bench.py): a quick run and the flag errors."""
from __future__ import annotations

import json

import pytest

from eval import bench


def test_quick_run_writes_every_batch_size(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {row["batch_size"]: row for row in data["results"]}
    assert sorted(rows) == sorted(bench.QUICK_BATCH_SIZES)
    for batch, row in rows.items():
        for key in ("compile_s", "median_s", "steps_per_s", "decisions_per_s",
                    "episodes_per_s", "speedup"):
            assert row[key] > 0, (batch, key)
        assert len(row["times_s"]) == bench.QUICK_REPEATS
        # Every episode finished: one dispatch and one pick per real task.
        assert row["decisions"] == 2 * row["tasks"] > 0
        assert row["steps"] >= row["decisions"] // 2
    ref = data["reference"]
    assert ref["episodes"] == bench.QUICK_REF_EPISODES
    assert ref["decisions_per_s"] > 0 and ref["decisions"] > 0
    assert (ref["dispatch"], ref["schedule"]) == ("least_load", "sdf")
    assert data["machine"]["jax"] and data["machine"]["devices"]
    assert not list(tmp_path.glob(".bench-*"))  # no temporary file left behind
    printed = capsys.readouterr().out
    assert "| batch |" in printed and "JAX / ref" in printed


def test_reference_input_renumbers_real_tasks_only():
    arrays = bench.generate_instances(bench.EnvConfig(), bench.EnvParams(num_tasks=7,
                                                                        num_servers=3), 0, 2)
    servers, tasks = bench.to_reference_input(arrays, 1)
    assert len(servers) == 3 and len(tasks) == 7
    for i, task in enumerate(tasks):
        assert all(0 <= p < i for p in task["preds"])
        assert task["work"] == task["size"] > 0


@pytest.mark.parametrize("argv", [
    ["--batch-sizes", "1,0"],
    ["--batch-sizes", "-4"],
    ["--batch-sizes", "a,b"],
    ["--repeats", "0"],
    ["--repeats", "-1"],
    ["--ref-episodes", "0"],
    ["--method", "XY"],
    ["--method", "nearest+lifo"],
])
def test_flag_errors_exit_before_compiling(argv, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("compiled despite a bad flag")

    monkeypatch.setattr(bench, "compile_runner", boom)
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--method", "--batch-sizes", "--repeats", "--ref-episodes", "--seed",
                 "--quick", "--out"):
        assert flag in text
