"""The gymnax-style API of damdjax.envs.env.EdgeEnv and its guards (default float32).

jit equals eager execution, vmap equals a Python loop, the checked mode
raises and names what is wrong, invalid actions in the jitted step are
replaced by the lowest valid choice and counted, a finished state stands
still, observations have their documented shapes and their masks are exactly
the decisions needed, the dispatcher's delayed credit is reported once per
task, the generator draws what it promises, and check_params names bad values.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from damdjax import heuristics as H
from damdjax.rollout import run_from_instance
from damdjax.envs.checks import check_action, checked_step
from damdjax.envs.config import EnvConfig, EnvParams, check_params
from damdjax.envs.dynamics import dispatch_feasible, eligible_slots, pick_needed
from damdjax.envs.env import EdgeEnv
from damdjax.envs.generator import generate
from damdjax.envs.instance import instance_from_arrays, instance_to_arrays
from damdjax.envs.observation import OWN_FEATURES, SERVER_FEATURES, SLOT_FEATURES, TASK_FEATURES
from damdjax.envs.state import Action, done_time, unstarted_tasks
from damdjax.envs.times import is_set, never

CONFIG = EnvConfig(n_max=16, m_max=4, p_max=4, queue_capacity=3, j_max=4)
ENV = EdgeEnv(CONFIG)
PARAMS = EnvParams(num_tasks=16, num_servers=3, density=3.0, tau=7.0, miss_penalty=2.5)
POLICY = H.pair_from_name("RS")  # random dispatch: the key matters
NUM_EPISODES = 6


def policy_step(key, state, params):
    """One step of `POLICY`, splitting the key as damdjax.rollout does."""
    key, k_act = jax.random.split(key)
    action = POLICY(k_act, state)
    obs, state, reward, done, info = ENV.step(k_act, state, action, params)
    return key, obs, state, reward, done, info


reset_jit = jax.jit(ENV.reset)
step_jit = jax.jit(ENV.step)
policy_step_jit = jax.jit(policy_step)
policy_jit = jax.jit(POLICY)


def leaves(tree):
    return [(jax.tree_util.keystr(path), np.asarray(x))
            for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def assert_trees_close(a, b, rtol=1e-5, atol=1e-5, what=""):
    la, lb = leaves(a), leaves(b)
    assert [p for p, _ in la] == [p for p, _ in lb], what
    for (path, x), (_, y) in zip(la, lb):
        assert x.shape == y.shape and x.dtype == y.dtype, f"{what}{path}"
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"{what}{path}")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"{what}{path}")


def assert_trees_equal(a, b, what=""):
    la, lb = leaves(a), leaves(b)
    assert [p for p, _ in la] == [p for p, _ in lb], what
    for (path, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(x, y, err_msg=f"{what}{path}")


# ---------------------------------------------------------------------------
# Episodes played through the Python API (shared by several tests)
# ---------------------------------------------------------------------------


def episode_keys():
    keys = jax.random.split(jax.random.PRNGKey(7), 2 * NUM_EPISODES)
    return keys[:NUM_EPISODES], keys[NUM_EPISODES:]


def episode_params():
    """Different task counts, so that the episodes have different lengths."""
    return [PARAMS.replace(num_tasks=CONFIG.n_max - 2 * b) for b in range(NUM_EPISODES)]


@pytest.fixture(scope="module")
def episodes():
    """For each key: obs, states (before each step and the last), rewards, infos."""
    out = []
    for key, key_run, params in zip(*episode_keys(), episode_params()):
        obs, state = reset_jit(key, params)
        record = {"obs": [obs], "states": [state], "rewards": [], "infos": []}
        for _ in range(CONFIG.max_steps):
            if bool(state.done):
                break
            key_run, obs, state, reward, done, info = policy_step_jit(key_run, state, params)
            assert bool(done) == bool(state.done)
            record["obs"].append(obs)
            record["states"].append(state)
            record["rewards"].append(float(reward))
            record["infos"].append(jax.device_get(info))
        assert bool(state.done) and not bool(state.truncated)
        out.append(record)
    return out


def test_jit_equals_no_jit():
    key, key_run = jax.random.split(jax.random.PRNGKey(3))
    obs_j, state_j = reset_jit(key, PARAMS)
    with jax.disable_jit():
        obs_e, state_e = ENV.reset(key, PARAMS)
    assert_trees_close((obs_j, state_j), (obs_e, state_e), what="reset")
    bad = Action(dispatch=jnp.int32(CONFIG.m_max - 1),  # a padded server: replaced
                 picks=jnp.full((CONFIG.m_max,), CONFIG.queue_capacity - 1, jnp.int32))
    for s in range(3):
        # The same action for both: the policy's (compiled) or, every third step,
        # an invalid one, to exercise the replacement too.
        key_run, k_act = jax.random.split(key_run)
        action = bad if s % 3 == 2 else policy_jit(k_act, state_j)
        out_j = step_jit(k_act, state_j, action, PARAMS)
        with jax.disable_jit():
            out_e = ENV.step(k_act, state_e, action, PARAMS)
        assert_trees_close(out_j, out_e, what=f"step {s}")
        (obs_j, state_j), (obs_e, state_e) = out_j[:2], out_e[:2]
    assert int(state_j.step) == 3 and not bool(state_j.done)


def test_auto_reset_draws_only_the_finished_envs_and_equals_resetting_all():
    """`rollout.reset_envs` (blocks of ceil(E / 16) envs, only where done) against the
    plain rule: reset every env with its own key and keep the fresh one where done.
    Integers and booleans exactly; floats to float32 rounding (XLA may vectorise a batch
    of 3 envs differently from one of 37: a last-bit difference in an observation)."""
    from damdjax.rollout import reset_block, reset_envs

    num = 37  # blocks of 3: 13 blocks, the last one short
    assert reset_block(num) == 3
    keys = jax.random.split(jax.random.PRNGKey(11), num)

    @jax.jit
    def both(done):
        fresh = jax.vmap(ENV.reset, in_axes=(0, None))(keys, PARAMS)
        old = jax.tree.map(lambda x: x[::-1], fresh)  # other episodes in every env
        got = reset_envs(ENV, PARAMS, keys, done, *old)
        want = jax.tree.map(
            lambda a, b: jnp.where(done.reshape((num,) + (1,) * (a.ndim - 1)), a, b), fresh, old)
        return got, want

    rng = np.random.default_rng(0)
    masks = [np.zeros(num, bool), np.ones(num, bool), np.eye(num, dtype=bool)[num - 1],
             np.eye(num, dtype=bool)[0] | np.eye(num, dtype=bool)[17]]
    masks += [rng.random(num) < q for q in (0.1, 0.5, 0.9)]
    for done in masks:
        got, want = both(jnp.asarray(done))
        assert_trees_close(got, want, rtol=1e-6, atol=1e-7, what=f"{int(done.sum())} done: ")


def test_vmap_equals_python_loop(episodes):
    keys, run_keys = episode_keys()
    params = jax.tree_util.tree_map(lambda *x: jnp.asarray(x), *episode_params())
    batch = jax.jit(jax.vmap(lambda k, kr, p: run_from_instance(
        kr, ENV.generate(k, p), POLICY, CONFIG.queue_capacity, p)))
    states, totals = batch(keys, run_keys, params)
    lengths = {len(e["rewards"]) for e in episodes}
    assert len(lengths) > 1, "episodes of different lengths: finished ones must stand still"
    for b, record in enumerate(episodes):
        final = record["states"][-1]
        assert_trees_close(jax.tree_util.tree_map(lambda x: x[b], states), final,
                           what=f"episode {b}: ")
        assert float(totals[b]) == pytest.approx(sum(record["rewards"]), rel=1e-5, abs=1e-4)


def test_stepping_a_done_state_is_a_no_op(episodes):
    final = episodes[0]["states"][-1]
    assert bool(final.done)
    action = Action(dispatch=jnp.int32(2), picks=jnp.arange(CONFIG.m_max, dtype=jnp.int32))
    obs, state, reward, done, info = step_jit(jax.random.PRNGKey(0), final, action, PARAMS)
    assert_trees_equal(state, final)
    assert float(reward) == 0.0 and bool(done)
    assert not info["newly_done"].any() and not info["response_time"].any()
    assert not bool(info["invalid_dispatch"]) and int(info["invalid_picks"]) == 0
    assert int(info["dispatched_task"]) == -1 and (info["started_tasks"] == -1).all()
    assert float(info["time"]) == float(final.time) and not bool(info["truncated"])
    assert not obs.dispatch_needed and not obs.pick_needed.any()
    with pytest.raises(ValueError, match="the episode is done"):
        check_action(final, action)


# ---------------------------------------------------------------------------
# Observations and masks
# ---------------------------------------------------------------------------


def expected_masks(state):
    """Dispatch and pick masks recomputed from the state's schedule in numpy."""
    s = jax.device_get(state)
    inst = s.instance
    t = s.time
    n, m = inst.size.shape[0], inst.cpu.shape[0]
    q = s.queue.shape[1]
    h = int(s.head)
    exists = h < n and bool(inst.task_mask[h])
    qlen = (s.queue >= 0).sum(axis=1)
    dispatch_mask = np.array([exists and bool(inst.server_mask[j])
                              and s.mem_free[j] >= inst.size[h] and qlen[j] < q
                              for j in range(m)])
    dispatch_needed = exists and inst.arrival[h] <= t and dispatch_mask.any()
    pick_mask = np.zeros((m, q), bool)
    for j in range(m):
        for slot in range(q):
            i = int(s.queue[j, slot])
            if i < 0 or not inst.server_mask[j]:
                continue
            preds = [int(p) for p in inst.preds[i] if p >= 0]
            if any(not is_set(s.start[p]) for p in preds):
                continue
            avail = [s.finish[p] if s.server[p] == j
                     else (s.finish[p] + inst.k[s.server[p]]) + inst.k[j] for p in preds]
            pick_mask[j, slot] = max([s.arrive[i]] + avail) <= t
    pick_needed = (s.running < 0) & pick_mask.any(axis=1)
    return dispatch_mask, dispatch_needed, pick_mask, pick_needed


