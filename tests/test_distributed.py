"""train.sweep --distributed with real processes over the loopback interface: 2 processes
(python -m train.launch) equal 1 process on 2 fake CPU devices bitwise; a killed process
ends the other with one line within the timeout (process 0, the coordinator's, at once)
and --resume then equals the straight run; flags that differ between processes are
refused at start; a process alone ends within the timeout; eval.figures on 2 processes
equals it on 1 process with 2 devices.

Bitwise, not to float rounding: both runs are the same program over 2 devices (1
member per device after the member axis is split), each device's members computed by
the same XLA CPU code; the only cross-device operations are an all-reduce of a flag
(the auto-reset) and gathers, which move values without arithmetic, and process 0's
checkpoint reaches the others as bits (`damdjax.sharding.from_process_0`).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from damdjax.checkpoint import read_state_dict
from damdjax.envs.instance_format import JobSpec, TaskSpec
from damdjax.envs.workload import library_from_specs, save_library
from damdjax.train.launch import free_port

TIMEOUT = 5    # --distributed-timeout, seconds
GRID = ["--seeds", "2", "--grid", "lr=5e-4,2e-3"]
TINY = ["--num-envs", "4", "--steps-per-chunk", "12", "--buffer-capacity", "64",
        "--batch-size", "8", "--learning-starts", "0", "--hidden", "8",
        "--eval-episodes", "2", "--num-tasks", "6", "--num-servers", "2", "--density", "4",
        "--seed", "3", "--num-chunks", "2"]
TIMING = ("seconds", "env_steps_per_s")   # a row's wall-clock fields


def _env(devices: int = 1, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": os.getcwd(), "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={devices}", **extra}


def _sweep(rd: Path, name: str, *flags) -> list[str]:
    return [sys.executable, "-m", "train.sweep", "--run-dir", str(rd), "--name", name, *flags]


def _one_of_two(argv: list[str], coordinator: str, i: int, **env) -> subprocess.Popen:
    """Process `i` of 2 of `argv`, placed by flags (train.launch uses the environment)."""
    return subprocess.Popen(
        [*argv, "--distributed", "--coordinator", coordinator, "--num-processes", "2",
         "--process-id", str(i), "--distributed-timeout", str(TIMEOUT)],
        env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _launch(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "train.launch", "--num-processes", "2", "--", *argv,
         "--distributed", "--distributed-timeout", str(TIMEOUT)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finished(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (out or "") + (err or "")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same sweep (a job library: input copies) in one process on 2 fake CPU devices
    and in two processes of one device each (python -m train.launch), started together.
    Yields `(run dirs, base flags)`."""
    rd = tmp_path_factory.mktemp("dist")
    lib = rd / "jobs.npz"
    save_library(lib, library_from_specs([
        JobSpec(arrival=0.0, tasks=(TaskSpec(size=1.0, work=2.0, deadline=9.0, preds=()),
                                    TaskSpec(size=2.0, work=1.0, deadline=9.0, preds=(0,)))),
        JobSpec(arrival=0.0, tasks=(TaskSpec(size=1.5, work=4.0, deadline=9.0, preds=()),))]))
    flags = ["--workload", f"library:{lib}", *GRID, *TINY]
    single = subprocess.Popen(_sweep(rd, "one", *flags), env=_env(devices=2),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    two = _launch(_sweep(rd, "two", *flags))
    _finished(single)
    out = _finished(two)
    assert "[0] sweep" in out and "[1] sweep" in out and "on 2 device(s)" in out
    return rd, flags


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in open(run / "metrics.jsonl")]


