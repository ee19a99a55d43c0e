"""train.damd: flags, and the pipeline end to end (its evaluation reproduced by eval.compare).

In a file of its own so that the suite's two workers (pytest-xdist, a file per worker)
share the trainer tests evenly."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from damdjax.checkpoint import read_state_dict
from damdjax.policies import DAMD_FILE, load_damd, load_dispatcher, load_schedulers
from damdjax.train import damd, sweep

# The pipeline's flags here and in tests/test_figures.py's job (TINY_TRAIN), so that this
# file's 2-member sweep and the figure's (2 points x 1 seed) are one program: whichever
# runs second reads it from the suite's compilation cache (tests/conftest.py).
TINY = ["--num-tasks", "12", "--num-servers", "3"] + [
    flag for k in ("dqn", "mdqn") for flag in (
        f"--{k}-num-envs", "8", f"--{k}-num-chunks", "1", f"--{k}-hidden", "16",
        f"--{k}-steps-per-chunk", "40", f"--{k}-learning-starts", "80",
        f"--{k}-buffer-capacity", "256", f"--{k}-batch-size", "16")]


@pytest.mark.parametrize("flags, message", [
    (["--mdqn-gamma", "2"], "--mdqn-gamma must be in [0, 1], got 2"),
    (["--dqn-lr", "0"], "--dqn-lr must be > 0, got 0"),
    (["--mdqn-buffer-capacity", "4", "--mdqn-num-envs", "8"],
     "--mdqn-buffer-capacity (4) must be >= --mdqn-num-envs (8)"),
    (["--slack", "0"], "--slack must be > 0, got 0"),
    (["--rounds", "0"], "--rounds must be >= 1, got 0"),
    (["--dqn-scheduler", "lifo"], "--dqn-scheduler must be one of fcfs, sjf, sdf, cp, llf, got 'lifo'")])
def test_damd_bad_flags_exit_2_naming_the_value(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        damd.main(["--run-dir", str(tmp_path), "--name", "x", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_dqn_scheduler_is_round_1_dispatchers_rule_only(tmp_path):
    p = damd.build_parser()
    for flags, want in (([], "fcfs"), (["--dqn-scheduler", "sjf"], "sjf")):
        cfg = damd.config_from_args(p, p.parse_args(["--rounds", "2", *flags]))
        stages = damd.stage_configs(cfg, str(tmp_path))
        assert stages["r1-dispatcher"].scheduler == want
        assert stages["r2-dispatcher"].scheduler == f"{tmp_path}/r1-schedulers"
        assert damd.DAMDConfig.from_json(cfg.to_json()) == cfg   # what --resume reads


def test_tiny_damd_end_to_end_through_compare_and_as_a_sweep_member(tmp_path):
    """Two stages, saved, evaluated; eval.compare --damd-run reproduces the DAMD row; the
    same pipeline as member 0 of a `train.sweep --trainer damd` over two seeds (both
    stages in one program, the dispatcher's parameters traced into the schedulers' stage
    rather than read from its file) ends with the same parameters, and its member folder
    loads as a DAMD run."""
    from damdjax.eval import compare
    rd = str(tmp_path)
    tiny = [*TINY, "--seed", "2"]
    assert damd.main(["--run-dir", rd, "--name", "d", "--eval-episodes", "6", *tiny]) == 0
    root = tmp_path / "d"
    info = json.load(open(root / DAMD_FILE))
    assert (root / info["dispatcher"] / "dispatcher.msgpack").exists()
    assert (root / info["schedulers"] / "schedulers.msgpack").exists()
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
    # A second pipeline into the same directory refuses, --resume takes the stored config
    # (another flag is refused), a bad path is a one-line error.
    for again in ([], ["--resume", "--rounds", "2"], ["--resume", "--name", "none"]):
        with pytest.raises(SystemExit) as exc:
            damd.main(["--run-dir", rd, "--name", "d", *again])
        assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        compare.main(["--damd-run", str(tmp_path / "nothing")])
    assert exc.value.code == 2
    # The same pipeline as member 0 of a sweep over 2 seeds (2, 3).
    assert sweep.main(["--trainer", "damd", "--run-dir", rd, "--name", "s", "--eval-episodes",
                       "0", "--seeds", "2", *tiny]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "s" / "metrics.jsonl")]
    assert [(r["stage"], r["chunk"], r["member"], r["seed"]) for r in rows] == [
        ("r1-dispatcher", 1, 0, 2), ("r1-dispatcher", 1, 1, 3),
        ("r1-schedulers", 2, 0, 2), ("r1-schedulers", 2, 1, 3)]
    rows = [r for r in rows if r["member"] == 0]
    assert "invalid_dispatch" in rows[0] and "invalid_picks" in rows[1]
    for row, stage in zip(rows, ("r1-dispatcher", "r1-schedulers"), strict=True):
        (want,) = [json.loads(line) for line in open(root / stage / "metrics.jsonl")]
        assert want["updates"] > 0 and want["episodes"] > 0   # both stages learned
        for k in ("episodes", "avg_response_time", "deadline_miss_rate", "loss"):
            assert row[k] == pytest.approx(want[k], rel=1e-5), (stage, k)
    state = read_state_dict(tmp_path / "s" / "checkpoint.msgpack")
    member = tmp_path / "s" / "member-0"
    for part, load in (("dispatcher", load_dispatcher), ("schedulers", load_schedulers)):
        single = read_state_dict(root / f"r1-{part}" / "checkpoint.msgpack")
        got = jax.tree_util.tree_leaves(state[part]["params"])
        for a, b in zip(got, jax.tree_util.tree_leaves(single["params"]), strict=True):
            np.testing.assert_allclose(np.asarray(a)[0], b, rtol=1e-5, atol=1e-6)
        for a, b in zip(got, jax.tree_util.tree_leaves(load(member)[1]), strict=True):
            np.testing.assert_array_equal(np.asarray(a)[0], b)
    _, setting = load_damd(member)
    assert setting == json.load(open(root / DAMD_FILE))["setting"]
