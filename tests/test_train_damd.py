"""train.damd: flags, and the pipeline end to end (its evaluation reproduced by eval.compare).

In a file of its own so that the suite's two workers (pytest-xdist, a file per worker)
share the trainer tests evenly."""
from __future__ import annotations

import json

import pytest

from damdjax.policies import DAMD_FILE
from train import damd


@pytest.mark.parametrize("flags, message", [
    (["--mdqn-gamma", "2"], "--mdqn-gamma must be in [0, 1], got 2.0"),
    (["--slack", "0"], "--slack must be > 0, got 0.0"),
    (["--rounds", "0"], "--rounds must be >= 1, got 0")])
def test_damd_bad_flags_exit_2_naming_the_value(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        damd.main(["--run-dir", str(tmp_path), "--name", "x", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_tiny_damd_end_to_end_and_through_compare(tmp_path):
    """Two stages, saved, evaluated; eval.compare --damd-run reproduces the DAMD row."""
    from eval import compare
    rd = str(tmp_path)
    assert damd.main(["--run-dir", rd, "--name", "d", "--num-tasks", "12", "--num-servers", "3",
                      "--dqn-num-envs", "8", "--dqn-num-chunks", "1", "--mdqn-num-envs", "8",
                      "--mdqn-num-chunks", "1", "--dqn-hidden", "16", "--mdqn-hidden", "16",
                      "--eval-episodes", "6", "--seed", "2"]) == 0
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
    res = compare.main(["--damd-run", str(root), "--episodes", "6", "--seed", "2"])
    assert res["best_heuristic"] == best
    for name in ("DAMD", "bound", *shown):
        for k in ("avg_response_time", "deadline_miss_rate"):
            assert res["methods"][name][k] == pytest.approx(ev["methods"][name][k]["mean"],
                                                            rel=1e-6), (name, k)
    # A second pipeline into the same directory refuses; a bad path is a one-line error.
    with pytest.raises(SystemExit) as exc:
        damd.main(["--run-dir", rd, "--name", "d"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        compare.main(["--damd-run", str(tmp_path / "nothing")])
    assert exc.value.code == 2
