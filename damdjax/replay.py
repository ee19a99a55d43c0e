"""A pure pytree ring buffer for transitions completed *after* they are taken.

The dispatcher's transition of a decision is stored when the decision is made
(`obs`, `action`), but its reward `exp(-T_i / tau)` is known only when task `i`
completes, and its next state when the next dispatch is needed (or the episode
ends). So an entry is written with both flags cleared and filled in later:

    buf = init(example_obs, capacity)                   # example_obs: one obs (no batch axis)
    buf, idx, stamp = add_batch(buf, obs_b, action_b, valid_b)  # [B] each; -1: not written
    ...                                                 # caller keeps (idx, stamp) per decision
    buf = set_next(buf, idx, stamp, next_obs_b, terminal_b, valid_b)
    buf = set_reward(buf, idx, stamp, reward_b, valid_b)
    buf = set_successor(buf, idx, stamp, next_idx_b, next_stamp_b, valid_b)  # n-step chains
    batch, ok = sample(buf, key, batch_size)            # only entries that are `ready`
    batch, ok = sample(buf, key, batch_size, n_step, gamma)   # n-step returns

n-step returns: a decision's successor (the same env's or agent's next decision,
whose observation is this one's next observation) is linked with
`set_successor`; `sample(..., n_step, gamma)` follows the links from each drawn
entry for up to `n_step - 1` further entries, summing their discounted rewards,
and bootstraps from the last one's next observation. The walk stops early at an
entry with no live, ready successor (an episode's end, a successor not yet
complete or overwritten): a shorter return, still a valid one. With `n_step` 1
the batch is the one-step batch, bitwise.

Stale fills: the buffer wraps around, so an entry may be overwritten before
its fill arrives. Every write gets a fresh `stamp` (the running write count,
so `index == stamp % capacity`); a fill carries the stamp it expects and is
dropped unless the entry still holds that stamp.

All functions are pure and jittable; `capacity` (the leading axis of the
storage) and batch sizes are static. `obs` is any pytree of arrays.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

PyTree = Any


@struct.dataclass
class Transition:
    """A sampled batch: `obs` (pytree, leaves [B, ...]), `action` [B], `reward` [B],
    `next_obs` (pytree, leaves [B, ...]), `terminal` [B] bool, `index` [B] (buffer slots).

    Sampled with n-step returns (`sample(..., n_step, gamma)`): `reward` is the
    discounted sum of the walked entries' rewards, `next_obs` and `terminal` are the
    last walked entry's, and `discount` [B] is the bootstrap's discount, `gamma ** k`
    for a walk of k entries (exactly `gamma` for k = 1); else `discount` is None."""

    obs: PyTree
    action: jax.Array
    reward: jax.Array
    next_obs: PyTree
    terminal: jax.Array
    index: jax.Array
    discount: jax.Array | None = None

    def bootstrap_discount(self, gamma):
        """The discount of the targets' bootstrap: `discount` [B] where sampled with
        n-step returns, else `gamma` (one-step)."""
        return gamma if self.discount is None else self.discount


@struct.dataclass
class ReplayBuffer:
    """Storage of capacity C (leading axis of every array but the scalars).

    `obs`, `next_obs`: pytrees with leaves [C, ...]; `action` [C] int32;
    `reward` [C]; `terminal` [C] bool; `has_reward`, `has_next` [C] bool (the
    fills have arrived); `stamp` [C] int32 (write count at the entry's write,
    -1 if never written); `succ`, `succ_stamp` [C] int32 (the slot and stamp of the
    entry's successor, -1 until `set_successor` links one). Scalars: `position` (next write index), `count`
    (entries written, at most C), `writes` (total writes = next stamp).
    """

    obs: PyTree
    action: jax.Array
    reward: jax.Array
    next_obs: PyTree
    terminal: jax.Array
    has_reward: jax.Array
    has_next: jax.Array
    stamp: jax.Array
    succ: jax.Array
    succ_stamp: jax.Array
    position: jax.Array
    count: jax.Array
    writes: jax.Array

    @property
    def capacity(self) -> int:
        return self.action.shape[0]


def init(example_obs: PyTree, capacity: int, reward_dtype=jnp.float32,
         example_next_obs: PyTree | None = None) -> ReplayBuffer:
    """An empty buffer for observations shaped like `example_obs` (no batch axis), and next
    observations shaped like `example_next_obs` (None: like `example_obs`; `()` for
    entries that have none, e.g. fitted targets: `set_next` then only marks them)."""
    zeros_like = lambda tree: jax.tree.map(
        lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), tree)
    zeros = zeros_like(example_obs)
    next_zeros = zeros if example_next_obs is None else zeros_like(example_next_obs)
    false = jnp.zeros((capacity,), bool)
    minus = jnp.full((capacity,), -1, jnp.int32)
    return ReplayBuffer(
        obs=zeros, action=jnp.zeros((capacity,), jnp.int32),
        reward=jnp.zeros((capacity,), reward_dtype), next_obs=next_zeros, terminal=false,
        has_reward=false, has_next=false, stamp=minus, succ=minus, succ_stamp=minus,
        position=jnp.zeros((), jnp.int32), count=jnp.zeros((), jnp.int32),
        writes=jnp.zeros((), jnp.int32))


def _put(tree: PyTree, idx: jax.Array, values: PyTree) -> PyTree:
    """Scatter `values` (leaves [B, ...]) into `tree` (leaves [C, ...]); idx == C drops."""
    return jax.tree.map(lambda t, v: t.at[idx].set(v.astype(t.dtype), mode="drop"), tree, values)


def add_batch(buffer: ReplayBuffer, obs: PyTree, action: jax.Array, valid: jax.Array
              ) -> tuple[ReplayBuffer, jax.Array, jax.Array]:
    """Write the rows of `obs` (leaves [B, ...]), `action` [B] where `valid` [B].

    Valid rows go to consecutive slots from `position` (wrapping), in row
    order, with fills and successor links cleared. Returns `(buffer, index [B], stamp [B])`, -1 for
    rows not written. Requires B <= C.
    """
    c = buffer.capacity
    b = action.shape[0]
    assert b <= c, f"batch {b} larger than capacity {c}"
    valid = jnp.asarray(valid, bool)
    offset = jnp.cumsum(valid.astype(jnp.int32)) - 1              # [B]
    slot = (buffer.position + offset) % c
    index = jnp.where(valid, slot, -1)
    stamp = jnp.where(valid, buffer.writes + offset, -1)
    at = jnp.where(valid, slot, c)                               # c: dropped by the scatter
    n = jnp.sum(valid, dtype=jnp.int32)
    false, minus = jnp.zeros((b,), bool), jnp.full((b,), -1, jnp.int32)
    buffer = buffer.replace(
        obs=_put(buffer.obs, at, obs), action=_put(buffer.action, at, action),
        has_reward=_put(buffer.has_reward, at, false), has_next=_put(buffer.has_next, at, false),
        stamp=_put(buffer.stamp, at, stamp), succ=_put(buffer.succ, at, minus),
        succ_stamp=_put(buffer.succ_stamp, at, minus),
        position=(buffer.position + n) % c, count=jnp.minimum(buffer.count + n, c),
        writes=buffer.writes + n)
    return buffer, index, stamp


def add(buffer: ReplayBuffer, obs: PyTree, action: jax.Array
        ) -> tuple[ReplayBuffer, jax.Array, jax.Array]:
    """Write one entry (`obs` unbatched, `action` []); returns `(buffer, index [], stamp [])`."""
    buffer, index, stamp = add_batch(
        buffer, jax.tree.map(lambda x: jnp.asarray(x)[None], obs),
        jnp.asarray(action)[None], jnp.ones((1,), bool))
    return buffer, index[0], stamp[0]


def _fill_slots(buffer: ReplayBuffer, index: jax.Array, stamp: jax.Array, valid: jax.Array
                ) -> jax.Array:
    """Scatter targets [B] of a fill: `index` where valid and still holding `stamp`, else C."""
    c = buffer.capacity
    index, stamp = jnp.asarray(index), jnp.asarray(stamp)
    live = (jnp.asarray(valid, bool) & (index >= 0) & (stamp >= 0)
            & (buffer.stamp[jnp.clip(index, 0, c - 1)] == stamp))
    return jnp.where(live, index, c)


def set_reward(buffer: ReplayBuffer, index: jax.Array, stamp: jax.Array, reward: jax.Array,
               valid: jax.Array) -> ReplayBuffer:
    """Fill the rewards [B] of entries `index` [B] expected to hold `stamp` [B], where `valid` [B].

    Stale (stamp mismatch), invalid and index -1 rows are dropped.
    """
    at = _fill_slots(buffer, index, stamp, valid)
    return buffer.replace(reward=_put(buffer.reward, at, reward),
                          has_reward=_put(buffer.has_reward, at, jnp.ones(at.shape, bool)))


def set_next(buffer: ReplayBuffer, index: jax.Array, stamp: jax.Array, next_obs: PyTree,
             terminal: jax.Array, valid: jax.Array) -> ReplayBuffer:
    """Fill next observations (leaves [B, ...]) and `terminal` [B] of entries `index` [B]
    expected to hold `stamp` [B], where `valid` [B]; stale rows are dropped."""
    at = _fill_slots(buffer, index, stamp, valid)
    return buffer.replace(next_obs=_put(buffer.next_obs, at, next_obs),
                          terminal=_put(buffer.terminal, at, terminal),
                          has_next=_put(buffer.has_next, at, jnp.ones(at.shape, bool)))


def set_successor(buffer: ReplayBuffer, index: jax.Array, stamp: jax.Array,
                  succ_index: jax.Array, succ_stamp: jax.Array, valid: jax.Array
                  ) -> ReplayBuffer:
    """Link the entries `index` [B] expected to hold `stamp` [B] to their successors
    `succ_index`, `succ_stamp` [B] (the slot and stamp `add_batch` gave the same env's
    next decision), where `valid` [B]; stale rows are dropped. `sample`'s n-step walk
    follows a link only while the successor still holds its stamp."""
    at = _fill_slots(buffer, index, stamp, valid)
    return buffer.replace(succ=_put(buffer.succ, at, jnp.asarray(succ_index, jnp.int32)),
                          succ_stamp=_put(buffer.succ_stamp, at,
                                          jnp.asarray(succ_stamp, jnp.int32)))


def ready(buffer: ReplayBuffer) -> jax.Array:
    """[C] bool: written, with both its reward and its next observation."""
    return (buffer.stamp >= 0) & buffer.has_reward & buffer.has_next


def num_ready(buffer: ReplayBuffer) -> jax.Array:
    """[] int32: how many entries `sample` can draw from."""
    return jnp.sum(ready(buffer), dtype=jnp.int32)


def n_step_walk(buffer: ReplayBuffer, index: jax.Array, n_step, gamma,
                ok: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """From the ready entries `index` [B], follow successor links for up to `n_step - 1`
    (>= 0; may be traced, e.g. `Hyper.n_step`) further entries, each live (holding the
    linked stamp) and ready (`ok` [C]: `ready(buffer)`, computed here if not given).
    Returns `(reward [B], last [B], discount [B])`: `r_0 +
    gamma r_1 + ... + gamma^(k-1) r_(k-1)` over the k walked entries, the slot of the
    last one, and `gamma ** k` (a running product; exactly `gamma` for k = 1)."""
    c = buffer.capacity
    ok = ready(buffer) if ok is None else ok
    reward0 = buffer.reward[index]
    discount0 = jnp.broadcast_to(jnp.asarray(gamma, reward0.dtype), index.shape)

    def body(_, carry):
        ret, last, discount, alive = carry
        nxt = buffer.succ[last]
        at = jnp.clip(nxt, 0, c - 1)
        step = (alive & (nxt >= 0) & (buffer.stamp[at] == buffer.succ_stamp[last]) & ok[at]
                & ~buffer.terminal[last])
        ret = jnp.where(step, ret + discount * buffer.reward[at], ret)
        discount = jnp.where(step, discount * gamma, discount)
        return ret, jnp.where(step, at, last), discount, step

    alive0 = jnp.ones(index.shape, bool)
    ret, last, discount, _ = jax.lax.fori_loop(1, jnp.maximum(n_step, 1), body,
                                               (reward0, index, discount0, alive0))
    return ret, last, discount


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int, n_step=None, gamma=None
           ) -> tuple[Transition, jax.Array]:
    """`batch_size` (static) entries drawn uniformly, with replacement, among `ready`.

    Returns `(batch, valid [batch_size])`; `valid` is all False (and the batch
    holds slot 0's contents) when nothing is ready, so a loss weighted by
    `valid` is then zero. With `n_step` (>= 1, may be traced) and `gamma` []:
    n-step returns from each drawn entry (`n_step_walk`; `batch.discount` is the
    bootstrap's discount). The draw is the same with or without them.
    """
    ok = ready(buffer)
    # A uniform rank among the ready entries, found by a sorted search of their
    # running count: O(C + B log C), not the B x C draws of a categorical.
    cum = jnp.cumsum(ok.astype(jnp.int32))  # [C]
    n = cum[-1]
    any_ready = n > 0
    rank = jnp.floor(jax.random.uniform(key, (batch_size,)) * n).astype(jnp.int32)
    rank = jnp.minimum(rank, jnp.maximum(n - 1, 0))
    idx = jnp.searchsorted(cum, rank + 1, side="left").astype(jnp.int32)  # (rank+1)-th ready
    idx = jnp.where(any_ready, jnp.minimum(idx, buffer.capacity - 1), 0)
    take = lambda tree, at: jax.tree.map(lambda x: x[at], tree)
    if n_step is None:
        reward, last, discount = buffer.reward[idx], idx, None
    else:
        reward, last, discount = n_step_walk(buffer, idx, n_step, gamma, ok)
    batch = Transition(obs=take(buffer.obs, idx), action=buffer.action[idx], reward=reward,
                       next_obs=take(buffer.next_obs, last), terminal=buffer.terminal[last],
                       index=idx, discount=discount)
    return batch, ok[idx] & any_ready
