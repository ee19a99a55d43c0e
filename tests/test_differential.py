"""Differential tests: the JAX environment against the plain-Python reference.

Both simulators follow docs/model.md and evaluate its formulas in the same
order, so in float64 they must agree on every task's server (exactly), its
arrival at the server, start, finish and result time (to 1e-9), the number of
steps (epochs), the episode metrics, and the summed team reward, which is
`-(sum of response times)/tau - penalty * misses`. Every pair of the paper's and
the HEFT family's rules runs (4 dispatch x 5 scheduling rules). The contention-free
bound is checked too: the JAX bound equals the reference's, and no task of any
pair ever has its result back before its bound. So are the instances' upward ranks.

The JAX side runs whole batches at once: one jitted, vmapped
`damdjax.rollout.run_from_instance` per queue capacity, with the heuristic
pair chosen per episode (every pair's action is computed, one is selected), so
all scenarios share a handful of compilations. The random pairs are checked
twice: through the rollout (the uniforms it drew are rebuilt from its keys)
and through an explicit Python episode loop that draws each `u` itself and
feeds the same list to the reference's `uniforms`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from damdjax import heuristics as H
from damdjax.bound import bound_done
from damdjax.metrics import episode_metrics
from damdjax.rollout import run_from_instance
from damdjax.envs.config import EnvConfig, EnvParams, check_params
from damdjax.envs.dynamics import dispatch_feasible, dispatch_needed, reset_to_instance, transition
from damdjax.envs.generator import generate
from damdjax.envs.instance import instance_from_arrays, instance_to_arrays, successor_list
from damdjax.envs.reference import contention_free_bound, simulate, upward_rank
from damdjax.envs.state import Action
from damdjax.envs.times import is_set

TAU = 7.0  # not the defaults, so a confusion of constants shows
PENALTY = 2.5
REWARDS = EnvParams(tau=TAU, miss_penalty=PENALTY)  # the env params of the JAX episodes
DISPATCHES = ("nearest", "least_load", "random", "eft")
SCHEDULES = ("fcfs", "sjf", "sdf", "cp", "llf")
# Every combination; among them the paper's NF, RS (random+sjf) and LS
# (least_load+sdf), and NS (nearest+sjf), LF (least_load+fcfs), EC (eft+cp).
PAIRS = tuple(f"{d}+{s}" for d in DISPATCHES for s in SCHEDULES)
TOL = 1e-9

# Every scenario shares one padding (the default EnvConfig's N, M, P, with a wider
# successor window W for the hand-made fan-outs), so that the whole file needs one
# compilation of the episode per queue capacity (Q = 16, the default, and 1, 2).
CONFIG = EnvConfig()
N_MAX, M_MAX, P_MAX, W = CONFIG.n_max, CONFIG.m_max, CONFIG.p_max, 24
Q_DEFAULT = CONFIG.queue_capacity
SMALL_PARAMS = EnvParams(num_tasks=40, num_servers=5)
CHUNK = 160  # episodes per call of the compiled batch (8 instances x 20 pairs)


@pytest.fixture(scope="module", autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------
# JAX side
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def batched_run(queue_capacity: int):
    """jit(vmap((key, instance, pair id) -> (state, total reward, metrics))).

    The pair is chosen at run time among every dispatch rule and every
    scheduling rule of damdjax.heuristics, with the keys split exactly as
    `heuristics.pair` splits them.
    """
    dispatch_rules = [H.DISPATCH_RULES[d] for d in DISPATCHES]
    schedule_rules = [H.SCHEDULE_RULES[s] for s in SCHEDULES]

    def one(key, instance, pid):
        def policy(k, state):
            k_d, k_s = jax.random.split(k)  # as heuristics.pair
            dispatch = jnp.stack([rule(k_d, state) for rule in dispatch_rules])[pid // len(SCHEDULES)]
            picks = jnp.stack([rule(k_s, state) for rule in schedule_rules])[pid % len(SCHEDULES)]
            return Action(dispatch=dispatch, picks=picks)

        state, total = run_from_instance(key, instance, policy, queue_capacity, REWARDS)
        return state, total, episode_metrics(state)

    return jax.jit(jax.vmap(one))


@functools.lru_cache(maxsize=None)
def rollout_uniforms(num_steps: int):
    """The `u` that `random_server` draws at each step of `run_from_instance`."""
    def one(key):
        def body(key, _):
            key, k_act = jax.random.split(key)  # run_from_instance
            k_d, _ = jax.random.split(k_act)  # heuristics.pair
            return key, jax.random.uniform(k_d)  # heuristics.random_server
        return jax.lax.scan(body, key, None, length=num_steps)[1]
    return jax.jit(jax.vmap(one))


@functools.lru_cache(maxsize=None)
def batched_generate():
    def one(key, params):
        inst = generate(key, CONFIG, params)
        # Re-pad the successor list to the shared width.
        return inst.replace(succ=successor_list(inst.preds, W, W))
    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def generated(seed: int, count: int, params: EnvParams):
    """`count` (<= 32) instances; always 32 drawn, so the generator compiles once."""
    check_params(CONFIG, params)
    keys = jax.random.split(jax.random.PRNGKey(seed), 32)
    return jax.tree_util.tree_map(lambda x: x[:count], batched_generate()(keys, params))


def stack(instances):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *instances)


def hand_instance(servers, tasks):
    """Pad a hand-made instance (reference format, global preds) to the shared shapes."""
    m, n = len(servers), len(tasks)
    assert m <= M_MAX and n <= N_MAX
    arrays = {key: np.ones(M_MAX) for key in ("cpu", "bw", "mem", "k")}
    for key in arrays:
        arrays[key][:m] = [s[key] for s in servers]
    arrays["server_mask"] = np.arange(M_MAX) < m
    for key, pad in (("size", 0.0), ("work", 0.0), ("arrival", np.inf), ("deadline", np.inf)):
        arrays[key] = np.full(N_MAX, pad)
        arrays[key][:n] = [t[key] for t in tasks]
    arrays["preds"] = np.full((N_MAX, P_MAX), -1, np.int32)
    for i, t in enumerate(tasks):
        assert all(i - p <= W for p in t["preds"])
        arrays["preds"][i, :len(t["preds"])] = t["preds"]
    arrays["task_mask"] = np.arange(N_MAX) < n
    arrays["job"] = np.full(N_MAX, -1, np.int32)
    arrays["job"][:n] = [t["job"] for t in tasks]
    return instance_from_arrays(arrays, window=W, dtype=jnp.float64, fan_out=W)


# ---------------------------------------------------------------------------
# Reference side and the comparison
# ---------------------------------------------------------------------------


def reference_inputs(arrays, b):
    """Servers and tasks of episode `b` of a batch, as the reference takes them."""
    a = {key: value[b] for key, value in arrays.items()}
    servers = [dict(cpu=float(a["cpu"][n]), bw=float(a["bw"][n]), mem=float(a["mem"][n]),
                    k=float(a["k"][n])) for n in np.flatnonzero(a["server_mask"])]
    assert a["server_mask"][:len(servers)].all(), "real servers must come first"
    tasks = [dict(size=float(a["size"][i]), work=float(a["work"][i]),
                  arrival=float(a["arrival"][i]), deadline=float(a["deadline"][i]),
                  preds=[int(p) for p in a["preds"][i] if p >= 0], job=int(a["job"][i]))
             for i in np.flatnonzero(a["task_mask"])]
    assert a["task_mask"][:len(tasks)].all(), "real tasks must come first"
    return servers, tasks


def assert_same(where, state, b, total, metrics, ref):
    """Episode `b` of a batched JAX result equals the reference result `ref`."""
    n = len(ref.server)
    k = np.asarray(state.instance.k[b])
    server = np.asarray(state.server[b])
    if not np.array_equal(server[:n], ref.server):
        i = int(np.flatnonzero(server[:n] != np.asarray(ref.server))[0])
        pytest.fail(f"{where}: task {i} runs on server {server[i]} in JAX, "
                    f"{ref.server[i]} in the reference")
    assert (server[n:] == -1).all(), f"{where}: a padding task was dispatched"
    for name in ("arrive", "start", "finish"):
        got = np.asarray(getattr(state, name)[b])[:n]
        np.testing.assert_allclose(got, getattr(ref, name), rtol=0, atol=TOL,
                                   err_msg=f"{where}: {name}")
    done = np.asarray(state.finish[b])[:n] + k[server[:n]]
    np.testing.assert_allclose(done, ref.done, rtol=0, atol=TOL, err_msg=f"{where}: done")
    assert int(state.step[b]) == ref.num_steps, (
        f"{where}: {int(state.step[b])} steps in JAX, {ref.num_steps} in the reference")
    assert bool(state.done[b]) and not bool(state.truncated[b]), f"{where}: not cleanly done"
    assert is_set(np.asarray(state.start[b])[:n]).all(), f"{where}: a task never started"
    assert float(state.time[b]) == pytest.approx(ref.end_time, rel=TOL, abs=TOL), where
    for name, value in ref.metrics.items():
        assert float(metrics[name][b]) == pytest.approx(value, rel=TOL, abs=TOL), (
            f"{where}: metric {name}")
    expected = -sum(ref.response) / TAU - PENALTY * sum(ref.missed)
    assert float(total[b]) == pytest.approx(expected, rel=TOL, abs=TOL), (
        f"{where}: summed team reward")


def check_batch(label, instances, queue_capacity, pairs=PAIRS, seed=0):
    """Run every pair on every instance of the batch, in JAX and in the reference.

    Returns the reference results, {(b, pair): result}.
    """
    count = instances.size.shape[0]
    pids = np.array([PAIRS.index(p) for p in pairs for _ in range(count)], np.int32)
    rows = len(pids)
    tiled = jax.tree_util.tree_map(lambda x: jnp.concatenate([x] * len(pairs)), instances)
    keys = jax.random.split(jax.random.PRNGKey(seed), rows)
    # Fixed-size chunks (the last one padded with copies of row 0): one compilation.
    chunks = -(-rows // CHUNK)
    fill = np.concatenate([np.arange(rows), np.zeros(chunks * CHUNK - rows, int)])
    run = batched_run(queue_capacity)
    uniforms_of = rollout_uniforms(2 * N_MAX + 2)
    parts = []
    for c in range(chunks):
        idx = jnp.asarray(fill[c * CHUNK:(c + 1) * CHUNK])
        part = jax.tree_util.tree_map(lambda x: x[idx], (keys, tiled, jnp.asarray(pids)))
        parts.append(jax.device_get((*run(*part), uniforms_of(part[0]))))
    state, total, metrics, us = jax.tree_util.tree_map(lambda *x: np.concatenate(x), *parts)
    arrays = instance_to_arrays(instances)
    bounds = np.asarray(jax.jit(jax.vmap(bound_done))(instances))
    ranks = np.asarray(instances.rank)
    for b in range(count):
        servers, tasks = reference_inputs(arrays, b)
        n = len(tasks)
        np.testing.assert_allclose(bounds[b, :n], contention_free_bound(servers, tasks),
                                   rtol=0, atol=TOL, err_msg=f"{label} #{b}: bound")
        np.testing.assert_allclose(ranks[b, :n], upward_rank(servers, tasks), rtol=0, atol=TOL,
                                   err_msg=f"{label} #{b}: upward rank")
    results = {}
    for j, pair in enumerate(pairs):
        dispatch, schedule = H.pair_names(pair)
        for b in range(count):
            row = j * count + b
            servers, tasks = reference_inputs(arrays, b)
            uniforms = None
            if dispatch == "random":  # the u drawn at the step that dispatched each task
                steps = np.asarray(state.dispatch_step[row])[:len(tasks)]
                assert (steps >= 0).all()
                uniforms = [float(u) for u in us[row][steps]]
            ref = simulate(servers, tasks, queue_capacity=queue_capacity, dispatch=dispatch,
                           schedule=schedule, uniforms=uniforms)
            assert_same(f"{label} #{b} {pair} Q={queue_capacity}", state, row, total,
                        metrics, ref)
            below = np.asarray(ref.done) < bounds[b, :len(tasks)] - TOL
            assert not below.any(), (
                f"{label} #{b} {pair}: task {int(np.flatnonzero(below)[0])} beats the bound")
            results[b, pair] = (ref, tasks)
    return results


def waited_at_ap(results):
    """Episodes (indices) in which some task left the AP after its job arrived."""
    return {b for (b, _), (ref, tasks) in results.items()
            if any(d > t["arrival"] for d, t in zip(ref.dispatch_time, tasks))}


# ---------------------------------------------------------------------------
# Generated instances
# ---------------------------------------------------------------------------


def test_named_pairs_are_covered():
    for name in ("NF", "RS", "LS", "NS", "LF", "EC", "EX", "LC"):
        assert "+".join(H.pair_names(name)) in PAIRS
    # Every pair has one canonical name that names it back; the paper's LS is
    # LeastLoad + SDF, so LeastLoad + SJF is not "LS".
    assert sorted("+".join(H.pair_names(n)) for n in H.ALL_PAIRS) == sorted(PAIRS)
    assert H.pair_names("LS") == ("least_load", "sdf") == H.pair_names("LD")
    assert H.pair_label("least_load", "sjf") == "least_load+sjf"
    assert H.pair_label("least_load", "sdf") == "LS" and H.pair_label("eft", "cp") == "EC"


def test_default_settings():
    """EnvConfig() and EnvParams() exactly as shipped: 100 tasks, 5 servers, Q = 16."""
    instances = generated(1, 8, EnvParams())
    assert int(instances.task_mask.sum()) == 8 * 100
    check_batch("default", instances, Q_DEFAULT)


def test_fewer_tasks():
    check_batch("small", generated(2, 24, SMALL_PARAMS), Q_DEFAULT)


def test_tight_memory_tasks_wait_at_the_access_point():
    params = SMALL_PARAMS.replace(mem_low=4.0, mem_high=5.0, size_low=0.5, size_high=4.0,
                                  density=4.0)
    results = check_batch("tight memory", generated(3, 32, params), Q_DEFAULT)
    waited = waited_at_ap(results)
    assert len(waited) >= 24, f"only {len(waited)} of 32 episodes had a task wait at the AP"


def test_memory_exactly_the_largest_task():
    """Every server's memory equals the largest task size: one large task at a time."""
    params = SMALL_PARAMS.replace(mem_low=4.0, mem_high=4.0, size_low=2.0, size_high=4.0)
    instances = generated(4, 16, params)
    largest = jnp.max(jnp.where(instances.task_mask, instances.size, 0.0), axis=1)  # [B]
    instances = instances.replace(mem=jnp.broadcast_to(largest[:, None], instances.mem.shape))
    sizes = np.where(np.asarray(instances.task_mask), np.asarray(instances.size), -1.0)
    assert (sizes == np.asarray(instances.mem)[:, :1]).any(axis=1).all()
    results = check_batch("exact memory", instances, Q_DEFAULT)
    assert len(waited_at_ap(results)) == 16


