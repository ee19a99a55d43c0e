"""Tests of the MDQN schedulers' pieces (damdjax.schedulers and their network,
damdjax.networks.SlotQNetwork) against loops and numpy."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from damdjax import replay
from damdjax import schedulers as S
from damdjax.heuristics import pair_from_name
from damdjax.networks import SlotQNetwork
from damdjax.schedulers import AgentObs
from damdjax.targets import td_loss, td_targets
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.observation import OWN_FEATURES, SLOT_FEATURES

CFG = EnvConfig(n_max=20, m_max=4, queue_capacity=6)
PARAMS = EnvParams(num_tasks=20, num_servers=3, density=3.0)   # 3 real servers of 4
M, Q, F_Q, F_O = CFG.m_max, CFG.queue_capacity, len(SLOT_FEATURES), len(OWN_FEATURES)


def tree_allclose(a, b, rtol=1e-5, atol=1e-5):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                         rtol=rtol, atol=atol), a, b)


def tree_equal(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def take(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.fixture(scope="module")
def obs():
    """Observations of two NF and two RF episodes, flattened to [T, M, ...].

    Besides each epoch's real observation, also the observation of the same
    state with every server made idle, so that several servers need a pick.
    """
    env = EdgeEnv(CFG)

    def roll(key, policy):
        _, state = env.reset(key, PARAMS)

        def body(state, k):
            idle = state.replace(running=jnp.full_like(state.running, -1))
            seen = (env.observe(state, PARAMS), env.observe(idle, PARAMS))
            state = env.step(k, state, policy(k, state), PARAMS)[1]
            return state, seen

        return jax.lax.scan(body, state, jax.random.split(key, CFG.max_steps))[1]

    nf, rf = pair_from_name("NF"), pair_from_name("RF")

    def policy(k, state, use_nf):            # one compiled rollout for both heuristics
        return jax.tree.map(lambda a, b: jnp.where(use_nf, a, b), nf(k, state), rf(k, state))

    run = jax.jit(jax.vmap(lambda k, flag: roll(k, lambda k_, s: policy(k_, s, flag))))
    seen = run(jax.random.split(jax.random.PRNGKey(0), 4), jnp.array([True, True, False, False]))
    return jax.tree.map(lambda *x: np.concatenate([np.reshape(a, (-1,) + a.shape[2:]) for a in x]),
                        *seen)


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

def test_scheduler_inputs_matches_numpy(obs):
    view = jax.jit(S.scheduler_inputs)(obs)
    real, own = np.asarray(obs.server_mask), np.asarray(obs.own)
    assert (real.sum(-1) == 3).all() and (~real).any()
    others = np.zeros_like(own)
    for t in range(own.shape[0]):
        for n in range(M):
            rows = [own[t, j] for j in range(M) if real[t, j] and j != n]
            if rows:
                others[t, n] = np.mean(rows, axis=0)
    np.testing.assert_allclose(view.others, others, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(view.slots, obs.slots)
    np.testing.assert_array_equal(view.own, obs.own)
    np.testing.assert_array_equal(view.mask, obs.pick_mask)
    np.testing.assert_array_equal(view.needed, obs.pick_needed & real)
    np.testing.assert_array_equal(view.server_mask, real)
    # the padded server needs nothing and has nothing eligible
    assert not np.asarray(view.needed)[~real].any() and not np.asarray(view.mask)[~real].any()
    # the data really has states where several servers (and which) must pick
    needed = np.asarray(view.needed)
    assert (needed.sum(-1) >= 2).sum() >= 5 and needed[:, :3].any(0).all()
    assert (np.asarray(view.mask).any(-1) & ~needed).any()    # eligible but busy
    # one observation (no batch axis) gives the same rows
    one = S.scheduler_inputs(take(obs, 7))
    tree_allclose(one, take(view, 7), rtol=0, atol=1e-7)
    # agent_axis keeps the agent axis where it is; agents_first swaps it to the front
    a = S.agent_axis(view)
    assert a.slots is view.slots and a.mask is view.mask and a.others is view.others
    f = S.agents_first(a)
    assert f.slots.shape == (M, own.shape[0], Q, F_Q) and f.own.shape == (M, own.shape[0], F_O)
    np.testing.assert_array_equal(f.mask[2, 5], view.mask[5, 2])


def test_others_with_one_real_server_is_zero():
    rng = np.random.default_rng(0)
    fake = type("O", (), dict(
        slots=rng.normal(size=(2, M, Q, F_Q)), own=rng.normal(size=(2, M, F_O)) + 5,
        pick_mask=np.ones((2, M, Q), bool), pick_needed=np.ones((2, M), bool),
        server_mask=np.array([[False, True, False, False], [True, True, False, False]])))
    view = S.scheduler_inputs(fake)
    np.testing.assert_allclose(view.others[0, 1], 0.0)                       # nobody else
    for j in (0, 2, 3):                 # (padded servers see the real ones; they never act)
        np.testing.assert_allclose(view.others[0, j], fake.own[0, 1], rtol=1e-6)
    np.testing.assert_allclose(view.others[1, 0], fake.own[1, 1], rtol=1e-6)
    np.testing.assert_allclose(view.others[1, 1], fake.own[1, 0], rtol=1e-6)
    np.testing.assert_allclose(view.others[1, 2], fake.own[1, :2].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(view.needed, fake.server_mask)


# ---------------------------------------------------------------------------
# Network and per-agent parameters
# ---------------------------------------------------------------------------

NET = SlotQNetwork(hidden=(16, 16))
init_params = jax.jit(S.init_agent_params, static_argnums=(0, 3, 4))   # (net, key, ex, M, share)


def one_agent(view):
    """One agent's example inputs (no agent or batch axis)."""
    return take(S.agent_axis(view), (0, 0))