def test_observation_shapes_and_masks(episodes):
    m, q = CONFIG.m_max, CONFIG.queue_capacity
    checked = 0
    for record in episodes:
        for obs, state in zip(record["obs"], record["states"]):
            assert obs.task.shape == (len(TASK_FEATURES),)
            assert obs.servers.shape == (m, len(SERVER_FEATURES))
            assert obs.slots.shape == (m, q, len(SLOT_FEATURES))
            assert obs.own.shape == (m, len(OWN_FEATURES))
            assert obs.dispatch_mask.shape == (m,) and obs.dispatch_mask.dtype == bool
            assert obs.pick_mask.shape == (m, q) and obs.pick_mask.dtype == bool
            assert obs.pick_needed.shape == (m,) and obs.dispatch_needed.shape == ()
            for name in ("task", "servers", "slots", "own"):
                assert np.isfinite(getattr(obs, name)).all(), f"non-finite {name} feature"
            d_mask, d_need, p_mask, p_need = expected_masks(state)
            np.testing.assert_array_equal(obs.dispatch_mask, d_mask)
            assert bool(obs.dispatch_needed) == d_need
            np.testing.assert_array_equal(obs.pick_mask, p_mask)
            np.testing.assert_array_equal(obs.pick_needed, p_need)
            np.testing.assert_array_equal(obs.server_mask, state.instance.server_mask)
            assert float(obs.time) == float(state.time)
            if not bool(state.done):  # every epoch needs some decision
                assert d_need or p_need.any()
            checked += 1
    assert checked > 50