def test_single_server():
    params = SMALL_PARAMS.replace(num_servers=1)
    results = check_batch("single server", generated(5, 24, params), Q_DEFAULT)
    assert all(set(r.server) == {0} for r, _ in results.values())


@pytest.mark.parametrize("queue_capacity", [1, 2])
def test_small_queue_capacity(queue_capacity):
    params = SMALL_PARAMS.replace(num_servers=3, density=4.0)
    results = check_batch(f"Q={queue_capacity}", generated(6 + queue_capacity, 24, params),
                          queue_capacity)
    # With so few slots tasks must queue up at the AP.
    assert len(waited_at_ap(results)) >= 12


def test_generated_bursts():
    """Very high density: many jobs arrive at nearly the same time."""
    params = SMALL_PARAMS.replace(density=1000.0, num_servers=4)
    results = check_batch("generated burst", generated(9, 16, params), 2)
    assert len(waited_at_ap(results)) >= 8


def test_varied_task_and_server_counts():
    """Fewer real tasks and servers than slots (padding in both)."""
    batches = [generated(10 + i, 4, SMALL_PARAMS.replace(num_tasks=n, num_servers=m))
               for i, (n, m) in enumerate([(1, 1), (7, 2), (23, 10), (40, 4)])]
    check_batch("varied", stack([jax.tree_util.tree_map(lambda x: x[b], batch)
                                 for batch in batches for b in range(4)]), Q_DEFAULT)