def test_init_agent_params_stacked_and_shared(obs):
    ex = one_agent(S.scheduler_inputs(obs))
    key = jax.random.PRNGKey(3)
    stacked = init_params(NET, key, ex, M, share=False)
    shared = init_params(NET, key, ex, M, share=True)
    init = jax.jit(NET.init)
    ref = init(key, *ex)
    tree_equal(shared, ref)                                      # no agent axis
    jax.tree.map(lambda s, r: np.testing.assert_equal(s.shape, (M,) + r.shape), stacked, ref)
    keys = jax.random.split(key, M)
    for n in range(M):
        tree_allclose(take(stacked, n), init(keys[n], *ex), rtol=1e-6, atol=1e-7)
    kernels = [x for path, x in jax.tree_util.tree_leaves_with_path(stacked)
               if "kernel" in jax.tree_util.keystr(path)]
    assert len(kernels) == 3
    for k in kernels:
        for n in range(1, M):
            assert not np.allclose(k[0], k[n])                  # agents start different


def test_agents_q_matches_loop(obs):
    view = S.scheduler_inputs(obs)
    ex = one_agent(view)
    a = S.agents_first(S.agent_axis(view))                      # [M, T, ...]
    t = a.slots.shape[1]
    for share in (False, True):
        params = init_params(NET, jax.random.PRNGKey(5), ex, M, share)
        q = jax.jit(lambda p, o: S.agents_q(NET, p, o, share))(params, a)
        assert q.shape == (M, t, Q)
        for n in range(M):
            p_n = params if share else take(params, n)
            np.testing.assert_allclose(q[n], NET.apply(p_n, *take(a, n)), rtol=1e-5, atol=1e-5)
        # one env: leaves [M, ...]
        q7 = S.agents_q(NET, params, take(a, (slice(None), 7)), share)
        np.testing.assert_allclose(q7, q[:, 7], rtol=1e-5, atol=1e-5)


