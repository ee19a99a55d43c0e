"""eval.figures end to end on a tiny job: the files, every method at every point, the CIs,
the bound below every method, --resume skipping, and the output folder's refusals."""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

from damdjax.checkpoint import read_state_dict
from damdjax.heuristics import ALL_PAIRS, pair_names
from damdjax.eval import figures

# tests/test_train_damd.py's TINY pipeline: its 2-member sweep and this job's (2 points x
# 1 seed) are one program, compiled once for the suite (the compilation cache).
TINY_TRAIN = ("--num-tasks 12 --num-servers 3 --dqn-num-envs 8 --mdqn-num-envs 8 "
              "--dqn-num-chunks 1 --mdqn-num-chunks 1 --dqn-hidden 16 --mdqn-hidden 16 "
              "--dqn-steps-per-chunk 40 --mdqn-steps-per-chunk 40 --dqn-learning-starts 80 "
              "--mdqn-learning-starts 80 --dqn-buffer-capacity 256 --mdqn-buffer-capacity 256 "
              "--dqn-batch-size 16 --mdqn-batch-size 16")
TUNE = ["--tune-episodes", "6", "--tune-methods", "ES,EF,EC"]   # one dispatch rule: one compile
TINY = ["--axes", "density", "--points", "density=1,3", "--seeds", "1", "--episodes", "6",
        "--train-args", TINY_TRAIN, *TUNE]
METRICS = ("avg_response_time", "deadline_miss_rate")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("figs") / "out"
    assert figures.main(["--out", str(out), *TINY]) == 0
    return out