# ---------------------------------------------------------------------------
# Hand-built instances
# ---------------------------------------------------------------------------


def random_servers(rng, m):
    return [dict(cpu=float(rng.uniform(1, 3)), bw=float(rng.uniform(5, 20)),
                 mem=float(rng.uniform(8, 20)), k=float(rng.uniform(0.1, 1.0)))
            for _ in range(m)]


def random_task(rng, arrival, preds, job, slack=3.0):
    size = float(rng.integers(32, 257)) / 64  # 0.5 .. 4
    work = float(rng.uniform(0.5, 4.0))
    return dict(size=size, work=work, arrival=arrival,
                deadline=arrival + slack * float(rng.uniform(1, 8)), preds=preds, job=job)


def chain_instance(seed):
    """One to three long chains: preds[i] = [i - 1] inside each job (run with Q = 1)."""
    rng = np.random.default_rng(seed)
    lengths = [[20, 20], [13, 13, 14], [30, 10], [40]][seed % 4]
    tasks, t = [], 0.0
    for job, length in enumerate(lengths):
        first = len(tasks)
        for pos in range(length):
            tasks.append(random_task(rng, t, [first + pos - 1] if pos else [], job))
        t += float(rng.exponential(3.0))
    return hand_instance(random_servers(rng, 1 + seed % 5), tasks)


