"""eval.compare end to end: the worked example by hand, the JSON file, every flag error."""
import json
import os

import pytest

from damdjax.eval import compare

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "worked_example.json")


def test_worked_example_gives_the_hand_computed_numbers(tmp_path):
    out = tmp_path / "result.json"
    compare.main(["--instance", EXAMPLE, "--methods", "NF,LS", "--out", str(out)])
    data = json.loads(out.read_text())
    nf, ls = data["methods"]["NF"], data["methods"]["LS"]
    assert nf["server"] == [0, 0, 0, 0]
    assert nf["done"] == pytest.approx([3.2, 9.2, 5.2, 10.2], abs=1e-9)
    assert nf["avg_response_time"] == pytest.approx(6.7, abs=1e-9)
    assert nf["deadline_miss_rate"] == 0.25
    assert ls["server"] == [0, 1, 0, 1]
    assert ls["done"] == pytest.approx([3.2, 7.2, 5.2, 3.7], abs=1e-9)
    assert ls["avg_response_time"] == pytest.approx(4.575, abs=1e-9)
    assert ls["deadline_miss_rate"] == 0.0
    # start/finish by hand: A runs 0.7-2.7 on S0 under both methods; LS runs D 2.2-2.7 on S1.
    assert nf["start"][0] == pytest.approx(0.7) and nf["finish"][0] == pytest.approx(2.7)
    assert ls["start"][3] == pytest.approx(2.2) and ls["finish"][3] == pytest.approx(2.7)
    assert ls["start"][1] == pytest.approx(4.2)  # B waits for A's result relayed to S1


def test_generated_instances_pair_methods_on_the_same_instances(tmp_path, capsys):
    out = tmp_path / "gen.json"
    result = compare.main(["--num-tasks", "20", "--num-servers", "3", "--episodes", "8",
                           "--methods", "NF,LS,LF", "--out", str(out)])
    text = capsys.readouterr().out
    assert "NF" in text and "±" in text
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"NF", "LS", "LF", "bound"}
    for r in data["methods"].values():
        assert r["episodes"] == 8 and r["truncated"] == 0
        assert 0.0 <= r["deadline_miss_rate"] <= 1.0 and r["avg_response_time"] > 0
    # A fixed seed gives identical results.
    again = compare.main(["--num-tasks", "20", "--num-servers", "3", "--episodes", "8",
                          "--methods", "LS"])
    assert again["methods"]["LS"]["avg_response_time"] == result["methods"]["LS"][
        "avg_response_time"]


def test_best_is_chosen_on_tuning_episodes_and_played_on_held_out_ones(tmp_path, monkeypatch,
                                                                    capsys):
    """`--methods best`: the tuning's choice (the smallest mean over the tuning episodes,
    which are not the held-out ones) is what the table shows, played on the held-out
    episodes as it plays alone; eval.tune stores the same choice, `--tuned` reads it
    back without tuning, and a file tuned at another setting is refused."""
    import numpy as np
    from damdjax import tuning
    from damdjax.eval import tune as tune_cli
    from damdjax.evaluation import generate_held_out, held_out_keys
    from damdjax.family import method_policy
    from damdjax.envs.config import EnvConfig, EnvParams

    from damdjax.family import canonical_name
    grid = tuning.family_grid
    small = lambda: grid(relays=(0.0,), lookaheads=(0.0, 1.0), schedules=("sjf",))
    monkeypatch.setattr(tuning, "family_grid", small)   # small candidate sets: the
    monkeypatch.setattr(tuning, "ALL_PAIRS", ("ES", "NF", "LS"))   # test's time
    setting = ["--num-tasks", "20", "--num-servers", "3"]
    out = tmp_path / "best.json"
    res = compare.main([*setting, "--episodes", "6", "--methods", "best,ES",
                        "--tune-episodes", "5", "--out", str(out)])
    data = json.loads(out.read_text())
    best, tuned = data["best_heuristic"], data["tuning"]
    assert tuned["candidates"] == len({canonical_name(n) for n in [
        *tuning.ALL_PAIRS, *(m.name for m in small())]}) == 19
    ranking = tuned["ranking"]
    assert ranking[0]["method"] == best and ranking == sorted(
        ranking, key=lambda r: r["avg_response_time"])
    assert list(data["methods"]) == ["ES", best, "bound"] or best == "ES"
    # The tuning's ES mean is not the held-out ES mean: other episodes.
    es_tuned = [r for r in ranking if r["method"] == "ES"]
    if es_tuned:
        assert es_tuned[0]["avg_response_time"] != data["methods"]["ES"]["avg_response_time"]
    params, config = EnvParams(num_tasks=20, num_servers=3), EnvConfig(n_max=20, m_max=3)
    inst_keys, play_keys = held_out_keys(0, 6)
    instances = generate_held_out(config, params, inst_keys)
    alone = compare.run_batch(method_policy(best)[0], play_keys, instances,
                              config.queue_capacity, params)
    np.testing.assert_allclose(compare.summarize(alone)["_per_episode"]["avg_response_time"],
                               res["methods"][best]["_per_episode"]["avg_response_time"],
                               rtol=1e-6)
    stored = tmp_path / "tuned.json"
    tune_cli.main([*setting, "--tune-episodes", "5", "--out", str(stored)])
    assert json.loads(stored.read_text())["best"] == best
    capsys.readouterr()
    again = compare.main([*setting, "--episodes", "6", "--methods", "best",
                          "--tuned", str(stored)])
    assert again["best_heuristic"] == best and "tuning:" not in capsys.readouterr().out
    with pytest.raises(SystemExit, match="was tuned at"):
        compare.main(["--num-tasks", "20", "--num-servers", "4", "--episodes", "2",
                      "--methods", "best", "--tuned", str(stored)])
    # --env: a registered setting tunes as its flags do (the same candidates' means) and
    # its file serves eval.compare at those flags; a setting flag beside --env is refused
    from damdjax import registry
    from damdjax.envs.env import EdgeEnv
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))   # restored after
    registry.register("Edge-test20-v0", lambda: (EdgeEnv(config), params), "20 tasks, 3 servers")
    by_name = tmp_path / "tuned-name.json"
    got = tune_cli.main(["--env", "Edge-test20-v0", "--tune-episodes", "5", "--out", str(by_name)])
    want = json.loads(stored.read_text())
    assert got["best"] == want["best"] and got["means"] == want["means"]
    assert got["setting"]["env"] == "Edge-test20-v0"
    assert compare.main([*setting, "--episodes", "6", "--methods", "best",
                         "--tuned", str(by_name)])["best_heuristic"] == best
    for bad in (["--env", "Edge-test20-v0", "--num-tasks", "20"], ["--env", "Edge-nosuch-v0"],
                ["--data", str(tmp_path)]):
        with pytest.raises(SystemExit):
            tune_cli.main([*bad, "--out", str(tmp_path / "never.json")])
    assert not (tmp_path / "never.json").exists()


