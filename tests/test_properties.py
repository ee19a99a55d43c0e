"""Property tests: invariants of the model that hold for any instance and policy.

Hypothesis draws the generator's knobs (EnvParams), a seed, a heuristic pair
and a queue capacity; a small batch of instances is generated with the jitted
generator and played step by step in Python (one jitted, vmapped step per
epoch), so that every intermediate state can be checked. Checked at every
step: memory never negative nor oversubscribed, queues consistent with the
tasks that hold a slot, the clock never going back, progress in every step.
Checked on the finished schedule: every real task dispatched (in index order)
and started exactly once, never before it reaches its server (D1) nor before
every predecessor's result is available there (D3), never more than Q slots
or more memory than the server has in use at any epoch, T_i >= D1 +
processing + D2, the episode done without truncation in at most 2N steps, and
the summed team reward equal to -(total response)/tau - penalty * misses.

Times are float64 here (jax.enable_x64), compared with a 1e-9 tolerance.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st

from damdjax import heuristics as H
from damdjax.envs.config import EnvConfig, EnvParams, check_params
from damdjax.envs.dynamics import reset_to_instance, transition
from damdjax.envs.generator import generate
from damdjax.envs.state import Action, unstarted_tasks
from damdjax.envs.times import is_set

CONFIG = EnvConfig(n_max=24, m_max=5, p_max=3, queue_capacity=2, j_max=6)
BATCH = 4
TOL = 1e-9
DISPATCHES = ("nearest", "least_load", "random")
SCHEDULES = ("fcfs", "sjf", "sdf")

SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: keep the time bounded
    suppress_health_check=(HealthCheck.too_slow,))


@pytest.fixture(scope="module", autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@functools.lru_cache(maxsize=None)
def batched_generate():
    return jax.jit(jax.vmap(lambda key, params: generate(key, CONFIG, params),
                            in_axes=(0, None)))


@functools.lru_cache(maxsize=None)
def batched_reset(queue_capacity):
    return jax.jit(jax.vmap(lambda inst: reset_to_instance(inst, queue_capacity)))


@functools.lru_cache(maxsize=None)
def batched_step():
    """jit(vmap((state, key, pair id) -> (state, reward, info)))."""
    dispatch_rules = [H.DISPATCH_RULES[d] for d in DISPATCHES]
    schedule_rules = [H.SCHEDULE_RULES[s] for s in SCHEDULES]

    def one(state, key, pid, tau, penalty):
        k_d, k_s = jax.random.split(key)
        action = Action(
            dispatch=jnp.stack([rule(k_d, state) for rule in dispatch_rules])[pid // 3],
            picks=jnp.stack([rule(k_s, state) for rule in schedule_rules])[pid % 3])
        return transition(state, action, tau, penalty)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, None)))


@st.composite
def env_params(draw, mem_margin=0.0):
    """EnvParams that pass check_params (mem_low >= size_high + mem_margin)."""
    size_low = draw(st.floats(0.05, 3.0))
    size_high = size_low + draw(st.floats(0.0, 4.0))
    mem_low = size_high + mem_margin + draw(st.floats(0.0, 8.0))
    cpu_low = draw(st.floats(0.2, 3.0))
    bw_low = draw(st.floats(0.5, 20.0))
    k_low = draw(st.floats(0.01, 1.0))
    return EnvParams(
        num_tasks=draw(st.integers(1, CONFIG.n_max)),
        num_servers=draw(st.integers(1, CONFIG.m_max)),
        density=draw(st.floats(0.05, 200.0)),
        slack=draw(st.floats(0.2, 5.0)),
        cpu_low=cpu_low, cpu_high=cpu_low + draw(st.floats(0.0, 3.0)),
        bw_low=bw_low, bw_high=bw_low + draw(st.floats(0.0, 20.0)),
        mem_low=mem_low, mem_high=mem_low + draw(st.floats(0.0, 10.0)),
        k_low=k_low, k_high=k_low + draw(st.floats(0.0, 2.0)),
        size_low=size_low, size_high=size_high,
        # (no subnormal penalty: check_params refuses a value the device would flush to 0)
        tau=draw(st.floats(0.5, 50.0)),
        miss_penalty=draw(st.floats(0.0, 5.0, allow_subnormal=False)))


def play(params, seed, pid, queue_capacity):
    """Generate BATCH instances and play them epoch by epoch.

    Returns `(states, infos, rewards)`: `states[s]` is the batched state before
    step `s` (numpy), the last one the final state; `infos[s]`, `rewards[s]`
    those of step `s`.
    """
    check_params(CONFIG, params)
    key_gen, key_run = jax.random.split(jax.random.PRNGKey(seed))
    instances = batched_generate()(jax.random.split(key_gen, BATCH), params)
    state = batched_reset(queue_capacity)(instances)
    step = batched_step()
    states, infos, rewards = [jax.device_get(state)], [], []
    for _ in range(CONFIG.max_steps + 1):
        if states[-1].done.all():
            break
        key_run, sub = jax.random.split(key_run)
        state, reward, info = step(state, jax.random.split(sub, BATCH), pid,
                                   params.tau, params.miss_penalty)
        host = jax.device_get((state, reward, info))
        states.append(host[0])
        rewards.append(host[1])
        infos.append(host[2])
    return states, infos, rewards


def pick(tree, b):
    return jax.tree_util.tree_map(lambda x: x[b], tree)


def check_step_invariants(before, after, info, queue_capacity, where):
    """Invariants of one (unbatched) step `before -> after`."""
    inst = after.instance
    real_srv = np.asarray(inst.server_mask)
    size = np.asarray(inst.size)
    if before.done:
        assert not info["newly_done"].any() and info["dispatched_task"] == -1, where
        return
    assert after.time >= before.time, f"{where}: the clock went back"
    progress = ((after.server >= 0).sum() + is_set(after.start).sum()
                - (before.server >= 0).sum() - is_set(before.start).sum())
    assert progress >= 1, f"{where}: a step dispatched and started nothing"
    # Memory: never negative, and exactly what the queued and running tasks hold.
    assert (after.mem_free[real_srv] >= 0).all(), f"{where}: negative memory {after.mem_free}"
    queue = after.queue
    assert queue.shape[1] == queue_capacity
    for n in range(queue.shape[0]):
        held = [int(i) for i in queue[n] if i >= 0]
        if not real_srv[n]:
            assert not held and after.running[n] == -1, f"{where}: padded server {n} used"
            continue
        assert len(held) == len(set(held)) <= queue_capacity, where
        waiting = np.flatnonzero((after.server == n) & ~is_set(after.start))
        assert sorted(held) == waiting.tolist(), (
            f"{where}: server {n} queue {held}, tasks holding a slot {waiting.tolist()}")
        r = int(after.running[n])
        if r >= 0:
            assert after.server[r] == n and after.start[r] <= after.time < after.finish[r], where
        # Every task of n that finished by now is no longer running.
        gone = (after.server == n) & (after.finish <= after.time)
        assert r < 0 or not gone[r], where
        in_use = size[held].sum() + (size[r] if r >= 0 else 0.0)
        assert in_use <= inst.mem[n] + TOL, f"{where}: server {n} holds {in_use} > {inst.mem[n]}"
        assert abs(after.mem_free[n] - (inst.mem[n] - in_use)) <= TOL, (
            f"{where}: server {n} mem_free {after.mem_free[n]}, holds {in_use} of {inst.mem[n]}")


def check_episode(states, infos, rewards, b, params, queue_capacity):
    where = f"episode {b}"
    final = pick(states[-1], b)
    inst = final.instance
    real = np.asarray(inst.task_mask)
    n = int(real.sum())
    assert n == params.num_tasks and real[:n].all()
    steps = int(final.step)
    # Ends cleanly, in at most 2N steps.
    assert bool(final.done), f"{where}: not done after {steps} steps"
    assert not bool(final.truncated) and int(unstarted_tasks(final)) == 0, (
        f"{where}: truncated or tasks stranded after {steps} steps; sizes {inst.size[:n].max()} "
        f"memories {inst.mem[inst.server_mask]}")
    assert steps <= 2 * n, f"{where}: {steps} steps for {n} tasks"
    # Dispatched in index order, each exactly once; started exactly once.
    dispatched = [int(info["dispatched_task"][b]) for info in infos[:steps]]
    dispatched = [i for i in dispatched if i >= 0]
    assert dispatched == list(range(n)), f"{where}: dispatch order {dispatched}"
    # The heuristics only ever choose within the masks.
    assert not any(bool(info["invalid_dispatch"][b]) for info in infos), where
    assert not any(int(info["invalid_picks"][b]) for info in infos), where
    started = np.concatenate([info["started_tasks"][b] for info in infos[:steps]])
    started = np.sort(started[started >= 0])
    assert started.tolist() == list(range(n)), f"{where}: started {started.tolist()}"
    for s in range(len(infos)):
        check_step_invariants(pick(states[s], b), pick(states[s + 1], b),
                              pick(infos[s], b), queue_capacity, f"{where} step {s}")

    server = final.server[:n]
    assert ((server >= 0) & (server < params.num_servers)).all(), server
    assert (final.server[n:] == -1).all() and not is_set(final.start[n:]).any()
    k, bw, cpu = inst.k[server], inst.bw[server], inst.cpu[server]
    size, work, arrival = inst.size[:n], inst.work[:n], inst.arrival[:n]
    start, finish, arrive = final.start[:n], final.finish[:n], final.arrive[:n]
    epoch = np.array([pick(state, b).time for state in states[:-1]])  # time of step s
    d_step = final.dispatch_step[:n]
    t_dispatch = epoch[d_step]
    start_step = np.array([next(s for s in range(steps) if i in infos[s]["started_tasks"][b])
                           for i in range(n)], int).reshape(n)  # the step that started i
    assert (epoch[start_step] == start).all(), f"{where}: tasks start at their epoch"
    assert (t_dispatch >= arrival).all(), f"{where}: dispatched before its job arrived"
    # D1, processing, D2.
    np.testing.assert_allclose(arrive, (t_dispatch + k) + size / bw, rtol=0, atol=TOL)
    assert (start >= arrive - TOL).all(), f"{where}: started before reaching the server"
    np.testing.assert_allclose(finish, start + work / cpu, rtol=0, atol=TOL)
    done = finish + k
    response = done - arrival
    assert (response >= k + size / bw + work / cpu + k - TOL).all(), where
    # D3: every predecessor's result is available at the task's server.
    for i in range(n):
        for p in inst.preds[i]:
            if p < 0:
                continue
            assert p < i and inst.job[p] == inst.job[i], where
            avail = finish[p] if server[p] == server[i] else (finish[p] + k[p]) + k[i]
            assert start[i] >= avail - TOL, (
                f"{where}: task {i} on {server[i]} starts at {start[i]} before the result "
                f"of {p} (server {server[p]}) is there at {avail}")
    # Slots and memory, rebuilt from the schedule at every epoch: a task holds a
    # slot from its dispatch step to its start step, memory until it finishes.
    for s in range(steps):
        for m in range(params.num_servers):
            on = server == m
            slots = on & (d_step <= s) & (start_step >= s)
            assert slots.sum() <= queue_capacity, f"{where}: server {m} step {s} slots"
            held = on & (d_step <= s) & (finish > epoch[s])
            assert size[held].sum() <= inst.mem[m] + TOL, f"{where}: server {m} step {s} mem"
    # The summed team reward.
    total = sum(float(r[b]) for r in rewards)
    misses = int((done > inst.deadline[:n]).sum())
    expected = -response.sum() / params.tau - params.miss_penalty * misses
    assert total == pytest.approx(expected, rel=1e-9, abs=1e-9), where
    # The dispatcher credit: each task's result is reported once, with its T_i.
    newly = np.stack([info["newly_done"][b] for info in infos])
    assert (newly.sum(axis=0)[:n] == 1).all() and not newly[:, n:].any()
    reported = np.stack([info["response_time"][b] for info in infos]).sum(axis=0)[:n]
    np.testing.assert_allclose(reported, response, rtol=0, atol=TOL)


# Known generator bug (see test_generated_instances_are_well_formed and
# tests/test_env_api.py::test_generator_task_always_fits_some_server): sizes are
# rounded to the nearest 1/64, up to 1/128 above size_high, so with mem_low ==
# size_high a task can fit no server and the episode ends with it stranded. The margin
# here keeps that one known failure from hiding every other invariant.
@SETTINGS
@given(params=env_params(mem_margin=1 / 64), seed=st.integers(0, 2**31 - 1),
       pid=st.integers(0, 8), queue_capacity=st.sampled_from([1, 3]))
def test_episode_invariants(params, seed, pid, queue_capacity):
    note(f"params={params} pair={DISPATCHES[pid // 3]}+{SCHEDULES[pid % 3]}")
    states, infos, rewards = play(params, seed, pid, queue_capacity)
    for b in range(BATCH):
        check_episode(states, infos, rewards, b, params, queue_capacity)


@SETTINGS
@given(params=env_params(), seed=st.integers(0, 2**31 - 1))
def test_generated_instances_are_well_formed(params, seed):
    check_params(CONFIG, params)
    inst = jax.device_get(batched_generate()(
        jax.random.split(jax.random.PRNGKey(seed), BATCH), params))
    for b in range(BATCH):
        i = pick(inst, b)
        n, m = params.num_tasks, params.num_servers
        assert i.task_mask.tolist() == [t < n for t in range(CONFIG.n_max)]
        assert i.server_mask.tolist() == [s < m for s in range(CONFIG.m_max)]
        assert (i.arrival[:n] >= 0).all() and (np.diff(i.arrival[:n]) >= 0).all()
        assert (i.deadline[:n] > i.arrival[:n]).all()
        assert (np.diff(i.job[:n]) >= 0).all() and (np.diff(i.job[:n]) <= 1).all()
        for t in range(n):
            preds = [int(p) for p in i.preds[t] if p >= 0]
            assert len(set(preds)) == len(preds) <= CONFIG.p_max
            assert all(p < t and i.job[p] == i.job[t] for p in preds)
            assert t - min(preds, default=t) <= CONFIG.succ_window
        k = i.k[:m]
        assert ((k >= params.k_low - TOL) & (k <= params.k_high + TOL)).all()
        assert ((i.mem[:m] >= params.mem_low - TOL) & (i.mem[:m] <= params.mem_high + TOL)).all()
        assert (i.size[:n] > 0).all() and (i.work[:n] == i.size[:n]).all()
        assert (i.size[:n] * 64 == np.round(i.size[:n] * 64)).all()  # multiples of 1/64


@SETTINGS
@given(params=env_params(), seed=st.integers(0, 2**31 - 1))
@example(params=EnvParams(num_tasks=1, num_servers=1, size_low=2.7452224205946263,
                          size_high=2.7452224205946263, mem_low=2.7452224205946263,
                          mem_high=2.7452224205946263), seed=0)  # found by Hypothesis
def test_generated_tasks_fit_some_server(params, seed):
    """check_params promises that every generated task fits some server.

    FAILS at the time of writing: the generator rounds sizes to the nearest
    1/64, up to 1/128 above size_high, so with mem_low == size_high (accepted by
    check_params) a task can be larger than every server's memory; its episode
    then ends at once with the task stranded (see test_env_api for a minimal case).
    """
    check_params(CONFIG, params)
    inst = jax.device_get(batched_generate()(
        jax.random.split(jax.random.PRNGKey(seed), BATCH), params))
    n, m = params.num_tasks, params.num_servers
    for b in range(BATCH):
        size, mem = inst.size[b, :n], inst.mem[b, :m]
        assert size.max() <= mem.max(), (
            f"a task of size {size.max()} fits no server (memories {mem}; "
            f"size_high={params.size_high}, mem_low={params.mem_low})")
