"""Tests of the DQN building blocks: damdjax.networks, damdjax.replay, damdjax.targets."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from damdjax import replay
from damdjax.networks import (
    NEG_Q, DispatchQNetwork, DispatchView, dispatch_inputs, epsilon_greedy, greedy_action,
    masked_q)
from damdjax.targets import masked_max, periodic_copy, polyak, td_loss, td_targets

F_T, F_S, M = 6, 14, 5


def stack(vs):
    """A batch of small dispatcher-like observations, row i's features all `vs[i]`."""
    v = np.asarray(vs, np.float32)
    return DispatchView(task=np.repeat(v[:, None], F_T, 1),
                        servers=np.repeat(v[:, None, None], M, 1).repeat(F_S, 2),
                        mask=np.ones((len(v), M), bool), server_mask=np.ones((len(v), M), bool))


def obs_of(v):
    return jax.tree.map(lambda x: x[0], stack([v]))


EXAMPLE = obs_of(0.0)
add, add_batch = jax.jit(replay.add), jax.jit(replay.add_batch)
set_reward, set_next = jax.jit(replay.set_reward), jax.jit(replay.set_next)
sample = jax.jit(replay.sample, static_argnums=2)
init = jax.jit(replay.init, static_argnums=1)


# ---------------------------------------------------------------------------
# Replay buffer
# ---------------------------------------------------------------------------

def test_wrap_around_overwrites_oldest():
    buf = init(EXAMPLE, 4)
    got = []
    for i in range(6):
        buf, idx, stamp = add(buf, obs_of(i), i)
        got.append((int(idx), int(stamp)))
    assert got == [(0, 0), (1, 1), (2, 2), (3, 3), (0, 4), (1, 5)]
    assert int(buf.position) == 2 and int(buf.count) == 4 and int(buf.writes) == 6
    np.testing.assert_array_equal(buf.action, [4, 5, 2, 3])
    np.testing.assert_array_equal(buf.obs.task[:, 0], [4, 5, 2, 3])
    np.testing.assert_array_equal(buf.stamp, [4, 5, 2, 3])
    assert not buf.has_reward.any() and not buf.has_next.any()


def test_add_batch_writes_valid_rows_contiguously():
    buf = init(EXAMPLE, 6)
    buf, _, _ = add(buf, obs_of(9), 9)                      # position 1
    buf, _, _ = add(buf, obs_of(9), 9)                      # position 2
    valid = jnp.array([True, False, True, False, True])
    buf, idx, stamp = add_batch(buf, stack([10, 11, 12, 13, 14]),
                                       jnp.arange(10, 15), valid)
    np.testing.assert_array_equal(idx, [2, -1, 3, -1, 4])
    np.testing.assert_array_equal(stamp, [2, -1, 3, -1, 4])
    np.testing.assert_array_equal(buf.action, [9, 9, 10, 12, 14, 0])
    np.testing.assert_array_equal(buf.obs.servers[:, 0, 0], [9, 9, 10, 12, 14, 0])
    assert int(buf.position) == 5 and int(buf.count) == 5
    # the next batch wraps around the end
    buf, idx, _ = add_batch(buf, stack([20, 21, 22]), jnp.arange(20, 23),
                                   jnp.array([True, True, True]))
    np.testing.assert_array_equal(idx, [5, 0, 1])
    np.testing.assert_array_equal(buf.action, [21, 22, 10, 12, 14, 20])
    assert int(buf.position) == 2 and int(buf.count) == 6 and int(buf.writes) == 8


def _partly_filled(capacity=8, n=8):
    """Entries 0..n-1, action i; rewards only on even i, next obs only on i % 3 != 2."""
    buf = init(EXAMPLE, capacity)
    buf, idx, stamp = add_batch(buf, stack(np.arange(n)), jnp.arange(n),
                                       jnp.ones(n, bool))
    i = np.arange(n)
    buf = set_reward(buf, idx, stamp, -jnp.arange(n, dtype=jnp.float32), i % 2 == 0)
    buf = set_next(buf, idx, stamp, stack(100 + i), i == 4, i % 3 != 2)
    return buf


