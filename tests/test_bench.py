"""Tests of the benchmark entry point (eval/bench.py): a quick run and the flag errors."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from damdjax.eval import bench
from damdjax.envs.instance import to_reference_input


def test_quick_run_writes_every_batch_size(tmp_path, capsys, monkeypatch):
    """The quick run; its views' table comes from a stand-in that records its arguments
    (the views themselves are timed in test_views_table, at a smaller size)."""
    seen = {}

    def views_stand_in(config, params, keys_of, repeats, log):
        seen.update(config=config, keys=keys_of(0), repeats=repeats)
        return [{"view": "raw env", "batch_size": 8, "compile_s": 1.0, "median_s": 1.0,
                 "epochs_per_s": 2.0, "decisions_per_s": 2.0, "epochs_ratio": 1.0}]

    monkeypatch.setattr(bench, "bench_views", views_stand_in)
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    assert seen["config"] == bench.EnvConfig() and seen["repeats"] == bench.QUICK_REPEATS
    assert seen["keys"].shape[0] == bench.QUICK_VIEWS_BATCH
    data = json.loads(out.read_text())
    rows = {row["batch_size"]: row for row in data["results"]}
    assert sorted(rows) == sorted(bench.QUICK_BATCH_SIZES)
    for batch, row in rows.items():
        for key in ("compile_s", "median_s", "median_cpu_s", "steps_per_s", "decisions_per_s",
                    "episodes_per_s", "ref_decisions_per_s", "speedup", "speedup_cpu"):
            assert row[key] > 0, (batch, key)
        assert len(row["times_s"]) == bench.QUICK_REPEATS
        # Every episode finished: one dispatch and one pick per real task.
        assert row["decisions"] == 2 * row["tasks"] > 0
        assert row["steps"] >= row["decisions"] // 2
    ref = data["reference"]
    assert ref["episodes"] == bench.QUICK_REF_EPISODES
    assert ref["decisions_per_s"] > 0 and ref["decisions_per_episode"] > 0
    assert len(ref["measurements"]) == len(rows)
    assert (ref["dispatch"], ref["schedule"]) == ("least_load", "sdf")
    assert data["machine"]["jax"] and data["machine"]["devices"]
    assert not list(tmp_path.glob(".bench-*"))  # no temporary file left behind
    printed = capsys.readouterr().out
    assert "| batch |" in printed and "JAX / ref" in printed
    check_traffic(data["traffic"], printed)
    assert data["views"][0]["view"] == "raw env" and "| view | batch |" in printed


def test_views_table():
    """Every view played the same instances to the same ends with the same policy, so
    each played the raw env's epochs; the dispatcher view decided once per task, and
    every view's numbers are positive."""
    from damdjax.eval.bench_views import bench_views, markdown_views
    config = bench.EnvConfig(n_max=20, m_max=4, queue_capacity=8)
    params = bench.EnvParams(num_tasks=20, num_servers=4)
    batch = 4
    views = bench_views(config, params, lambda r: bench.episode_keys(0, r, batch), 2)
    by_name = {row["view"]: row for row in views}
    assert list(by_name) == ["raw env", "dispatcher view", "dispatcher view, max_epochs=2",
                             "schedulers view", "schedulers view, max_epochs=1",
                             "joint view (Jumanji)"]     # the test command installs Jumanji
    raw = by_name["raw env"]
    for name in ("dispatcher view", "dispatcher view, max_epochs=2"):
        assert by_name[name]["decisions"] == batch * params.num_tasks, name
    for name, row in by_name.items():
        assert row["batch_size"] == batch, name
        assert row["epochs"] == raw["epochs"] > 0, name
        assert row["epochs_per_s"] > 0 and row["decisions_per_s"] > 0, name
        assert row["epochs_ratio"] == pytest.approx(row["epochs_per_s"] / raw["epochs_per_s"])
    assert raw["epochs_ratio"] == 1.0
    assert "| joint view (Jumanji) | 4 |" in markdown_views(views)


def check_traffic(traffic, printed):
    """The quick run's traffic table: every part at the quick size, consistent sums."""
    from damdjax.heuristics import DISPATCH_RULES, SCHEDULE_RULES
    from damdjax.envs.config import EnvConfig, EnvParams
    from damdjax.envs.env import EdgeEnv
    from damdjax.eval.traffic import AGENT_PARTS
    (size,) = traffic["sizes"]
    assert size["n_max"] == bench.QUICK_TRAFFIC_N_MAX[0] and traffic["backend"] == "cpu"
    parts = size["parts"]
    assert set(parts) == ({"transition", "observe", "policy LS (least_load+sdf)",
                           "episode step", "train step", "train step, state donated"}
                          | {f"train step, {label}" for label in AGENT_PARTS}
                          | {f"dispatch {d}" for d in DISPATCH_RULES}
                          | {f"schedule {s}" for s in SCHEDULE_RULES})
    assert all(row["bytes"] > 0 and row["flops"] > 0 for row in parts.values())
    # The train step holds the episode step (the transition and the policy) and the
    # observation.
    assert parts["train step"]["flops"] >= parts["episode step"]["flops"]
    assert parts["episode step"]["flops"] >= parts["transition"]["flops"]
    assert parts["train step"]["bytes"] >= parts["observe"]["bytes"]
    # A trainer's step computes only its agents' part of the observation: less work.
    for label in AGENT_PARTS:
        assert parts[f"train step, {label}"]["flops"] < parts["train step"]["flops"]
    # The state's bytes, counted on a real reset state.
    env = EdgeEnv(EnvConfig(n_max=size["n_max"]))
    _, state = jax.jit(env.reset)(jax.random.key(0), EnvParams())
    assert size["state_bytes_per_env"] == sum(x.nbytes for x in jax.tree.leaves(state))
    for gpu, bandwidth in {"H100": 3.35e12, "H200": 4.8e12}.items():
        for part in ("episode step", "train step"):
            assert size["roofline_env_steps_per_s"][gpu][part] == pytest.approx(
                bandwidth / parts[part]["bytes"])
    assert traffic["measured"]["batch_size"] == max(bench.QUICK_BATCH_SIZES)
    assert "| per env step |" in printed and "proxy" in printed


