"""The MDQN schedulers' pieces: one DQN agent per server picks the queued task it runs next.

Every server `n` has its own agent (its own parameters, optimizer state and
experience pool, all stacked on a leading agent axis `M`), or all agents share
one network (`share=True`). An agent sees its queue's slots, its own state and
a summary of the other real servers (`SchedView`). The agent's network,
`SlotQNetwork`, lives in `damdjax.networks`; this module stacks it over agents
and holds the pools, the updates and the acting:

    view = scheduler_inputs(obs)                    # leaves [E, M, ...] for E envs
    agent_obs = agents_first(agent_axis(view))      # leaves [M, E, ...]: agent axis first
    net = networks.SlotQNetwork(hidden=(64, 64))
    params = init_agent_params(net, key, one_agent_obs, M, share)      # leaves [M, ...]
    q = agents_q(net, params, agent_obs, share)      # [M, E, Q]
    picks = agents_act(key, jnp.swapaxes(q, 0, 1), view.mask, view.needed, epsilon)  # [E, M]

    pools = init_pools(one_agent_obs, capacity, M)   # replay.ReplayBuffer, leaves [M, C, ...]
    pools, idx, stamp = pools_add(pools, agent_obs, agents_first(picks), agents_first(needed))
    pools = pools_complete(pools, idx, stamp, next_agent_obs, reward, terminal, valid)
    batch, valid = pools_sample(pools, key, batch_size)                 # leaves [M, B, ...]
    opt_state = init_agents_opt(optimizer, params, share)
    update = make_agents_update(net, optimizer, gamma, share, double)   # double: 0 or 1
    params, opt_state, loss = update(params, target_params, opt_state, batch, valid)

Everything is pure and jittable. The pools are ordinary `damdjax.replay`
buffers with an extra leading agent axis (so `pools.capacity` is NOT the
capacity there: use `pools.action.shape[1]`); every pool function is a `vmap`
of the matching `damdjax.replay` function.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from damdjax import replay
from damdjax.networks import epsilon_greedy, greedy_action, masked_mean
from damdjax.replay import ReplayBuffer, Transition
from damdjax.targets import online_q_if, td_loss, td_targets, where_tree


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

class SchedView(NamedTuple):
    """The schedulers' inputs (a pytree).

    `slots` [..., M, Q, F_q], `own` [..., M, F_o], `others` [..., M, F_o]
    (per server, the mean of the `own` rows of the *other* real servers; 0 if
    there are none), `mask` [..., M, Q] bool (eligible slots of real
    servers: the valid picks), `needed` [..., M] bool (real servers that must
    pick now), `server_mask` [..., M] bool (real servers).
    """

    slots: jax.Array
    own: jax.Array
    others: jax.Array
    mask: jax.Array
    needed: jax.Array
    server_mask: jax.Array


def scheduler_inputs(obs) -> SchedView:
    """`SchedView` of a `damdjax.envs.observation.Observation` (any leading batch axes)."""
    real = obs.server_mask
    m = real.shape[-1]
    # other[..., n, j]: server j is real and j != n
    other = real[..., None, :] & ~jnp.eye(m, dtype=bool)                  # [..., M, M]
    own = obs.own
    others = masked_mean(jnp.broadcast_to(own[..., None, :, :], other.shape + own.shape[-1:]),
                         other)                                           # [..., M, F_o]
    return SchedView(slots=obs.slots, own=own, others=others, mask=obs.pick_mask,
                     needed=obs.pick_needed & real, server_mask=real)


class AgentObs(NamedTuple):
    """One agent's inputs (a pytree; unpacks as the network's arguments).

    `slots` [..., Q, F_q], `own` [..., F_o], `others` [..., F_o], `mask` [..., Q] bool.
    """

    slots: jax.Array
    own: jax.Array
    others: jax.Array
    mask: jax.Array


def agent_axis(view: SchedView) -> AgentObs:
    """The agents' inputs of `view`, agent axis where it is: leaves [..., M, ...]."""
    return AgentObs(slots=view.slots, own=view.own, others=view.others, mask=view.mask)


def agents_first(x):
    """Swap the first two axes of every leaf: [E, M, ...] -> [M, E, ...] (and back)."""
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), x)


# ---------------------------------------------------------------------------
# Per-agent parameters and Q-values
# ---------------------------------------------------------------------------

