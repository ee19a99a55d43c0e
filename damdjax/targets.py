"""DQN targets, losses and target-network updates (pure, jittable).

    target = td_targets(q_next_target, mask_next, reward, terminal, gamma)     # [B]
    target = td_targets(..., gamma, q_next_online, hyper.double_dqn)  # double DQN where on
    loss = td_loss(q, action, target, valid)                                    # []
    target_params = periodic_copy(params, target_params, step, every)   # or polyak(...)
    target_params = periodic_polyak(params, target_params, step, every, rate)  # both

Invalid next actions never enter the max (`masked_max`); a next state with no
valid action bootstraps 0, like a terminal one.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from damdjax.networks import greedy_action


def masked_max(q: jax.Array, mask: jax.Array) -> jax.Array:
    """Max of `q` [..., M] over `mask` [..., M]; [...] (0 where the mask is empty)."""
    best = jnp.max(jnp.where(mask, q, -jnp.inf), axis=-1)
    return jnp.where(jnp.any(mask, axis=-1), best, 0.0)


def td_targets(q_next_target: jax.Array, mask_next: jax.Array, reward: jax.Array,
               terminal: jax.Array, gamma, q_next_online: jax.Array | None = None,
               double=True) -> jax.Array:
    """One-step targets `r + gamma * (1 - terminal) * max_valid Q_target(s')`; [B].

    `q_next_target`, `mask_next` [B, M]; `reward`, `terminal` [B]; `gamma` [] or
    [B] (e.g. a per-transition discount). With `q_next_online` [B, M] (double
    DQN) the next action is the online greedy valid one, valued by the target
    net, where `double` [] (a bool or 0/1, may be traced: one program for both;
    e.g. `Hyper.double_dqn`) is on; where it is off the max (bitwise the target
    without `q_next_online`). Gradients do not flow through the result.
    """
    v_next = masked_max(q_next_target, mask_next)
    if q_next_online is not None:
        a = greedy_action(q_next_online, mask_next)
        v_double = jnp.take_along_axis(q_next_target, a[..., None], axis=-1)[..., 0]
        v_next = jnp.where(jnp.asarray(double) > 0.5, v_double, v_next)
    boot = ~jnp.asarray(terminal, bool) & jnp.any(mask_next, axis=-1)
    return jax.lax.stop_gradient(reward + gamma * jnp.where(boot, v_next, 0.0))


def online_q_if(double, apply_online: Callable[[], jax.Array], like: jax.Array) -> jax.Array:
    """The online net's Q of the next observations for double DQN, `apply_online()`, where
    `double` [] (bool or 0/1, may be traced) is on, else zeros like `like` (the target
    net's Q, whose shape it has). A `lax.cond`: a run with it off skips the forward pass
    (under a `vmap` over members whose values differ, both sides run). No gradient."""
    return jax.lax.stop_gradient(jax.lax.cond(jnp.asarray(double) > 0.5, apply_online,
                                              lambda: jnp.zeros_like(like)))


def td_loss(q: jax.Array, action: jax.Array, target: jax.Array, valid: jax.Array | None = None,
            huber_delta: float | None = 1.0) -> jax.Array:
    """Mean over `valid` [B] of the Huber (or squared, if `huber_delta` is None) TD error; [].

    `q` [B, M] online Q of the stored observations, `action` [B], `target` [B].
    Squared loss is `0.5 * err**2` (Huber's quadratic part). 0 if nothing is valid.
    """
    q_a = jnp.take_along_axis(q, action[..., None].astype(jnp.int32), axis=-1)[..., 0]
    err = q_a - jax.lax.stop_gradient(target)
    per = 0.5 * err ** 2 if huber_delta is None else optax.huber_loss(err, delta=huber_delta)
    w = jnp.ones_like(per) if valid is None else jnp.asarray(valid, per.dtype)
    return jnp.sum(w * per) / jnp.maximum(jnp.sum(w), 1.0)


def where_tree(cond, new, old):
    """`new` where `cond` [] else `old`, leaf by leaf (e.g. skip an update that had no data)."""
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def periodic_copy(params, target, step, every):
    """`params` if `step % every == 0`, else `target` (hard target update).

    Call with the count of online updates done so far (after incrementing it),
    so the target is refreshed every `every` updates.
    """
    return optax.periodic_update(params, target, step, every)


def polyak(params, target, rate):
    """Soft target update `rate * params + (1 - rate) * target`."""
    return optax.incremental_update(params, target, rate)


def periodic_polyak(params, target, step, every, rate):
    """Every `every` steps (`step % every == 0`) the soft update `rate * params + (1 - rate)
    * target`, else `target`. `rate` [] may be traced; where it is 1 the result is
    `params` itself (bitwise `periodic_copy`)."""
    mixed = jax.tree.map(lambda p, t: jnp.where(rate >= 1, p, rate * p + (1 - rate) * t),
                         params, target)
    return periodic_copy(mixed, target, step, every)