def test_every_pair_and_the_bound(tmp_path):
    """`--methods all`: every pair (grouped by dispatch rule into one batch each) gives
    exactly what playing that pair alone gives; the bound is below every method on every
    episode."""
    import jax
    import numpy as np
    from damdjax.evaluation import generate_held_out, held_out_keys
    from damdjax.heuristics import ALL_PAIRS, pair_from_name
    from damdjax.envs.config import EnvConfig, EnvParams

    out = tmp_path / "all.json"
    res = compare.main(["--num-tasks", "20", "--num-servers", "3", "--episodes", "8",
                        "--methods", "all", "--out", str(out)])
    data = json.loads(out.read_text())
    assert list(data["methods"]) == [*ALL_PAIRS, "bound"]
    bound = res["methods"]["bound"]["_per_episode"]
    for name in ALL_PAIRS:
        per = res["methods"][name]["_per_episode"]
        assert (per["avg_response_time"] >= bound["avg_response_time"]).all(), name
        assert (per["deadline_miss_rate"] >= bound["deadline_miss_rate"]).all(), name
    # Alone, with its own compilation, a pair plays the same episodes (times agree to
    # float32 rounding: XLA may fuse the two programs differently).
    params = EnvParams(num_tasks=20, num_servers=3)
    config = EnvConfig(n_max=20, m_max=3)
    inst_keys, play_keys = held_out_keys(0, 8)
    instances = generate_held_out(config, params, inst_keys)   # compare's own instances
    alone = compare.run_batch(pair_from_name("RX"), play_keys, instances,
                              config.queue_capacity, params)
    np.testing.assert_allclose(compare.summarize(alone)["_per_episode"]["avg_response_time"],
                               res["methods"]["RX"]["_per_episode"]["avg_response_time"],
                               rtol=1e-6)


def test_slack_moves_deadlines_only():
    """--slack scales every deadline's margin and nothing else: FCFS/SJF schedules (so
    response times) do not change, and a tighter slack misses at least as many."""
    base = ["--num-tasks", "20", "--num-servers", "3", "--episodes", "8", "--methods", "NF,RS"]
    tight, loose = (compare.main([*base, "--slack", s])["methods"] for s in ("1.0", "4.0"))
    for m in ("NF", "RS"):
        assert tight[m]["avg_response_time"] == loose[m]["avg_response_time"]
        assert tight[m]["deadline_miss_rate"] >= loose[m]["deadline_miss_rate"]
    assert tight["NF"]["deadline_miss_rate"] > loose["NF"]["deadline_miss_rate"]