def init_agent_params(net: nn.Module, key: jax.Array, example: AgentObs, num_agents: int,
                      share: bool):
    """Parameters of `num_agents` agents for inputs like `example` (ONE agent: no agent axis).

    `share`: one set, `net.init(key, *example)`. Otherwise every leaf is
    [M, ...], agent n initialised from the n-th of `jax.random.split(key, M)`
    (so the agents start different).
    """
    init = lambda k: net.init(k, *example)
    if share:
        return init(key)
    return jax.vmap(init)(jax.random.split(key, num_agents))


def agents_q(net: nn.Module, params, obs: AgentObs, share: bool) -> jax.Array:
    """Every agent's Q-values [M, ..., Q] of its own inputs.

    `obs` leaves have the agent axis FIRST: `slots` [M, ..., Q, F_q], `own` and
    `others` [M, ..., F_o], `mask` [M, ..., Q] (e.g. [M, Q, F_q] for one env,
    [M, B, Q, F_q] for a per-agent batch; `agents_first` turns an env batch
    [E, M, ...] into [M, E, ...]). `params`: leaves [M, ...], or one set if `share`.
    The result keeps the agent axis first: [M, ..., Q].
    """
    return jax.vmap(net.apply, in_axes=(None if share else 0, 0, 0, 0, 0))(params, *obs)


# ---------------------------------------------------------------------------
# Per-agent experience pools
# ---------------------------------------------------------------------------

def init_pools(example: AgentObs, capacity: int, num_agents: int,
               reward_dtype=jnp.float32) -> ReplayBuffer:
    """`num_agents` empty pools of `capacity` for inputs like `example` (one agent, no
    batch axis): a `ReplayBuffer` whose leaves are [M, C, ...] (its scalars [M])."""
    return jax.vmap(lambda _: replay.init(example, capacity, reward_dtype))(
        jnp.arange(num_agents))


def pools_add(pools: ReplayBuffer, obs: AgentObs, action: jax.Array, valid: jax.Array
              ) -> tuple[ReplayBuffer, jax.Array, jax.Array]:
    """Agent n's pool gets the rows of `obs` (leaves [M, E, ...]), `action` [M, E]
    where `valid` [M, E] (its own decisions), in row order.

    Returns `(pools, index [M, E], stamp [M, E])`, -1 for rows not written
    (see `replay.add_batch`). Requires E <= C.
    """
    return jax.vmap(replay.add_batch)(pools, obs, action, valid)


def _complete(pool, index, stamp, next_obs, reward, terminal, valid):
    pool = replay.set_next(pool, index, stamp, next_obs, terminal, valid)
    return replay.set_reward(pool, index, stamp, reward, valid)


def pools_complete(pools: ReplayBuffer, index: jax.Array, stamp: jax.Array, next_obs: AgentObs,
                   reward: jax.Array, terminal: jax.Array, valid: jax.Array) -> ReplayBuffer:
    """Fill next observations (leaves [M, E, ...]), `terminal` and `reward` [M, E] of the
    entries `index` [M, E] expected to hold `stamp` [M, E], where `valid` [M, E].

    `replay.set_next` then `replay.set_reward` per agent: stale stamps, index
    -1 and invalid rows are dropped.
    """
    return jax.vmap(_complete)(pools, index, stamp, next_obs, reward, terminal, valid)


def pools_link(pools: ReplayBuffer, index: jax.Array, stamp: jax.Array, succ_index: jax.Array,
               succ_stamp: jax.Array, valid: jax.Array) -> ReplayBuffer:
    """Link each agent's entries `index` [M, E] (expected to hold `stamp` [M, E]) to their
    successors `succ_index`, `succ_stamp` [M, E] (the agent's next decision in the same
    env), where `valid` [M, E] (`replay.set_successor` per agent)."""
    return jax.vmap(replay.set_successor)(pools, index, stamp, succ_index, succ_stamp, valid)


def pools_sample(pools: ReplayBuffer, key: jax.Array, batch_size: int, n_step=None,
                 gamma=None) -> tuple[Transition, jax.Array]:
    """`batch_size` (static) ready entries of every agent's own pool, drawn independently
    (one key per agent). Returns `(batch, valid [M, B])`, batch leaves [M, B, ...];
    an agent with nothing ready gets `valid` all False. `n_step`, `gamma` []: n-step
    returns over the agent's own successive decisions (`replay.sample`)."""
    keys = jax.random.split(key, pools.action.shape[0])
    return jax.vmap(lambda p, k: replay.sample(p, k, batch_size, n_step, gamma))(pools, keys)


def pools_ready(pools: ReplayBuffer) -> jax.Array:
    """[M] int32: ready entries (written, with reward and next obs) in each agent's pool."""
    return jax.vmap(replay.num_ready)(pools)


# ---------------------------------------------------------------------------
# Learning
# ---------------------------------------------------------------------------

