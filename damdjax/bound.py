"""The contention-free bound: how early each task's result could possibly be back.

Per task, the earliest its result could reach the AP if it had every server to
itself: no queueing, no memory limit, dispatched when its job arrives, every
predecessor at whichever server is best for it (docs/model.md, "The
contention-free bound"). Every method's `done[i]` is at least `bound_done[i]`,
so the bound's average response time and miss rate lie below every method's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from damdjax.envs.instance import Instance


def bound_done(instance: Instance) -> jax.Array:
    """[N] earliest possible result time of every task (time; +inf for padding).

    In task index order, per real server `n`: `f[i, n] = max((arrival + k[n]) +
    size / bw[n], inputs at n) + work / cpu[n]`, the inputs being each
    predecessor's best `f[p, m]` (relayed `(f + k[m]) + k[n]` when `m != n`);
    `bound_done[i] = min_n f[i, n] + k[n]`. One `lax.scan` over tasks.
    """
    inst = instance
    n, m = inst.size.shape[0], inst.cpu.shape[0]
    same = jnp.eye(m, dtype=bool)                                   # [m, n]
    real = inst.server_mask

    def task(f, i):
        up = (inst.arrival[i] + inst.k) + inst.size[i] / inst.bw   # [M]
        preds = inst.preds[i]                                        # [P]
        fp = f[jnp.clip(preds, 0)]                                   # [P, M(m)]
        relayed = (fp[:, :, None] + inst.k[None, :, None]) + inst.k[None, None, :]
        via = jnp.where(same[None], fp[:, :, None], relayed)         # [P, m, n]
        best = jnp.min(jnp.where(real[None, :, None], via, jnp.inf), axis=1)  # [P, n]
        ready = jnp.max(jnp.where((preds >= 0)[:, None], best, -jnp.inf), axis=0)
        fi = jnp.where(real, jnp.maximum(up, ready) + inst.work[i] / inst.cpu, jnp.inf)
        done = jnp.min(fi + inst.k)
        return f.at[i].set(fi), jnp.where(inst.task_mask[i], done, jnp.inf)

    f0 = jnp.full((n, m), jnp.inf, inst.size.dtype)
    return jax.lax.scan(task, f0, jnp.arange(n))[1]


def bound_metrics(instance: Instance) -> dict[str, jax.Array]:
    """The bound's `avg_response_time` and `deadline_miss_rate` [] over real tasks.

    Lower bounds on every method's (a task whose bound is past its deadline is
    missed by every method).
    """
    inst = instance
    done = bound_done(inst)
    mask = inst.task_mask
    count = jnp.maximum(jnp.sum(mask), 1)
    response = jnp.sum(jnp.where(mask, done - inst.arrival, 0.0)) / count
    missed = jnp.sum(mask & (done > inst.deadline)) / count
    return {"avg_response_time": response, "deadline_miss_rate": missed.astype(response.dtype)}