def test_files_and_contents(job):
    stem = job / "fig4-density"
    for ext in ("png", "svg", "csv", "json"):
        assert (stem.with_suffix("." + ext)).stat().st_size > 0, ext
    assert (stem.with_suffix(".png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (stem.with_suffix(".svg")).read_text()
    fig = json.loads((stem.with_suffix(".json")).read_text())
    assert fig["figure"] == 4 and fig["field"] == "density"
    assert [p["value"] for p in fig["points"]] == [1.0, 3.0]
    assert fig["methods"] == [*figures.METHODS, figures.TUNED]
    for pt in fig["points"]:
        assert set(pt["methods"]) == {*figures.METHODS, figures.TUNED}
        assert pt["best_pair"] in ALL_PAIRS
        best = min(ALL_PAIRS, key=lambda n: pt["heuristics"][n]["avg_response_time"]["mean"])
        assert pt["methods"]["best pair"] == {
            k: {**pt["heuristics"][best][k], "over": "episodes", "n": 6} for k in METRICS}
        assert pt["dqn_rule"] == pair_names(pt["best_pair"])[1]
        for name, m in pt["methods"].items():
            for k in METRICS:
                assert math.isfinite(m[k]["mean"]), (name, k)
                assert m[k]["ci95"] is not None and m[k]["ci95"] >= 0, (name, k)
                # the contention-free bound lies below every method, metric by metric
                assert pt["methods"]["bound"][k]["mean"] <= m[k]["mean"] + 1e-9, (name, k)
        for name in figures.LEARNED:
            for k in METRICS:
                d = pt["paired_vs_best"][name][k]
                assert d["ci95"] is not None and d["ci95"] >= 0
                # paired: the difference of the means is the mean difference
                want = pt["methods"][name][k]["mean"] - pt["methods"]["best pair"][k]["mean"]
                assert d["mean"] == pytest.approx(want, abs=1e-9)
    # each seed's paired CI over the held-out episodes, by hand from the stored episodes
    learned = read_state_dict(job / "points" / "density-learned.msgpack")
    for p, pt in enumerate(fig["points"]):   # one seed: member p
        heur = read_state_dict(job / "points" / f"density-{pt['value']}.msgpack")
        for row, name in ((0, "DAMD"), (1, "DQN + rule")):
            for k in METRICS:
                d = (np.asarray(learned[k][row][p], np.float64)
                     - np.asarray(heur[pt["best_pair"]][k], np.float64))   # [6 episodes]
                half = 2.570582 * d.std(ddof=1) / math.sqrt(d.size)   # t 0.975, 5 df
                got = pt["paired_vs_best"][name][k]
                assert got["per_seed"] == [pytest.approx(d.mean(), abs=1e-6)]
                assert got["per_seed_ci95"] == [pytest.approx(half, rel=1e-3)]   # table: 2.571
                assert got["per_seed_excludes_zero"] == [bool(abs(d.mean()) > half)]
    # the tuned best: the tuning's argmin among the candidates, on tuning episodes that are
    # not the held-out ones; played on the held-out episodes it is the same pair's numbers
    # there (the same instances and keys: paired; another instance would be far off)
    for pt in fig["points"]:
        tuning = json.loads((job / "points" / f"density-{pt['value']}-tuning.json").read_text())
        assert set(tuning["means"]) == {"ES", "EF", "EC"}
        assert pt["tuned_best"] == tuning["best"] == min(tuning["means"],
                                                          key=tuning["means"].get)
        held = pt["heuristics"][pt["tuned_best"]]
        for k in METRICS:   # float32 play, its setting traced there and constant here
            assert pt["methods"][figures.TUNED][k]["mean"] == pytest.approx(
                held[k]["mean"], rel=1e-5, abs=1e-7)
        assert tuning["means"][pt["tuned_best"]] != held["avg_response_time"]["mean"]
        for name in figures.LEARNED:
            d = pt["paired_vs_tuned"][name]["avg_response_time"]
            want = (pt["methods"][name]["avg_response_time"]["mean"]
                    - pt["methods"][figures.TUNED]["avg_response_time"]["mean"])
            assert d["mean"] == pytest.approx(want, abs=1e-9)
    assert figures.strongest_reference(fig) == ("paired_vs_tuned", "tuned best")
    # the printed table gives them per seed; a figure written before them prints without
    table = figures.format_table(fig)
    assert table.count("- best, per seed |") == len(figures.LEARNED)
    assert table.count("- tuned, per seed |") == len(figures.LEARNED)
    for pt in fig["points"]:
        for name in figures.LEARNED:
            del pt["paired_vs_best"][name]["avg_response_time"]["per_seed_excludes_zero"]
    assert "- best, per seed |" not in figures.format_table(fig)
    rows = list(csv.DictReader(open(stem.with_suffix(".csv"))))
    assert len(rows) == 2 * (len(figures.METHODS) + 1)
    for v in ("1.0", "3.0"):
        assert {r["method"] for r in rows if r["value"] == v} == {*figures.METHODS,
                                                                   figures.TUNED}
    for r in rows:
        if r["method"] in figures.LEARNED:
            assert float(r["response_minus_tuned_best"]) == pytest.approx(
                float(r["avg_response_time"]) - float(next(
                    x["avg_response_time"] for x in rows
                    if x["value"] == r["value"] and x["method"] == figures.TUNED)), abs=1e-6)
    for r in rows:
        assert float(r["avg_response_time_ci95"]) >= 0
        assert float(r["deadline_miss_rate_ci95"]) >= 0
    # the trained members are policy files eval.compare --damd-run takes
    assert (job / "train" / "density" / "member-1" / "damd.json").exists()


def test_resume_skips(job, capsys):
    fig_path = job / "fig4-density.json"
    before = fig_path.stat().st_mtime_ns
    assert figures.main(["--out", str(job), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "done before, skipped" in err and "training chunk" not in err
    assert fig_path.stat().st_mtime_ns == before
    # the figure gone, its points kept: no chunk trained, no point played again
    old = json.loads(fig_path.read_text())
    fig_path.unlink()
    assert figures.main(["--out", str(job), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "training chunk" not in err and "20 heuristic pairs" not in err
    assert err.count("heuristics done before") == 2
    new = json.loads(fig_path.read_text())
    assert [p["methods"] for p in new["points"]] == [p["methods"] for p in old["points"]]
    # the sweep's checkpoint and the learned results gone (a big checkpoint left on the
    # machine that trained it): the members' policy files are read back, nothing trained,
    # and the learned methods played again give the same numbers
    os.remove(job / "train" / "density" / "checkpoint.msgpack")
    os.remove(job / "points" / "density-learned.msgpack")
    fig_path.unlink()
    assert figures.main(["--out", str(job), "--resume", "--checkpoint-every", "2"]) == 0
    err = capsys.readouterr().err
    assert "trained before (no checkpoint)" in err and "training chunk" not in err
    assert "DAMD and DQN + rule, 2 members" in err
    new = json.loads(fig_path.read_text())
    assert [p["methods"] for p in new["points"]] == [p["methods"] for p in old["points"]]


def test_refusals(job, tmp_path):
    other = tmp_path / "not-figures"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        figures.main(["--out", str(other), *TINY])
    with pytest.raises(SystemExit):   # an existing job: --resume or --overwrite
        figures.main(["--out", str(job), *TINY])
    with pytest.raises(SystemExit):   # --resume takes the stored job only
        figures.main(["--out", str(job), "--resume", "--seeds", "2"])
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(SystemExit):
        figures.main(["--out", str(tmp_path / "x"), "--axes", "tasks", "--points",
                      "density=1,2"])
    for bad in (["--tune-methods", "ES,nosuch"], ["--tune-episodes", "-1"]):
        with pytest.raises(SystemExit):
            figures.main(["--out", str(tmp_path / "y"), *TINY, *bad])
        assert not (tmp_path / "y").exists()


def test_setting_range_draws_per_episode():
    """The generalist's envs: the field drawn per episode within [low, high], the rest kept;
    configs without the field (older runs) read as ""."""
    import jax
    from damdjax.run_config import RunConfig, parse_setting_range
    from damdjax.envs.config import EnvConfig, EnvParams
    from damdjax.envs.env import EdgeEnv
    from damdjax.envs.generators import RandomDAGGenerator, SettingRangeGenerator

    rng = parse_setting_range("num_servers=2:4")
    assert rng == (("num_servers", 2.0, 4.0),)
    env = EdgeEnv(EnvConfig(n_max=10, m_max=5), SettingRangeGenerator(RandomDAGGenerator(), rng))
    keys = jax.random.split(jax.random.PRNGKey(0), 64)
    inst = jax.jit(jax.vmap(lambda k: env.generate(k, EnvParams(num_tasks=10))))(keys)
    servers = np.asarray(inst.server_mask.sum(axis=1))
    assert set(servers.tolist()) == {2, 3, 4}
    assert np.all(np.asarray(inst.task_mask.sum(axis=1)) == 10)
    with pytest.raises(ValueError):
        EdgeEnv(EnvConfig(m_max=5),
                SettingRangeGenerator(RandomDAGGenerator(), (("num_servers", 2, 6),)))
    with pytest.raises(ValueError):
        parse_setting_range("density=2")
    d = RunConfig(setting_range="density=1:6").to_json()
    assert RunConfig.from_json(d).setting_range == "density=1:6"
    del d["setting_range"]
    assert RunConfig.from_json(d).setting_range == ""


def test_replot_reads_back_what_the_csv_holds(job, tmp_path):
    """`--replot`: the CSV read back holds the figure's means, CIs and paired differences
    (against the best pair and the tuned best) as the JSON does, and draws a PNG; a file
    that is not a figure's CSV is refused in one line."""
    fig = json.loads((job / "fig4-density.json").read_text())
    back = figures.figure_from_csv(figures.figure_csv(fig), quick=False)
    assert back["methods"] == fig["methods"] and back["seeds"] == 1 and back["episodes"] == 6
    for got, want in zip(back["points"], fig["points"]):
        assert got["value"] == want["value"] and got["best_pair"] == want["best_pair"]
        assert got["tuned_best"] == want["tuned_best"]
        for name in fig["methods"]:
            for k in METRICS:
                for part in ("mean", "ci95"):
                    assert got["methods"][name][k][part] == pytest.approx(
                        want["methods"][name][k][part], abs=1e-12)
        for key in ("paired_vs_best", "paired_vs_tuned"):
            assert set(got[key]) == set(figures.LEARNED)
            for name in figures.LEARNED:
                for k in METRICS:
                    assert got[key][name][k]["mean"] == pytest.approx(
                        want[key][name][k]["mean"], abs=1e-12)
    csv_path = tmp_path / "fig4-density.csv"
    csv_path.write_text(figures.figure_csv(fig))
    assert figures.main(["--replot", str(csv_path)]) == 0
    assert (tmp_path / "fig4-density.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit):
        figures.main(["--replot", str(tmp_path / "bad.csv")])