@pytest.mark.parametrize("argv, message", [
    (["--methods", "XX"], "unknown method 'XX'"),
    (["--methods", ""], "--methods is empty"),
    (["--methods", "NF,NF"], "lists a method twice"),
    (["--methods", "all,EC"], "lists a method twice"),
    (["--methods", "LS,LD"], "lists a method twice"),  # LD is the paper's LS
    (["--methods", "EZ"], "unknown method 'EZ'"),
    (["--lookahead", "QQ"], "--lookahead: unknown method 'QQ'"),
    (["--lookahead", "RS"], "--lookahead RS: the base pair must be deterministic"),
    (["--episodes", "0"], "--episodes must be >= 1, got 0"),
    (["--queue-capacity", "0"], "--queue-capacity must be >= 1, got 0"),
    (["--num-tasks", "0"], "--num-tasks must be >= 1, got 0"),
    (["--num-servers", "-1"], "--num-servers must be >= 1, got -1"),
    (["--density", "0"], "--density must be a finite number > 0, got 0.0"),
    (["--density", "nan"], "--density must be a finite number > 0, got nan"),
    (["--slack", "-1"], "--slack must be a finite number > 0, got -1.0"),
    (["--num-tasks", "ten"], "invalid int value: 'ten'"),
])
def test_flag_errors_exit_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        compare.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err


def test_bad_instance_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"servers": [{"cpu": 1, "bw": 1, "mem": 1, "k": 1}],
                               "jobs": [{"arrival": 0, "tasks": [
                                   {"size": 1, "deadline": 5, "preds": [3]}]}]}))
    with pytest.raises(SystemExit) as e:
        compare.main(["--instance", str(bad)])
    assert "job 0, task 0" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        compare.main(["--instance", str(tmp_path / "missing.json")])
    assert "missing.json" in str(e.value.code)


def test_instance_run_leaves_default_precision_alone():
    import jax.numpy as jnp
    compare.main(["--instance", EXAMPLE, "--methods", "NF"])
    assert jnp.zeros(()).dtype == jnp.float32


def test_out_never_overwrites_an_input_and_is_checked_before_computing(tmp_path, capsys):
    """--out equal to the instance file, an existing folder, or a folder that does not
    exist: one-line errors (exit 2) before anything runs; the instance is untouched."""
    inst = tmp_path / "inst.json"
    inst.write_bytes(open(EXAMPLE, "rb").read())
    before = inst.read_bytes()
    (tmp_path / "folder").mkdir()
    for out, says in ((inst, "would overwrite the input"),
                      (tmp_path / "." / "inst.json", "would overwrite the input"),
                      (tmp_path / "folder", "is a folder"),
                      (tmp_path / "absent" / "r.json", "does not exist")):
        with pytest.raises(SystemExit) as exc:
            compare.main(["--instance", str(inst), "--out", str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr()
        assert says in err.err.strip().splitlines()[-1] and "comparing" not in err.out
    from damdjax.envs import convert       # the converter checks its --out the same way
    with pytest.raises(SystemExit) as exc:
        convert.main(["wfcommons", str(inst), "--out", str(inst)])
    assert exc.value.code == 2 and "would overwrite the input" in capsys.readouterr().err
    assert inst.read_bytes() == before


def test_chunked_episodes_equal_the_whole_episode_loop_and_stop_on_ctrl_c(
        tmp_path, capsys, monkeypatch):
    """`play_in_chunks` (and play_pairs in chunks) gives the whole-episode loop's final
    states exactly, with progress lines; eval.compare stops on Ctrl-C between chunks with
    one line and exit 130."""

    import jax
    import numpy as np

    from damdjax import rollout
    from damdjax.envs.instance import instance_from_spec
    from damdjax.envs.instance_io import load_instance

    instance, q = instance_from_spec(load_instance(EXAMPLE))
    inst = jax.tree.map(lambda x: np.broadcast_to(x, (3,) + x.shape), instance)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    names = ["RS", "RX"]     # random dispatch (the keys matter), one batch of two variants
    seen = []
    whole = rollout.play_pairs(names, keys, inst, q)
    parts = rollout.play_pairs(names, keys, inst, q, chunked={
        "chunk_steps": 2, "every": 0, "progress": lambda *a: seen.append(a)})
    for name in names:
        for a, b in zip(jax.tree.leaves(whole[name]), jax.tree.leaves(parts[name])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(seen) > 2 and seen[-1][1] == 6 and seen[-1][2] == seen[-1][3] == 6 * 4

    def ctrl_c(method):  # what Python's SIGINT handler raises, at a progress call
        def interrupt(*a):
            raise KeyboardInterrupt
        return interrupt
    monkeypatch.setattr(compare, "progress_printer", ctrl_c)
    monkeypatch.setattr(rollout, "CHUNK_STEPS", 1)
    monkeypatch.setattr(rollout, "PROGRESS_SECONDS", 0.0)
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exc:
        compare.main(["--instance", EXAMPLE, "--methods", "NF", "--out", str(out)])
    assert exc.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("interrupted")
    assert not out.exists()
