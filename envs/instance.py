"""One episode's data as fixed-size padded arrays (a pytree).

Shapes: `M` = server slots, `N` = task slots, `P` = predecessor slots,
`W` = successor window. Padded servers and tasks are masked out.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class Instance:
    """Servers, tasks and the DAG of one episode.

    Servers: `cpu` [M] work/time, `bw` [M] data/time, `mem` [M] data,
    `k` [M] time (AP <-> server propagation delay), `server_mask` [M].
    Tasks (global index order: jobs by arrival, predecessors first):
    `size` [N] data, `work` [N] work, `arrival` [N] time (its job's arrival;
    +inf for padding), `deadline` [N] absolute time, `preds` [N, P] global
    indices padded with -1, `succ` [N, W] bool (`succ[i, d]`: task `i+1+d` has
    `i` as a predecessor), `task_mask` [N], `job` [N] (-1 for padding).
    """

    cpu: jax.Array
    bw: jax.Array
    mem: jax.Array
    k: jax.Array
    server_mask: jax.Array
    size: jax.Array
    work: jax.Array
    arrival: jax.Array
    deadline: jax.Array
    preds: jax.Array
    succ: jax.Array
    task_mask: jax.Array
    job: jax.Array

    @property
    def num_task_slots(self) -> int:
        return self.size.shape[-1]

    @property
    def num_server_slots(self) -> int:
        return self.cpu.shape[-1]


def successor_window(preds: jax.Array, window: int) -> jax.Array:
    """`succ[i, d]` = task `i+1+d` lists `i` among its predecessors.

    Args: preds [N, P] int (global indices, -1 padding); window `W` >= the
    largest index gap between a task and its predecessor.
    Returns: [N, W] bool.
    """
    n = preds.shape[0]
    idx = jnp.arange(n)
    later = idx[:, None] + 1 + jnp.arange(window)[None, :]  # [N, W]
    later_preds = jnp.take(preds, jnp.clip(later, 0, n - 1), axis=0)  # [N, W, P]
    hit = jnp.any(later_preds == idx[:, None, None], axis=-1)
    return hit & (later < n)


def max_pred_gap(preds: np.ndarray) -> int:
    """Largest `i - p` over edges `p -> i` (at least 1): the window `W` a file needs."""
    preds = np.asarray(preds)
    rows = np.arange(preds.shape[0])[:, None]
    gaps = np.where(preds >= 0, rows - preds, 0)
    return max(int(gaps.max(initial=0)), 1)


def instance_from_arrays(arrays: Mapping[str, np.ndarray], window: int | None = None,
                         dtype=None) -> Instance:
    """Build an :class:`Instance` from the numpy arrays of `envs.instance_io.padded_arrays`.

    `window` defaults to the largest predecessor gap in `preds`.
    `dtype` defaults to JAX's default float (float64 only with x64 enabled).
    """
    dtype = dtype or jnp.zeros(()).dtype
    window = window or max_pred_gap(arrays["preds"])
    preds = jnp.asarray(arrays["preds"], jnp.int32)
    f = lambda name: jnp.asarray(arrays[name], dtype)
    return Instance(
        cpu=f("cpu"), bw=f("bw"), mem=f("mem"), k=f("k"),
        server_mask=jnp.asarray(arrays["server_mask"], bool),
        size=f("size"), work=f("work"), arrival=f("arrival"), deadline=f("deadline"),
        preds=preds, succ=successor_window(preds, window),
        task_mask=jnp.asarray(arrays["task_mask"], bool),
        job=jnp.asarray(arrays["job"], jnp.int32),
    )


def instance_to_arrays(instance: Instance) -> dict[str, np.ndarray]:
    """The inverse of :func:`instance_from_arrays` (numpy, successor window dropped)."""
    out = {name: np.asarray(getattr(instance, name)) for name in (
        "cpu", "bw", "mem", "k", "server_mask", "size", "work", "arrival", "deadline",
        "preds", "task_mask", "job")}
    return out


def instance_from_spec(spec, dtype=None) -> tuple[Instance, int]:
    """An :class:`Instance` padded exactly to an `envs.instance_io.InstanceSpec`.

    Returns `(instance, queue_capacity)`: the padding fits the file (`N`, `M`,
    `P` and the successor window are the file's own), and the queue capacity
    is `N`, so it can never bind (a user may pass a smaller one to `reset`).
    """
    from envs.instance_io import padded_arrays  # plain numpy, no cycle

    arrays = padded_arrays(spec)
    return instance_from_arrays(arrays, dtype=dtype), int(arrays["task_mask"].sum())
