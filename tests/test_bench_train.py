"""Tests of the training throughput benchmark (eval/bench_train.py): a tiny run and the flags."""
from __future__ import annotations

import json
import math

import pytest

from damdjax.eval import bench_train

TINY = ["--num-envs", "4,8", "--steps-per-chunk", "2", "--repeats", "1", "--num-tasks", "10",
        "--num-servers", "2", "--batch-size", "8", "--buffer-capacity", "64"]


def test_tiny_run_writes_one_consistent_row_per_num_envs(tmp_path, capsys):
    out = tmp_path / "bench_train.json"
    assert bench_train.main([*TINY, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["trainer"] == "dqn"
    rows = data["results"]
    assert [row["num_envs"] for row in rows] == [4, 8]  # one row each, in the given order
    for row, config in zip(rows, data["configs"]):
        assert config["num_envs"] == row["num_envs"]
        assert config["learning_starts"] == 0
        assert (config["steps_per_chunk"], config["env"]["num_tasks"], config["env"]["num_servers"],
                config["batch_size"], config["buffer_capacity"]) == (2, 10, 2, 8, 64)
        assert row["steps_per_chunk"] == 2 and row["batch_size"] == 8
        assert len(row["times_s"]) == 1 and row["median_s"] == row["times_s"][0] > 0
        assert row["compile_s"] > 0 and row["init_s"] > 0
        median = row["median_s"]
        upd = row["updates_per_step"]
        assert math.isclose(row["env_steps_per_s"], 2 * row["num_envs"] / median, rel_tol=1e-12)
        assert math.isclose(row["updates_per_s"], 2 * upd / median, rel_tol=1e-12)
        assert math.isclose(row["vmapped_steps_per_s"], 2 / median, rel_tol=1e-12)
        assert math.isclose(row["env_steps_per_s"] / row["updates_per_s"],
                            row["num_envs"] / upd, rel_tol=1e-12)
        # learning_starts=0: once transitions are ready (after the warm-up chunk) every
        # update of a timed chunk is applied.
        assert row["updates_applied"] == [2 * upd]
    machine = data["machine"]
    assert machine["jax"] and machine["device_kind"] and machine["cpu_count"] >= 1
    assert not list(tmp_path.glob(".tmp-*"))  # no temporary file left behind
    captured = capsys.readouterr()
    assert "| num envs |" in captured.out and "updates/s" in captured.out
    assert "replay batch of 8" in captured.out
    progress = [line for line in captured.err.splitlines() if line.startswith("num_envs ")]
    assert [line.split(":")[0] for line in progress] == ["num_envs 4", "num_envs 8"]


@pytest.mark.parametrize("argv, named", [
    (["--num-envs", "0"], "0"),
    (["--num-envs", "4,-2"], "-2"),
    (["--num-envs", "a"], "'a'"),
    (["--repeats", "0"], "0"),
    (["--steps-per-chunk", "0"], "0"),
    (["--batch-size", "-1"], "-1"),
    (["--num-servers", "0"], "0"),
    (["--trainer", "nope"], "'nope'"),
])
def test_bad_flags_exit_2_with_one_line_before_compiling(argv, named, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("compiled despite a bad flag")

    monkeypatch.setattr(bench_train, "compile_chunk", boom)
    monkeypatch.setattr(bench_train, "init_state", boom)
    with pytest.raises(SystemExit) as exc:
        bench_train.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m eval.bench_train: error:")
    assert named in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_registered_trainer_without_module_is_a_flag_error(capsys, monkeypatch):
    monkeypatch.setitem(bench_train.TRAINERS, "ghost", ("train.no_such_trainer", "GhostConfig"))
    with pytest.raises(SystemExit) as exc:
        bench_train.main(["--trainer", "ghost"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("python -m eval.bench_train: error: --trainer ghost: "
                       "module train.no_such_trainer does not exist")


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        bench_train.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for action in bench_train.build_parser()._actions:
        for opt in action.option_strings:
            assert opt in out
        assert action.help
    for flag in ("--num-envs", "--steps-per-chunk", "--repeats", "--trainer", "--out",
                 "--num-tasks", "--num-servers", "--batch-size", "--buffer-capacity"):
        assert flag in out