def fan_out_instance(seed):
    """One root with up to W successors, and a join task with P of them as inputs."""
    rng = np.random.default_rng(100 + seed)
    widths = [[W + 1], [18, 10], [12, 12, 8], [W + 1, 8]][seed % 4]
    tasks, t = [], 0.0
    for job, width in enumerate(widths):
        root = len(tasks)
        tasks.append(random_task(rng, t, [], job))
        for _ in range(width - 1):
            tasks.append(random_task(rng, t, [root], job))
        if width - 1 >= P_MAX and len(tasks) - root < W:
            tasks.append(random_task(rng, t, sorted(rng.choice(
                np.arange(root + 1, len(tasks)), P_MAX, replace=False).tolist()), job))
        t += float(rng.exponential(1.0))
    tasks = tasks[:N_MAX]
    return hand_instance(random_servers(rng, 2 + seed % 4), tasks)


def burst_instance(seed):
    """Jobs arriving at exactly the same times (ties everywhere)."""
    rng = np.random.default_rng(200 + seed)
    tasks, job = [], 0
    for t in (0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 5.0, 5.0, 5.0, 5.0):
        size = int(rng.integers(1, 5))
        first = len(tasks)
        for pos in range(size):
            if len(tasks) == N_MAX:
                break
            preds = sorted(rng.choice(np.arange(first, first + pos), min(pos, int(
                rng.integers(1, P_MAX + 1))), replace=False).tolist()) if pos else []
            tasks.append(random_task(rng, t, preds, job, slack=1.0))
        job += 1
    servers = random_servers(rng, 2 + seed % 3)
    if seed % 2:  # identical servers: ties between servers too
        servers = [dict(servers[0]) for _ in servers]
    return hand_instance(servers, tasks)