def test_sample_returns_only_ready_entries():
    buf = _partly_filled()
    ok = np.asarray(replay.ready(buf))
    expect = [(i % 2 == 0) and (i % 3 != 2) for i in range(8)]       # 0, 4, 6
    np.testing.assert_array_equal(ok, expect)
    seen = set()
    for k in range(5):
        batch, valid = sample(buf, jax.random.PRNGKey(k), 1000)
        assert valid.all()
        a = np.asarray(batch.action)
        assert np.isin(a, [0, 4, 6]).all()
        np.testing.assert_array_equal(batch.reward, -a)
        np.testing.assert_array_equal(batch.next_obs.task[:, 0], 100 + a)
        np.testing.assert_array_equal(batch.terminal, a == 4)
        np.testing.assert_array_equal(batch.obs.servers[:, 0, 0], a)
        seen.update(a.tolist())
    assert seen == {0, 4, 6}


def test_sample_roughly_uniform():
    buf = _partly_filled()
    batch, _ = sample(buf, jax.random.PRNGKey(0), 6000)
    counts = np.bincount(np.asarray(batch.action), minlength=8)[[0, 4, 6]]
    assert (np.abs(counts - 2000) < 200).all(), counts


def test_stale_fill_after_wrap_around_is_dropped():
    buf = init(EXAMPLE, 4)
    buf, idx0, stamp0 = add(buf, obs_of(0), 0)
    for i in range(1, 5):                                           # entry 4 overwrites slot 0
        buf, idx, stamp = add(buf, obs_of(i), i)
    assert int(idx) == int(idx0) == 0 and int(stamp) == 4
    one = lambda x: jnp.asarray([x])
    buf = set_reward(buf, one(idx0), one(stamp0), one(1.0), one(True))
    buf = set_next(buf, one(idx0), one(stamp0), stack([7]), one(True), one(True))
    assert not buf.has_reward[0] and not buf.has_next[0]
    assert float(buf.reward[0]) == 0.0 and float(buf.next_obs.task[0, 0]) == 0.0
    # the fill with the current stamp lands
    buf = set_reward(buf, one(idx), one(stamp), one(2.0), one(True))
    buf = set_next(buf, one(idx), one(stamp), stack([8]), one(False), one(True))
    assert bool(replay.ready(buf)[0]) and float(buf.reward[0]) == 2.0
    # invalid rows and index -1 are dropped too
    buf2 = set_reward(buf, jnp.array([1, -1]), jnp.array([1, -1]), jnp.array([5.0, 6.0]),
                             jnp.array([False, True]))
    assert not buf2.has_reward.any() ^ buf.has_reward.any()
    np.testing.assert_array_equal(buf2.reward, buf.reward)


def test_fill_resets_on_rewrite():
    """A filled entry that gets overwritten is not ready until filled again."""
    buf = init(EXAMPLE, 2)
    buf, idx, stamp = add_batch(buf, stack([0, 1]), jnp.arange(2), jnp.ones(2, bool))
    buf = set_reward(buf, idx, stamp, jnp.ones(2), jnp.ones(2, bool))
    buf = set_next(buf, idx, stamp, stack([5, 6]), jnp.zeros(2, bool), jnp.ones(2, bool))
    assert replay.ready(buf).all()
    buf, _, _ = add(buf, obs_of(2), 2)
    np.testing.assert_array_equal(replay.ready(buf), [False, True])


def test_sample_empty_buffer_is_invalid():
    buf = init(EXAMPLE, 4)
    batch, valid = sample(buf, jax.random.PRNGKey(0), 8)
    assert valid.shape == (8,) and not valid.any()
    buf, _, _ = add(buf, obs_of(1), 1)                       # written but not filled
    _, valid = sample(buf, jax.random.PRNGKey(1), 8)
    assert not valid.any() and int(replay.num_ready(buf)) == 0


def test_jit_matches_eager():
    x = lambda *v: {"x": np.asarray(v, np.float32)[:, None]}          # a one-leaf obs [B, 1]

    def script(buf, key):
        buf, idx, stamp = replay.add_batch(buf, x(1, 2, 3), np.array([1, 2, 3]),
                                           np.array([True, False, True]))
        buf, _, _ = replay.add(buf, {"x": np.array([4.0], np.float32)}, 4)
        buf, _, _ = replay.add(buf, {"x": np.array([5.0], np.float32)}, 5)   # overwrites "1"
        buf = replay.set_reward(buf, idx, stamp, np.array([0.5, 0.6, 0.7]), idx >= 0)
        buf = replay.set_next(buf, idx, stamp, x(7, 8, 9), np.array([False, True, True]),
                              idx >= 0)
        batch, valid = replay.sample(buf, key, 16)
        return buf, batch, valid

    buf0 = replay.init({"x": np.zeros(1, np.float32)}, 3)
    eager = script(buf0, jax.random.PRNGKey(3))
    jitted = jax.jit(script)(buf0, jax.random.PRNGKey(3))
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_array_equal(a, b)
    _, batch, valid = eager
    assert valid.all() and (np.asarray(batch.action) == 3).all()
    np.testing.assert_array_equal(batch.next_obs["x"][:, 0], 9.0)