def test_dispatcher_credit(episodes):
    for record in episodes:
        final = record["states"][-1]
        real = np.asarray(final.instance.task_mask)
        n = int(real.sum())
        infos = record["infos"]
        newly = np.stack([info["newly_done"] for info in infos])
        assert (newly.sum(axis=0)[:n] == 1).all(), "each task is reported done exactly once"
        assert not newly[:, n:].any()
        done = np.asarray(done_time(final))[:n]
        response = done - np.asarray(final.instance.arrival)[:n]
        times = np.array([float(state.time) for state in record["states"]])
        for s, info in enumerate(infos):
            hit = info["newly_done"][:n]
            # reported in the step whose interval (t, t'] holds the result's return
            assert ((done[hit] > times[s]) & (done[hit] <= times[s + 1])).all()
            np.testing.assert_allclose(info["response_time"][:n][hit], response[hit],
                                       rtol=1e-6)
            assert (info["response_time"][~info["newly_done"]] == 0).all()
            d = int(info["dispatched_task"])
            if d >= 0:
                assert int(final.dispatch_step[d]) == s
        dispatched = [int(info["dispatched_task"]) for info in infos]
        assert [i for i in dispatched if i >= 0] == list(range(n))


# ---------------------------------------------------------------------------
# Checked mode and the replacement of invalid actions
# ---------------------------------------------------------------------------
#
# Two real servers of equal speed and delay (k = 0.5, bw = 1), padded ones after
# them (the instance is padded to CONFIG's shapes, so the compiled step is shared).
# Server 0 has memory 2, server 1 memory 100. One job at t = 0: A (size 4),
# B (size 4, needs A), C (size 1), D (size 1). A and B fit only server 1.
# Dispatching A, B, C to server 1 and D to server 0 (four epochs at t = 0),
# C and D reach their servers at 1.5, A and B at 4.5: at t = 1.5 server 1
# holds [A, B, C] with only slot 2 eligible, server 0 holds [D] in slot 0.
M, Q = CONFIG.m_max, CONFIG.queue_capacity


