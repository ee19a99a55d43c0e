"""The Q-networks (the dispatcher's and the schedulers') and masked action selection.

`DispatchQNetwork` scores every server with the *same* MLP applied to that
server's features, the head task's features and (optionally) a masked mean of
all real servers' features, so one set of weights serves any number of
servers up to `M` and the Q-values are permutation-equivariant over servers.
It takes plain arrays (see `dispatch_inputs`), so a replay buffer need only
store a `DispatchView`:

    view = dispatch_inputs(obs)                          # task [F_t], servers [M, F_s], ...
    net = DispatchQNetwork(hidden=(128, 128))
    params = net.init(key, view.task, view.servers, view.server_mask)
    q = net.apply(params, view.task, view.servers, view.server_mask)   # [M]
    a = epsilon_greedy(key, q, view.mask, epsilon)                      # [] int32

`SlotQNetwork` is the MDQN schedulers' per-slot counterpart: one MLP scores
every slot of a server's queue from that slot, the server's own state and a
summary of the other servers (one agent's inputs, `schedulers.AgentObs`);
stacking it over agents and the pools are `damdjax.schedulers`:

    net = SlotQNetwork(hidden=(64, 64))
    q = net.apply(params, slots, own, others, mask)                     # [Q]

Everything broadcasts over leading batch axes `...` and works under
`jit`, `vmap` and `lax.scan`. Exploration schedules: `optax.linear_schedule`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Q of invalid choices in `masked_q`: finite, so losses and targets stay finite.
NEG_Q = -1e9


class DispatchView(NamedTuple):
    """The dispatcher's inputs (a pytree; unpacks as a tuple).

    `task` [..., F_t], `servers` [..., M, F_s], `mask` [..., M] bool (feasible
    servers: the valid actions), `server_mask` [..., M] bool (real servers).
    """

    task: jax.Array
    servers: jax.Array
    mask: jax.Array
    server_mask: jax.Array


def dispatch_inputs(obs) -> DispatchView:
    """(task, servers, mask, server_mask) of a `damdjax.envs.observation.Observation`."""
    return DispatchView(obs.task, obs.servers, obs.dispatch_mask, obs.server_mask)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `x` [..., M, F] over rows where `mask` [..., M]; [..., F] (0 if none).

    Masked rows never reach the result (even if they hold inf or NaN).
    """
    w = mask[..., None]
    total = jnp.sum(jnp.where(w, x, 0.0), axis=-2)
    return total / jnp.maximum(jnp.sum(w, axis=-2), 1).astype(total.dtype)


def _mlp_head(x: jax.Array, hidden: Sequence[int],
              activation: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """`hidden` Dense layers with `activation`, then a linear scalar head: [...] from x [..., F].

    Call it inside a module's `nn.compact` method: the layers are that module's
    (`Dense_0`, `Dense_1`, ...), as if written there.
    """
    for width in hidden:
        x = activation(nn.Dense(width)(x))
    return nn.Dense(1)(x)[..., 0]


class DispatchQNetwork(nn.Module):
    """Per-server MLP: Q [..., M] from task [..., F_t] and servers [..., M, F_s].

    Input of server j: `servers[j] ++ task ++ mean(servers over server_mask)`
    (the last part only if `pool`). Hidden layers `hidden` with `activation`,
    then a linear scalar head. `server_mask` [..., M] (default all real) only
    affects the pooled summary; masking of actions is `masked_q`'s job.
    """

    hidden: Sequence[int] = (128, 128)
    pool: bool = True
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, task: jax.Array, servers: jax.Array,
                 server_mask: jax.Array | None = None) -> jax.Array:
        if server_mask is None:
            server_mask = jnp.ones(servers.shape[:-1], bool)
        rows = servers.shape[:-1]                                       # [..., M]
        parts = [servers, jnp.broadcast_to(task[..., None, :], rows + task.shape[-1:])]
        if self.pool:
            pooled = masked_mean(servers, server_mask)[..., None, :]
            parts.append(jnp.broadcast_to(pooled, rows + pooled.shape[-1:]))
        return _mlp_head(jnp.concatenate(parts, axis=-1), self.hidden, self.activation)


class SlotQNetwork(nn.Module):
    """Per-slot MLP: Q [..., Q] from slots [..., Q, F_q], own [..., F_o], others [..., F_o].

    Input of slot s: `slots[s] ++ own ++ others ++ mean(slots over mask)` (the
    last part only if `pool`), the same weights for every slot (so any queue
    size works). `mask` [..., Q] (default all slots) only affects the pooled
    summary; masking of actions is `masked_q` / `greedy_action`'s job.
    """

    hidden: Sequence[int] = (64, 64)
    pool: bool = True
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, slots: jax.Array, own: jax.Array, others: jax.Array,
                 mask: jax.Array | None = None) -> jax.Array:
        rows = slots.shape[:-1]                                           # [..., Q]
        parts = [slots, jnp.broadcast_to(own[..., None, :], rows + own.shape[-1:]),
                 jnp.broadcast_to(others[..., None, :], rows + others.shape[-1:])]
        if self.pool:
            if mask is None:
                mask = jnp.ones(rows, bool)
            pooled = masked_mean(slots, mask)[..., None, :]
            parts.append(jnp.broadcast_to(pooled, rows + pooled.shape[-1:]))
        return _mlp_head(jnp.concatenate(parts, axis=-1), self.hidden, self.activation)


def masked_q(q: jax.Array, mask: jax.Array) -> jax.Array:
    """`q` [..., M] with entries outside `mask` [..., M] set to `NEG_Q` (finite)."""
    return jnp.where(mask, q, jnp.asarray(NEG_Q, q.dtype))


def greedy_action(q: jax.Array, mask: jax.Array) -> jax.Array:
    """Argmax of `q` [..., M] among `mask`; lowest index on ties; [...] int32.

    An empty mask gives 0 (the env's lowest-valid-choice convention).
    """
    return jnp.argmax(jnp.where(mask, q, -jnp.inf), axis=-1).astype(jnp.int32)


def random_action(key: jax.Array, mask: jax.Array) -> jax.Array:
    """Uniform choice among `mask` [..., M]; [...] int32 (0 where the mask is empty)."""
    a = jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf), axis=-1)
    return jnp.where(jnp.any(mask, axis=-1), a, 0).astype(jnp.int32)


def epsilon_greedy(key: jax.Array, q: jax.Array, mask: jax.Array, epsilon) -> jax.Array:
    """With probability `epsilon` a uniform valid server, else `greedy_action`; [...] int32.

    `q`, `mask` [..., M]; `epsilon` [] or broadcastable to [...]; one key for all.
    """
    k_explore, k_action = jax.random.split(key)
    explore = jax.random.uniform(k_explore, q.shape[:-1]) < epsilon
    return jnp.where(explore, random_action(k_action, mask), greedy_action(q, mask))