def test_slot_network_shared_over_slots_and_mask_only_pools():
    rng = np.random.default_rng(1)
    slots = rng.normal(size=(5, Q, F_Q)).astype(np.float32)
    own, others = rng.normal(size=(5, F_O)).astype(np.float32), rng.normal(size=(5, F_O))
    mask = np.array([True, False, True, True, False, False])
    params = NET.init(jax.random.PRNGKey(0), slots[0], own[0], others[0], mask)
    q = np.asarray(NET.apply(params, slots, own, others, np.broadcast_to(mask, (5, Q))))
    assert q.shape == (5, Q)
    # permuting slots permutes Q; any queue size works with the same weights
    perm = np.array([3, 0, 5, 1, 2, 4])
    np.testing.assert_allclose(NET.apply(params, slots[:, perm], own, others, mask[perm]),
                               q[:, perm], rtol=1e-5, atol=1e-5)
    assert NET.apply(params, slots[:, :4], own, others, mask[:4]).shape == (5, 4)
    # a slot outside the mask changes only its own Q; one inside changes the others' too
    junk = slots.copy()
    junk[:, 1] += 100.0
    qj = np.asarray(NET.apply(params, junk, own, others, mask))
    np.testing.assert_allclose(np.delete(qj, 1, 1), np.delete(q, 1, 1), rtol=1e-6, atol=1e-6)
    junk = slots.copy()
    junk[:, 2] += 100.0
    assert not np.allclose(np.asarray(NET.apply(params, junk, own, others, mask))[:, 0], q[:, 0])
    # without pooling the mask is irrelevant
    flat = SlotQNetwork(hidden=(8,), pool=False)
    pf = flat.init(jax.random.PRNGKey(0), slots, own, others, None)
    np.testing.assert_array_equal(flat.apply(pf, slots, own, others, mask),
                                  flat.apply(pf, slots, own, others, None))


# ---------------------------------------------------------------------------
# Acting
# ---------------------------------------------------------------------------

def test_agents_act_respects_masks_random():
    rng = np.random.default_rng(2)
    b, m, q_ = 500, 4, 6
    mask = rng.random((b, m, q_)) < 0.35
    mask[rng.random((b, m)) < 0.1] = False                       # some empty queues
    needed = mask.any(-1) & (rng.random((b, m)) < 0.8)
    q = rng.normal(size=(b, m, q_)).astype(np.float32)
    q = np.where(mask, q, q + 50.0)                              # invalid slots look best
    greedy = np.where(needed, np.argmax(np.where(mask, q, -np.inf), -1), 0)
    act = jax.jit(S.agents_act)
    for k, eps in enumerate((0.0, 0.2, 1.0, 1.0)):
        picks = np.asarray(act(jax.random.PRNGKey(k), q, mask, needed, eps))
        assert picks.shape == (b, m) and picks.dtype == np.int32
        chosen = np.take_along_axis(mask, picks[..., None], -1)[..., 0]
        assert chosen[needed].all()
        assert (picks[~needed] == 0).all()
        if eps == 0.0:
            np.testing.assert_array_equal(picks, greedy)
        if eps == 1.0:                       # exploration is uniform and per agent
            several = needed & (mask.sum(-1) >= 2)
            assert 0.3 < np.mean(picks[several] != greedy[several]) < 0.8
    np.testing.assert_array_equal(S.agents_greedy(q, mask, needed), greedy)
    np.testing.assert_array_equal(S.agents_greedy(q, mask),
                                  np.argmax(np.where(mask, q, -np.inf), -1) * mask.any(-1))
    # a per-agent epsilon [M]: agent 0 greedy, the others explore
    picks = np.asarray(act(jax.random.PRNGKey(9), q, mask, needed,
                           jnp.array([0.0, 1.0, 1.0, 1.0])))
    np.testing.assert_array_equal(picks[:, 0], greedy[:, 0])
    assert (picks[:, 1:] != greedy[:, 1:]).any()


def test_agents_act_on_real_observations(obs):
    view = S.scheduler_inputs(obs)
    mask, needed = np.asarray(view.mask), np.asarray(view.needed)
    rng = np.random.default_rng(3)
    for k, eps in enumerate((0.0, 0.5, 1.0)):
        q = rng.normal(size=mask.shape).astype(np.float32)
        q = np.where(mask, q, q + 50.0)
        picks = np.asarray(S.agents_act(jax.random.PRNGKey(k), q, view.mask, view.needed, eps))
        assert np.take_along_axis(mask, picks[..., None], -1)[..., 0][needed].all()
        assert (picks[~needed] == 0).all() and (picks[:, 3] == 0).all()   # padded server
        if eps == 0.0:
            np.testing.assert_array_equal(
                picks, np.where(needed, np.argmax(np.where(mask, q, -np.inf), -1), 0))