def test_vmap_over_buffers():
    """Independent buffers (e.g. one per env) under vmap."""
    bufs = jax.vmap(lambda _: replay.init(EXAMPLE, 4))(jnp.arange(3))
    obs = jax.tree.map(lambda *x: np.stack(x), *[stack([v, v + 1]) for v in range(3)])
    valid = jnp.array([[True, True], [False, True], [False, False]])
    bufs, idx, _ = jax.vmap(replay.add_batch)(bufs, obs, jnp.ones((3, 2), jnp.int32), valid)
    np.testing.assert_array_equal(idx, [[0, 1], [-1, 0], [-1, -1]])
    np.testing.assert_array_equal(bufs.count, [2, 1, 0])


def _chain(gamma_rewards=(1.0, 2.0, 4.0, 8.0)):
    """Slots 0-3: one env's four successive decisions (obs 0-3, actions 0-3, rewards
    `gamma_rewards`, each next obs its successor's obs, the last terminal), linked;
    slot 4: another env's decision (obs 9, reward 16, next obs 10), unlinked."""
    buf = init(EXAMPLE, 8)
    buf, idx, stamp = add_batch(buf, stack([0, 1, 2, 3, 9]), jnp.array([0, 1, 2, 3, 9]),
                                jnp.ones(5, bool))
    rewards = jnp.array(list(gamma_rewards) + [16.0])
    buf = set_reward(buf, idx, stamp, rewards, jnp.ones(5, bool))
    buf = set_next(buf, idx, stamp, stack([1, 2, 3, 4, 10]),
                   jnp.array([False, False, False, True, False]), jnp.ones(5, bool))
    link = jnp.array([True, True, True, False, False])
    buf = jax.jit(replay.set_successor)(buf, idx, stamp, jnp.roll(idx, -1), jnp.roll(stamp, -1),
                                        link)
    return buf


def _walks(buf, n, gamma=0.5, size=400):
    """action -> (reward, next obs value, terminal, discount) over a large batch."""
    batch, valid = sample(buf, jax.random.PRNGKey(0), size, n, gamma)
    assert valid.all()
    out = {}
    for i in range(size):
        got = (float(batch.reward[i]), float(batch.next_obs.task[i, 0]),
               bool(batch.terminal[i]), float(batch.discount[i]))
        assert out.setdefault(int(batch.action[i]), got) == got
        assert float(batch.obs.task[i, 0]) == int(batch.action[i])   # obs stays the drawn one
    return out


def test_n_step_returns_by_hand():
    buf = _chain()
    np.testing.assert_array_equal(buf.succ[:5], [1, 2, 3, -1, -1])
    assert _walks(buf, 3) == {0: (1 + 0.5 * 2 + 0.25 * 4, 3.0, False, 0.125),
                              1: (2 + 0.5 * 4 + 0.25 * 8, 4.0, True, 0.125),
                              2: (4 + 0.5 * 8, 4.0, True, 0.25),     # the episode ends
                              3: (8.0, 4.0, True, 0.5),
                              9: (16.0, 10.0, False, 0.5)}           # no successor
    assert _walks(buf, 2)[0] == (1 + 0.5 * 2, 2.0, False, 0.25)
    assert _walks(buf, 10)[0] == (1 + 1 + 1 + 1, 4.0, True, 0.0625)
    # A successor not yet complete (no reward) ends the walk before it.
    one = lambda x: jnp.asarray([x])
    partial = buf.replace(has_reward=buf.has_reward.at[2].set(False))
    assert _walks(partial, 3)[0] == (1 + 0.5 * 2, 2.0, False, 0.25)
    # So does a successor overwritten by a later write (its stamp no longer the linked one).
    stale = buf.replace(stamp=buf.stamp.at[1].set(99))
    assert _walks(stale, 3)[0] == (1.0, 1.0, False, 0.5)
    # A stale link (the entry was rewritten since) is dropped.
    relinked = jax.jit(replay.set_successor)(buf, one(0), one(7), one(4), one(4), one(True))
    np.testing.assert_array_equal(relinked.succ, buf.succ)


