"""train.damd: flags, the pipeline end to end (its evaluation reproduced by eval.compare), the
same program as a sweep of one member, kill -9 and Ctrl-C then --resume, and run
directories of the earlier layout (a folder per stage).

In a file of its own so that the suite's two workers (pytest-xdist, a file per worker)
share the trainer tests evenly."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from damdjax import chunks, members
from damdjax.checkpoint import read_state_dict
from damdjax.policies import (DAMD_FILE, DISPATCHER_FILE, SCHEDULERS_FILE, load_damd,
                              load_dispatcher, load_schedulers)
from damdjax.train import damd, sweep

# The pipeline's flags here and in tests/test_figures.py's job (TINY_TRAIN), so that this
# file's 2-member sweep and the figure's (2 points x 1 seed) are one program: whichever
# runs second reads it from the suite's compilation cache (tests/conftest.py).
TINY = ["--num-tasks", "12", "--num-servers", "3"] + [
    flag for k in ("dqn", "mdqn") for flag in (
        f"--{k}-num-envs", "8", f"--{k}-num-chunks", "1", f"--{k}-hidden", "16",
        f"--{k}-steps-per-chunk", "40", f"--{k}-learning-starts", "80",
        f"--{k}-buffer-capacity", "256", f"--{k}-batch-size", "16")]
# The straight run's flags (a stage evaluation after each of its two stages).
RUN = [*TINY, "--seed", "2", "--eval-episodes", "6", "--stage-eval-episodes", "4"]
STAGES = ("r1-dispatcher", "r1-schedulers")
STAGE_EVALS = tuple(damd.STAGE_EVAL.format(s) for s in STAGES)


def rows_of(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def untimed(row: dict) -> dict:
    return {**row, "seconds": 0, "env_steps_per_s": 0}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """train.damd in this process: two stages of one chunk each, both stages evaluated,
    then the final evaluation."""
    rd = tmp_path_factory.mktemp("damd")
    assert damd.main(["--run-dir", str(rd), "--name", "d", *RUN]) == 0
    return rd / "d"


@pytest.mark.parametrize("flags, message", [
    (["--mdqn-gamma", "2"], "--mdqn-gamma must be in [0, 1], got 2"),
    (["--dqn-lr", "0"], "--dqn-lr must be > 0, got 0"),
    (["--mdqn-buffer-capacity", "4", "--mdqn-num-envs", "8"],
     "--mdqn-buffer-capacity (4) must be >= --mdqn-num-envs (8)"),
    (["--slack", "0"], "--slack must be > 0, got 0"),
    (["--rounds", "0"], "--rounds must be >= 1, got 0"),
    (["--stage-eval-episodes", "-1"], "--stage-eval-episodes must be >= 0, got -1"),
    (["--dqn-scheduler", "lifo"], "--dqn-scheduler must be one of fcfs, sjf, sdf, cp, llf, got 'lifo'")])
def test_damd_bad_flags_exit_2_naming_the_value(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        damd.main(["--run-dir", str(tmp_path), "--name", "x", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_dqn_scheduler_is_round_1_rule_and_no_partner_is_a_file(tmp_path):
    """--dqn-scheduler is round 1's rule (the later dispatcher stages schedule with the
    pipeline's own schedulers, traced); the config stores no partner or starting point
    as a file and refuses one, naming the field."""
    p = damd.build_parser()
    for flags, want in (([], "fcfs"), (["--dqn-scheduler", "sjf"], "sjf")):
        cfg = damd.config_from_args(p, p.parse_args(["--rounds", "2", *flags]))
        assert cfg.dispatcher.scheduler == want
        assert (cfg.dispatcher.init_dispatcher, cfg.schedulers.init_schedulers,
                cfg.schedulers.dispatcher) == ("", "", "")
        assert damd.DAMDConfig.from_json(cfg.to_json()) == cfg   # what --resume reads
    d, s = cfg.dispatcher, cfg.schedulers
    for field, dispatcher, schedulers in (
            ("dispatcher.scheduler", dataclasses.replace(d, scheduler=str(tmp_path)), s),
            ("dispatcher.init_dispatcher", dataclasses.replace(d, init_dispatcher="r"), s),
            ("schedulers.init_schedulers", d, dataclasses.replace(s, init_schedulers="r")),
            ("schedulers.dispatcher", d, dataclasses.replace(s, dispatcher="least-load"))):
        with pytest.raises(ValueError, match=f"^{field} must be"):
            damd.DAMDConfig(dispatcher=dispatcher, schedulers=schedulers)


def test_tiny_damd_end_to_end_through_compare_and_as_a_sweep_member(straight, tmp_path,
                                                                     assert_same_checkpoint):
    """Two stages, one run directory: its metrics rows name the stage, each stage's
    evaluation and the final one written, the policy files and damd.json; eval.compare
    --damd-run reproduces the DAMD row, --dispatcher-checkpoint with --scheduler (the same
    run) loads its networks at the run's setting. A `train.sweep --trainer damd` of one
    member is the same program and ends bitwise where train.damd does; member 0 of a sweep
    over two seeds ends with the same rows and, to float rounding, the same parameters."""
    from damdjax.eval import compare
    rd, root = str(tmp_path), straight
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        ["config.json", "checkpoint.msgpack", "metrics.jsonl", DISPATCHER_FILE,
         SCHEDULERS_FILE, DAMD_FILE, "eval.json", *STAGE_EVALS])
    assert damd.DAMDConfig.from_json(json.load(open(root / "config.json"))).seed == 2
    rows = rows_of(root / "metrics.jsonl")
    assert [(r["stage"], r["chunk"]) for r in rows] == [("r1-dispatcher", 1),
                                                        ("r1-schedulers", 2)]
    assert "member" not in rows[0] and "invalid_dispatch" in rows[0]
    assert "invalid_picks" in rows[1]
    assert all(r["updates"] > 0 and r["episodes"] > 0 for r in rows)   # both stages learned
    info = json.load(open(root / DAMD_FILE))
    assert (info["dispatcher"], info["schedulers"]) == (DISPATCHER_FILE, SCHEDULERS_FILE)
    assert [st["stage"] for st in info["stages"]] == list(STAGES)
    assert info["train_seconds"] == pytest.approx(sum(r["seconds"] for r in rows))
    stage_evals = [json.load(open(root / f)) for f in STAGE_EVALS]
    assert stage_evals[0]["scheduler"] == "fcfs" and stage_evals[0]["episodes"] == 4
    assert set(stage_evals[0]["methods"]) == {"dqn", "nearest", "random", "least_load", "eft",
                                              "bound"}
    assert stage_evals[1]["dispatcher"] == "r1-dispatcher"
    assert set(stage_evals[1]["methods"]) == {"mdqn", "fcfs", "sjf", "sdf", "cp", "llf", "bound"}
    ev = json.load(open(root / "eval.json"))
    best = ev["best_heuristic"]
    heuristics = {n: m["avg_response_time"]["mean"] for n, m in ev["heuristics"].items()}
    assert len(heuristics) == 20 and best == min(heuristics, key=heuristics.get)
    shown = {"NF", "RS", "LS", "EC", best}
    assert set(ev["methods"]) == {"DAMD", "bound"} | shown
    # (one heuristic: the 20 pairs' evaluation is tests/test_compare.py's)
    res = compare.main(["--damd-run", str(root), "--episodes", "6", "--seed", "2",
                        "--methods", "NF"])
    for name in ("DAMD", "bound", "NF"):
        for k in ("avg_response_time", "deadline_miss_rate"):
            assert res["methods"][name][k] == pytest.approx(ev["methods"][name][k]["mean"],
                                                            rel=1e-6), (name, k)
    args = compare.parse_args(["--dispatcher-checkpoint", str(root), "--scheduler", str(root)])
    assert (args.num_tasks, args.num_servers) == (12, 3)   # the run's setting (config.json)
    assert "DQN" in args.learned
    # A second pipeline into the same directory refuses, --resume takes the stored config
    # (another flag is refused), a bad path is a one-line error.
    for again in ([], ["--resume", "--rounds", "2"], ["--resume", "--name", "none"]):
        with pytest.raises(SystemExit) as exc:
            damd.main(["--run-dir", str(root.parent), "--name", "d", *again])
        assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        compare.main(["--damd-run", str(tmp_path / "nothing")])
    assert exc.value.code == 2

    # A sweep of one member: train.damd's program (compiled already: nothing new), bitwise.
    assert sweep.main(["--trainer", "damd", "--run-dir", rd, "--name", "one",
                       "--eval-episodes", "0", "--seed", "2", *TINY]) == 0
    assert_same_checkpoint(tmp_path / "one" / "checkpoint.msgpack", root / "checkpoint.msgpack")
    for got, want in zip(rows_of(tmp_path / "one" / "metrics.jsonl"), rows, strict=True):
        assert (got.pop("member"), got.pop("seed")) == (0, 2)
        assert got.pop("hyper") == damd.DAMDConfig.from_json(
            json.load(open(root / "config.json"))).hyper().values()
        assert untimed(got) == untimed(want)
    for name in (DISPATCHER_FILE, SCHEDULERS_FILE):
        assert (tmp_path / "one" / "member-0" / name).read_bytes() == (root / name).read_bytes()

    # Member 0 of a sweep over 2 seeds (2, 3): another program (two members: the vmapped
    # dispatcher stage's gradient sums are compiled for [2, ...] arrays and round in the
    # last bit differently from the one-member program's), so its parameters agree to
    # float rounding and its rows' metrics to 1e-5.
    assert sweep.main(["--trainer", "damd", "--run-dir", rd, "--name", "s", "--eval-episodes",
                       "0", "--seeds", "2", "--seed", "2", *TINY]) == 0
    two = rows_of(tmp_path / "s" / "metrics.jsonl")
    assert [(r["stage"], r["chunk"], r["member"], r["seed"]) for r in two] == [
        ("r1-dispatcher", 1, 0, 2), ("r1-dispatcher", 1, 1, 3),
        ("r1-schedulers", 2, 0, 2), ("r1-schedulers", 2, 1, 3)]
    for got, want in zip([r for r in two if r["member"] == 0], rows, strict=True):
        for k in ("chunk", "env_steps", "updates", "episodes"):
            assert got[k] == want[k], k
        for k in ("avg_response_time", "deadline_miss_rate", "loss"):
            assert got[k] == pytest.approx(want[k], rel=1e-5), k
    state = read_state_dict(tmp_path / "s" / "checkpoint.msgpack")
    single = read_state_dict(root / "checkpoint.msgpack")
    member = tmp_path / "s" / "member-0"
    for part, load in (("dispatcher", load_dispatcher), ("schedulers", load_schedulers)):
        got = jax.tree_util.tree_leaves(state[part]["params"])
        for a, b in zip(got, jax.tree_util.tree_leaves(single[part]["params"]), strict=True):
            np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b)[0], rtol=1e-5, atol=1e-6)
        for a, b in zip(got, jax.tree_util.tree_leaves(load(member)[1]), strict=True):
            np.testing.assert_array_equal(np.asarray(a)[0], b)
    _, setting = load_damd(member)
    assert setting == info["setting"]


def _damd_process(args, kill):
    """train.damd in a subprocess, SIGKILLed at `kill` (chunks.KILL_ENV)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "JAX_PLATFORMS": "cpu", chunks.KILL_ENV: kill}
    return subprocess.run([sys.executable, "-m", "train.damd", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_kill_9_then_ctrl_c_then_resume_equals_the_straight_run(
        straight, tmp_path, assert_same_checkpoint, monkeypatch, capsys):
    """kill -9 right after the first stage's last checkpoint (before its evaluation and
    metrics row); --resume writes both from the checkpoint, and Ctrl-C during the next
    (last) chunk records it and exits 130; a last --resume, nothing left to train, writes
    the end: the straight run's files."""
    rd, k = str(tmp_path), tmp_path / "k"
    p = _damd_process(["--run-dir", rd, "--name", "k", *RUN], kill="after-checkpoint:1")
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    assert int(read_state_dict(k / "checkpoint.msgpack")["chunk"][0]) == 1
    assert not (k / "metrics.jsonl").exists() and not (k / STAGE_EVALS[0]).exists()

    program = members.member_program

    def ctrl_c_in_the_second_chunk(*args):
        init, stages, shard = program(*args)

        def chunk_with_ctrl_c(rs, hyper):
            signal.raise_signal(signal.SIGINT)  # in this thread: handled at once
            return stages[1].chunk(rs, hyper)
        return init, (stages[0], stages[1]._replace(chunk=chunk_with_ctrl_c)), shard

    monkeypatch.setattr(members, "member_program", ctrl_c_in_the_second_chunk)
    capsys.readouterr()
    assert damd.main(["--run-dir", rd, "--name", "k", "--resume"]) == 130
    monkeypatch.undo()
    assert "interrupted" in capsys.readouterr().out
    assert int(read_state_dict(k / "checkpoint.msgpack")["chunk"][0]) == 2
    assert [r["chunk"] for r in rows_of(k / "metrics.jsonl")] == [1, 2]
    assert all((k / f).exists() for f in STAGE_EVALS) and not (k / DAMD_FILE).exists()

    assert damd.main(["--run-dir", rd, "--name", "k", "--resume"]) == 0
    assert_same_checkpoint(k / "checkpoint.msgpack", straight / "checkpoint.msgpack")
    assert [untimed(r) for r in rows_of(k / "metrics.jsonl")] == [
        untimed(r) for r in rows_of(straight / "metrics.jsonl")]
    for name in (*STAGE_EVALS, DISPATCHER_FILE, SCHEDULERS_FILE):
        assert (k / name).read_bytes() == (straight / name).read_bytes(), name
    untimed_eval = lambda path: {**json.load(open(path)), "seconds": 0}  # noqa: E731
    assert untimed_eval(k / "eval.json") == untimed_eval(straight / "eval.json")


def _earlier_layout(straight, folder):
    """A finished train.damd run directory of the earlier layout, by hand: a folder per
    stage (its config, metrics and policy file) and damd.json naming the last two, with the
    parameters of the straight run."""
    cfg = damd.DAMDConfig.from_json(json.load(open(straight / "config.json")))
    folder.mkdir()
    (folder / ".damdjax-run").write_text("damdjax run directory\n")
    shutil.copy(straight / "config.json", folder / "config.json")
    stage_configs = {"r1-dispatcher": cfg.dispatcher.to_json(),
                     "r1-schedulers": {**cfg.schedulers.to_json(),
                                       "dispatcher": str(folder / "r1-dispatcher")}}
    for (stage, stage_cfg), policy in zip(stage_configs.items(),
                                          (DISPATCHER_FILE, SCHEDULERS_FILE), strict=True):
        (folder / stage).mkdir()
        (folder / stage / "config.json").write_text(json.dumps(stage_cfg))
        shutil.copy(straight / policy, folder / stage / policy)
        row = next(r for r in rows_of(straight / "metrics.jsonl") if r["stage"] == stage)
        (folder / stage / "metrics.jsonl").write_text(json.dumps({**row, "chunk": 1}) + "\n")
    (folder / DAMD_FILE).write_text(json.dumps({
        "rounds": 1, "dispatcher": "r1-dispatcher", "schedulers": "r1-schedulers",
        "setting": cfg.setting(), "stages": [{"stage": s, "seconds": 1.0} for s in STAGES],
        "train_seconds": 2.0}))


def _tree(folder):
    """Every file under `folder` (its parent's too: a lock file) with its bytes and time."""
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in folder.parent.rglob("*") if p.is_file()}


def test_an_earlier_layout_run_loads_in_compare_and_is_not_resumed(straight, tmp_path,
                                                                     capsys):
    """A finished run directory of the earlier layout (stage folders) loads in eval.compare
    --damd-run (its stage folders' networks, at its setting), a stage folder in
    --dispatcher-checkpoint. --resume refuses it, finished or not, in one line saying why,
    and writes nothing."""
    from damdjax.eval import compare
    old = tmp_path / "old"
    _earlier_layout(straight, old)
    args = compare.parse_args(["--damd-run", str(old)])
    assert "DAMD" in args.learned and (args.num_tasks, args.num_servers) == (12, 3)
    for part, load in (("r1-dispatcher", load_dispatcher), ("r1-schedulers", load_schedulers)):
        for a, b in zip(jax.tree_util.tree_leaves(load(str(old / part))[1]),
                        jax.tree_util.tree_leaves(load(str(straight))[1]), strict=True):
            np.testing.assert_array_equal(a, b)
    stage = compare.build_parser().parse_args(["--dispatcher-checkpoint",
                                               str(old / "r1-dispatcher")])
    assert compare.learned_methods(stage)[1]["num_tasks"] == 12

    for unfinished in (False, True):
        if unfinished:   # stopped in its second stage: no damd.json, no schedulers yet
            os.remove(old / DAMD_FILE)
            os.remove(old / "r1-schedulers" / SCHEDULERS_FILE)
        before = _tree(old)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            damd.main(["--run-dir", str(tmp_path), "--name", "old", "--resume"])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "Traceback" not in "\n".join(err)
        assert err[-1].startswith("python -m train.damd: error: --resume: ")
        assert "earlier layout" in err[-1] and "cannot continue" in err[-1]
        assert _tree(old) == before