# ---------------------------------------------------------------------------
# Per-agent pools
# ---------------------------------------------------------------------------

PM, E, C = 4, 3, 5


def coded(code):
    """AgentObs [PM, E, ...] whose every feature of row (n, e) is code[n, e]."""
    c = np.asarray(code, np.float32)
    return AgentObs(slots=np.broadcast_to(c[..., None, None], c.shape + (2, 2)).copy(),
                    own=np.broadcast_to(c[..., None], c.shape + (3,)).copy(),
                    others=np.broadcast_to(-c[..., None], c.shape + (3,)).copy(),
                    mask=np.broadcast_to((c[..., None] % 2) == 0, c.shape + (2,)).copy())


EXAMPLE = take(coded(np.zeros((1, 1))), (0, 0))
# agent 0 always decides (and wraps), agents 1-2 sometimes, agent 3 once (never completed)
# VALID[step][agent, env]
VALID = [np.array([[1, 1, 1], [1, 0, 0], [1, 1, 1], [0, 0, 0]], bool),
         np.array([[0, 1, 1], [0, 1, 0], [0, 0, 1], [1, 0, 0]], bool),
         np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]], bool)]


def code_of(step):
    return 100 * step + 10 * np.arange(E)[None, :] + np.arange(PM)[:, None]   # [PM, E]


@pytest.fixture(scope="module")
def filled():
    """Three adds (agent 0 wraps around), with the per-step (index, stamp)."""
    pools = S.init_pools(EXAMPLE, C, PM)
    add = jax.jit(S.pools_add)
    steps = []
    for s, valid in enumerate(VALID):
        pools, idx, stamp = add(pools, coded(code_of(s)), jnp.asarray(code_of(s)), valid)
        steps.append((np.asarray(idx), np.asarray(stamp)))
    return pools, steps


def test_pools_add_keeps_each_agents_own_rows(filled):
    pools, steps = filled
    assert pools.action.shape == (PM, C) and pools.obs.slots.shape == (PM, C, 2, 2)
    for n in range(PM):
        written = [code_of(s)[n, e] for s, v in enumerate(VALID) for e in range(E) if v[n, e]]
        expect = np.zeros(C, int)
        stamps = np.full(C, -1)
        for w, code in enumerate(written):
            expect[w % C], stamps[w % C] = code, w
        np.testing.assert_array_equal(pools.action[n], expect)
        np.testing.assert_array_equal(pools.obs.slots[n, :, 1, 0], expect)
        np.testing.assert_array_equal(pools.obs.others[n, :, 2], -expect)
        np.testing.assert_array_equal(pools.stamp[n], stamps)
        assert int(pools.count[n]) == min(len(written), C)
        assert int(pools.position[n]) == len(written) % C
        # returned (index, stamp) per row: running write count where valid, -1 elsewhere
        w = 0
        for s, v in enumerate(VALID):
            idx, stamp = steps[s][0][n], steps[s][1][n]
            for e in range(E):
                if v[n, e]:
                    assert (idx[e], stamp[e]) == (w % C, w)
                    w += 1
                else:
                    assert (idx[e], stamp[e]) == (-1, -1)
    assert np.asarray(pools.action)[0].tolist() == [200, 210, 220, 110, 120]      # wrapped
    # the same as the replay buffer used agent by agent
    for n in range(PM):
        one = replay.init(EXAMPLE, C)
        for s, valid in enumerate(VALID):
            one = replay.add_batch(one, take(coded(code_of(s)), n), code_of(s)[n], valid[n])[0]
        tree_equal(take(pools, n), one)


@pytest.fixture(scope="module")
def completed(filled):
    """Fill step 0's and step 2's entries (step 0's are stale for agent 0 by now)."""
    pools, steps = filled
    complete = jax.jit(S.pools_complete)
    for s in (0, 2):
        idx, stamp = steps[s]
        code = code_of(s)
        pools = complete(pools, idx, stamp, coded(code + 1000), code / 1000.0, code % 20 == 0,
                         VALID[s])
    return pools


