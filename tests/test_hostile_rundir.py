"""Run directories against hostile files and names (damdjax.rundir, damdjax.runlog,
damdjax.runs): a link where damdjax writes (the lock, metrics.jsonl, the run directory
itself, the set-aside copy) is refused without touching what it points to; run names
that collide with another run's own files, or that the file system cannot hold, are
refused; one lock per run directory whatever the trainer and however --run-dir is
spelled; a bad --run-dir or a damaged metrics log is refused in one line.

Every refusal is checked before anything compiles (jax.jit fails the test), so the file
costs one tiny run (the `finished` fixture, the suite's tiny DQN program)."""
from __future__ import annotations

import json
import os
import shutil

import jax
import pytest

from damdjax import rundir
from damdjax.train import damd, dqn, sweep

# test_run_integrity's TINY: the suite's tiny DQN program (compiled once, through the
# shared compilation cache of tests/conftest.py).
TINY = ["--num-envs", "8", "--num-tasks", "12", "--num-servers", "3", "--steps-per-chunk", "10",
        "--buffer-capacity", "512", "--batch-size", "16", "--learning-starts", "16",
        "--eps-decay-steps", "200", "--hidden", "16,16", "--target-every", "5", "--seed", "5",
        "--slack", "1.5", "--eval-episodes", "0"]
DAMD_TINY = ["--num-tasks", "12", "--num-servers", "3", "--dqn-num-envs", "8", "--mdqn-num-envs",
             "8", "--dqn-num-chunks", "1", "--mdqn-num-chunks", "1", "--dqn-hidden", "16",
             "--mdqn-hidden", "16"]
DECOY = b"someone else's file: damdjax must never write here\n"


def _refused(module, argv, capsys, monkeypatch) -> str:
    """The one-line error of `module.main(argv)` (exit 2, no traceback, nothing compiled)."""
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled despite a refusal"))
    with pytest.raises(SystemExit) as exc:
        module.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2, err
    prefix = f"python -m train.{module.__name__.rsplit('.', 1)[1]}: error: "
    assert err[-1].startswith(prefix), err
    assert not any("Traceback" in ln for ln in err), err
    return err[-1][len(prefix):]


@pytest.fixture
def decoy(tmp_path):
    """A file outside the run directories (`tmp_path/elsewhere/victim.txt`) holding DECOY."""
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(DECOY)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny train.dqn run of one chunk (the resume cases copy it)."""
    rd = tmp_path_factory.mktemp("runs")
    assert dqn.main(["--run-dir", str(rd), "--name", "s", "--num-chunks", "1", *TINY]) == 0
    return rd / "s"


def _copy(finished, tmp_path):
    run = tmp_path / "runs" / "r"
    shutil.copytree(finished, run)
    return run


def _resume(run) -> list[str]:
    return ["--run-dir", str(run.parent), "--name", run.name, "--resume", "--num-chunks", "2"]


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(
        tmp_path, decoy, capsys, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / ".x.lock").symlink_to(decoy)
    msg = _refused(dqn, ["--run-dir", str(runs), "--name", "x", *TINY], capsys, monkeypatch)
    assert str(runs / ".x.lock") in msg and "symbolic link" in msg, msg
    assert decoy.read_bytes() == DECOY
    assert sorted(p.name for p in runs.iterdir()) == [".x.lock"]


def test_resume_refuses_a_metrics_log_that_is_a_link(finished, tmp_path, decoy, capsys,
                                                    monkeypatch):
    """The link points at a copy of the run's own rows (which the log check accepts)."""
    run = _copy(finished, tmp_path)
    rows = (run / "metrics.jsonl").read_bytes()
    decoy.write_bytes(rows)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(decoy)
    msg = _refused(dqn, _resume(run), capsys, monkeypatch)
    assert str(run / "metrics.jsonl") in msg and "symbolic link" in msg, msg
    assert decoy.read_bytes() == rows
    assert (run / "metrics.jsonl").is_symlink()