def init_agents_opt(optimizer: optax.GradientTransformation, params, share: bool):
    """Optimizer state: `optimizer.init(params)` if `share`, else one per agent
    (`jax.vmap(optimizer.init)`, leaves [M, ...])."""
    return optimizer.init(params) if share else jax.vmap(optimizer.init)(params)


def make_agents_update(net: nn.Module, optimizer: optax.GradientTransformation, gamma: float,
                       share: bool, double=False):
    """The agents' DQN step `update(params, target_params, opt_state, batch, valid)
    -> (params, opt_state, loss [M])`.

    `batch`: a `replay.Transition` of `AgentObs` with leaves [M, B, ...]
    (`pools_sample`), `valid` [M, B]. Agent n's loss: `td_loss` (Huber) of
    `net`'s Q of `batch.obs[n]` against `td_targets` of the target net's Q of
    `batch.next_obs[n]` (masked by its `mask`; discounted by `batch.bootstrap_discount
    (gamma)`, n-step returns where sampled so; where `double` [] is on, a bool or 0/1,
    e.g. `Hyper.double_dqn`: next action chosen by the online net), weighted by `valid[n]`.

    * `share=False`: `params`, `target_params`, `opt_state` have a leading agent
      axis; each agent takes its own gradient and optimizer step (vmapped), so
      it is exactly what it would be if trained alone (clipping per agent).
    * `share=True`: one network; one step on the mean of the agent losses over
      the agents with a valid row.

    An agent (or, shared, the whole step) with no valid row leaves its params
    and optimizer state unchanged.

    `optimizer`, `gamma` and `double` may hold traced values (e.g. `Hyper.optimizer()`,
    `Hyper.gamma` and `Hyper.double_dqn` inside a jitted, vmapped trainer): call this
    inside the traced function.
    """

    def agent_loss(p, tp, batch: Transition, valid):
        q = net.apply(p, *batch.obs)                                     # [B, Q]
        q_next = net.apply(tp, *batch.next_obs)
        q_online = online_q_if(double, lambda: net.apply(p, *batch.next_obs), q_next)
        target = td_targets(q_next, batch.next_obs.mask, batch.reward, batch.terminal,
                            batch.bootstrap_discount(gamma), q_online, double)
        return td_loss(q, batch.action, target, valid)

    if not share:
        def one(p, tp, opt_state, batch, valid):
            loss, grads = jax.value_and_grad(agent_loss)(p, tp, batch, valid)
            updates, new_state = optimizer.update(grads, opt_state, p)
            new_p = optax.apply_updates(p, updates)
            act = jnp.any(valid)
            return where_tree(act, new_p, p), where_tree(act, new_state, opt_state), loss

        return jax.vmap(one)

    def shared_loss(p, tp, batch, valid):
        losses = jax.vmap(agent_loss, in_axes=(None, None, 0, 0))(p, tp, batch, valid)  # [M]
        has = jnp.any(valid, axis=-1)
        total = jnp.sum(jnp.where(has, losses, 0.0)) / jnp.maximum(jnp.sum(has), 1)
        return total, losses

    def update(params, target_params, opt_state, batch, valid):
        (_, losses), grads = jax.value_and_grad(shared_loss, has_aux=True)(
            params, target_params, batch, valid)
        updates, new_state = optimizer.update(grads, opt_state, params)
        new_p = optax.apply_updates(params, updates)
        act = jnp.any(valid)
        return where_tree(act, new_p, params), where_tree(act, new_state, opt_state), losses

    return update


# ---------------------------------------------------------------------------
# Acting
# ---------------------------------------------------------------------------

def agents_act(key: jax.Array, q: jax.Array, view_mask: jax.Array, needed: jax.Array,
               epsilon) -> jax.Array:
    """Every agent's epsilon-greedy pick [..., M] int32 among `view_mask` [..., M, Q].

    `q` [..., M, Q]; independent exploration draws per agent; `epsilon` [] or
    broadcastable to [..., M]. 0 where `needed` [..., M] is False (or the mask is empty).
    """
    picks = epsilon_greedy(key, q, view_mask, epsilon)
    return jnp.where(needed, picks, 0).astype(jnp.int32)


def agents_greedy(q: jax.Array, mask: jax.Array, needed: jax.Array | None = None) -> jax.Array:
    """Every agent's greedy pick [..., M] int32 among `mask` [..., M, Q] (lowest slot on
    ties; 0 for an empty mask, and where `needed` [..., M] is given and False)."""
    picks = greedy_action(q, mask)
    return picks if needed is None else jnp.where(needed, picks, 0).astype(jnp.int32)