def _assert_same_run(a: Path, b: Path) -> None:
    """Rows (but their timings), the checkpoint's every leaf, the member files (a path in
    `a` read as the same in `b`) and eval.json: equal, bitwise."""
    assert _rows(a) == _rows(b)
    sa, sb = read_state_dict(a / "checkpoint.msgpack"), read_state_dict(b / "checkpoint.msgpack")
    la, lb = jax.tree.leaves(sa), jax.tree.leaves(sb)
    assert jax.tree.structure(sa) == jax.tree.structure(sb) and len(la) > 0
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    members = sorted(p.name for p in a.glob("member-*"))
    assert members == [f"member-{i}" for i in range(4)]
    for m in members:
        for f in sorted(os.listdir(a / m)):   # (config.json names the run's input copies)
            assert ((a / m / f).read_bytes().replace(bytes(a), bytes(b))
                    == (b / m / f).read_bytes()), (m, f)
    assert json.loads((a / "eval.json").read_text()) == json.loads((b / "eval.json").read_text())


def test_two_processes_equal_one_process_on_two_devices(runs):
    rd, _ = runs
    _assert_same_run(rd / "one", rd / "two")
    assert sorted(os.listdir(rd / "two" / "inputs")) == sorted(os.listdir(rd / "one" / "inputs"))


def test_a_killed_process_ends_the_other_and_resume_equals_the_straight_run(runs):
    """Process 1 killed after chunk 1, then process 0 in the resume: each time the
    other ends with one line; a second resume equals the straight run."""
    rd, flags = runs
    coordinator = f"127.0.0.1:{free_port()}"
    argv = _sweep(rd, "killed", *flags)
    p0 = _one_of_two(argv, coordinator, 0)
    p1 = _one_of_two(argv, coordinator, 1, DAMDJAX_TEST_KILL_AT="after-checkpoint:1")
    p1.communicate(timeout=300)
    assert p1.returncode == -9
    t0 = time.monotonic()
    out, err = p0.communicate(timeout=300)
    waited = time.monotonic() - t0
    assert p0.returncode == 1, out + err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: process 1 stopped responding .* \(process 0 of 2, "
                        rf"coordinator {coordinator}\); .*checkpoint.msgpack keeps the last "
                        rf"committed chunk: continue with --resume", last), err
    assert waited < TIMEOUT + 10, waited   # (the watchdog: TIMEOUT after the last beat)
    state = read_state_dict(rd / "killed" / "checkpoint.msgpack")
    assert int(np.asarray(state["chunk"]).max()) == 1
    # Process 0 (the coordinator's) killed in the resume, before chunk 2 is committed: the
    # other ends at once with the one line, not JAX's abort.
    coordinator = f"127.0.0.1:{free_port()}"
    argv = _sweep(rd, "killed", "--resume")
    p1 = _one_of_two(argv, coordinator, 1)
    p0 = _one_of_two(argv, coordinator, 0, DAMDJAX_TEST_KILL_AT="after-chunk:2")
    out, err = p0.communicate(timeout=300)
    assert p0.returncode == -9, out + err
    t0 = time.monotonic()
    out, err = p1.communicate(timeout=300)
    waited = time.monotonic() - t0
    assert p1.returncode == 1, out + err
    lines = [s for s in err.strip().splitlines() if not s.startswith("workload ")]
    assert len(lines) == 1 and re.fullmatch(
        rf"error: lost process 0, which runs the coordinator \(its connection closed: .*\) "
        rf"\(process 1 of 2, coordinator {coordinator}\); .*checkpoint.msgpack keeps the "
        rf"last committed chunk: continue with --resume", lines[0]), err
    assert waited < 3, waited
    state = read_state_dict(rd / "killed" / "checkpoint.msgpack")
    assert int(np.asarray(state["chunk"]).max()) == 1
    resumed = _launch(_sweep(rd, "killed", "--resume"))
    _finished(resumed)
    _assert_same_run(rd / "two", rd / "killed")