def test_one_step_sample_is_the_plain_sample_bitwise():
    buf = _chain((0.3, -0.7, 1.1, 2.9))
    key = jax.random.PRNGKey(4)
    plain, ok = sample(buf, key, 64)
    one, ok1 = sample(buf, key, 64, 1, 0.9)
    assert plain.discount is None
    np.testing.assert_array_equal(ok, ok1)
    for name in ("obs", "action", "reward", "next_obs", "terminal", "index"):
        jax.tree.map(np.testing.assert_array_equal, getattr(plain, name), getattr(one, name))
    np.testing.assert_array_equal(one.discount, np.full(64, np.float32(0.9)))
    assert plain.bootstrap_discount(0.9) == 0.9


def test_n_step_traced_and_vmapped_equals_each_value():
    """`n_step` traced (a sweep's `Hyper.n_step`), vmapped over members with different
    values: each member's batch is the one of its value alone."""
    buf = _chain()
    key = jax.random.PRNGKey(2)
    ns = jnp.array([1, 3, 2], jnp.int32)
    many, _ = jax.jit(jax.vmap(lambda n: replay.sample(buf, key, 32, n, 0.5)))(ns)
    for i, n in enumerate([1, 3, 2]):
        alone, _ = sample(buf, key, 32, n, 0.5)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[i], b), many, alone)


# ---------------------------------------------------------------------------
# Masking and action selection
# ---------------------------------------------------------------------------

def test_greedy_and_epsilon_greedy_never_pick_invalid():
    rng = np.random.default_rng(0)
    b, m = 2000, 7
    mask = rng.random((b, m)) < 0.4
    mask[np.arange(b), rng.integers(0, m, b)] = True              # at least one valid
    q = rng.normal(size=(b, m)).astype(np.float32) * 10
    q = np.where(mask, q, q + 100.0)                               # invalid servers look best
    rows = np.arange(b)
    g = np.asarray(jax.jit(greedy_action)(q, mask))
    assert mask[rows, g].all()
    np.testing.assert_array_equal(g, np.argmax(np.where(mask, q, -np.inf), -1))
    eg = jax.jit(epsilon_greedy)
    for eps in (0.0, 0.3, 1.0):
        for k in range(3):
            a = np.asarray(eg(jax.random.PRNGKey(k), q, mask, eps))
            assert mask[rows, a].all()
            if eps == 0.0:
                np.testing.assert_array_equal(a, g)
            if eps == 0.3:
                assert 0.1 < np.mean(a != g) < 0.3         # 30% explore x P(not greedy)
    # with epsilon 1 every valid server is drawn, about uniformly
    one = np.array([True, False, True, True, False])
    keys = jax.random.split(jax.random.PRNGKey(9), 3000)
    a = jax.jit(jax.vmap(lambda k: epsilon_greedy(k, jnp.arange(5.0), one, 1.0)))(keys)
    counts = np.bincount(np.asarray(a), minlength=5)
    assert counts[1] == counts[4] == 0 and (np.abs(counts[[0, 2, 3]] - 1000) < 150).all()


def test_greedy_ties_and_masked_q():
    q = np.array([1.0, 3.0, 3.0, 3.0], np.float32)
    assert int(greedy_action(q, np.array([True, False, True, True]))) == 2
    assert int(greedy_action(q, np.zeros(4, bool))) == 0
    mq = np.asarray(masked_q(q, np.array([True, False, True, False])))
    np.testing.assert_array_equal(mq, [1.0, NEG_Q, 3.0, NEG_Q])
    assert np.isfinite(mq).all()


# ---------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def apply():
    net = DispatchQNetwork(hidden=(32, 32))
    zeros = np.zeros((F_T,), np.float32), np.zeros((M, F_S), np.float32)
    params = net.init(jax.random.PRNGKey(0), *zeros, np.ones((M,), bool))
    return jax.jit(lambda *x: net.apply(params, *x))


def _inputs(seed, b=4):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(b, F_T)).astype(np.float32),
            rng.normal(size=(b, M, F_S)).astype(np.float32), rng.random((b, M)) < 0.7)