def test_pools_complete_fills_only_matching_stamps(filled, completed):
    before, steps = filled
    pools = completed
    for n in range(PM):
        done = {}                                       # slot -> code of the filled entry
        for s in (0, 2):
            idx, stamp = steps[s]
            for e in range(E):
                if VALID[s][n, e] and before.stamp[n, idx[n, e]] == stamp[n, e]:
                    done[int(idx[n, e])] = code_of(s)[n, e]
        filled_slots = sorted(done)
        np.testing.assert_array_equal(np.flatnonzero(pools.has_reward[n]), filled_slots)
        np.testing.assert_array_equal(np.flatnonzero(pools.has_next[n]), filled_slots)
        for i, code in done.items():
            assert int(pools.action[n, i]) == code                      # the entry it belongs to
            np.testing.assert_allclose(pools.reward[n, i], code / 1000.0, rtol=1e-6)
            assert bool(pools.terminal[n, i]) == (code % 20 == 0)
            np.testing.assert_array_equal(pools.next_obs.own[n, i], code + 1000)
            np.testing.assert_array_equal(pools.next_obs.mask[n, i], code % 2 == 0)
        tree_equal(take(pools, n).obs, take(before, n).obs)            # obs untouched
    # agent 0 wrapped: step 0's fills are stale (slots 0-2 now hold step 2's entries)
    np.testing.assert_array_equal(np.flatnonzero(pools.has_reward[0]), [0, 1, 2])
    np.testing.assert_array_equal(pools.action[0], [200, 210, 220, 110, 120])
    np.testing.assert_allclose(pools.reward[0, :3], [0.2, 0.21, 0.22], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(pools.has_reward).sum(1), [3, 1, 3, 0])
    assert int(pools.count[3]) == 1                              # written, never completed
    np.testing.assert_array_equal(S.pools_ready(pools),
                                  [len(np.flatnonzero(pools.has_reward[n])) for n in range(PM)])


def test_pools_sample_own_ready_entries(completed):
    pools = completed
    ready = np.asarray(jax.vmap(replay.ready)(pools))
    counts = np.asarray(S.pools_ready(pools))
    np.testing.assert_array_equal(counts, ready.sum(1))
    np.testing.assert_array_equal(counts, [3, 1, 3, 0])
    key = jax.random.PRNGKey(4)
    batch, valid = jax.jit(S.pools_sample, static_argnums=2)(pools, key, 64)
    batch, valid, idx = jax.tree.map(np.asarray, batch), np.asarray(valid), np.asarray(batch.index)
    assert valid.shape == (PM, 64) and batch.obs.slots.shape == (PM, 64, 2, 2)
    for n in range(PM):
        if counts[n] == 0:
            assert not valid[n].any()
            continue
        assert valid[n].all() and ready[n, idx[n]].all()
        assert set(idx[n]) == set(np.flatnonzero(ready[n]))        # every ready entry drawn
        np.testing.assert_array_equal(batch.action[n], pools.action[n, idx[n]])
        assert (batch.action[n] % 10 == n).all()                     # its own decisions
        np.testing.assert_array_equal(batch.obs.own[n, :, 0], batch.action[n])
        np.testing.assert_array_equal(batch.next_obs.own[n, :, 0], batch.action[n] + 1000)
        np.testing.assert_allclose(batch.reward[n], batch.action[n] / 1000.0, rtol=1e-6)
    # independent draws: one key per agent, as replay.sample agent by agent
    keys = jax.random.split(key, PM)
    for n in range(PM):
        one, ok = replay.sample(take(pools, n), keys[n], 64)
        tree_equal(take(batch, n), one)
        np.testing.assert_array_equal(valid[n], ok)


# ---------------------------------------------------------------------------
# Learning
# ---------------------------------------------------------------------------

UM, B, UQ = 3, 8, 5
OPT = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
GAMMA = 0.9


