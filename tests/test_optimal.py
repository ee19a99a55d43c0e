"""damdjax.optimal and eval.optimal: the CP-SAT relaxation against hand-computed numbers,
its own float replay, the reference simulator and every heuristic pair."""
import builtins
import importlib.util
import json

import pytest

from damdjax import optimal
from damdjax.envs import reference
from damdjax.envs.config import EnvParams
from damdjax.envs.instance import instance_to_arrays
from damdjax.eval import optimal as optimal_cli
from damdjax.envs.instance import to_reference_input
from damdjax.evaluation import generate_held_out, held_out_keys
from damdjax.heuristics import DISPATCH_RULES, SCHEDULE_RULES
from damdjax.workloads import workload_config

needs_ortools = pytest.mark.skipif(importlib.util.find_spec("ortools") is None,
                                   reason="the optimal extra (ortools) is not installed")


@pytest.fixture(scope="module")
def generated():
    """Two held-out instances of 12 tasks on 3 servers as reference inputs
    `[(servers, tasks), ...]` (real memory; float32 values, widened exactly)."""
    params = EnvParams().replace(num_tasks=12, num_servers=3)
    config = workload_config("", n_max=12, m_max=3, queue_capacity=16)
    batch = generate_held_out(config, params, held_out_keys(0, 2)[0])
    arrays = instance_to_arrays(batch)
    return [to_reference_input(arrays, e) for e in range(2)]


@needs_ortools
def test_hand_computed_chain_is_optimal():
    """Chain 0 -> 1 -> 2, all arriving at 0, size 1, work 2. Server 0: cpu 1, bw 1,
    k 0.5; server 1: cpu 2, bw 2, k 1. Every upload lands at 1.5 on either server.
    All on server 1: finishes 2.5, 3.5, 4.5, done 3.5, 4.5, 5.5: mean 4.5. All on server
    0: done 4, 6, 8 (mean 6). Any split pays a relay of 1.5 per crossing and at least
    one 2-long run on server 0: e.g. 1 on 1, then 0: task 1 starts at 2.5 + 1.5 = 4,
    done 6.5; so 4.5 is the optimum."""
    p = optimal.Problem(cpu=(1.0, 2.0), bw=(1.0, 2.0), k=(0.5, 1.0), size=(1.0,) * 3,
                        work=(2.0,) * 3, arrival=(0.0,) * 3, preds=((), (0,), (1,)))
    for rounding in optimal.ROUNDINGS:
        r = optimal.solve(p, time_limit=5.0, rounding=rounding)
        assert r.status == "OPTIMAL"
        assert r.server == (1, 1, 1) and r.start == (1.5, 2.5, 3.5)
        assert r.objective == 4.5 and r.solver_objective == 4.5
    assert optimal.solve(p, time_limit=5.0).solver_bound == 4.5   # down: exact here
    assert r.solver_bound == pytest.approx(4.5 - optimal.rounding_slack(3, 1e-3))
    assert optimal.replay(p, [0, 0, 0], [[0, 1, 2], []]).avg_response == 6.0
    assert optimal.replay(p, [1, 0, 0], [[1, 2], [0]]).done[1] == 6.5


def prefix(problem: optimal.Problem, count: int) -> optimal.Problem:
    """The problem of the first `count` tasks (their predecessors come first)."""
    cut = lambda xs: xs[:count]  # noqa: E731
    return optimal.Problem(cpu=problem.cpu, bw=problem.bw, k=problem.k, size=cut(problem.size),
                           work=cut(problem.work), arrival=cut(problem.arrival),
                           preds=cut(problem.preds))


@needs_ortools
@pytest.mark.parametrize("rounding", optimal.ROUNDINGS)
def test_solver_claim_equals_its_float_replay(generated, rounding):
    """The schedule's float replay costs no more than the solver claims plus the
    rounding's slack (rounded up: no more than it claims), and no less than the solver's
    bound; proven optimal (no idle time to remove), it costs the claim within the slack."""
    optimal_seen = 0
    for servers, tasks in generated:
        whole = optimal.Problem.from_reference(servers, tasks)
        for p, limit in ((whole, 1.0), (prefix(whole, 7), 5.0)):
            r = optimal.solve(p, time_limit=limit, rounding=rounding)
            assert r.has_schedule, r.status
            slack = optimal.rounding_slack(p.num_tasks, r.resolution)
            assert r.solver_bound <= r.objective + 1e-9
            assert r.objective <= r.solver_objective + (1e-9 if rounding == "up" else slack)
            if r.status == "OPTIMAL":
                optimal_seen += 1
                assert abs(r.objective - r.solver_objective) <= slack
            # The reported starts are the replay of the reported assignment's order.
            finish = [s + p.duration(i, n) for i, (s, n) in enumerate(zip(r.start, r.server))]
            again = optimal.replay(p, r.server, optimal.orders_of(r.server, r.start, finish, 3))
            assert again.start == r.start and again.avg_response == r.objective
    assert optimal_seen >= 2


@pytest.mark.parametrize("dispatch,schedule", [("eft", "sjf"), ("nearest", "fcfs"),
                                               ("least_load", "sdf"), ("random", "cp")])
