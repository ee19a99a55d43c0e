"""Tests of a run's kept inputs (damdjax/run_inputs.py): a run directory holds copies of
the job library, the partner policy and the starting parameters it read, and a resume
reads those copies, whatever happened to the originals since.

Each case trains tiny runs in this process; `_fresh_process` empties the per-process
caches (the resolved workloads, the compiled programs) before a resume, as a new
command would start without them.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import jax

from damdjax import runner
from damdjax.policies import load_dispatcher
from damdjax.run_inputs import INDEX, INPUTS
from damdjax.train import dqn, mdqn
from damdjax.workloads import resolve_workload
from damdjax.envs.instance_format import JobSpec, TaskSpec
from damdjax.envs.workload import library_from_specs, load_library, save_library

# Chunks long enough that episodes end and new ones are drawn in the second chunk, at a
# density that queues tasks (so that schedulers choose).
TINY = ["--num-envs", "4", "--steps-per-chunk", "12", "--buffer-capacity", "64",
        "--batch-size", "8", "--learning-starts", "0", "--hidden", "8",
        "--eval-episodes", "0", "--num-tasks", "6", "--num-servers", "2", "--density", "4"]


def _library(path, scale: float) -> None:
    """A library of a 3-task fork-join and a single task; `scale` sets their works
    (libraries of other `scale`s have the same shapes, other jobs)."""
    fork = JobSpec(arrival=0.0, tasks=(
        TaskSpec(size=1.0, work=2.0 * scale, deadline=9.0, preds=()),
        TaskSpec(size=2.0, work=1.0 * scale, deadline=9.0, preds=(0,)),
        TaskSpec(size=1.0, work=3.0 * scale, deadline=9.0, preds=(0, 1))))
    one = JobSpec(arrival=0.0, tasks=(TaskSpec(size=1.5, work=4.0 * scale, deadline=9.0,
                                               preds=()),))
    save_library(path, library_from_specs([fork, one]))


def _fresh_process() -> None:
    resolve_workload.cache_clear()
    runner.jitted_train.cache_clear()


def _params(run) -> list:
    return jax.tree.leaves(load_dispatcher(str(run))[1])


def _assert_same_run(a, b, same_checkpoint) -> None:
    """The two runs' dispatcher parameters and whole checkpoints are equal, bitwise."""
    same_checkpoint(a / dqn.CHECKPOINT, b / dqn.CHECKPOINT)
    pa, pb = _params(a), _params(b)
    assert len(pa) == len(pb)
    for x, y in zip(pa, pb):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def _dqn(rd, name, *flags) -> int:
    return dqn.main(["--run-dir", str(rd), "--name", name, *flags])


def _split_run(rd, name, flags, between) -> None:
    """A run of 1 chunk, `between()`, a fresh process, then its resume to 2 chunks."""
    assert _dqn(rd, name, "--num-chunks", "1", *flags) == 0
    between()
    _fresh_process()
    assert _dqn(rd, name, "--resume", "--num-chunks", "2") == 0


@pytest.fixture(scope="module")
def rd(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def test_a_resume_trains_on_the_runs_library_copy(rd, tmp_path, assert_same_checkpoint):
    lib = tmp_path / "jobs.npz"
    _library(lib, 1.0)
    flags = ["--workload", f"library:{lib}", *TINY]
    assert _dqn(rd, "lib-straight", "--num-chunks", "2", *flags) == 0
    _split_run(rd, "lib-split", flags, lambda: _library(lib, 3.0))
    _assert_same_run(rd / "lib-straight", rd / "lib-split", assert_same_checkpoint)
    stored = json.loads((rd / "lib-split" / "config.json").read_text())
    assert stored["workload"] == f"library:{lib}" and stored["num_chunks"] == 2
    index = json.loads((rd / "lib-split" / INPUTS / INDEX).read_text())["inputs"]
    assert [(e["field"], e["original"]) for e in index] == [("workload", f"library:{lib}")]
    copy = load_library(rd / "lib-split" / INPUTS / index[0]["copy"])
    assert np.array_equal(copy.work, load_library(rd / "lib-straight" / INPUTS /
                                                  index[0]["copy"]).work)
    os.remove(lib)   # the original gone: the run still resumes
    _fresh_process()
    assert _dqn(rd, "lib-split", "--resume", "--num-chunks", "3") == 0
    # eval.compare evaluates the run on its own copy of the jobs, the original gone
    from damdjax.eval import compare
    ns = compare.build_parser().parse_args(["--dispatcher-checkpoint", str(rd / "lib-split")])
    setting = compare.learned_methods(ns)[1]
    assert setting["workload"] == f"library:{rd / 'lib-split' / INPUTS / index[0]['copy']}"


def test_a_resume_trains_under_the_runs_scheduler_copy(rd, assert_same_checkpoint):
    for name, seed in (("ms-a", "1"), ("ms-b", "2")):
        assert mdqn.main(["--run-dir", str(rd), "--name", name, "--num-chunks", "1",
                          "--seed", seed, *TINY]) == 0
    flags = ["--scheduler", str(rd / "ms-a"), *TINY]
    assert _dqn(rd, "sched-straight", "--num-chunks", "2", *flags) == 0
    other = rd / "ms-b" / "schedulers.msgpack"
    _split_run(rd, "sched-split", flags,
               lambda: shutil.copyfile(other, rd / "ms-a" / "schedulers.msgpack"))
    _assert_same_run(rd / "sched-straight", rd / "sched-split", assert_same_checkpoint)
    stored = json.loads((rd / "sched-split" / "config.json").read_text())
    assert stored["scheduler"] == str(rd / "ms-a")


def test_a_resume_needs_no_init_file(rd, tmp_path):
    init = tmp_path / "start.msgpack"
    assert _dqn(rd, "first", "--num-chunks", "1", *TINY) == 0
    shutil.copyfile(rd / "first" / "dispatcher.msgpack", init)
    _split_run(rd, "from-init", ["--init-dispatcher", str(init), *TINY],
               lambda: os.remove(init))
    stored = json.loads((rd / "from-init" / "config.json").read_text())
    assert stored["init_dispatcher"] == str(init)