def test_a_run_directory_that_is_a_link_is_never_replaced_or_deleted(
        tmp_path, decoy, capsys, monkeypatch):
    """A marker planted behind a linked run directory: --overwrite is refused; so is a
    set-aside copy (`.x.replaced`) that is a link, which a resume would delete."""
    elsewhere = decoy.parent
    (elsewhere / rundir.MARKER).write_bytes(b"damdjax run directory\n")
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "x").symlink_to(elsewhere)
    msg = _refused(dqn, ["--run-dir", str(runs), "--name", "x", "--overwrite", *TINY],
                   capsys, monkeypatch)
    assert str(runs / "x") in msg and "symbolic link" in msg, msg
    assert (runs / "x").is_symlink() and not os.path.lexists(runs / ".x.replaced")

    (runs / "y").mkdir()                                  # a run with a checkpoint ...
    for name in (rundir.MARKER, rundir.CHECKPOINT, rundir.CONFIG):
        (runs / "y" / name).write_bytes(b"x")
    (runs / ".y.replaced").symlink_to(elsewhere)          # ... and a planted aside link
    msg = _refused(dqn, ["--run-dir", str(runs), "--name", "y", "--resume"], capsys, monkeypatch)
    assert str(runs / ".y.replaced") in msg, msg
    assert (runs / ".y.replaced").is_symlink()
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before


@pytest.mark.parametrize("name,rule", [
    (".base.replaced", "start with '.'"), (".base.lock", "start with '.'"), ("", "empty"),
    ("a/b", "'/'"), ("..", "'..'"), ("x\x01y", "control character"),
    ("n" * 300, "bytes"), ("é" * 150, "bytes"), ("metrics.jsonl", "run directory holds")],
    ids=["aside", "lock", "empty", "slash", "dotdot", "control", "300-chars", "300-bytes",
         "internal"])
def test_run_names_are_checked_where_the_run_directory_opens(name, rule, tmp_path, capsys,
                                                             monkeypatch):
    """Beside a run `base`, a name that is one of its siblings (a resume of `base` would
    delete it) or any other bad name: one line naming the name and the rule."""
    runs = tmp_path / "runs"
    (runs / "base").mkdir(parents=True)
    (runs / "base" / rundir.MARKER).write_bytes(b"damdjax run directory\n")
    msg = _refused(dqn, ["--run-dir", str(runs), "--name", name, *TINY], capsys, monkeypatch)
    assert msg.startswith(f"--name {repr(name)[:40]}") and rule in msg, msg
    assert sorted(p.name for p in runs.iterdir()) == ["base"]


@pytest.mark.parametrize("module,flags", [(damd, DAMD_TINY), (dqn, TINY),
                                          (sweep, ["--seeds", "2", *TINY])],
                         ids=["damd", "dqn", "sweep"])
def test_one_lock_per_run_directory_whatever_the_trainer_and_spelling(
        module, flags, tmp_path, capsys, monkeypatch):
    """While this process holds runs/same (as a train.dqn run would), every trainer is
    refused on it, --run-dir spelled `link/..` (link -> runs/deep) included."""
    runs = tmp_path / "runs"
    (runs / "deep").mkdir(parents=True)
    (tmp_path / "link").symlink_to(runs / "deep")
    held = str(runs / "same")
    rundir.take(held)
    try:
        msg = _refused(module, ["--run-dir", str(tmp_path / "link" / ".."), "--name", "same",
                                *flags], capsys, monkeypatch)
    finally:
        rundir.release(held)
    assert "in use by process" in msg, msg
    assert not os.path.lexists(runs / "same")


@pytest.mark.parametrize("case", ["file", "empty", "read-only", "a-run"])
def test_a_bad_run_dir_is_refused_in_one_line(case, tmp_path, capsys, monkeypatch):
    """A regular file, an empty string, a folder this user cannot write, a run directory
    (a run inside it would go with an --overwrite of it)."""
    where = tmp_path / "parent"
    if case == "file":
        where.write_bytes(b"not a folder")
    elif case == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes to a read-only folder")
        where.mkdir(mode=0o500)
    elif case == "a-run":
        where.mkdir()
        (where / rundir.MARKER).write_bytes(b"damdjax run directory\n")
    run_dir = "" if case == "empty" else str(where)
    msg = _refused(dqn, ["--run-dir", run_dir, "--name", "x", *TINY], capsys, monkeypatch)
    shown = os.path.realpath(run_dir) if case == "read-only" else run_dir
    assert msg.startswith(f"--run-dir {shown!r}"), msg
    assert not os.path.lexists(tmp_path / ".x.lock")


@pytest.mark.parametrize("case", ["metrics-folder", "string-chunk"])
def test_resume_refuses_a_damaged_metrics_log_in_one_line(case, finished, tmp_path, capsys,
                                                         monkeypatch):
    run = _copy(finished, tmp_path)
    log = run / "metrics.jsonl"
    if case == "metrics-folder":
        log.unlink()
        log.mkdir()
    else:
        row = json.loads(log.read_text().splitlines()[0])
        log.write_text(json.dumps({**row, "chunk": str(row["chunk"])}) + "\n")
    msg = _refused(dqn, _resume(run), capsys, monkeypatch)
    assert msg.startswith(f"--resume: {log}"), msg
