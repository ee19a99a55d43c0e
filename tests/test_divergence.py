"""A run whose parameters or loss stop being finite ends with one line naming the chunk,
and its run directory keeps the last finite chunk; so does a chunk that cannot be
recorded (a full disk)."""
from __future__ import annotations

import errno

import jax
import numpy as np
import pytest

from damdjax import runner as runner_module
from damdjax.checkpoint import read_state_dict
from damdjax.policies import load_dispatcher
from damdjax.train import dqn, sweep

# learning starts in chunk 2: chunk 1 is finite, chunk 2's first updates at lr 1e30 are not
TINY = ["--num-envs", "4", "--num-chunks", "4", "--steps-per-chunk", "10",
        "--learning-starts", "60", "--buffer-capacity", "64", "--batch-size", "8",
        "--hidden", "8", "--eval-episodes", "0", "--num-tasks", "6", "--num-servers", "2"]


def _finite(tree) -> bool:
    return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree)
               if np.asarray(x).dtype.kind == "f")


def test_a_diverging_run_stops_at_the_chunk_and_keeps_the_last_finite(tmp_path, capsys):
    code = dqn.main(["--run-dir", str(tmp_path), "--name", "a", *TINY, "--lr", "1e30"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: chunk 2: the parameters or loss are no longer finite")
    assert "checkpoint.msgpack keeps chunk 1" in err[-1]
    state = read_state_dict(tmp_path / "a" / "checkpoint.msgpack")
    assert int(np.asarray(state["chunk"])) == 1
    assert _finite((state["params"], state["target_params"], state["opt_state"]))
    assert _finite(load_dispatcher(str(tmp_path / "a"))[1])


def test_a_sweep_names_the_diverging_member(tmp_path, capsys):
    code = sweep.main(["--trainer", "dqn", "--grid", "lr=1e-3,1e30", "--run-dir", str(tmp_path),
                       "--name", "s", *TINY])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "member(s) 1 are no longer finite" in line and "chunk 2" in line


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    save = runner_module.save_checkpoint
    calls = {"n": 0}

    def full_after_first(tree, run_dir, rows):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        save(tree, run_dir, rows)
    monkeypatch.setattr("damdjax.runs.save_checkpoint", full_after_first)
    code = dqn.main(["--run-dir", str(tmp_path), "--name", "f", *TINY])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert line.startswith("error: chunk 2: cannot record it: [Errno 28] No space left")
    assert "keeps chunk 1" in line
    assert int(np.asarray(read_state_dict(tmp_path / "f" / "checkpoint.msgpack")["chunk"])) == 1
    # the run resumes from it once there is room again
    monkeypatch.setattr("damdjax.runs.save_checkpoint", save)
    assert dqn.main(["--run-dir", str(tmp_path), "--name", "f", "--resume"]) == 0