# (mem, a) with (mem - a) + a < mem in floating point: without the exact reset
# of docs/model.md a task of size mem would never fit again after one of size a.
DRIFT = [(5.989, 1.866), (4.877, 0.129), (5.928, 1.129), (5.582, 0.927), (3.171, 0.821)]


def drift_instance(seed):
    mem, a = DRIFT[seed % len(DRIFT)]
    assert (mem - a) + a < mem
    rng = np.random.default_rng(300 + seed)
    first = [random_task(rng, 0.0, [], 0) | {"size": a}]
    if seed >= len(DRIFT):  # a second small task, in the same job
        first.append(random_task(rng, 0.0, [0], 0) | {"size": a})
    last = random_task(rng, 40.0, [], 1) | {"size": mem}
    return hand_instance([dict(cpu=2.0, bw=10.0, mem=mem, k=0.3)], first + [last])


def test_memory_is_given_back_exactly():
    check_batch("memory drift", stack([drift_instance(s) for s in range(10)]), Q_DEFAULT)


def test_long_chains():
    check_batch("chains", stack([chain_instance(s) for s in range(16)]), 1)


def test_wide_fan_out():
    instances = stack([fan_out_instance(s) for s in range(16)])
    fan_out = (np.asarray(instances.succ) > 0).sum(axis=2)
    assert int(fan_out.max()) == W  # a root with W successors
    check_batch("fan-out", instances, Q_DEFAULT)