def test_replay_equals_the_reference_simulator(generated, dispatch, schedule):
    """With memory and queues that never bind, the reference simulator dispatches every
    task at its arrival: its server per task and order per server, replayed, give its
    own done times."""
    crossings = 0
    for e, (servers, tasks) in enumerate(generated):
        roomy = [{**s, "mem": 1e9} for s in servers]
        res = reference.simulate(roomy, tasks, queue_capacity=len(tasks), dispatch=dispatch,
                                 schedule=schedule, seed=e)
        assert res.dispatch_time == [t["arrival"] for t in tasks]
        p = optimal.Problem.from_reference(servers, tasks)
        played = optimal.replay(p, res.server, optimal.orders_of(
            res.server, res.start, res.finish, len(servers)))
        assert played.done == pytest.approx(res.done, abs=1e-9, rel=0)
        assert played.avg_response == pytest.approx(res.metrics["avg_response_time"],
                                                     abs=1e-9, rel=0)
        crossings += sum(res.server[q] != res.server[i]
                         for i, t in enumerate(tasks) for q in t["preds"])
    if dispatch != "nearest":   # the relay term is exercised
        assert crossings > 0


@needs_ortools
def test_solver_bound_is_below_every_heuristic_pair(generated):
    """Every pair, played with the real memory and queue limits (the reference
    simulator), is no better than the solver's bound; the solver's schedule is feasible
    for the relaxation, so not below it either."""
    for e, (servers, tasks) in enumerate(generated):
        r = optimal.solve(optimal.Problem.from_reference(servers, tasks), time_limit=1.0)
        assert r.solver_bound <= r.objective + 1e-9
        for d in DISPATCH_RULES:
            for s in SCHEDULE_RULES:
                res = reference.simulate(servers, tasks, queue_capacity=16, dispatch=d,
                                         schedule=s, seed=e)
                assert r.solver_bound <= res.metrics["avg_response_time"] + 1e-9, (d, s)


def test_replay_refuses_a_deadlocked_order_and_bad_schedules():
    p = optimal.Problem(cpu=(1.0, 1.0), bw=(1.0, 1.0), k=(1.0, 1.0), size=(1.0,) * 2,
                        work=(1.0,) * 2, arrival=(0.0,) * 2, preds=((), (0,)))
    with pytest.raises(ValueError, match="deadlock"):
        optimal.replay(p, [0, 0], [[1, 0], []])
    with pytest.raises(ValueError, match="not the tasks on server 1"):
        optimal.replay(p, [0, 1], [[0], []])
    with pytest.raises(ValueError, match=r"predecessor 1 is not an earlier task"):
        optimal.Problem(cpu=(1.0,), bw=(1.0,), k=(1.0,), size=(1.0,), work=(1.0,),
                        arrival=(0.0,), preds=((1,),))
    with pytest.raises(ValueError, match="k\\[0\\] must be a finite number > 0"):
        optimal.Problem(cpu=(1.0,), bw=(1.0,), k=(0.0,), size=(1.0,), work=(1.0,),
                        arrival=(0.0,), preds=((),))
    with pytest.raises(ValueError, match="rounding must be one of"):
        optimal.solve(p, rounding="nearest")


@needs_ortools
def test_cli_writes_every_instance_and_the_statuses(tmp_path, capsys):
    out = tmp_path / "optimal.json"
    optimal_cli.main(["--episodes", "2", "--num-tasks", "8", "--num-servers", "3",
                      "--time-limit", "1", "--methods", "ES,NF", "--out", str(out)])
    captured = capsys.readouterr()
    assert "instance 2/2:" in captured.err and "solver statuses over 2" in captured.out
    data = json.loads(out.read_text())
    assert len(data["episodes"]) == 2 and sum(data["total"]["statuses"].values()) == 2
    for row in data["episodes"]:
        sol = row["solver"]
        assert sol["status"] in optimal.STATUSES and row["num_tasks"] == 8
        assert row["best_lower_bound"] == max(row["bound"], sol["solver_bound"])
        for m in ("ES", "NF"):   # float32 plays: their last digits
            assert row["methods"][m] >= row["best_lower_bound"] - 1e-4
            assert row["gap_to_lower_bound"][m] == row["methods"][m] - row["best_lower_bound"]
            assert row["gap_to_schedule"][m] == row["methods"][m] - sol["objective"]
    total = data["total"]
    assert total["methods"]["ES"] == pytest.approx(
        sum(r["methods"]["ES"] for r in data["episodes"]) / 2)


def test_cli_refuses_large_instances_and_names_the_size(capsys):
    with pytest.raises(SystemExit) as exit_:
        optimal_cli.main(["--num-tasks", "41"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--num-tasks 41" in err and "--allow-large" in err


def test_missing_ortools_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_ortools(name, *args, **kwargs):
        if name.startswith("ortools"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ortools)
    with pytest.raises(SystemExit) as exit_:
        optimal_cli.main(["--episodes", "1", "--num-tasks", "4"])
    message = str(exit_.value.code)
    assert "pip install 'damdjax[optimal]'" in message and "\n" not in message