@pytest.mark.parametrize("argv", [["--n-max", "0"], ["--n-max", "100,2000000000"],
                                  ["--batch", "0"], ["--method", "XY"]])
def test_traffic_flag_errors_exit_before_compiling(argv, capsys, monkeypatch):
    from damdjax.eval import traffic

    def boom(*args, **kwargs):
        raise AssertionError("compiled despite a bad flag")

    monkeypatch.setattr(traffic, "traffic_report", boom)
    with pytest.raises(SystemExit) as exc:
        traffic.main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cost_of_a_hand_computed_program():
    """x + 1 over 1000 float32: reads 4000 bytes, writes 4000, one flop each."""
    from damdjax.eval.traffic import cost
    c = cost(lambda x: x + 1.0, jax.ShapeDtypeStruct((1000,), jnp.float32))
    assert c == {"bytes": 8000.0, "flops": 1000.0}


def test_kernels_add_up_to_the_cost_analysis():
    """A program without loops: the kernels' operand + output bytes, summed, are XLA's own
    bytes accessed (to 1%), and the rows sum to their kinds."""
    from damdjax.eval.traffic import kernels
    x = jax.ShapeDtypeStruct((1000,), jnp.float32)
    k = kernels(lambda a, b: (a + 1.0, jnp.sum(a * b)), x, x)
    assert k["kernel_bytes"] == pytest.approx(k["cost_analysis_bytes"], rel=0.01)
    assert k["kernel_bytes"] >= 4 * 1000 * 3   # reads a and b, writes a + 1
    assert sum(v["bytes"] for v in k["by_kind"].values()) == k["kernel_bytes"]
    assert sum(v["count"] for v in k["by_kind"].values()) == len(k["kernels"])


def test_traffic_kernels_flag(capsys, monkeypatch):
    """--kernels PART: an unknown part exits 2 naming it before compiling; a known one
    prints its kinds, and its kernels' total beside the cost analysis' (observe has no
    loops: they agree to 1%)."""
    from damdjax.eval import traffic

    def boom(*args, **kwargs):
        raise AssertionError("compiled despite a bad flag")

    with monkeypatch.context() as m:
        m.setattr(traffic, "kernel_report", boom)
        with pytest.raises(SystemExit) as exc:
            traffic.main(["--kernels", "no such part"])
        assert exc.value.code == 2
        assert "'no such part'" in capsys.readouterr().err
    assert traffic.main(["--n-max", "8", "--batch", "2", "--kernels", "observe"]) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[-1].strip("| ")
            for line in out.splitlines() if line.startswith("| ")}
    total = float(rows["all kernels (operands + outputs)"].split(" / ")[1].replace(",", ""))
    assert total == pytest.approx(float(rows["cost analysis (bytes accessed)"].replace(
        ",", "")), rel=0.01)
    assert any(kind.startswith("fusion:") for kind in rows)


def test_reference_input_keeps_real_servers_and_tasks_only():
    f = lambda *rows: np.array(rows, dtype=np.float32)
    arrays = {  # a batch of one padded instance: servers 0, 2 and tasks 0, 1, 3 are real
        "cpu": f([1.0, 9.0, 2.0]), "bw": f([5.0, 9.0, 6.0]), "mem": f([20.0, 9.0, 30.0]),
        "k": f([0.5, 9.0, 0.25]), "server_mask": np.array([[True, False, True]]),
        "size": f([1.0, 2.0, 0.0, 3.0]), "work": f([1.0, 2.0, 0.0, 3.0]),
        "arrival": f([0.0, 0.0, np.inf, 1.0]), "deadline": f([5.0, 6.0, np.inf, 7.0]),
        "preds": np.array([[[-1, -1], [0, -1], [-1, -1], [0, 1]]], np.int32),
        "task_mask": np.array([[True, True, False, True]]),
        "job": np.array([[0, 0, -1, 1]], np.int32),
    }
    servers, tasks = to_reference_input(arrays, 0)
    assert servers == [{"cpu": 1.0, "bw": 5.0, "mem": 20.0, "k": 0.5},
                       {"cpu": 2.0, "bw": 6.0, "mem": 30.0, "k": 0.25}]
    assert [t["preds"] for t in tasks] == [[], [0], [0, 1]]
    assert [t["job"] for t in tasks] == [0, 0, 1]
    assert tasks[2] == {"size": 3.0, "work": 3.0, "arrival": 1.0, "deadline": 7.0,
                        "preds": [0, 1], "job": 1}


@pytest.mark.parametrize("argv", [
    ["--batch-sizes", "1,0"],
    ["--batch-sizes", "-4"],
    ["--batch-sizes", "a,b"],
    ["--repeats", "0"],
    ["--repeats", "-1"],
    ["--ref-episodes", "0"],
    ["--traffic-n-max", "100,0"],
    ["--traffic-n-max", "100,2000000000"],
    ["--traffic-batch", "0"],
    ["--method", "XY"],
    ["--method", "nearest+lifo"],
])
def test_flag_errors_exit_before_compiling(argv, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("compiled despite a bad flag")

    monkeypatch.setattr(bench, "compile_runner", boom)
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--method", "--batch-sizes", "--repeats", "--ref-episodes", "--seed",
                 "--quick", "--out"):
        assert flag in text