def random_batch(seed):
    """A Transition of AgentObs, leaves [UM, B, ...]; agent 2 has no valid row."""
    rng = np.random.default_rng(seed)

    def agent_obs():
        mask = rng.random((UM, B, UQ)) < 0.5
        mask[:, :, 0] |= rng.random((UM, B)) < 0.5
        return AgentObs(slots=rng.normal(size=(UM, B, UQ, F_Q)).astype(np.float32),
                        own=rng.normal(size=(UM, B, F_O)).astype(np.float32),
                        others=rng.normal(size=(UM, B, F_O)).astype(np.float32), mask=mask)

    batch = replay.Transition(
        obs=agent_obs(), action=rng.integers(0, UQ, (UM, B)).astype(np.int32),
        reward=(rng.random((UM, B)) * 20).astype(np.float32), next_obs=agent_obs(),
        terminal=rng.random((UM, B)) < 0.2, index=np.zeros((UM, B), np.int32))
    valid = rng.random((UM, B)) < 0.7
    valid[:, 0] = True
    valid[2] = False
    return batch, valid


def ref_loss(p, tp, batch, valid, double):
    """One agent's loss written out by hand: batch leaves [B, ...]."""
    q = NET.apply(p, *batch.obs)
    qn = NET.apply(tp, *batch.next_obs)
    qo = NET.apply(p, *batch.next_obs) if double else None
    target = td_targets(qn, batch.next_obs.mask, batch.reward, batch.terminal, GAMMA, qo)
    return td_loss(q, batch.action, target, valid)


def _stacked(key, ex):
    return init_params(NET, key, ex, UM, share=False)


@pytest.mark.parametrize("double", [False, True])
def test_per_agent_update_matches_single_agent_loop(double):
    batch, valid = random_batch(0)
    ex = take(batch.obs, (0, 0))
    params = _stacked(jax.random.PRNGKey(0), ex)
    target = _stacked(jax.random.PRNGKey(1), ex)
    update = jax.jit(S.make_agents_update(NET, OPT, GAMMA, share=False, double=double))
    opt_state = S.init_agents_opt(OPT, params, share=False)
    tree_equal(take(opt_state, 1), OPT.init(take(params, 1)))
    loss_grad = jax.jit(jax.value_and_grad(ref_loss), static_argnums=4)
    opt_update = jax.jit(OPT.update)
    p, o = params, opt_state
    for step in range(2):                                      # two steps: adam's state matters
        b, v = random_batch(step) if step else (batch, valid)
        new_p, new_o, loss = update(p, target, o, b, v)
        assert loss.shape == (UM,)
        for n in range(UM):
            p_n, o_n, b_n, v_n = take(p, n), take(o, n), take(b, n), v[n]
            l_n, g_n = loss_grad(p_n, take(target, n), b_n, v_n, double)
            if v_n.any():
                norm = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(g_n)))
                assert norm > 1.0                                  # clipping matters
                u_n, ro_n = opt_update(g_n, o_n, p_n)
                tree_allclose(take(new_p, n), optax.apply_updates(p_n, u_n))
                tree_allclose(take(new_o, n), ro_n)
                np.testing.assert_allclose(loss[n], l_n, rtol=1e-5, atol=1e-5)
            else:                                              # nothing to learn from
                tree_equal(take(new_p, n), p_n)
                tree_equal(take(new_o, n), o_n)
                assert float(loss[n]) == 0.0
        p, o = new_p, new_o
    assert not np.allclose(p["params"]["Dense_0"]["kernel"][0],
                           params["params"]["Dense_0"]["kernel"][0])