def test_network_shapes(apply):
    task, servers, smask = _inputs(1)
    q = np.asarray(apply(task, servers, smask))
    assert q.shape == (4, M) and np.isfinite(q).all()
    np.testing.assert_allclose(apply(task[0], servers[0], smask[0]), q[0], rtol=1e-6, atol=1e-6)
    # the same weights for any number of servers
    assert apply(task, servers[:, :3], smask[:, :3]).shape == (4, 3)
    # and Observation-like inputs
    obs = type("O", (), dict(task=task, servers=servers, dispatch_mask=~smask, server_mask=smask))
    view = dispatch_inputs(obs)
    assert view.mask is obs.dispatch_mask and view.server_mask is smask
    t, sv, _, sm = view
    np.testing.assert_array_equal(apply(t, sv, sm), q)


def test_network_permutation_equivariance(apply):
    task, servers, smask = _inputs(2)
    q = np.asarray(apply(task, servers, smask))
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(M)
        qp = apply(task, servers[:, perm], smask[:, perm])
        np.testing.assert_allclose(qp, q[:, perm], rtol=1e-5, atol=1e-5)


def test_padded_servers_do_not_affect_real_ones(apply):
    task, servers, _ = _inputs(3)
    smask = np.array([True, True, False, True, False])
    q = np.asarray(apply(task, servers, smask))
    junk = servers.copy()
    junk[:, 2], junk[:, 4] = 1e6, np.nan
    np.testing.assert_array_equal(np.asarray(apply(task, junk, smask))[:, smask], q[:, smask])
    # ... whereas a real server's features do reach the others through the pool
    moved = servers.copy()
    moved[:, 1] += 5.0
    assert not np.allclose(np.asarray(apply(task, moved, smask))[:, 0], q[:, 0])


# ---------------------------------------------------------------------------
# Targets and target-network updates
# ---------------------------------------------------------------------------

def test_td_targets_hand_computed():
    q_next = jnp.array([[1.0, 50.0, 2.0], [4.0, 3.0, 9.0], [7.0, 0.0, 0.0], [5.0, 6.0, 7.0]])
    mask = jnp.array([[True, False, True], [True, True, True], [True, False, False],
                      [False, False, False]])
    reward = jnp.array([0.5, 1.0, 0.25, 0.75])
    terminal = jnp.array([False, True, False, False])
    t = td_targets(q_next, mask, reward, terminal, 0.9)
    # masked max ignores the 50; terminal and no-valid-action drop the bootstrap
    np.testing.assert_allclose(t, [0.5 + 0.9 * 2.0, 1.0, 0.25 + 0.9 * 7.0, 0.75], rtol=1e-6)
    np.testing.assert_allclose(masked_max(q_next, mask), [2.0, 9.0, 7.0, 0.0])
    # per-transition discount
    t = td_targets(q_next, mask, reward, terminal, jnp.array([0.5, 0.5, 0.1, 0.5]))
    np.testing.assert_allclose(t, [1.5, 1.0, 0.25 + 0.7, 0.75], rtol=1e-6)
    # double DQN: action by the online net, value by the target net
    online = jnp.array([[9.0, 99.0, 0.0], [0.0, 1.0, 0.0], [0.0, 5.0, 5.0], [0.0, 0.0, 0.0]])
    t = td_targets(q_next, mask, reward, terminal, 0.9, q_next_online=online)
    np.testing.assert_allclose(t, [0.5 + 0.9 * 1.0, 1.0, 0.25 + 0.9 * 7.0, 0.75], rtol=1e-6)


