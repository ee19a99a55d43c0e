"""Tests of the plain-Python reference simulator (envs/reference.py) alone.

Hand-computed episodes check the semantics of docs/model.md exactly; random
instances check invariants that hold whatever the heuristics.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from damdjax.envs.reference import (
    DISPATCHERS,
    SCHEDULERS,
    bound_response,
    contention_free_bound,
    oct_rank,
    simulate,
    upward_rank,
)

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
# The HEFT family (docs/model.md, "Strong baselines"): eft, cp, llf
# ---------------------------------------------------------------------------


def test_eft_counts_an_unstarted_predecessor_and_its_relay():
    # S1 has memory 1, so tasks 0 and 1 (size 2) can only go to S0; all three
    # are dispatched at t = 0, before anything starts. Head task 2 at t = 0:
    #   slot holders of S0 (free[0] = t = 0), in index order:
    #     arrive[0] = (0 + 1) + 2/1 = 3, F[0] = max(3, -inf, 0) + 4/1 = 7
    #     arrive[1] = 3,                 F[1] = max(3, -inf, 7) + 1/1 = 8
    #   S0: A = (0 + 1) + 1/1 = 2, R = F[1] = 8 (same server), B = F[1] = 8
    #       E[0] = (8 + 2/1) + 1 = 11
    #   S1: A = (0 + 0.75) + 1/4 = 1, R = (8 + 1) + 0.75 = 9.75, B = free[1] = 0
    #       E[1] = (9.75 + 2/2) + 0.75 = 11.5
    # -> S0. Ignoring the unstarted predecessor 1 would give E[1] =
    # (1 + 1) + 0.75 = 2.75; dropping the relay, R = 8 and E[1] = 9.75; either
    # way S1 (which Nearest also picks: k = 0.75 < 1).
    servers = [srv(1, 1, 100, 1.0), srv(2, 4, 1, 0.75)]
    tasks = [task(2, 0, 100, work=4), task(2, 0, 100, work=1),
             task(1, 0, 100, preds=[1], work=2)]
    r = simulate(servers, tasks, queue_capacity=4, dispatch="eft", schedule="fcfs")
    assert r.server == [0, 0, 0]
    # The estimate was exact here: 0 on [3, 7), 1 on [7, 8), 2 on [8, 10).
    assert r.start == [3.0, 7.0, 8.0]
    assert r.done == [8.0, 9.0, 11.0]
    assert simulate(servers, tasks, queue_capacity=4, dispatch="nearest",
                    schedule="fcfs").server == [0, 0, 1]


def test_eft_tie_goes_to_the_lowest_server_index():
    # One task (size 1, work 3) at t = 0:
    #   S0 (k 2):          E = (((0 + 2) + 1/1) + 3/1) + 2 = 8
    #   S1 (k 0.5, cpu .75): E = (((0 + 0.5) + 1/1) + 3/0.75) + 0.5 = 6
    #   S2 (k 1, cpu 1):     E = (((0 + 1) + 1/1) + 3/1) + 1 = 6
    # S1 and S2 tie exactly -> S1.
    servers = [srv(1, 1, 100, 2.0), srv(0.75, 1, 100, 0.5), srv(1, 1, 100, 1.0)]
    r = simulate(servers, [task(1, 0, 100, work=3)], queue_capacity=1,
                 dispatch="eft", schedule="fcfs")
    assert r.server == [1]
    assert r.done == [6.0]
    # Swapping S1 and S2 moves the winner with the index, not with the server.
    servers[1], servers[2] = servers[2], servers[1]
    r = simulate(servers, [task(1, 0, 100, work=3)], queue_capacity=1,
                 dispatch="eft", schedule="fcfs")
    assert r.server == [1]
    assert r.done == [6.0]


def test_eft_backlog_of_slot_holders_decides():
    # S0 fast (cpu 4), S1 slow (cpu 1, bw 2); four tasks (size 1, work 4) at t = 0.
    #   On S1 (empty) each would give E = (((0 + 1) + 1/2) + 4/1) + 1 = 6.5.
    #   On S0, A = (0 + 1) + 1/1 = 2 and each holder takes 4/4 = 1:
    #   task 0: B = free = 0            -> E = (max(2, 0) + 1) + 1 = 4   -> S0
    #   task 1: B = F[0] = 2 + 1 = 3    -> E = (3 + 1) + 1 = 5           -> S0
    #   task 2: B = F[1] = max(2, 3) + 1 = 4 -> E = (4 + 1) + 1 = 6      -> S0
    #   task 3: B = F[2] = 5            -> E = (5 + 1) + 1 = 7 > 6.5     -> S1
    # Without B, or with B the F of the *lowest* slot holder (3), task 3
    # would stay on S0 (E = 4 or 5).
    servers = [srv(4, 1, 100, 1.0), srv(1, 2, 100, 1.0)]
    tasks = [task(1, 0, 100, work=4) for _ in range(4)]
    r = simulate(servers, tasks, queue_capacity=4, dispatch="eft", schedule="fcfs")
    assert r.server == [0, 0, 0, 1]
    assert r.done == [4.0, 5.0, 6.0, 6.5]


def test_eft_backlog_of_the_running_task_decides():
    # S0 (cpu 2, bw 1), S1 (cpu 1, bw 2), k = 1 both.
    # t = 0, task 0 (work 8): E[0] = (((0+1) + 1/1) + 8/2) + 1 = 7,
    #   E[1] = (((0+1) + 1/2) + 8/1) + 1 = 10.5 -> S0, runs on [2, 6).
    # t = 3, task 1 (work 2): free[0] = finish[0] = 6, no slot holders:
    #   S0: A = (3+1) + 1 = 5, B = 6   -> E = (6 + 2/2) + 1 = 8
    #   S1: A = (3+1) + 0.5 = 4.5, B = 3 -> E = (4.5 + 2/1) + 1 = 7.5 -> S1.
    # Taking free[0] = t for a busy server would give E[0] = (5 + 1) + 1 = 7.
    servers = [srv(2, 1, 100, 1.0), srv(1, 2, 100, 1.0)]
    tasks = [task(1, 0, 100, work=8), task(1, 3, 100, work=2, job=1)]
    r = simulate(servers, tasks, queue_capacity=4, dispatch="eft", schedule="fcfs")
    assert r.server == [0, 1]
    assert r.start == [2.0, 4.5]
    assert r.done == [7.0, 7.5]


# Three servers, everything goes to S0 under Nearest (k = 0.5). Task 0 runs on
# S0 over [1.5, 6); job 1 (tasks 1-5) arrives at 1 and reaches S0 at
# (1 + 0.5) + size = 2.5, 3.5, 4.5, 5.5, 2.5: at t = 6, tasks 1-4 are eligible
# (5 waits for its predecessor 4).
CP_SERVERS = [srv(1, 1, 100, 0.5), srv(2, 1, 100, 1.5), srv(2, 1, 100, 1.0)]
CP_TASKS = [
    task(1, 0, 100, work=4.5, job=0),
    task(1, 1, 50, work=3, job=1),  # first to arrive (FCFS)
    task(2, 1, 60, work=1.5, job=1),  # shortest (SJF)
    task(3, 1, 40, work=4.5, job=1),  # earliest deadline (SDF)
    task(4, 1, 70, work=3, job=1),  # the head of the critical path 4 -> 5
    task(1, 1, 100, preds=[4], work=6, job=1),
]


def test_upward_rank_by_hand():
    # wbar[i] = (w/1 + w/2 + w/2) / 3: w = 4.5 -> 9/3 = 3, 3 -> 6/3 = 2,
    # 1.5 -> 3/3 = 1, 6 -> 12/3 = 4. cbar = 2 * ((0.5 + 1.5 + 1.0) / 3) = 2
    # (the sum of k would be 3, the mean 1).
    # rank[5] = 4; rank[4] = 2 + (2 + 4) = 8; the others have no successor.
    assert upward_rank(CP_SERVERS, CP_TASKS) == [3.0, 2.0, 1.0, 3.0, 8.0, 4.0]


def test_upward_rank_single_server_has_no_relay():
    # M = 1: cbar = 0 (2 * mean(k) would be 1). wbar = w / 2.
    # rank[3] = 4/2 = 2; rank[1] = 2/2 + (0 + 2) = 3; rank[2] = 6/2 = 3;
    # rank[0] = 9/2 = 4.5.
    servers = [srv(2, 1, 100, 0.5)]
    tasks = [task(1, 0, 100, work=9), task(2, 1, 100, work=2, job=1),
             task(1, 1, 100, work=6, job=1), task(1, 1, 100, preds=[1], work=4, job=1)]
    assert upward_rank(servers, tasks) == [4.5, 3.0, 3.0, 2.0]
    # A rank tie goes to the lowest task index: 0 runs on [1.5, 6); at 6
    # tasks 1 and 2 (rank 3 both) are eligible, and 1 starts although 2
    # reached the server first ((1 + 0.5) + 1 = 2.5 < 3.5). At 7, 2 (rank 3)
    # beats 3 (rank 2, its input ready at 7).
    r = simulate(servers, tasks, queue_capacity=4, dispatch="nearest", schedule="cp")
    assert r.start == [1.5, 6.0, 7.0, 10.0]
    assert simulate(servers, tasks, queue_capacity=4, dispatch="nearest",
                    schedule="fcfs").start[2] == 6.0


def test_upward_rank_sums_left_to_right():
    # work/cpu over the servers is (1e16, 1, 1); k is (1e16, 1, 1).
    servers = [srv(1, 1, 100, 1e16), srv(1e16, 1, 100, 1.0), srv(1e16, 1, 100, 1.0)]
    tasks = [task(1, 0, 100, work=1e16), task(1, 0, 100, preds=[0], work=1e16)]
    wbar = ((1e16 + 1.0) + 1.0) / 3
    cbar = 2.0 * (((1e16 + 1.0) + 1.0) / 3)
    assert wbar != (1e16 + (1.0 + 1.0)) / 3  # the order matters here
    assert upward_rank(servers, tasks) == [wbar + (cbar + wbar), wbar]


def test_cp_starts_the_highest_rank_first():
    # Ranks 3, 2, 1, 3, 8, 4 (above). At 6: 4 (rank 8) on [6, 9); at 9: 5
    # (rank 4, input ready at 9) on [9, 15); at 15: 3 (rank 3) on [15, 19.5);
    # then 1 (rank 2) on [19.5, 22.5), then 2 (rank 1).
    r = simulate(CP_SERVERS, CP_TASKS, queue_capacity=10, dispatch="nearest",
                 schedule="cp")
    assert r.server == [0] * 6
    assert r.start == [1.5, 19.5, 22.5, 15.0, 6.0, 9.0]
    # FCFS, SJF and SDF start 1, 2 and 3 at 6 instead.
    for schedule, first in [("fcfs", 1), ("sjf", 2), ("sdf", 3)]:
        other = simulate(CP_SERVERS, CP_TASKS, queue_capacity=10,
                         dispatch="nearest", schedule=schedule)
        assert other.start[first] == 6.0


def test_llf_starts_the_least_laxity_first():
    # One server (cpu 1, bw 1, k 0.5): 0 runs on [1.5, 6); 1, 2, 3 reach it at
    # 3.5, 4.5, 2.5. Laxity (deadline - t) - work at t = 6:
    #   1: (20 - 6) - 1 = 13   (earliest deadline, shortest: SDF's and SJF's)
    #   2: (22 - 6) - 6 = 10   <- least laxity, on [6, 12)
    #   3: (30 - 6) - 3 = 21   (first to arrive: FCFS's)
    # at 12: 1: (20 - 12) - 1 = 7 < 3: (30 - 12) - 3 = 15 -> 1 on [12, 13), 3 at 13.
    servers = [srv(1, 1, 100, 0.5)]
    tasks = [task(1, 0, 100, work=4.5), task(2, 1, 20, work=1, job=1),
             task(3, 1, 22, work=6, job=1), task(1, 1, 30, work=3, job=1)]
    r = simulate(servers, tasks, queue_capacity=4, dispatch="nearest", schedule="llf")
    assert r.start == [1.5, 12.0, 6.0, 13.0]
    for schedule, first in [("fcfs", 3), ("sjf", 1), ("sdf", 1)]:
        other = simulate(servers, tasks, queue_capacity=4, dispatch="nearest",
                         schedule=schedule)
        assert other.start[first] == 6.0


def test_llf_tie_goes_to_the_lowest_task_index():
    # At 6: 1: (20 - 6) - 2 = 12, 2: (19 - 6) - 1 = 12: a tie, so 1 starts
    # although 2 arrived first ((1 + 0.5) + 1 = 2.5 < 3.5), is shorter and has
    # the earlier deadline.
    servers = [srv(1, 1, 100, 0.5)]
    tasks = [task(1, 0, 100, work=4.5), task(2, 1, 20, work=2, job=1),
             task(1, 1, 19, work=1, job=1)]
    r = simulate(servers, tasks, queue_capacity=4, dispatch="nearest", schedule="llf")
    assert r.start == [1.5, 6.0, 8.0]


# ---------------------------------------------------------------------------
# The contention-free bound
# ---------------------------------------------------------------------------


def test_contention_free_bound_by_hand():
    # S0: cpu 1, bw 4, k 0.5; S1: cpu 4, bw 1, k 1. Every task arrives at 1.
    # (columns: server 0 | server 1)
    # task 0 (size 1, work 8):
    #   up = (1 + 0.5) + 1/4 = 1.75 | (1 + 1) + 1/1 = 3
    #   f  = 1.75 + 8/1 = 9.75      | 3 + 8/4 = 5
    #   bound_done = min(9.75 + 0.5, 5 + 1) = 6
    # task 1 (size 6, work 1, preds 0):
    #   up = (1 + 0.5) + 6/4 = 3    | (1 + 1) + 6/1 = 8
    #   R  = min(9.75, (5 + 1) + 0.5) = 6.5  <- relayed from S1
    #                               | min((9.75 + 0.5) + 1, 5) = 5
    #   f  = max(3, 6.5) + 1/1 = 7.5 | max(8, 5) + 1/4 = 8.25
    #   bound_done = min(7.5 + 0.5, 8.25 + 1) = 8
    #   (dropping the relay: R = 5, f = 6 and bound_done = 6.5)
    # task 2 (size 1, work 4, preds 0 and 1):
    #   up = 1.75                   | 3
    #   R  = max(6.5, min(7.5, (8.25 + 1) + 0.5)) = 7.5
    #                               | max(5, min((7.5 + 0.5) + 1, 8.25)) = 8.25
    #   f  = 7.5 + 4/1 = 11.5       | 8.25 + 4/4 = 9.25
    #   bound_done = min(11.5 + 0.5, 9.25 + 1) = 10.25
    #   Task 1 counts on S1 here (8.25) although its own best is S0: counting
    #   it on S0 for every successor would give (7.5 + 0.5) + 1 = 9 and 11.
    servers = [srv(1, 4, 100, 0.5), srv(4, 1, 100, 1.0)]
    tasks = [task(1, 1, 100, work=8), task(6, 1, 100, preds=[0], work=1),
             task(1, 1, 100, preds=[0, 1], work=4)]
    assert contention_free_bound(servers, tasks) == [6.0, 8.0, 10.25]
    # ((6 - 1) + (8 - 1) + (10.25 - 1)) / 3
    assert bound_response(servers, tasks) == 21.25 / 3
    for dispatch, schedule in itertools.product(DISPATCHERS, SCHEDULERS):
        r = simulate(servers, tasks, queue_capacity=4, dispatch=dispatch,
                     schedule=schedule, seed=0)
        assert all(d >= b for d, b in zip(r.done, [6.0, 8.0, 10.25]))


def test_bound_is_met_without_contention():
    # A chain on one server with room for all: nothing ever waits but for its
    # inputs, so every method reaches the bound exactly (same float order).
    servers = [srv(1.5, 0.7, 1000, 0.3)]
    tasks = [task(0.3 + 0.1 * i, 2.5, 100, preds=[i - 1] if i else [], work=0.7 * i + 0.2)
             for i in range(5)]
    bound = contention_free_bound(servers, tasks)
    for dispatch, schedule in itertools.product(DISPATCHERS, SCHEDULERS):
        r = simulate(servers, tasks, queue_capacity=5, dispatch=dispatch,
                     schedule=schedule, seed=0)
        assert r.done == bound
    # One task: EFT takes the bound's best server, and its estimate is exact.
    rng = random.Random(5)
    for _ in range(20):
        servers, tasks, q = random_instance(rng)
        one = [dict(tasks[0], preds=[])]
        assert simulate(servers, one, queue_capacity=q, dispatch="eft",
                        schedule="fcfs").done == contention_free_bound(servers, one)


def test_every_method_stays_above_the_bound():
    rng = random.Random("bound")
    for trial in range(8):
        servers, tasks, q_cap = random_instance(rng)
        bound = contention_free_bound(servers, tasks)
        assert len(bound) == len(tasks)
        total = 0.0
        for i, b in enumerate(bound):
            assert tasks[i]["arrival"] < b < math.inf
            total += b - tasks[i]["arrival"]
        assert bound_response(servers, tasks) == total / len(tasks)
        for dispatch, schedule in itertools.product(DISPATCHERS, SCHEDULERS):
            r = simulate(servers, tasks, queue_capacity=q_cap, dispatch=dispatch,
                         schedule=schedule, seed=trial)
            for i in range(len(tasks)):
                assert r.done[i] >= bound[i], (trial, dispatch, schedule, i)
            assert r.metrics["avg_response_time"] >= bound_response(servers, tasks) - 1e-9


def test_bound_and_rank_validate_their_input():
    bad = [task(1, 0, 10), task(1, 0, 10, preds=[1])]
    for fn in (contention_free_bound, bound_response, upward_rank):
        with pytest.raises(ValueError, match="predecessor"):
            fn(EX_SERVERS, bad)
        with pytest.raises(ValueError, match="server"):
            fn([], EX_TASKS)
        with pytest.raises(ValueError, match="server 1 cpu"):
            fn([EX_SERVERS[0], srv(0, 1, 100, 1)], EX_TASKS)


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
    rank = {"cp": upward_rank, "oct": oct_rank}.get(schedule, lambda *_: None)(servers, tasks)

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
                if schedule in ("cp", "oct"):
                    return (-rank[j], j)
                if schedule == "llf":
                    return ((tasks[j]["deadline"] - s) - tasks[j]["work"] / cpu[n], j)
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