def small_instance():
    n = CONFIG.n_max
    pad = lambda values, fill, size=n, dtype=float: np.array(
        list(values) + [fill] * (size - len(values)), dtype)
    preds = np.full((n, CONFIG.p_max), -1, np.int32)
    preds[1, 0] = 0
    arrays = {
        "cpu": pad([1.0, 1.0], 1.0, M), "bw": pad([1.0, 1.0], 1.0, M),
        "mem": pad([2.0, 100.0], 1.0, M), "k": pad([0.5, 0.5], 1.0, M),
        "server_mask": pad([True, True], False, M, bool),
        "size": pad([4.0, 4.0, 1.0, 1.0], 0.0), "work": pad([4.0, 4.0, 1.0, 1.0], 0.0),
        "arrival": pad([0.0] * 4, np.inf), "deadline": pad([50.0] * 4, np.inf),
        "preds": preds, "task_mask": pad([True] * 4, False, dtype=bool),
        "job": pad([0] * 4, -1, dtype=np.int32),
    }
    return instance_from_arrays(arrays, window=CONFIG.succ_window)


reset_to_jit = jax.jit(ENV.reset_to)


class JittedEnv:
    """ENV with a compiled step, for damdjax.envs.checks.checked_step."""
    step = staticmethod(step_jit)


def act(dispatch=0, picks=()):
    picks = list(picks) + [0] * (M - len(picks))
    return Action(dispatch=jnp.int32(dispatch), picks=jnp.asarray(picks, jnp.int32))


@pytest.fixture(scope="module")
def small_states():
    """States of the small instance: at A's dispatch, and at t = 1.5 (the picks)."""
    _, first = reset_to_jit(small_instance(), PARAMS)
    state = first
    for server in (1, 1, 1, 0):  # A, B, C -> server 1; D -> server 0
        check_action(state, act(server))
        _, state, _, _, info = checked_step(JittedEnv, None, state, act(server), PARAMS)
        assert not bool(info["invalid_dispatch"])
    assert float(state.time) == 1.5
    return first, state