def test_double_td_targets_by_the_flag():
    # online greedy != target greedy in rows 0 and 1; row 0's online max is on an invalid
    # action (never chosen); row 2 is terminal; row 3 has no valid next action
    q_next = jnp.array([[1.0, 50.0, 2.0, 3.0], [4.0, 3.0, 9.0, 0.0], [7.0, 0.0, 0.0, 1.0],
                        [5.0, 6.0, 7.0, 8.0]])
    online = jnp.array([[9.0, 99.0, 0.0, 1.0], [0.0, 1.0, 0.5, 0.0], [0.0, 5.0, 5.0, 0.0],
                        [1.0, 0.0, 0.0, 0.0]])
    mask = jnp.array([[True, False, True, True], [True, True, True, False],
                      [True, True, True, True], [False, False, False, False]])
    reward = jnp.array([0.5, 1.0, 0.25, 0.75])
    terminal = jnp.array([False, False, True, False])
    on = [0.5 + 0.9 * 1.0, 1.0 + 0.9 * 3.0, 0.25, 0.75]     # online picks 0 and 1
    off = [0.5 + 0.9 * 3.0, 1.0 + 0.9 * 9.0, 0.25, 0.75]    # the masked max
    f = jax.jit(td_targets)
    for flag, want in ((1.0, on), (True, on), (0.0, off), (False, off)):
        np.testing.assert_allclose(f(q_next, mask, reward, terminal, 0.9, online, flag), want,
                                   rtol=1e-6)
    plain = f(q_next, mask, reward, terminal, 0.9)
    np.testing.assert_array_equal(f(q_next, mask, reward, terminal, 0.9, online, 0.0), plain)
    np.testing.assert_allclose(td_targets(q_next, mask, reward, terminal, 0.9, online), on,
                               rtol=1e-6)                  # the default: on
    # the flag per member under vmap (a sweep)
    both = jax.vmap(f, in_axes=(None,) * 6 + (0,))(q_next, mask, reward, terminal, 0.9,
                                                   online, jnp.array([0.0, 1.0]))
    np.testing.assert_array_equal(both, np.stack([plain, f(q_next, mask, reward, terminal,
                                                           0.9, online, 1.0)]))


def test_dispatcher_loss_double_by_hand():
    from damdjax.train.dqn import dispatcher_loss
    net = DispatchQNetwork(hidden=(8, 8))
    rng = np.random.default_rng(4)
    b = 32

    def view():
        task, servers, smask = _inputs(int(rng.integers(1 << 30)), b)
        mask = (rng.random((b, M)) < 0.5) & smask
        mask[:3] = False                                       # no valid next action
        return DispatchView(task=task, servers=servers, mask=mask, server_mask=smask)

    batch = replay.Transition(obs=view(), action=rng.integers(0, M, b).astype(np.int32),
                              reward=rng.random(b).astype(np.float32), next_obs=view(),
                              terminal=rng.random(b) < 0.2, index=np.zeros(b, np.int32))
    valid = rng.random(b) < 0.8
    o, n = batch.obs, batch.next_obs
    p = net.init(jax.random.PRNGKey(0), o.task, o.servers, o.server_mask)
    tp = net.init(jax.random.PRNGKey(1), o.task, o.servers, o.server_mask)
    q = np.asarray(net.apply(p, o.task, o.servers, o.server_mask))
    qt = np.asarray(net.apply(tp, n.task, n.servers, n.server_mask), np.float64)
    qo = np.asarray(net.apply(p, n.task, n.servers, n.server_mask))
    live = ~batch.terminal & n.mask.any(-1)
    pick = np.argmax(np.where(n.mask, qo, -np.inf), -1)
    assert (pick != np.argmax(np.where(n.mask, qt, -np.inf), -1))[live].any()
    assert n.mask[np.arange(b), pick][live].all()
    by_pick = qt[np.arange(b), pick]
    by_max = np.where(n.mask, qt, -np.inf).max(-1)

    def huber_mean(v_next):
        target = batch.reward + 0.9 * np.where(live, v_next, 0.0)
        err = q[np.arange(b), batch.action] - target
        per = np.where(np.abs(err) <= 1, 0.5 * err ** 2, np.abs(err) - 0.5)
        return np.sum(per * valid) / valid.sum()

    grad = jax.jit(jax.value_and_grad(dispatcher_loss, argnums=1), static_argnums=0)
    for flag, v_next in ((1.0, by_pick), (0.0, by_max)):
        loss, g = grad(net, p, tp, batch, valid, 0.9, flag)
        assert float(loss) == pytest.approx(huber_mean(v_next), rel=1e-5)
        # the gradient is the TD loss's against the fixed target (none through the target)
        target = jnp.asarray(batch.reward + 0.9 * np.where(live, v_next, 0.0), jnp.float32)
        want = jax.grad(lambda p: td_loss(net.apply(p, o.task, o.servers, o.server_mask),
                                          batch.action, target, valid))(p)
        for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(want)):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    assert huber_mean(by_pick) != pytest.approx(huber_mean(by_max), rel=1e-3)


