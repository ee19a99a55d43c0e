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
    indices padded with -1, `task_mask` [N], `job` [N] (-1 for padding).
    Derived once per instance (:func:`dag_fields`): `succ` [N, ceil(W/8)] uint8, the
    successor window packed 8 offsets a byte (:func:`unpack_window`: `[i, d]` is set when
    task `i+1+d` has `i` as a predecessor; bits at or beyond `W` are 0), a carried
    state's largest array otherwise (W = 202 for the Alibaba jobs); `rank` [N] time,
    HEFT's upward rank (:func:`upward_rank`, used by the critical-path scheduling rule);
    `num_succ` [N]
    unsigned int, each task's successors (:func:`successor_counts`).
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
    rank: jax.Array
    num_succ: jax.Array

    @property
    def num_task_slots(self) -> int:
        return self.size.shape[-1]

    @property
    def num_server_slots(self) -> int:
        return self.cpu.shape[-1]


def successor_window(preds: jax.Array, window: int) -> jax.Array:
    """`succ[i, d]` = task `i+1+d` lists `i` among its predecessors.

    Args: preds [N, P] int (global indices, -1 padding; one not below its row is left out);
    window `W` >= the largest index gap between a task and its predecessor (edges with
    larger gaps are left out). Returns: [N, W] bool, one scatter of the N * P edges.
    """
    n = preds.shape[0]
    gap = jnp.arange(n)[:, None] - preds - 1  # [N, P] offset of each task in its pred's window
    edge = (preds >= 0) & (gap >= 0) & (gap < window)
    row = jnp.where(edge, preds, n)  # out of range: dropped
    return jnp.zeros((n, window), bool).at[row, jnp.where(edge, gap, 0)].set(True, mode="drop")


def upward_rank(work: jax.Array, cpu: jax.Array, k: jax.Array, server_mask: jax.Array,
                succ: jax.Array) -> jax.Array:
    """HEFT's upward rank of every task [N] (time; docs/model.md, "Critical path").

    `rank[i] = wbar[i] + max over successors s of (cbar + rank[s])`, with `wbar[i]` the
    mean of `work[i] / cpu[n]` over the real servers and `cbar = 2 * mean(k)` the mean
    relay delay between two distinct real servers (0 with one server). The sums run left
    to right in server order, as the reference simulator's. Relaxed until nothing changes
    (each rank is final once its successors' are), so any DAG depth is exact.

    Args: work [N], cpu/k/server_mask [M], succ [N, W] bool (successor window).
    """
    n, w = succ.shape
    count = jnp.sum(server_mask).astype(work.dtype)
    proc = jnp.zeros_like(work)
    k_sum = jnp.zeros((), work.dtype)
    for m in range(cpu.shape[0]):  # static, left to right
        proc = proc + jnp.where(server_mask[m], work / cpu[m], 0.0)
        k_sum = k_sum + jnp.where(server_mask[m], k[m], 0.0)
    wbar = proc / count
    cbar = jnp.where(count > 1, 2.0 * (k_sum / count), 0.0)
    later = jnp.clip(jnp.arange(n)[:, None] + 1 + jnp.arange(w)[None, :], 0, n - 1)  # [N, W]
    has_succ = jnp.any(succ, axis=1)

    def relax(carry):
        rank, _, it = carry
        best = jnp.max(jnp.where(succ, cbar + rank[later], -jnp.inf), axis=1)
        new = jnp.where(has_succ, wbar + best, wbar)
        return new, jnp.any(new != rank), it + 1

    rank, _, _ = jax.lax.while_loop(lambda c: c[1] & (c[2] <= n), relax,
                                    (wbar, jnp.ones((), bool), 0))
    return rank


def count_dtype(window: int):
    """The narrowest unsigned integer type that holds `window` (successor counts)."""
    return jnp.uint8 if window <= 0xFF else jnp.uint16 if window <= 0xFFFF else jnp.uint32