def test_small_states_are_as_designed(small_states):
    first, picks = small_states
    assert float(first.time) == 0.0
    np.testing.assert_array_equal(dispatch_feasible(first), [False, True] + [False] * (M - 2))
    queue = np.full((M, Q), -1)
    queue[0, 0], queue[1, :3] = 3, [0, 1, 2]
    np.testing.assert_array_equal(picks.queue, queue)
    eligible = np.zeros((M, Q), bool)
    eligible[0, 0] = eligible[1, 2] = True
    np.testing.assert_array_equal(eligible_slots(picks), eligible)
    np.testing.assert_array_equal(pick_needed(picks), [True, True] + [False] * (M - 2))


@pytest.mark.parametrize("server", [0, 2, -1, 7])
def test_checked_mode_names_an_infeasible_dispatch(small_states, server):
    first, _ = small_states
    with pytest.raises(ValueError, match=re.escape(
            f"dispatch to server {server} is not allowed: feasible servers are [1]")):
        check_action(first, act(server))
    with pytest.raises(ValueError, match=f"server {server}"):
        checked_step(JittedEnv, None, first, act(server), PARAMS)


@pytest.mark.parametrize("picks, server, slot, eligible", [
    ((0, 0), 1, 0, [2]),  # A is still in transit
    ((0, 1), 1, 1, [2]),  # B waits for A
    ((1, 2), 0, 1, [0]),  # an empty slot
    ((0, 3), 1, 3, [2]),  # out of range
])
def test_checked_mode_names_an_ineligible_pick(small_states, picks, server, slot, eligible):
    _, state = small_states
    with pytest.raises(ValueError, match=re.escape(
            f"server {server} picked queue slot {slot}, which is not eligible: "
            f"eligible slots are {eligible}")):
        check_action(state, act(0, picks))
    check_action(state, act(0, (0, 2, 1, 9)))  # valid (servers 2, 3 need no pick)
    with pytest.raises(ValueError, match="picks must have shape"):
        check_action(state, Action(dispatch=jnp.int32(0), picks=jnp.zeros(2, jnp.int32)))


@pytest.mark.parametrize("server", [0, 2, -1, 7])
def test_invalid_dispatch_is_replaced_by_the_lowest_feasible(small_states, server):
    first, _ = small_states
    _, bad, r_bad, _, info_bad = step_jit(None, first, act(server), PARAMS)
    _, good, r_good, _, info_good = step_jit(None, first, act(1), PARAMS)
    assert bool(info_bad["invalid_dispatch"]) and not bool(info_good["invalid_dispatch"])
    assert int(bad.server[0]) == 1
    assert_trees_equal(bad, good)
    assert float(r_bad) == float(r_good)


def test_invalid_picks_are_replaced_by_the_lowest_eligible_and_counted(small_states):
    _, state = small_states
    _, good, _, _, info = step_jit(None, state, act(0, (0, 2)), PARAMS)
    assert int(info["invalid_picks"]) == 0
    np.testing.assert_array_equal(info["started_tasks"], [3, 2] + [-1] * (M - 2))
    for picks, count in (((1, 0), 2), ((0, 1, 5), 1), ((-3, 2, 1, 1), 1), ((2, 9, 9), 2)):
        _, bad, _, _, info = step_jit(None, state, act(0, picks), PARAMS)
        assert int(info["invalid_picks"]) == count, picks
        assert not bool(info["invalid_dispatch"])  # no dispatch was needed
        assert_trees_equal(bad, good, what=f"picks {picks}: ")


