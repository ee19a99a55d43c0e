"""Flags that name hostile values or files end with one line (exit 2) before any work:
nothing compiled, nothing written, no input overwritten."""
from __future__ import annotations

import shutil
from pathlib import Path

import jax
import pytest

from damdjax.eval import compare, figures, target_spread

WF_FILE = (Path(__file__).resolve().parent / "data" / "wfcommons"
           / "helloworld-forkjoin-10-chameleon.json")


def _error(main, argv, capsys, monkeypatch) -> str:
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled despite a bad flag"))
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    return lines[-1]


@pytest.mark.parametrize("argv,says", [
    (["--points", "tasks=inf"], "num_tasks takes finite numbers, got 'inf'"),
    (["--points", "density=nan"], "density takes finite numbers, got 'nan'"),
    (["--train-args", "'--lr"], "No closing quotation"),
    (["--train-args=--reward=x"], "unrecognized arguments: --reward=x"),
    (["--episodes", "99999999999"], "--episodes must be <= 2147483647"),
    (["--episodes", "2000000000"], "a point's evaluation (--episodes 2000000000"),
])
def test_figures_refuses_before_writing(argv, says, tmp_path, capsys, monkeypatch):
    out = tmp_path / "figs"
    line = _error(figures.main, ["--quick", "--out", str(out), *argv], capsys, monkeypatch)
    assert says in line
    assert not out.exists()     # no job written: the corrected command starts afresh


def test_figures_out_naming_a_file_is_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "file.txt"
    out.write_text("mine")
    line = _error(figures.main, ["--quick", "--out", str(out)], capsys, monkeypatch)
    assert line.endswith(f"--out {out}: is a file, not a folder")
    assert out.read_text() == "mine"


def test_compare_methods_with_an_empty_entry(capsys, monkeypatch):
    line = _error(compare.main, ["--methods", "NF,,RS"], capsys, monkeypatch)
    assert "--methods has an empty entry: 'NF,,RS'" in line


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny train.dqn run."""
    from damdjax.train import dqn
    root = tmp_path_factory.mktemp("runs")
    assert dqn.main(["--run-dir", str(root), "--name", "r", "--num-envs", "2",
                     "--num-chunks", "1", "--steps-per-chunk", "2", "--buffer-capacity", "8",
                     "--batch-size", "2", "--learning-starts", "0", "--hidden", "4",
                     "--eval-episodes", "0", "--num-tasks", "4", "--num-servers", "2"]) == 0
    return root / "r"


def test_compare_out_may_not_name_an_indirect_input(run_dir, tmp_path, capsys, monkeypatch):
    """The run's config.json is read as its setting when a policy file of the run is named;
    a workload folder's files are read: --out may name neither."""
    config = run_dir / "config.json"
    before = config.read_bytes()
    line = _error(compare.main, ["--dispatcher-checkpoint", str(run_dir / "dispatcher.msgpack"),
                                 "--out", str(config)], capsys, monkeypatch)
    assert "would overwrite the input" in line and config.read_bytes() == before
    wf = tmp_path / "wf"
    wf.mkdir()
    job = wf / "a.json"
    shutil.copy(WF_FILE, job)
    line = _error(compare.main, ["--workload", f"wfcommons:{wf}", "--num-tasks", "50",
                                 "--out", str(job)], capsys, monkeypatch)
    assert "would overwrite the input" in line and job.read_bytes() == WF_FILE.read_bytes()


def test_target_spread_refuses_states_beyond_memory(capsys, monkeypatch):
    line = _error(target_spread.main, ["--states", "2000000000", "--num-tasks", "10"],
                  capsys, monkeypatch)
    assert "--states 2000000000" in line and "more than" in line


def test_compare_refuses_a_queue_capacity_beyond_memory(tmp_path, capsys, monkeypatch):
    """An instance file's states hold --queue-capacity slots per server: a huge value is
    refused by the memory estimate before anything is allocated."""
    from damdjax.envs import convert
    inst = tmp_path / "inst.json"
    convert.main(["wfcommons", str(WF_FILE), "--out", str(inst)])
    capsys.readouterr()
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled despite a bad flag"))
    with pytest.raises(SystemExit) as exc:
        compare.main(["--instance", str(inst), "--queue-capacity", "2147483647"])
    assert "--queue-capacity 2147483647" in str(exc.value) and "more than" in str(exc.value)


def test_a_batch_beyond_memory_is_refused_before_allocating(tmp_path, capsys, monkeypatch):
    from damdjax.train import dqn
    line = _error(dqn.main, ["--run-dir", str(tmp_path), "--batch-size", "2147483647"],
                  capsys, monkeypatch)
    assert "--batch-size 2147483647" in line and "more than" in line


def test_figures_refuses_an_output_folder_in_use(tmp_path, capsys, monkeypatch):
    """Two figures commands on one --out: the second is refused before it reads or
    writes anything there (the run directories' lock)."""
    from damdjax import rundir
    out = tmp_path / "figs"
    rundir.take(str(out))
    try:
        line = _error(figures.main, ["--quick", "--out", str(out)], capsys, monkeypatch)
    finally:
        rundir.release(str(out))
    assert "is in use by process" in line and not out.exists()