def test_simultaneous_bursts():
    check_batch("burst", stack([burst_instance(s) for s in range(16)]), 2)


# ---------------------------------------------------------------------------
# Random pairs through an explicit Python episode loop
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def random_step():
    def one(state, u, sid):
        picks = jnp.stack([H.SCHEDULE_RULES[name](None, state) for name in SCHEDULES])[sid]
        needed = dispatch_needed(state) & ~state.done
        server = H.random_uniform(u, dispatch_feasible(state))
        state, reward, _ = transition(state, Action(dispatch=server, picks=picks),
                                      TAU, PENALTY)
        return state, reward, needed
    return jax.jit(jax.vmap(one))


@functools.lru_cache(maxsize=None)
def batched_reset(queue_capacity):
    return jax.jit(jax.vmap(lambda inst: reset_to_instance(inst, queue_capacity)))


def test_random_pairs_python_loop():
    queue_capacity = 2
    tight = generated(20, 12, SMALL_PARAMS.replace(mem_low=4.0, mem_high=6.0, size_high=4.0))
    loose = generated(21, 12, SMALL_PARAMS.replace(num_servers=6))
    instances = stack([jax.tree_util.tree_map(lambda x: x[b], batch)
                       for batch in (tight, loose) for b in range(12)])
    count = 24
    sids = jnp.asarray(np.arange(count) % len(SCHEDULES), jnp.int32)
    state = batched_reset(queue_capacity)(instances)
    step = random_step()
    key = jax.random.PRNGKey(22)
    uniforms = [[] for _ in range(count)]
    total = np.zeros(count)
    for _ in range(2 * N_MAX + 2):
        if bool(np.all(np.asarray(state.done))):
            break
        key, sub = jax.random.split(key)
        u = jax.vmap(jax.random.uniform)(jax.random.split(sub, count))
        state, reward, needed = step(state, u, sids)
        u, needed = np.asarray(u), np.asarray(needed)
        for b in np.flatnonzero(needed):
            uniforms[b].append(float(u[b]))
        total += np.asarray(reward)
    metrics = jax.device_get(jax.jit(jax.vmap(episode_metrics))(state))
    state = jax.device_get(state)
    arrays = instance_to_arrays(instances)
    for b in range(count):
        servers, tasks = reference_inputs(arrays, b)
        assert len(uniforms[b]) == len(tasks)  # one draw per dispatch
        ref = simulate(servers, tasks, queue_capacity=queue_capacity, dispatch="random",
                       schedule=SCHEDULES[b % len(SCHEDULES)], uniforms=uniforms[b])
        assert_same(f"python-loop random #{b} {SCHEDULES[b % len(SCHEDULES)]}", state, b,
                    total, metrics, ref)
        # The random choices do matter: nearest-first would place tasks differently.
        if b == 0:
            nearest = simulate(servers, tasks, queue_capacity=queue_capacity,
                               dispatch="nearest", schedule=SCHEDULES[0])
            assert nearest.server != ref.server