def test_td_loss():
    q = jnp.array([[1.0, 2.0], [0.0, 5.0], [3.0, 3.0]])
    action = jnp.array([1, 0, 1])
    target = jnp.array([2.5, 3.0, 100.0])
    valid = jnp.array([True, True, False])
    # errors -0.5 (quadratic) and -3 (linear: 3 - 0.5)
    assert float(td_loss(q, action, target, valid)) == pytest.approx((0.125 + 2.5) / 2)
    assert float(td_loss(q, action, target, valid, huber_delta=None)) == pytest.approx(
        (0.125 + 4.5) / 2)
    assert float(td_loss(q, action, target, jnp.zeros(3, bool))) == 0.0
    g = jax.grad(lambda q: td_loss(q, action, target, valid))(q)
    np.testing.assert_allclose(g, [[0.0, -0.25], [-0.5, 0.0], [0.0, 0.0]])


def test_periodic_copy_only_at_multiples():
    params = {"w": jnp.ones(3), "b": jnp.array(2.0)}
    target = {"w": jnp.zeros(3), "b": jnp.array(0.0)}
    f = jax.jit(periodic_copy, static_argnums=3)
    for step in range(13):
        out = f(params, target, jnp.asarray(step), 4)
        copied = step % 4 == 0
        np.testing.assert_array_equal(out["w"], params["w"] if copied else target["w"])
        assert float(out["b"]) == (2.0 if copied else 0.0)


def test_polyak_moves_by_rate():
    params = {"w": jnp.array([1.0, 3.0])}
    target = {"w": jnp.array([0.0, 1.0])}
    out = jax.jit(polyak)(params, target, 0.25)
    np.testing.assert_allclose(out["w"], [0.25, 1.5])
    np.testing.assert_array_equal(polyak(params, target, 1.0)["w"], params["w"])
    np.testing.assert_array_equal(polyak(params, target, 0.0)["w"], target["w"])


# ---------------------------------------------------------------------------
# The double_dqn value: checks and runs written before it
# ---------------------------------------------------------------------------

def test_check_hyper_takes_double_dqn_0_or_1():
    from damdjax.hyper import Hyper, PipelineHyper, check_hyper
    from damdjax.envs.config import EnvConfig
    for v in (0, 1, 0.0, 1.0):
        check_hyper(Hyper(double_dqn=v), EnvConfig())
    for v in (0.5, 2, -1):
        with pytest.raises(ValueError, match=f"^double_dqn must be 0 or 1, got {v:g}$"):
            check_hyper(Hyper(double_dqn=v), EnvConfig())
    with pytest.raises(ValueError, match="^mdqn_double_dqn must be 0 or 1, got 2$"):
        check_hyper(PipelineHyper(dispatcher=Hyper(), schedulers=Hyper(double_dqn=2)),
                    EnvConfig())


@pytest.mark.parametrize("field,value,bad,message", [
    ("double_dqn", 1.0, "0.5", "must be 0 or 1, got 0.5"),
    ("n_step", 3, "0", "must be > 0, got 0")])
def test_flag_and_a_config_written_before_the_field(field, value, bad, message, capsys):
    """Hyper fields added after runs were stored (`RunConfig.added_fields`): the flag sets
    the traced value, a bad one is refused naming it, and a config.json without the field
    loads at the value those runs had (resumable), in train.dqn, train.mdqn and train.damd."""
    from damdjax.hyper import Hyper
    from damdjax.train import damd, dqn, mdqn
    flag = "--" + field.replace("_", "-")
    p = dqn.build_parser()
    cfg = dqn.config_from_args(p, p.parse_args([flag, str(value)]))
    assert getattr(cfg, field) == value and getattr(Hyper.from_config(cfg), field) == value
    with pytest.raises(SystemExit):
        dqn.config_from_args(p, p.parse_args([flag, bad]))
    assert f"{flag} {message}" in capsys.readouterr().err
    default = getattr(Hyper(), field)
    for module in (dqn, mdqn):
        old = module.build_parser()
        old = module.config_from_args(old, old.parse_args([flag, str(value)])).to_json()
        del old[field]                              # as written before the field existed
        cfg = (dqn.DQNConfig if module is dqn else mdqn.MDQNConfig).from_json(old)
        assert getattr(cfg, field) == default and getattr(cfg.hyper(), field) == default
        assert type(cfg).from_json(cfg.to_json()) == cfg  # resumable
    p = damd.build_parser()
    old = damd.config_from_args(p, p.parse_args([])).to_json()
    for part in ("dispatcher", "schedulers"):
        del old[part][field]
    values = damd.DAMDConfig.from_json(old).hyper().values()
    assert values["dqn_" + field] == values["mdqn_" + field] == default