def test_flags_that_differ_between_processes_are_refused_at_start(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    base = _sweep(tmp_path, "mismatch", "--seeds", "2", *TINY)
    procs = [_one_of_two([*base, "--grid", f"lr={lr}"], coordinator, i)
             for i, lr in enumerate(("1e-3", "2e-3"))]
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2, out + err
        assert re.fullmatch(rf"error: the flags of process 1 differ from process 0's: every "
                            rf"process must run the same command \(process {i} of 2, "
                            rf"coordinator {coordinator}\)", err.strip().splitlines()[-1]), err
    assert not (tmp_path / "mismatch").exists()


def test_a_process_alone_ends_within_the_timeout(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    p = _one_of_two(_sweep(tmp_path, "alone", *TINY), coordinator, 1)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, out + err
    assert re.fullmatch(rf"error: process 1: could not join the 2 processes at the "
                        rf"coordinator {coordinator} within {TIMEOUT} s .*",
                        err.strip().splitlines()[-1]), err
    assert time.monotonic() - t0 < TIMEOUT + 30


def test_the_launcher_ends_every_process_when_one_fails():
    code = ("import os, sys, time; i = os.environ['DAMDJAX_PROCESS_ID']; "
            "print('up', os.environ['JAX_COORDINATOR_ADDRESS'], "
            "os.environ['DAMDJAX_NUM_PROCESSES'], flush=True); "
            "time.sleep(0.5) if i == '1' else time.sleep(60); sys.exit(3)")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "train.launch", "--num-processes", "2",
                        "--grace", "1", "--", sys.executable, "-c", code, "--distributed"],
                       env=_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 3, p.stdout + p.stderr
    assert time.monotonic() - t0 < 30
    assert re.search(r"^\[0\] up 127\.0\.0\.1:\d+ 2$", p.stdout, re.M), p.stdout
    assert re.search(r"^\[1\] up 127\.0\.0\.1:\d+ 2$", p.stdout, re.M), p.stdout
    assert "launch: process 1 exited with code 3; ending the others" in p.stderr


# eval.figures: one axis, 2 points, 1 seed, the smallest training and 2 held-out episodes;
# no tuning (process 0 alone tunes, as it plays the pairs: tests/test_figures.py).
FIGURES = ["--axes", "density", "--points", "density=1,3", "--seeds", "1", "--episodes", "2",
           "--tune-episodes", "0",
           "--train-args", "--num-tasks 6 --num-servers 2 --dqn-num-envs 2 --mdqn-num-envs 2 "
           "--dqn-num-chunks 1 --mdqn-num-chunks 1 --dqn-hidden 8 --mdqn-hidden 8 "
           "--dqn-steps-per-chunk 4 --mdqn-steps-per-chunk 4 --dqn-learning-starts 0 "
           "--mdqn-learning-starts 0 --dqn-buffer-capacity 16 --mdqn-buffer-capacity 16 "
           "--dqn-batch-size 4 --mdqn-batch-size 4"]


def test_figures_on_two_processes_equal_one_process_on_two_devices(tmp_path):
    """Every number of the figure's JSON but its timings, bitwise: the training and the
    learned methods are the same programs over 2 devices; the heuristics run in process 0
    alone, as in the single process; only process 0 writes and prints."""
    def figures(out: str) -> list[str]:
        return [sys.executable, "-m", "eval.figures", "--out", str(tmp_path / out), *FIGURES]

    single = subprocess.Popen(figures("one"), env=_env(devices=2), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    out = _finished(_launch(figures("two")))
    _finished(single)
    assert "[0] [figures" in out and "[1] [figures" not in out and "[1] sweep" not in out, out
    assert "[0] | DAMD |" in out and "[1] |" not in out, out
    fig = [json.loads((tmp_path / d / "fig4-density.json").read_text()) for d in ("one", "two")]
    for f in fig:
        assert f.pop("seconds").keys() >= {"train", "heuristics", "learned"}
    assert fig[0] == fig[1]
    names = [sorted(p.relative_to(tmp_path / d).as_posix() for p in (tmp_path / d).rglob("*")
                    if p.is_file()) for d in ("one", "two")]
    assert names[0] == names[1] and "train/density/member-1/damd.json" in names[1]