def test_result_at_an_epoch_is_credited_once():
    """A result returning exactly at an epoch where several steps happen (t0 == t1).

    One server (k = 0.5, bw = cpu = 1). X (size 1, t = 0) reaches it at 1.5, runs
    to 2.5, and its result is back at 3.0, exactly when job 1 (Y, Z) arrives:
    the step that ends at 3.0 reports X, the two dispatch steps at 3.0 must not.
    """
    inst = small_instance()
    inst = inst.replace(
        mem=inst.mem.at[0].set(100.0), server_mask=inst.server_mask.at[1].set(False),
        size=inst.size.at[:3].set(1.0), work=inst.work.at[:3].set(1.0),
        arrival=inst.arrival.at[1:3].set(3.0), task_mask=inst.task_mask.at[3].set(False),
        job=inst.job.at[1:3].set(1).at[3].set(-1),
        preds=jnp.full_like(inst.preds, -1), succ=jnp.zeros_like(inst.succ),
        num_succ=jnp.zeros_like(inst.num_succ))
    inst = inst.replace(size=inst.size.at[3].set(0.0), work=inst.work.at[3].set(0.0),
                        arrival=inst.arrival.at[3].set(jnp.inf))
    _, state = reset_to_jit(inst, PARAMS)
    times, newly, responses = [float(state.time)], [], []
    while not bool(state.done):
        _, state, _, _, info = step_jit(None, state, act(0), PARAMS)
        times.append(float(state.time))
        newly.append(np.asarray(info["newly_done"]))
        responses.append(np.asarray(info["response_time"]))
    assert times[:5] == [0.0, 1.5, 3.0, 3.0, 4.5], times
    counts = np.sum(newly, axis=0)
    assert counts[:3].tolist() == [1, 1, 1] and not counts[3:].any(), counts
    assert newly[1][0] and np.sum(responses, axis=0)[0] == 3.0


def test_a_stranded_task_ends_the_episode_as_a_termination_and_is_counted():
    """A task larger than every server's memory: no decision can ever run it, so the
    episode terminates (not truncated: nothing is left to bootstrap from) and
    `unstarted_tasks` reports the stranded task."""
    inst = small_instance()
    inst = inst.replace(size=inst.size.at[3].set(500.0))
    obs, state = reset_to_jit(inst, PARAMS)
    assert int(unstarted_tasks(state)) == 4
    for server in (1, 1, 1):
        obs, state, _, done, info = step_jit(None, state, act(server), PARAMS)
    while not bool(state.done):
        obs, state, _, done, info = step_jit(None, state, act(0, (0, 2)), PARAMS)
    assert not bool(state.truncated) and not bool(info["truncated"])
    assert int(unstarted_tasks(state)) == 1
    assert int(state.server[3]) == -1 and int(state.step) <= 2 * 4 + 2


def test_the_step_cap_truncates():
    """The step that reaches the cap (2 N_max + 2) ends an unfinished episode with `done`
    and `truncated` (a time limit); the step before it does not."""
    inst = small_instance()
    obs, state = reset_to_jit(inst, PARAMS)
    cap = 2 * inst.size.shape[0] + 2
    early = state.replace(step=jnp.asarray(cap - 2, jnp.int32))
    _, s1, _, done1, info1 = step_jit(None, early, act(1), PARAMS)
    assert not bool(done1) and not bool(info1["truncated"])
    _, s2, _, done2, info2 = step_jit(None, s1, act(1), PARAMS)
    assert bool(done2) and bool(s2.truncated) and bool(info2["truncated"])
    assert int(unstarted_tasks(s2)) > 0


# ---------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------