def successor_counts(succ: jax.Array) -> jax.Array:
    """Each task's successors [N], `succ`'s [N, W] row sums, in `count_dtype(W)` (read at
    every queue slot by each observation)."""
    return jnp.sum(succ, axis=1, dtype=count_dtype(succ.shape[1]))


def pack_window(window_mask: jax.Array) -> jax.Array:
    """[N, W] bool -> [N, ceil(W/8)] uint8, offset `d` in bit `d % 8` of byte `d // 8`."""
    return jnp.packbits(window_mask, axis=-1, bitorder="little")


def unpack_window(bits: jax.Array) -> jax.Array:
    """[..., B] uint8 (:func:`pack_window`) -> [..., 8 B] bool (offsets past `W` False)."""
    return jnp.unpackbits(bits, axis=-1, bitorder="little").astype(bool)


def dag_fields(preds: jax.Array, window: int, work: jax.Array, cpu: jax.Array, k: jax.Array,
               server_mask: jax.Array) -> dict[str, jax.Array]:
    """The derived DAG fields of an :class:`Instance`: `succ` (the packed successor window
    of width `window`), `rank` (:func:`upward_rank`) and `num_succ`
    (:func:`successor_counts`). preds [N, P]; work [N]; cpu, k, server_mask [M]."""
    window_mask = successor_window(preds, window)
    return {"succ": pack_window(window_mask),
            "rank": upward_rank(work, cpu, k, server_mask, window_mask),
            "num_succ": successor_counts(window_mask)}


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
    server_mask = jnp.asarray(arrays["server_mask"], bool)
    return Instance(
        cpu=f("cpu"), bw=f("bw"), mem=f("mem"), k=f("k"), server_mask=server_mask,
        size=f("size"), work=f("work"), arrival=f("arrival"), deadline=f("deadline"),
        preds=preds, task_mask=jnp.asarray(arrays["task_mask"], bool),
        job=jnp.asarray(arrays["job"], jnp.int32),
        **dag_fields(preds, window, f("work"), f("cpu"), f("k"), server_mask),
    )


def instance_to_arrays(instance: Instance) -> dict[str, np.ndarray]:
    """The inverse of :func:`instance_from_arrays` (numpy; the derived successor window,
    rank and successor counts are dropped)."""
    out = {name: np.asarray(getattr(instance, name)) for name in (
        "cpu", "bw", "mem", "k", "server_mask", "size", "work", "arrival", "deadline",
        "preds", "task_mask", "job")}
    return out


def instance_from_spec(spec, dtype=None) -> tuple[Instance, int]:
    """An :class:`Instance` padded exactly to an `envs.instance_io.InstanceSpec`.

    Returns `(instance, queue_capacity)`: the padding fits the file (`N`, `M`,
    `P` and the successor window are the file's own), and the queue capacity
    is `N`, so it can never bind (a user may pass a smaller one to `reset`). An instance
    whose times overflow or lose all precision in `dtype` (default: JAX's default float,
    float32 unless x64) is refused (`envs.instance_io.check_times`, InstanceError).
    """
    from envs.instance_io import check_times, padded_arrays  # plain numpy, no cycle

    check_times(spec, dtype or jnp.zeros(()).dtype)
    arrays = padded_arrays(spec)
    return instance_from_arrays(arrays, dtype=dtype), int(arrays["task_mask"].sum())


def spec_config(spec):
    """The padded sizes `instance_from_spec(spec)` gives, as an `EnvConfig` (computed from
    the spec alone, before any array is made): `N`, `M`, the largest in-degree (at least
    1), queue capacity `N`, and `j_max` the largest job (its window bounds the file's)."""
    from envs.config import EnvConfig
    from envs.instance_io import max_in_degree, max_job_size

    return EnvConfig(n_max=spec.num_tasks, m_max=spec.num_servers,
                     p_max=max(max_in_degree(spec), 1), queue_capacity=spec.num_tasks,
                     j_max=max(max_job_size(spec), 2))
