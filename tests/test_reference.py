"""Tests of the plain-Python reference simulator (envs/reference.py) alone.

Hand-computed episodes check the semantics of docs/model.md exactly; random
instances check invariants that hold whatever the heuristics.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from envs.reference import DISPATCHERS, SCHEDULERS, simulate

approx = pytest.approx


def task(size, arrival, deadline, preds=(), job=0, work=None):
    return {
        "size": size,
        "work": size if work is None else work,
        "arrival": arrival,
        "deadline": deadline,
        "preds": list(preds),
        "job": job,
    }


def srv(cpu, bw, mem, k):
    return {"cpu": cpu, "bw": bw, "mem": mem, "k": k}


# ---------------------------------------------------------------------------
# The worked example (docs): NF and LS
# ---------------------------------------------------------------------------

EX_SERVERS = [srv(1, 10, 100, 0.5), srv(2, 5, 100, 1.0)]
EX_TASKS = [
    task(2, 0, 10, job=0),  # A
    task(4, 0, 12, preds=[0], job=0),  # B
    task(2, 0, 8, preds=[0], job=0),  # C
    task(1, 1, 5, job=1),  # D
]


def test_worked_example_nearest_fcfs():
    r = simulate(EX_SERVERS, EX_TASKS, queue_capacity=10,
                 dispatch="nearest", schedule="fcfs")
    assert r.server == [0, 0, 0, 0]
    # A reaches S0 at 0.5 + 0.2; C (arrived 0.7) goes before B (0.9), then D.
    assert r.dispatch_time == approx([0, 0, 0, 1])
    assert r.arrive == approx([0.7, 0.9, 0.7, 1.6])
    assert r.start == approx([0.7, 4.7, 2.7, 8.7])
    assert r.finish == approx([2.7, 8.7, 4.7, 9.7])
    assert r.done == approx([3.2, 9.2, 5.2, 10.2])
    assert r.response == approx([3.2, 9.2, 5.2, 9.2])
    assert r.missed == [False, False, False, True]
    assert r.metrics["avg_response_time"] == approx(6.7)
    assert r.metrics["deadline_miss_rate"] == 0.25
    assert r.metrics["makespan"] == approx((9.2 + 9.2) / 2)
    assert r.metrics["utilisation"] == approx((9.0 / 10.2 + 0.0) / 2)
    ts = [3.2, 9.2, 5.2, 9.2]
    assert r.metrics["fairness"] == approx(sum(ts) ** 2 / (4 * sum(x * x for x in ts)))
    assert r.end_time == approx(10.2)
    assert r.metrics["end_time"] == r.end_time
    assert r.num_decisions == 8
    assert r.num_steps == 8
    assert r.epoch_times == approx([0, 0, 0, 0.7, 1, 2.7, 4.7, 8.7])


def test_worked_example_least_load_sdf():
    r = simulate(EX_SERVERS, EX_TASKS, queue_capacity=10,
                 dispatch="least_load", schedule="sdf")
    # A: tie at load 0 -> S0. B: loads 2 vs 0 -> S1. C: 2 vs 4/2 = 2 -> S0.
    # D at t=1: S0 (2 - 0.3 + 2)/1 = 3.7 vs S1 4/2 = 2 -> S1.
    assert r.server == [0, 1, 0, 1]
    assert r.arrive == approx([0.7, 1.8, 0.7, 2.2])
    # B's input from A is relayed: (2.7 + 0.5) + 1.0 = 4.2.
    assert r.start == approx([0.7, 4.2, 2.7, 2.2])
    assert r.finish == approx([2.7, 6.2, 4.7, 2.7])
    assert r.done == approx([3.2, 7.2, 5.2, 3.7])
    assert r.missed == [False, False, False, False]
    assert r.metrics["avg_response_time"] == approx(4.575)
    assert r.metrics["deadline_miss_rate"] == 0.0
    assert r.metrics["makespan"] == approx((7.2 + 2.7) / 2)
    assert r.metrics["utilisation"] == approx((4.0 / 7.2 + 2.5 / 7.2) / 2)
    assert r.end_time == approx(7.2)
    assert r.num_decisions == 8
    assert r.num_steps == 8
    assert r.epoch_times == approx([0, 0, 0, 0.7, 1, 2.2, 2.7, 4.2])


# ---------------------------------------------------------------------------
# Memory, queue capacity, D3 relay, Random
# ---------------------------------------------------------------------------


def test_tight_memory_head_task_waits_at_access_point():
    # One server with 5 memory; A (4) runs, B (4) must wait at the AP until A
    # completes at 9; C (1) would fit at once but waits behind the head task B.
    servers = [srv(1, 1, 5, 1)]
    tasks = [task(4, 0, 100), task(4, 0, 100), task(1, 0, 100)]
    r = simulate(servers, tasks, queue_capacity=5, dispatch="nearest", schedule="fcfs")
    assert r.dispatch_time == approx([0, 9, 9])
    assert r.arrive == approx([5, 14, 11])
    assert r.start == approx([5, 14, 11])
    assert r.finish == approx([9, 18, 12])
    assert r.done == approx([10, 19, 13])
    assert r.response == approx([10, 19, 13])
    assert r.epoch_times == approx([0, 5, 9, 9, 11, 14])
    assert r.num_steps == 6


def test_memory_fallback_to_a_farther_server():
    servers = [srv(1, 1, 5, 0.5), srv(1, 1, 10, 2.0)]
    tasks = [task(3, 0, 100), task(3, 0, 100)]
    r = simulate(servers, tasks, queue_capacity=5, dispatch="nearest", schedule="fcfs")
    assert r.server == [0, 1]
    assert r.arrive == approx([3.5, 5.0])
    assert r.done == approx([7.0, 10.0])


def test_queue_capacity_one_single_server():
    servers = [srv(1, 1, 100, 1)]
    tasks = [task(1, 0, 100), task(1, 0, 100)]
    r = simulate(servers, tasks, queue_capacity=1, dispatch="nearest", schedule="fcfs")
    # B waits at the AP until A starts (slot given back) at 2; the dispatch at
    # 2 comes one epoch after the pick at 2 (feasibility judged before picks).
    assert r.dispatch_time == approx([0, 2])
    assert r.arrive == approx([2, 4])
    assert r.start == approx([2, 4])
    assert r.finish == approx([3, 5])
    assert r.done == approx([4, 6])
    assert r.epoch_times == approx([0, 2, 2, 4])
    assert r.num_steps == 4


def test_queue_capacity_one_sends_next_task_to_other_server():
    servers = [srv(1, 1, 100, 0.5), srv(1, 1, 100, 1.0)]
    tasks = [task(1, 0, 100), task(1, 0, 100), task(1, 0, 100)]
    r = simulate(servers, tasks, queue_capacity=1, dispatch="nearest", schedule="fcfs")
    # A -> S0 (slot full), B -> S1 (slot full), C waits for A's start at 1.5.
    assert r.server == [0, 1, 0]
    assert r.dispatch_time == approx([0, 0, 1.5])
    assert r.start == approx([1.5, 2.0, 3.0])
    assert r.done == approx([3.0, 4.0, 4.5])


def test_chain_on_two_servers_pays_the_relay_delay():
    servers = [srv(1, 1, 100, 1.0), srv(2, 2, 100, 2.0)]
    tasks = [task(2, 0, 100, work=2), task(2, 0, 100, preds=[0], work=4)]
    # u = 0 -> first feasible (S0); u = 0.99 with c = 2 -> position 1 (S1).
    r = simulate(servers, tasks, queue_capacity=4, dispatch="random",
                 schedule="fcfs", uniforms=[0.0, 0.99])
    assert r.server == [0, 1]
    assert r.arrive == approx([3.0, 3.0])
    assert r.finish[0] == approx(5.0)
    # B's input is ready at (5 + 1) + 2 = 8, although B arrived at 3.
    assert r.start[1] == approx(8.0)
    assert r.finish[1] == approx(10.0)
    assert r.done == approx([6.0, 12.0])
    assert r.epoch_times == approx([0, 0, 3, 8])

    # Same chain on one server: no relay, B starts when A finishes.
    r = simulate(servers, tasks, queue_capacity=4, dispatch="random",
                 schedule="fcfs", uniforms=[0.0, 0.0])
    assert r.server == [0, 0]
    assert r.start == approx([3.0, 5.0])
    assert r.done == approx([6.0, 10.0])


def test_random_dispatch_uses_the_given_uniforms():
    servers = [srv(1, 1, 100, 1.0) for _ in range(3)]
    tasks = [task(1, 0, 100) for _ in range(5)]
    # positions min(floor(u * 3), 2): 1, 0, 2, 1, 2 (u = 1.0 is clamped)
    r = simulate(servers, tasks, queue_capacity=10, dispatch="random",
                 schedule="fcfs", uniforms=[0.5, 0.0, 0.99, 1 / 3, 1.0])
    assert r.server == [1, 0, 2, 1, 2]


def test_random_dispatch_draws_among_feasible_servers_only():
    # S0 is too small for the 5-unit task: feasible = [S1, S2].
    servers = [srv(1, 1, 2, 1.0), srv(1, 1, 100, 1.0), srv(1, 1, 100, 1.0)]
    tasks = [task(5, 0, 100), task(5, 0, 100), task(1, 0, 100)]
    r = simulate(servers, tasks, queue_capacity=10, dispatch="random",
                 schedule="fcfs", uniforms=[0.6, 0.4, 0.4])
    # 0.6 * 2 -> 1 -> S2; 0.4 * 2 -> 0 -> S1; 0.4 * 3 -> 1 -> S1.
    assert r.server == [2, 1, 1]


def test_random_dispatch_consumes_one_uniform_per_dispatch():
    servers = [srv(1, 1, 100, 1.0)]  # a single feasible server still draws
    tasks = [task(1, 0, 100) for _ in range(3)]
    with pytest.raises(ValueError, match="exhausted"):
        simulate(servers, tasks, queue_capacity=10, dispatch="random",
                 schedule="fcfs", uniforms=[0.1, 0.2])
    it = iter([0.1, 0.2, 0.3, 0.4])
    simulate(servers, tasks, queue_capacity=10, dispatch="random",
             schedule="fcfs", uniforms=it)
    assert list(it) == [0.4]


def test_random_dispatch_seed_matches_python_random():
    rng = random.Random(0)
    servers, tasks, q = random_instance(rng)
    a = simulate(servers, tasks, queue_capacity=q, dispatch="random",
                 schedule="sjf", seed=123)
    g = random.Random(123)
    b = simulate(servers, tasks, queue_capacity=q, dispatch="random",
                 schedule="sjf", uniforms=(g.random() for _ in range(len(tasks))))
    assert a == b


@pytest.mark.parametrize("schedule,first", [("fcfs", 1), ("sjf", 2), ("sdf", 3)])
def test_scheduling_heuristics_pick_order(schedule, first):
    # Task 0 occupies the server; 1, 2, 3 are all eligible when it finishes.
    servers = [srv(1, 100, 100, 1.0)]
    tasks = [
        task(1, 0, 100, work=5, job=0),  # runs on [1.01, 6.01)
        task(1, 2, 50, work=3, job=1),  # arrives first at the server (FCFS)
        task(2, 2, 60, work=1, job=1),  # shortest (SJF)
        task(3, 2, 40, work=2, job=1),  # earliest deadline (SDF)
    ]
    r = simulate(servers, tasks, queue_capacity=10, dispatch="nearest", schedule=schedule)
    order = sorted(range(1, 4), key=lambda i: r.start[i])
    assert order[0] == first
    assert r.start[first] == approx(r.finish[0])


def test_ties_go_to_the_lowest_index():
    servers = [srv(1, 1, 100, 1.0), srv(1, 1, 100, 1.0)]
    tasks = [task(1, 0, 10), task(1, 0, 10)]
    r = simulate(servers, tasks, queue_capacity=10, dispatch="nearest", schedule="sdf")
    assert r.server == [0, 0]  # equal k: lowest server index
    assert r.start[0] < r.start[1]  # same deadline and arrival: lowest task
    r = simulate(servers, tasks, queue_capacity=10, dispatch="least_load", schedule="sdf")
    assert r.server == [0, 1]


def test_memory_drift_is_dropped_when_a_server_empties():
    # 5.235 - 1.1 + 1.1 == 5.234999999999999 < 5.235 in binary floating point:
    # an empty server gets exactly its memory back, so the second task fits.
    assert 5.235 - 1.1 + 1.1 < 5.235
    servers = [srv(1, 1, 5.235, 1.0)]
    tasks = [task(1.1, 0, 100), task(5.235, 0, 100)]
    r = simulate(servers, tasks, queue_capacity=2, dispatch="nearest", schedule="fcfs")
    assert r.finish[0] == pytest.approx(3.2)
    assert r.dispatch_time[1] == r.finish[0]  # waited at the AP until the server emptied
    assert r.start[1] == pytest.approx(3.2 + 1.0 + 5.235)


# ---------------------------------------------------------------------------
# Invariants on random instances
# ---------------------------------------------------------------------------


def random_instance(rng: random.Random, max_jobs: int = 5, max_tasks: int = 6):
    m = rng.randint(1, 4)
    servers = [
        srv(rng.uniform(0.5, 3.0), rng.uniform(0.5, 5.0), rng.uniform(3.0, 12.0),
            rng.uniform(0.1, 2.0))
        for _ in range(m)
    ]
    tasks = []
    t = 0.0
    for j in range(rng.randint(1, max_jobs)):
        t += rng.expovariate(0.5)
        base = len(tasks)
        for q in range(rng.randint(1, max_tasks)):
            preds = [base + p for p in range(q) if rng.random() < 0.35]
            tasks.append(task(rng.uniform(0.2, 3.0), t, t + rng.uniform(1.0, 25.0),
                              preds=preds, job=j, work=rng.uniform(0.2, 4.0)))
    return servers, tasks, rng.randint(1, 3)


def check_invariants(servers, tasks, q_cap, schedule, r):
    n_tasks = len(tasks)
    cpu = [s["cpu"] for s in servers]
    k = [s["k"] for s in servers]
    tol = 1e-9
    assert r.num_decisions == 2 * n_tasks
    assert math.ceil(2 * n_tasks / (len(servers) + 1)) <= r.num_steps <= 2 * n_tasks
    assert len(r.epoch_times) == r.num_steps
    assert r.epoch_times[0] == tasks[0]["arrival"]
    assert all(a <= b for a, b in zip(r.epoch_times, r.epoch_times[1:]))
    assert r.end_time == max(r.done)

    elig = []
    for i, tk in enumerate(tasks):
        n = r.server[i]
        assert 0 <= n < len(servers)
        assert math.isfinite(r.start[i])
        assert r.dispatch_time[i] >= tk["arrival"]
        if i:
            assert r.dispatch_time[i] >= r.dispatch_time[i - 1]
        assert r.arrive[i] == (r.dispatch_time[i] + k[n]) + tk["size"] / servers[n]["bw"]
        assert r.finish[i] == r.start[i] + tk["work"] / cpu[n]
        assert r.done[i] == r.finish[i] + k[n]
        assert r.response[i] == r.done[i] - tk["arrival"]
        assert r.missed[i] == (r.done[i] > tk["deadline"])
        assert r.start[i] >= r.arrive[i]
        ready = -math.inf
        for p in tk["preds"]:
            m = r.server[p]
            avail = r.finish[p] if m == n else (r.finish[p] + k[m]) + k[n]
            assert r.start[i] >= avail
            ready = max(ready, avail)
        elig.append(max(r.arrive[i], ready))
        lower = k[n] + tk["size"] / servers[n]["bw"] + tk["work"] / cpu[n] + k[n]
        assert r.response[i] >= lower - tol

    for n in range(len(servers)):
        on_n = sorted((i for i in range(n_tasks) if r.server[i] == n),
                      key=lambda i: (r.start[i], i))
        # no two tasks overlap on a server
        for a, b in zip(on_n, on_n[1:]):
            assert r.start[b] >= r.finish[a]
        for i in on_n:
            # memory and queue slots at i's dispatch (dispatch order = index order)
            t = r.dispatch_time[i]
            held = sum(tasks[j]["size"] for j in on_n if j <= i and r.finish[j] > t)
            assert held <= servers[n]["mem"] + tol
            slots = sum(1 for j in on_n if j <= i and r.start[j] > t)
            assert slots <= q_cap
            # the server never idles while a task is eligible
            cur = elig[i]
            for j in on_n:
                if r.finish[j] <= cur:
                    continue
                if r.start[j] > cur + tol:
                    break
                cur = max(cur, r.finish[j])
            assert cur >= r.start[i] - tol
            # the pick follows the heuristic among the eligible tasks at start
            s = r.start[i]

            def key(j):
                if schedule == "fcfs":
                    return (r.arrive[j], j)
                if schedule == "sjf":
                    return (tasks[j]["work"] / cpu[n], j)
                return (tasks[j]["deadline"], j)

            rivals = [j for j in on_n if elig[j] <= s and r.start[j] >= s]
            assert min(rivals, key=key) == i


@pytest.mark.parametrize("dispatch,schedule", list(itertools.product(DISPATCHERS, SCHEDULERS)))
def test_invariants_on_random_instances(dispatch, schedule):
    rng = random.Random(f"{dispatch}-{schedule}")
    for trial in range(40):
        servers, tasks, q_cap = random_instance(rng)
        r = simulate(servers, tasks, queue_capacity=q_cap, dispatch=dispatch,
                     schedule=schedule, seed=trial)
        check_invariants(servers, tasks, q_cap, schedule, r)


def test_nearest_with_ample_room_uses_the_nearest_server_only():
    rng = random.Random(7)
    servers, tasks, _ = random_instance(rng)
    for s in servers:
        s["mem"] = 1e6
    r = simulate(servers, tasks, queue_capacity=len(tasks), dispatch="nearest",
                 schedule="fcfs")
    nearest = min(range(len(servers)), key=lambda n: (servers[n]["k"], n))
    assert set(r.server) == {nearest}


def test_work_defaults_to_size():
    servers = [srv(2, 1, 10, 1)]
    t = task(3, 0, 100)
    del t["work"]
    r = simulate(servers, [t], queue_capacity=1, dispatch="nearest", schedule="fcfs")
    assert r.finish[0] - r.start[0] == approx(1.5)


def test_two_hundred_tasks_run():
    rng = random.Random(11)
    servers, tasks, q_cap = random_instance(rng, max_jobs=40, max_tasks=10)
    while len(tasks) < 200:
        servers, tasks, q_cap = random_instance(rng, max_jobs=40, max_tasks=10)
    r = simulate(servers, tasks, queue_capacity=q_cap, dispatch="least_load", schedule="sdf")
    check_invariants(servers, tasks, q_cap, "sdf", r)


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------


def run(servers=None, tasks=None, **kw):
    kw.setdefault("queue_capacity", 4)
    kw.setdefault("dispatch", "nearest")
    kw.setdefault("schedule", "fcfs")
    return simulate(EX_SERVERS if servers is None else servers,
                    EX_TASKS if tasks is None else tasks, **kw)


@pytest.mark.parametrize("name", ["nearest_server", "", "LeastLoad"])
def test_unknown_dispatch_name(name):
    with pytest.raises(ValueError, match=repr(name)):
        run(dispatch=name)


@pytest.mark.parametrize("name", ["edf", "FCFS"])
def test_unknown_schedule_name(name):
    with pytest.raises(ValueError, match=repr(name)):
        run(schedule=name)


@pytest.mark.parametrize("q", [0, -1])
def test_queue_capacity_below_one(q):
    with pytest.raises(ValueError, match="queue_capacity"):
        run(queue_capacity=q)


def test_queue_capacity_not_integer():
    with pytest.raises(ValueError, match="queue_capacity"):
        run(queue_capacity=1.5)


def test_pred_not_smaller_than_own_index():
    tasks = [task(1, 0, 10), task(1, 0, 10, preds=[1])]
    with pytest.raises(ValueError, match="task 1.*predecessor 1"):
        run(tasks=tasks)
    tasks = [task(1, 0, 10, preds=[1]), task(1, 0, 10)]
    with pytest.raises(ValueError, match="task 0"):
        run(tasks=tasks)


def test_negative_pred():
    with pytest.raises(ValueError, match="negative"):
        run(tasks=[task(1, 0, 10), task(1, 0, 10, preds=[-1])])


def test_pred_from_another_job():
    tasks = [task(1, 0, 10, job=0), task(1, 1, 10, preds=[0], job=1)]
    with pytest.raises(ValueError, match="another job"):
        run(tasks=tasks)


def test_task_fits_no_server():
    with pytest.raises(ValueError, match="task 1 size.*every server's memory"):
        run(tasks=[task(1, 0, 10), task(101, 0, 10)])


def test_jobs_not_contiguous():
    tasks = [task(1, 0, 10, job=0), task(1, 0, 10, job=1), task(1, 0, 10, job=0)]
    with pytest.raises(ValueError, match="contiguous"):
        run(tasks=tasks)


def test_jobs_out_of_arrival_order():
    with pytest.raises(ValueError, match="nondecreasing"):
        run(tasks=[task(1, 5, 10, job=0), task(1, 1, 10, job=1)])


def test_arrival_differs_inside_a_job():
    with pytest.raises(ValueError, match="job 0"):
        run(tasks=[task(1, 0, 10, job=0), task(1, 1, 10, job=0)])


@pytest.mark.parametrize("key,value", [("cpu", 0), ("bw", -1), ("k", 0),
                                       ("mem", -1), ("cpu", math.nan)])
def test_bad_server_values(key, value):
    servers = [dict(s) for s in EX_SERVERS]
    servers[1][key] = value
    with pytest.raises(ValueError, match=f"server 1 {key}"):
        run(servers=servers)


def test_missing_keys():
    t = task(1, 0, 10)
    del t["deadline"]
    with pytest.raises(ValueError, match="task 0 has no 'deadline'"):
        run(tasks=[t])
    with pytest.raises(ValueError, match="server 0 has no 'k'"):
        run(servers=[{"cpu": 1, "bw": 1, "mem": 1}])


def test_empty_instance():
    with pytest.raises(ValueError, match="server"):
        run(servers=[])
    with pytest.raises(ValueError, match="task"):
        run(tasks=[])


def test_uniforms_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        run(dispatch="random", uniforms=[1.5, 0, 0, 0])