def check_generated(inst, config, params):
    """What the generator promises, for one (unbatched, numpy) instance."""
    n, m = params.num_tasks, params.num_servers
    w = config.succ_window
    assert inst.task_mask.sum() == n and inst.task_mask[:n].all()
    assert inst.server_mask.sum() == m and inst.server_mask[:m].all()
    assert inst.arrival[0] == 0 and (np.diff(inst.arrival[:n]) >= 0).all()
    assert (inst.deadline[:n] > inst.arrival[:n]).all()
    assert ((inst.k[:m] >= params.k_low) & (inst.k[:m] <= params.k_high)).all()
    for name in ("cpu", "bw", "mem"):
        low, high = getattr(params, f"{name}_low"), getattr(params, f"{name}_high")
        values = getattr(inst, name)[:m]
        assert ((values >= low * (1 - 1e-6)) & (values <= high * (1 + 1e-6))).all(), name
    job = inst.job[:n]
    assert job[0] == 0 and set(np.diff(job).tolist()) <= {0, 1}
    assert np.bincount(job).max() <= config.j_max
    assert (inst.job[n:] == -1).all() and (inst.preds[n:] == -1).all()
    assert (inst.arrival[n:] == never(inst.arrival.dtype)).all()
    for i in range(n):
        preds = inst.preds[i][inst.preds[i] >= 0]
        assert len(preds) <= config.p_max and len(set(preds.tolist())) == len(preds)
        assert (preds < i).all() and (inst.job[preds] == job[i]).all()
        assert (i - preds <= w).all()
        first_of_job = i == 0 or job[i - 1] != job[i]
        assert (len(preds) == 0) == first_of_job, "every later task of a job has a pred"
    offsets = [[] for _ in range(config.n_max)]  # each task's successors' offsets
    for t in range(config.n_max):
        for q in inst.preds[t][inst.preds[t] >= 0]:
            offsets[q].append(t - int(q))  # ascending, as t runs up
    assert inst.succ.shape == (config.n_max, config.succ_slots)
    for i, g in enumerate(offsets):  # the list: the offsets, then 0s
        np.testing.assert_array_equal(inst.succ[i], g + [0] * (config.succ_slots - len(g)))
    np.testing.assert_array_equal(inst.num_succ, [len(g) for g in offsets])


generate_jit = jax.jit(generate, static_argnums=1)


def generate_batch(config, params, seed=11, count=8):
    keys = jax.random.split(jax.random.PRNGKey(seed), count)
    return jax.device_get(jax.vmap(lambda k: generate_jit(k, config, params))(keys))


@pytest.mark.parametrize("params", [
    EnvParams(),
    EnvParams(num_tasks=37, num_servers=1, density=50.0),
    EnvParams(num_tasks=1, num_servers=10, k_low=0.3, k_high=0.4),
])
def test_generator_sanity(params):
    config = EnvConfig()
    check_params(config, params)
    batch = generate_batch(config, params)
    for b in range(8):
        check_generated(jax.tree_util.tree_map(lambda x: x[b], batch), config, params)


def test_generator_sanity_small_window(episodes):
    """CONFIG's successor window W = 3 is smaller than P = 4 (the generator pads)."""
    assert CONFIG.succ_window < CONFIG.p_max
    for record, params in zip(episodes, episode_params()):
        check_params(CONFIG, params)
        check_generated(jax.device_get(record["states"][0].instance), CONFIG, params)


def test_generator_task_always_fits_some_server():
    """check_params accepts size_high == mem_low; every task must then fit a server.

    FAILS at the time of writing (generator bug): sizes are rounded to the
    nearest multiple of 1/64, so a draw just below size_high = 4.01 becomes
    4.015625 > 4.01, larger than every server's memory. The episode then ends
    at reset with its tasks stranded, never run.
    """
    config = EnvConfig()
    params = EnvParams(num_tasks=10, num_servers=3, size_low=4.0, size_high=4.01,
                       mem_low=4.01, mem_high=4.01)
    check_params(config, params)  # accepted
    inst = generate_batch(config, params, seed=0, count=8)
    size = inst.size[:, :10]
    mem = inst.mem[:, :3]
    too_big = size > mem.max(axis=1, keepdims=True)
    assert not too_big.any(), (
        f"{int(too_big.sum())} of {size.size} generated tasks (sizes "
        f"{sorted(set(size[too_big].tolist()))}) exceed every server's memory "
        f"{sorted(set(mem.ravel().tolist()))} (size_high={params.size_high}): such a "
        f"task can never be dispatched and its episode ends with it stranded")