def test_traced_double_flag_against_targets_by_hand():
    """`double` traced (train.mdqn passes `Hyper.double_dqn`): each agent's loss is the
    Huber TD loss against targets computed in numpy from the networks' Q (1: the online
    net's greedy valid slot valued by the target net; 0: the masked max, bitwise the
    update without the flag)."""
    batch, valid = random_batch(2)
    ex = take(batch.obs, (0, 0))
    params, target = _stacked(jax.random.PRNGKey(0), ex), _stacked(jax.random.PRNGKey(1), ex)
    opt_state = S.init_agents_opt(OPT, params, share=False)
    run = jax.jit(lambda d, *a: S.make_agents_update(NET, OPT, GAMMA, False, d)(*a))
    args = (params, target, opt_state, batch, valid)
    q = np.asarray(S.agents_q(NET, params, batch.obs, False))                 # [UM, B, UQ]
    qt = np.asarray(S.agents_q(NET, target, batch.next_obs, False), np.float64)
    qo = np.asarray(S.agents_q(NET, params, batch.next_obs, False))
    mask = batch.next_obs.mask
    live = ~batch.terminal & mask.any(-1)
    pick = np.argmax(np.where(mask, qo, -np.inf), -1)                        # [UM, B]
    assert ((pick != np.argmax(np.where(mask, qt, -np.inf), -1)) & live & valid).any()
    assert np.take_along_axis(mask, pick[..., None], -1)[..., 0][live].all()
    by_pick = np.take_along_axis(qt, pick[..., None], -1)[..., 0]
    by_max = np.where(mask, qt, -np.inf).max(-1)
    q_a = np.take_along_axis(q, batch.action[..., None], -1)[..., 0]
    for flag, v_next in ((1.0, by_pick), (0.0, by_max)):
        err = q_a - (batch.reward + GAMMA * np.where(live, v_next, 0.0))
        per = np.where(np.abs(err) <= 1, 0.5 * err ** 2, np.abs(err) - 0.5)
        want = np.sum(per * valid, -1) / np.maximum(valid.sum(-1), 1)
        np.testing.assert_allclose(run(jnp.float32(flag), *args)[2], want, rtol=1e-5, atol=1e-6)
    tree_equal(run(jnp.float32(0.0), *args), jax.jit(S.make_agents_update(NET, OPT, GAMMA,
                                                                            False))(*args))
    tree_allclose(run(jnp.float32(1.0), *args), jax.jit(S.make_agents_update(
        NET, OPT, GAMMA, False, True))(*args))


def test_shared_update_is_mean_of_agent_losses():
    batch, valid = random_batch(1)
    ex = take(batch.obs, (0, 0))
    params = init_params(NET, jax.random.PRNGKey(0), ex, UM, share=True)
    target = init_params(NET, jax.random.PRNGKey(1), ex, UM, share=True)
    opt_state = S.init_agents_opt(OPT, params, share=True)
    tree_equal(opt_state, OPT.init(params))
    update = jax.jit(S.make_agents_update(NET, OPT, GAMMA, share=True))
    new_p, new_o, loss = update(params, target, opt_state, batch, valid)

    def by_hand(p):
        losses = [ref_loss(p, target, take(batch, n), valid[n], False) for n in range(UM)]
        with_rows = [l for n, l in enumerate(losses) if valid[n].any()]   # agents 0 and 1
        return sum(with_rows) / len(with_rows), jnp.stack(losses)

    (_, losses), grads = jax.jit(jax.value_and_grad(by_hand, has_aux=True))(params)
    u, ro = OPT.update(grads, opt_state, params)
    tree_allclose(new_p, optax.apply_updates(params, u))
    tree_allclose(new_o, ro)
    np.testing.assert_allclose(loss, losses, rtol=1e-5, atol=1e-6)
    assert float(loss[2]) == 0.0 and (np.asarray(loss[:2]) > 0).all()
    # adam (after clipping) hides the gradient's scale: with plain SGD the step IS -grad
    sgd = optax.sgd(1.0)
    step = jax.jit(S.make_agents_update(NET, sgd, GAMMA, share=True))
    moved = step(params, target, S.init_agents_opt(sgd, params, True), batch, valid)[0]
    tree_allclose(jax.tree.map(jnp.subtract, moved, params), jax.tree.map(jnp.negative, grads))
    # nothing valid anywhere: unchanged
    none = np.zeros_like(valid)
    same_p, same_o, zero = update(params, target, opt_state, batch, none)
    tree_equal(same_p, params)
    tree_equal(same_o, opt_state)
    np.testing.assert_array_equal(zero, 0.0)
