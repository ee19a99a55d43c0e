"""train.sweep: members equal single runs, 4 devices equal 1, Ctrl-C and resume are exact,
bad grids."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from damdjax import members
from damdjax.checkpoint import read_state_dict
from damdjax.policies import load_dispatcher, load_schedulers
from damdjax.train import damd, dqn, mdqn, sweep

# test_train_dqn's TINY (its single runs are that file's program: compiled once for the
# suite, through the compilation cache, tests/conftest.py).
TINY = ["--num-envs", "8", "--num-tasks", "12", "--num-servers", "3", "--steps-per-chunk", "10",
        "--buffer-capacity", "512", "--batch-size", "16", "--learning-starts", "16",
        "--eps-decay-steps", "200", "--hidden", "16,16", "--target-every", "5", "--seed", "3",
        "--slack", "1.5"]
DAMD_TINY = ["--num-tasks", "12", "--num-servers", "3", "--dqn-num-envs", "8", "--mdqn-num-envs",
             "8", "--dqn-num-chunks", "1", "--mdqn-num-chunks", "1", "--dqn-hidden", "16",
             "--mdqn-hidden", "16"]
GRID = ["--seeds", "2", "--grid", "lr=5e-4,2e-3"]
# member i: (lr, seed): grid points outer, seeds inner
MEMBERS = [(5e-4, 3), (5e-4, 4), (2e-3, 3), (2e-3, 4)]
EXACT = ("chunk", "env_steps", "updates", "episodes", "invalid_dispatch", "buffer_ready")
CLOSE = ("loss", "epsilon", "avg_response_time", "deadline_miss_rate")


def rows_of(path):
    return [json.loads(line) for line in open(path)]


def assert_rows_match(got: dict, want: dict, exact_floats: bool = False, exact=EXACT):
    for k in exact:
        assert got[k] == want[k], k
    for k in CLOSE:
        if want[k] is None or exact_floats:
            assert got[k] == want[k], k
        else:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k


def params_of(state: dict):
    return jax.tree_util.tree_leaves(state["params"])


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    """The same sweep on 4 fake CPU devices (one member each), then 3 members padded to 4
    (the same compiled program), in a subprocess started at once: it compiles while this
    process does. Yields `(process, run dir)`."""
    rd = str(tmp_path_factory.mktemp("four"))
    argv_lists = [
        ["--run-dir", rd, "--name", "s4", "--num-chunks", "2", "--eval-episodes", "4",
         *GRID, *TINY],
        ["--run-dir", rd, "--name", "p4", "--num-chunks", "1", "--eval-episodes", "0",
         "--seeds", "3", *TINY]]
    code = ("import sys, jax; from train import sweep; assert len(jax.devices()) == 4; "
            f"sys.exit(max(sweep.main(a) for a in {argv_lists!r}))")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
           + " --xla_force_host_platform_device_count=4"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    yield proc, Path(rd)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def straight(tmp_path_factory, four_devices):
    """The 2x2 sweep (2 learning rates x 2 seeds), 2 chunks, a 4-episode evaluation."""
    rd = tmp_path_factory.mktemp("sweeps")
    assert sweep.main(["--run-dir", str(rd), "--name", "s", "--num-chunks", "2",
                       "--eval-episodes", "4", *GRID, *TINY]) == 0
    return rd / "s"


def test_members_equal_single_runs_and_load_as_dispatchers(straight, tmp_path):
    rows = rows_of(straight / "metrics.jsonl")
    assert [(r["chunk"], r["member"]) for r in rows] == [(c, i) for c in (1, 2) for i in range(4)]
    state = read_state_dict(straight / "checkpoint.msgpack")
    first = params_of(state)[0]  # the learning rate matters: same seed, other lr, other params
    assert np.max(np.abs(np.asarray(first)[0] - np.asarray(first)[2])) > 1e-4
    for i, (lr, seed) in enumerate(MEMBERS):
        assert dqn.main(["--run-dir", str(tmp_path), "--name", f"r{i}", "--num-chunks", "2",
                         "--eval-episodes", "0", *TINY, "--lr", str(lr), "--seed", str(seed)]) == 0
        mine = [r for r in rows if r["member"] == i]
        assert all(r["seed"] == seed and r["hyper"]["lr"] == lr for r in mine)
        for got, want in zip(mine, rows_of(tmp_path / f"r{i}" / "metrics.jsonl"), strict=True):
            assert_rows_match(got, want)
        single = read_state_dict(tmp_path / f"r{i}" / dqn.CHECKPOINT)
        for a, b in zip(params_of(state), params_of(single), strict=True):
            np.testing.assert_allclose(np.asarray(a)[i], b, rtol=1e-5, atol=1e-6)
        # The member's policy file holds its final parameters; its folder is accepted as a
        # trained dispatcher (eval.compare reads its setting, train.mdqn its policy).
        member = straight / f"member-{i}"
        for a, b in zip(params_of(state), jax.tree_util.tree_leaves(load_dispatcher(member)[1])):
            np.testing.assert_array_equal(np.asarray(a)[i], b)
        cfg = json.load(open(member / "config.json"))
        assert (cfg["seed"], cfg["lr"], cfg["env"]["num_tasks"], cfg["env"]["slack"]) == (
            seed, lr, 12, 1.5)
    from damdjax.eval import compare
    ns = compare.build_parser().parse_args(["--dispatcher-checkpoint",
                                            str(straight / "member-3")])
    assert compare.learned_methods(ns)[1]["num_tasks"] == 12
    p = mdqn.build_parser()
    cfg = mdqn.config_from_args(p, p.parse_args(["--dispatcher", str(straight / "member-3"),
                                                 "--num-tasks", "12", "--num-servers", "3"]))
    assert cfg.dispatcher.endswith("member-3")

    ev = json.load(open(straight / "eval.json"))
    assert (ev["episodes"], ev["seed"], ev["seeds"]) == (4, 3, 2)
    ranking = ev["ranking"]
    assert sorted(r["point"]["lr"] for r in ranking) == [5e-4, 2e-3]
    means = [r["avg_response_time"]["mean"] for r in ranking]
    assert means == sorted(means) and [r["rank"] for r in ranking] == [1, 2]
    for r in ranking:  # each point's mean is the mean over its seeds' members
        per = [ev["members"][i]["avg_response_time"]["mean"] for i in r["members"]]
        assert r["avg_response_time"]["mean"] == pytest.approx(np.mean(per))
        assert r["avg_response_time"]["ci95"] is not None


def test_sharded_over_4_devices_equals_1_device(straight, four_devices):
    """4 fake devices equal 1 (metrics, parameters, evaluation); padding members makes no
    rows and is not checkpointed."""
    proc, tmp_path = four_devices
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "4 members on 4 device(s)" in out and "3 members (+1 padding) on 4 device(s)" in out
    for got, want in zip(rows_of(tmp_path / "s4" / "metrics.jsonl"),
                         rows_of(straight / "metrics.jsonl"), strict=True):
        assert (got["member"], got["seed"], got["hyper"]) == (
            want["member"], want["seed"], want["hyper"])
        assert_rows_match(got, want)
    a = read_state_dict(tmp_path / "s4" / "checkpoint.msgpack")
    b = read_state_dict(straight / "checkpoint.msgpack")
    for x, y in zip(params_of(a), params_of(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    ev_a, ev_b = (json.load(open(d / "eval.json")) for d in (tmp_path / "s4", straight))
    for ra, rb in zip(ev_a["members"], ev_b["members"], strict=True):
        for k in ("avg_response_time", "deadline_miss_rate"):
            assert ra[k]["mean"] == pytest.approx(rb[k]["mean"], rel=1e-5)
    padded = rows_of(tmp_path / "p4" / "metrics.jsonl")
    assert [r["member"] for r in padded] == [0, 1, 2]     # no row for the padding
    assert [r["seed"] for r in padded] == [3, 4, 5]
    for got, want in zip(padded[:2], rows_of(straight / "metrics.jsonl")[:2]):  # lr 5e-4
        assert_rows_match(got, want)
    assert read_state_dict(tmp_path / "p4" / "checkpoint.msgpack")["chunk"].shape == (3,)


def test_ctrl_c_then_resume_equals_straight_run(straight, tmp_path, assert_same_checkpoint,
                                                monkeypatch, capsys):
    """Ctrl-C during the first chunk: that chunk is recorded, exit 130; --resume then
    ends bitwise where the straight run ends."""
    rd = str(tmp_path)
    program = members.member_program

    def ctrl_c_in_the_first_chunk(*args):
        init, stages, shard = program(*args)
        (stage,) = stages

        def chunk_with_ctrl_c(rs, hyper):
            signal.raise_signal(signal.SIGINT)  # in this thread: handled at once
            return stage.chunk(rs, hyper)
        return init, (stage._replace(chunk=chunk_with_ctrl_c),), shard

    monkeypatch.setattr(members, "member_program", ctrl_c_in_the_first_chunk)
    assert sweep.main(["--run-dir", rd, "--name", "r", "--num-chunks", "2",
                       "--eval-episodes", "0", *GRID, *TINY]) == 130
    monkeypatch.undo()
    assert "interrupted" in capsys.readouterr().out
    assert int(read_state_dict(tmp_path / "r" / "checkpoint.msgpack")["chunk"][0]) == 1
    assert sweep.main(["--run-dir", rd, "--name", "r", "--resume", "--num-chunks", "2",
                       "--eval-episodes", "0"]) == 0
    assert_same_checkpoint(tmp_path / "r" / "checkpoint.msgpack", straight / "checkpoint.msgpack")
    for got, want in zip(rows_of(tmp_path / "r" / "metrics.jsonl"),
                         rows_of(straight / "metrics.jsonl"), strict=True):
        assert got["member"] == want["member"]
        assert_rows_match(got, want, exact_floats=True)
    with pytest.raises(SystemExit) as exc:  # --resume takes the stored grid, refuses another
        sweep.main(["--run-dir", rd, "--name", "r", "--resume", "--grid", "lr=1e-3"])
    assert exc.value.code == 2


@pytest.mark.parametrize("flags, named", [
    (["--grid", "nope=1,2"], "unknown field 'nope'"),
    (["--grid", "lr="], "--grid lr: empty"),
    (["--grid", "lr=1e-3,"], "--grid lr: empty"),
    (["--grid", "lr=fast"], "'fast' is not a number"),
    (["--grid", "lr"], "field=v1,v2"),
    (["--grid", "lr=1e-3,1e-3"], "listed twice"),
    (["--grid", "lr=1e-3", "lr=1e-4"], "lr is given twice"),
    (["--grid", "gamma=0.9,1.5"], "--grid gamma=1.5: gamma must be in [0, 1]"),
    (["--grid", "lr=-1"], "--grid lr=-1.0: lr must be > 0"),
    (["--grid", "density=0"], "--grid density=0.0: density must be > 0"),
    (["--grid", "num_tasks=6,13"], "--grid num_tasks=13: num_tasks must be an integer in "
                                   "[1, n_max=12]"),
    (["--grid", "num_servers=4"], "m_max=3"),
    (["--grid", "target_every=2.5"], "'2.5' is not an integer"),
    (["--grid", "polyak=0"], "polyak must be in (0, 1]"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--trainer", "ppo"], "--trainer must be one of dqn, mdqn, damd, got 'ppo'"),
    (["--trainer", "damd", "--grid", "lr=1e-3"], "unknown field 'lr' (fields: num_tasks, "),
    (["--trainer", "damd", "--grid", "mdqn_gamma=0.5,2"],
     "--grid mdqn_gamma=2.0: mdqn_gamma must be in [0, 1]"),
    (["--trainer", "damd", "--grid", "num_servers=4"], "m_max=3"),
    (["--trainer", "mdqn", "--dispatcher", "fastest"], "--dispatcher: dispatcher 'fastest'"),
])
def test_bad_grid_specs_one_line_before_compiling(flags, named, tmp_path, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("compiled despite a bad flag")

    monkeypatch.setattr(dqn, "make_train", boom)
    monkeypatch.setattr(members, "member_program", boom)
    monkeypatch.setattr(damd, "make_train", boom)
    tiny = DAMD_TINY if "damd" in flags else TINY
    with pytest.raises(SystemExit) as exc:
        sweep.main(["--run-dir", str(tmp_path), "--name", "x", *tiny, *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m train.sweep: error:")
    assert named in err[-1]
    assert not (tmp_path / "x").exists()


def test_train_is_init_then_num_chunks_chunks_and_vmaps_over_members():
    """`make_train(cfg).train(key, hyper)`, vmapped over 3 members: shapes only (traced,
    not compiled): the final runner [3, ...] and metrics [3, num_chunks]."""
    from damdjax.hyper import Hyper, stack
    cfg = dqn.DQNConfig.from_values(num_envs=4, num_tasks=6, num_servers=2, steps_per_chunk=2,
                        num_chunks=5, buffer_capacity=64, batch_size=8, hidden=(8,))
    fns = dqn.make_train(cfg)
    hyper = jax.tree.map(np.asarray, stack([Hyper.from_config(cfg).replace(lr=lr)
                                            for lr in (1e-4, 1e-3, 1e-2)]))
    keys = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in range(3)])
    rs, metrics = jax.eval_shape(jax.vmap(fns.train), keys, hyper)
    assert rs.chunk.shape == (3,) and rs.obs.dispatch_needed.shape == (3, 4)
    assert {k: v.shape for k, v in metrics.items()} == {
        k: (3, 5) for k in ("episodes", "avg_response_time", "deadline_miss_rate", "loss",
                            "invalid_dispatch", "epsilon", "buffer_ready")}


def test_damd_train_is_every_stage_and_vmaps_over_members():
    """train.damd's `make_train(cfg).train(key, hyper)` for 2 rounds, vmapped over 2
    members of a PipelineHyper grid: shapes only (traced, not compiled): one metrics dict
    per stage with that stage's chunks, and both stage kinds' runners [2, ...]."""
    from damdjax.hyper import PipelineHyper, stack
    p = sweep.build_parser("damd")
    args = p.parse_args(["--trainer", "damd", *DAMD_TINY, "--rounds", "2", "--dqn-num-chunks",
                         "3", "--mdqn-num-chunks", "2"])
    cfg = sweep.config_from_args(p, args).config
    assert [(n, c) for n, c, _ in cfg.stage_plan()] == [
        ("r1-dispatcher", 3), ("r1-schedulers", 2), ("r2-dispatcher", 3), ("r2-schedulers", 2)]
    fns = damd.make_train(cfg)
    assert [st.begin is None for st in fns.stages] == [True, True, False, False]
    assert fns.stages[0].chunk is not fns.stages[2].chunk            # FCFS vs the schedulers
    assert fns.stages[1].chunk is fns.stages[3].chunk                # one program, one compile
    base = cfg.hyper()
    assert isinstance(base, PipelineHyper) and base.schedulers.gamma == 0.5
    hypers = [base.with_values(dqn_lr=lr, density=d) for lr, d in ((1e-4, 1.0), (1e-3, 2.0))]
    assert hypers[1].schedulers.env.density == 2.0 and hypers[1].schedulers.lr == base.schedulers.lr
    keys = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in range(2)])
    rs, metrics = jax.eval_shape(jax.vmap(fns.train), keys, jax.tree.map(np.asarray,
                                                                          stack(hypers)))
    assert rs.chunk.shape == (2,) and rs.dispatcher.obs.dispatch_needed.shape == (2, 8)
    assert rs.schedulers.prev_idx.shape == (2, 8, 3)
    assert [m["loss"].shape for m in metrics] == [(2, 3), (2, 2), (2, 3), (2, 2)]
    assert "invalid_dispatch" in metrics[0] and "invalid_picks" in metrics[1]


# test_train_mdqn's TINY (its single run is that file's program), at another seed.
MDQN_TINY = ["--num-envs", "8", "--num-tasks", "12", "--num-servers", "3", "--steps-per-chunk",
             "10", "--buffer-capacity", "512", "--batch-size", "16", "--learning-starts", "16",
             "--eps-decay-steps", "200", "--hidden", "16,16", "--target-every", "5",
             "--dispatcher", "eft", "--seed", "5"]
MDQN_EXACT = ("chunk", "env_steps", "updates", "episodes", "invalid_picks", "pool_ready_min")


def test_mdqn_members_equal_single_runs_and_load_as_schedulers(tmp_path):
    """A 2-point lr grid of MDQN schedulers (per-agent networks and Adam states): member 1
    equals train.mdqn alone at its lr (rows; parameters to float rounding; one single run
    only, as each is its own compile), every member's folder holds its schedulers
    (train.dqn --scheduler takes it), and both are evaluated greedy under the run's
    dispatcher."""
    rd = str(tmp_path)
    assert sweep.main(["--trainer", "mdqn", "--run-dir", rd, "--name", "m", "--num-chunks", "2",
                       "--eval-episodes", "2", "--grid", "lr=5e-4,3e-3", *MDQN_TINY]) == 0
    root = tmp_path / "m"
    rows = rows_of(root / "metrics.jsonl")
    assert [(r["chunk"], r["member"]) for r in rows] == [(c, i) for c in (1, 2) for i in range(2)]
    assert rows[-1]["updates"] > 0
    state = read_state_dict(root / "checkpoint.msgpack")
    first = np.asarray(params_of(state)[0])     # [member, agent, ...]: the lr matters
    assert first.shape[:2] == (2, 3) and np.max(np.abs(first[0] - first[1])) > 1e-4
    assert mdqn.main(["--run-dir", rd, "--name", "r1", "--num-chunks", "2", "--eval-episodes",
                      "0", *MDQN_TINY, "--lr", "3e-3"]) == 0
    mine = [r for r in rows if r["member"] == 1]
    for got, want in zip(mine, rows_of(tmp_path / "r1" / "metrics.jsonl"), strict=True):
        assert_rows_match(got, want, exact=MDQN_EXACT)
    single = read_state_dict(tmp_path / "r1" / dqn.CHECKPOINT)
    for a, b in zip(params_of(state), params_of(single), strict=True):
        np.testing.assert_allclose(np.asarray(a)[1], b, rtol=1e-5, atol=1e-6)
    for i, lr in enumerate((5e-4, 3e-3)):
        assert all(r["seed"] == 5 and r["hyper"]["lr"] == lr for r in rows if r["member"] == i)
        member = root / f"member-{i}"
        _, params, meta = load_schedulers(member)
        assert (meta["num_agents"], meta["share"]) == (3, False)
        for a, b in zip(params_of(state), jax.tree_util.tree_leaves(params)):
            np.testing.assert_array_equal(np.asarray(a)[i], b)
        cfg = json.load(open(member / "config.json"))
        assert (cfg["lr"], cfg["dispatcher"], cfg["env"]["num_servers"]) == (lr, "eft", 3)
    p = dqn.build_parser()
    cfg = dqn.config_from_args(p, p.parse_args(["--scheduler", str(root / "member-1"),
                                                "--num-tasks", "12", "--num-servers", "3"]))
    assert cfg.scheduler.endswith("member-1")
    ev = json.load(open(root / "eval.json"))
    assert (ev["trainer"], ev["episodes"], len(ev["members"])) == ("mdqn", 2, 2)
    assert [r["rank"] for r in ev["ranking"]] == [1, 2]