# ---------------------------------------------------------------------------
# check_params and EnvConfig
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"num_tasks": 0}, "num_tasks must be an integer in [1, n_max=100], got 0"),
    ({"num_tasks": 101}, "num_tasks must be an integer in [1, n_max=100], got 101"),
    ({"num_tasks": 2.5}, "num_tasks must be an integer in [1, n_max=100], got 2.5"),
    ({"num_servers": 0}, "num_servers must be an integer in [1, m_max=10], got 0"),
    ({"num_servers": 11}, "num_servers must be an integer in [1, m_max=10], got 11"),
    ({"density": 0.0}, "density must be > 0, got 0"),
    ({"slack": -1.0}, "slack must be > 0, got -1"),
    ({"cpu_low": 0.0}, "cpu_low must be > 0, got 0"),
    ({"bw_low": -2.0}, "bw_low must be > 0, got -2"),
    ({"k_low": 0.0}, "k_low must be > 0, got 0"),
    ({"size_low": 0.0}, "size_low must be > 0, got 0"),
    ({"tau": 0.0}, "tau must be > 0, got 0"),
    ({"time_scale": -1.0}, "time_scale must be > 0, got -1"),
    ({"density": float("nan")}, "density must be > 0, got nan"),
    ({"miss_penalty": -0.5}, "miss_penalty must be >= 0, got -0.5"),
    ({"cpu_high": 0.5}, "cpu_high must be >= cpu_low, got 0.5 < 1"),
    ({"bw_high": 4.0}, "bw_high must be >= bw_low, got 4 < 5"),
    ({"mem_high": 10.0}, "mem_high must be >= mem_low, got 10 < 20"),
    ({"k_high": 0.05}, "k_high must be >= k_low, got 0.05 < 0.1"),
    ({"size_high": 0.25}, "size_high must be >= size_low, got 0.25 < 0.5"),
    ({"size_high": 25.0, "mem_high": 50.0}, "size_high=25 exceeds mem_low=20"),
])
def test_check_params_names_the_bad_value(changes, message):
    config = EnvConfig()
    check_params(config, EnvParams())  # the defaults are fine
    with pytest.raises(ValueError, match=re.escape(message)):
        check_params(config, EnvParams().replace(**changes))


@pytest.mark.parametrize("field, value", [
    ("n_max", 0), ("m_max", -1), ("p_max", 1.5), ("queue_capacity", True), ("j_max", "8")])
def test_env_config_names_the_bad_value(field, value):
    with pytest.raises(ValueError, match=re.escape(f"EnvConfig.{field} must be an integer >= 1")):
        EnvConfig(**{field: value})


@pytest.mark.parametrize("value, message", [
    (0, "EnvConfig.fan_out must be None or an integer >= 1, got 0"),
    (2.0, "EnvConfig.fan_out must be None or an integer >= 1, got 2.0"),
    (True, "EnvConfig.fan_out must be None or an integer >= 1, got True"),
    (8, "EnvConfig.fan_out=8 exceeds the successor window j_max - 1 = 7")])
def test_env_config_names_a_bad_fan_out(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        EnvConfig(fan_out=value)
    assert EnvConfig().succ_slots == EnvConfig().succ_window == 7  # default: the window
    assert EnvConfig(fan_out=3).succ_slots == 3


def test_instance_arrays_refuse_a_fan_out_wider_than_the_slots():
    """`instance_from_arrays`: the list is the arrays' own widest fan-out by default; a
    given `fan_out` below it is refused, naming both."""
    arrays = {k: np.array(v) for k, v in instance_to_arrays(small_instance()).items()}
    arrays["preds"][2:4, 0] = 0  # task 0: three successors (1, 2, 3)
    inst = instance_from_arrays(arrays)
    assert inst.succ.shape == (CONFIG.n_max, 3)
    np.testing.assert_array_equal(inst.succ[0], [1, 2, 3])
    assert instance_from_arrays(arrays, fan_out=5).succ.shape == (CONFIG.n_max, 5)
    with pytest.raises(ValueError, match=re.escape("a task has 3 successors, more than the 2 "
                                                   "successor slots (fan_out=2)")):
        instance_from_arrays(arrays, fan_out=2)
