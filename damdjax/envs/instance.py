"""One episode's data as fixed-size padded arrays (a pytree).

Shapes: `M` = server slots, `N` = task slots, `P` = predecessor slots,
`W` = successor window, `D` = successor slots (the widest fan-out, at most `W`).
Padded servers and tasks are masked out.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from damdjax.envs.config import EnvConfig
from damdjax.envs.times import never


@struct.dataclass
class Instance:
    """Servers, tasks and the DAG of one episode.

    Servers: `cpu` [M] work/time, `bw` [M] data/time, `mem` [M] data,
    `k` [M] time (AP <-> server propagation delay), `server_mask` [M].
    Tasks (global index order: jobs by arrival, predecessors first):
    `size` [N] data, `work` [N] work, `arrival` [N] time (its job's arrival;
    `damdjax.envs.times.never` for padding), `deadline` [N] absolute time (`never` for
    padding), `preds` [N, P] global
    indices padded with -1, `task_mask` [N], `job` [N] (-1 for padding).
    Derived once per instance (`dag_fields`): `succ` [N, D] unsigned int
    (`count_dtype(W)`), each task's successors as offsets, ascending, `D` = the config's
    `succ_slots` (its widest allowed fan-out; `successor_list`): `succ[i, d] = g`
    (1..W) is task `i+g`, 0 an empty slot; `rank` [N] time, HEFT's upward rank
    (`upward_rank`, used by the critical-path scheduling rule); `num_succ` [N]
    (`count_dtype(W)`), each task's successors (`successor_counts`).
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


def count_dtype(window: int):
    """The narrowest unsigned integer type that holds `window` (successor offsets and
    counts)."""
    return jnp.uint8 if window <= 0xFF else jnp.uint16 if window <= 0xFFFF else jnp.uint32


_KEY_LIMIT = 2**31 - 1  # one int32 sort key per edge while (N + 1) (W + 1) stays below


def successor_list(preds: jax.Array, window: int, slots: int) -> jax.Array:
    """Each task's successors [N, D] (`D = slots`) as offsets, ascending, then 0s.

    Args: preds [N, P] int (global indices, -1 padding; one not below its row is left
    out); window `W` >= the largest index gap between a task and its predecessor (edges
    with larger gaps are left out). Returns `succ` in `count_dtype(W)`: `succ[i, d] = g`
    (1..W) when task `i+g` lists `i` among its predecessors. One sort of the N * P edges
    by (predecessor, offset), then one scatter: no [N, W] array. Successors beyond the
    first `D` are left out: the caller checks the fan-out first (`max_fan_out`,
    `damdjax.envs.workload.check_library`).
    """
    n, p = preds.shape
    dtype = count_dtype(window)
    gap = jnp.arange(n, dtype=jnp.int32)[:, None] - preds  # [N, P] offset in the pred's list
    edge = (preds >= 0) & (gap >= 1) & (gap <= window)
    row = jnp.where(edge, preds, n).reshape(-1).astype(jnp.int32)  # no edge: n, sorted last
    offset = jnp.where(edge, gap, 0).reshape(-1).astype(jnp.int32)
    if (n + 1) * (window + 1) <= _KEY_LIMIT:  # one int32 key: a faster sort
        key = jnp.sort(row * (window + 1) + offset)
        row, offset = key // (window + 1), key % (window + 1)
    else:
        row, offset = jax.lax.sort((row, offset), num_keys=2)
    count = jnp.zeros(n + 1, jnp.int32).at[row].add(1)  # edges per predecessor
    slot = jnp.arange(n * p, dtype=jnp.int32) - (jnp.cumsum(count) - count)[row]
    keep = (row < n) & (slot < slots)
    return jnp.zeros((n, slots), dtype).at[jnp.where(keep, row, n), jnp.where(keep, slot, 0)
                                           ].set(offset.astype(dtype), mode="drop")


def upward_rank(work: jax.Array, cpu: jax.Array, k: jax.Array, server_mask: jax.Array,
                succ: jax.Array) -> jax.Array:
    """HEFT's upward rank of every task [N] (time; docs/model.md, "Critical path").

    `rank[i] = wbar[i] + max over successors s of (cbar + rank[s])`, with `wbar[i]` the
    mean of `work[i] / cpu[n]` over the real servers and `cbar = 2 * mean(k)` the mean
    relay delay between two distinct real servers (0 with one server). The sums run left
    to right in server order, as the reference simulator's. Relaxed until nothing changes
    (each rank is final once its successors' are), so any DAG depth is exact.

    Args: work [N], cpu/k/server_mask [M], succ [N, D] successor offsets
    (`successor_list`, 0 = none).
    """

    n = succ.shape[0]
    count = jnp.sum(server_mask).astype(work.dtype)
    proc = jnp.zeros_like(work)
    k_sum = jnp.zeros((), work.dtype)
    for m in range(cpu.shape[0]):  # static, left to right
        proc = proc + jnp.where(server_mask[m], work / cpu[m], 0.0)
        k_sum = k_sum + jnp.where(server_mask[m], k[m], 0.0)
    wbar = proc / count
    cbar = jnp.where(count > 1, 2.0 * (k_sum / count), 0.0)
    is_succ = succ > 0  # [N, D]
    later = jnp.clip(jnp.arange(n)[:, None] + succ.astype(jnp.int32), 0, n - 1)  # [N, D]
    has_succ = jnp.any(is_succ, axis=1)

    lowest = -never(work.dtype)  # below every successor's term (a finite fill)

    def relax(carry):
        rank, _, it = carry
        best = jnp.max(jnp.where(is_succ, cbar + rank[later], lowest), axis=1)
        new = jnp.where(has_succ, wbar + best, wbar)
        return new, jnp.any(new != rank), it + 1

    rank, _, _ = jax.lax.while_loop(lambda c: c[1] & (c[2] <= n), relax,
                                    (wbar, jnp.ones((), bool), 0))
    return rank


def successor_counts(succ: jax.Array) -> jax.Array:
    """Each task's successors [N]: the filled slots of `succ` [N, D] (`successor_list`),
    in its type (read at every queue slot by each observation)."""
    return jnp.sum(succ > 0, axis=1, dtype=succ.dtype)


def dag_fields(preds: jax.Array, window: int, slots: int, work: jax.Array, cpu: jax.Array,
               k: jax.Array, server_mask: jax.Array) -> dict[str, jax.Array]:
    """The derived DAG fields of an `Instance`: `succ` (the successor list
    [N, `slots`] of successor window `window`, `successor_list`), `rank`
    (`upward_rank`) and `num_succ` (`successor_counts`). preds [N, P];
    work [N]; cpu, k, server_mask [M]. A task with more than `slots` successors must have
    been refused before (its list would be cut)."""
    succ = successor_list(preds, window, slots)
    return {"succ": succ,
            "rank": upward_rank(work, cpu, k, server_mask, succ),
            "num_succ": successor_counts(succ)}


def max_fan_out(preds: np.ndarray) -> int:
    """Most successors of one task (at least 1) of global `preds` [N, P] (-1 padding):
    the successor slots `D` a file needs."""
    preds = np.asarray(preds)
    edges = preds[preds >= 0]
    return max(int(np.bincount(edges).max(initial=0)) if edges.size else 0, 1)


def max_pred_gap(preds: np.ndarray) -> int:
    """Largest `i - p` over edges `p -> i` (at least 1): the window `W` a file needs."""
    preds = np.asarray(preds)
    rows = np.arange(preds.shape[0])[:, None]
    gaps = np.where(preds >= 0, rows - preds, 0)
    return max(int(gaps.max(initial=0)), 1)


def instance_from_arrays(arrays: Mapping[str, np.ndarray], window: int | None = None,
                         dtype=None, fan_out: int | None = None) -> Instance:
    """Build an `Instance` from the numpy arrays of
    `damdjax.envs.instance_padding.padded_arrays`.

    `window` defaults to the largest predecessor gap in `preds`; `fan_out` (the successor
    slots `D`) to the most successors of one task (`max_fan_out`); a given
    `fan_out` below that raises `damdjax.envs.instance_format.InstanceError` (a ValueError)
    naming both.
    `dtype` defaults to JAX's default float (float64 only with x64 enabled). The padding
    tasks' `arrival` and `deadline` (+inf in `padded_arrays`, whatever the arrays hold)
    become `damdjax.envs.times.never(dtype)`, the state's finite "never" in that type.
    """

    dtype = dtype or jnp.zeros(()).dtype
    window = window or max_pred_gap(arrays["preds"])
    widest = max_fan_out(arrays["preds"])
    if fan_out is not None and fan_out < widest:
        from damdjax.envs.instance_format import InstanceError  # plain numpy, no cycle
        raise InstanceError(f"a task has {widest} successors, more than the {fan_out} "
                            f"successor slots (fan_out={fan_out})")
    fan_out = fan_out or widest
    preds = jnp.asarray(arrays["preds"], jnp.int32)
    f = lambda name: jnp.asarray(arrays[name], dtype)
    server_mask = jnp.asarray(arrays["server_mask"], bool)
    task_mask = np.asarray(arrays["task_mask"], bool)
    unset = never(f("size").dtype)  # of the type the arrays become (float32 without x64)
    real_time = lambda name: jnp.asarray(np.where(task_mask, arrays[name], unset), dtype)
    return Instance(
        cpu=f("cpu"), bw=f("bw"), mem=f("mem"), k=f("k"), server_mask=server_mask,
        size=f("size"), work=f("work"), arrival=real_time("arrival"),
        deadline=real_time("deadline"), preds=preds, task_mask=jnp.asarray(task_mask),
        job=jnp.asarray(arrays["job"], jnp.int32),
        **dag_fields(preds, window, fan_out, f("work"), f("cpu"), f("k"), server_mask),
    )


def instance_to_arrays(instance: Instance) -> dict[str, np.ndarray]:
    """The inverse of `instance_from_arrays` (numpy; the derived successor list,
    rank and successor counts are dropped)."""
    out = {name: np.asarray(getattr(instance, name)) for name in (
        "cpu", "bw", "mem", "k", "server_mask", "size", "work", "arrival", "deadline",
        "preds", "task_mask", "job")}
    return out


def instance_from_spec(spec, dtype=None) -> tuple[Instance, int]:
    """An `Instance` padded exactly to a `damdjax.envs.instance_format.InstanceSpec`.

    Returns `(instance, queue_capacity)`: the padding fits the file (`N`, `M`,
    `P`, the successor window and the successor slots are the file's own), and the queue capacity
    is `N`, so it can never bind (a user may pass a smaller one to `reset`). An instance
    whose times overflow or lose all precision in `dtype` (default: JAX's default float,
    float32 unless x64) is refused (`damdjax.envs.instance_format.check_times`, InstanceError).
    """
    from damdjax.envs.instance_format import check_times  # plain numpy, no cycle
    from damdjax.envs.instance_padding import padded_arrays

    check_times(spec, dtype or jnp.zeros(()).dtype)
    arrays = padded_arrays(spec)
    return instance_from_arrays(arrays, dtype=dtype), int(arrays["task_mask"].sum())


def spec_config(spec):
    """The padded sizes `instance_from_spec(spec)` gives, as an `EnvConfig` (computed from
    the spec alone, before any array is made): `N`, `M`, the largest in-degree (at least
    1), queue capacity `N`, `j_max` the largest job (its window bounds the file's) and
    `fan_out` the most successors of one task (at least 1)."""
    from damdjax.envs.instance_padding import max_in_degree, max_job_size, max_out_degree

    return EnvConfig(n_max=spec.num_tasks, m_max=spec.num_servers,
                     p_max=max(max_in_degree(spec), 1), queue_capacity=spec.num_tasks,
                     j_max=max(max_job_size(spec), 2), fan_out=max(max_out_degree(spec), 1))


def instance_config(instance: Instance, queue_capacity: int) -> EnvConfig:
    """The `EnvConfig` of an env that steps `instance` with `queue_capacity` queue slots:
    its own padded sizes (`N`, `M`, `P` and the successor slots `D` from its arrays'
    shapes, read under `jit` and `vmap` too). The arrays do not keep the successor window,
    so the window is `D` (`j_max = D + 1`, `fan_out` None): stepping never reads it."""
    slots = instance.succ.shape[-1]
    return EnvConfig(n_max=instance.num_task_slots, m_max=instance.num_server_slots,
                     p_max=instance.preds.shape[-1], queue_capacity=queue_capacity,
                     j_max=slots + 1)


def to_reference_input(arrays: dict, index: int) -> tuple[list[dict], list[dict]]:
    """`(servers, tasks)` of episode `index` of batched `instance_to_arrays` output
    (arrays [B, ...]) for `damdjax.envs.reference.simulate`.

    Real servers and real tasks only; predecessor ids are renumbered among the
    real tasks (-1 padding dropped).
    """
    get = lambda name: arrays[name][index]
    servers = [{"cpu": float(c), "bw": float(b), "mem": float(m), "k": float(k)}
               for c, b, m, k, real in zip(get("cpu"), get("bw"), get("mem"), get("k"),
                                           get("server_mask")) if real]
    real_ids = np.flatnonzero(get("task_mask"))
    new_id = {int(old): new for new, old in enumerate(real_ids)}
    tasks = [{"size": float(get("size")[i]), "work": float(get("work")[i]),
              "arrival": float(get("arrival")[i]), "deadline": float(get("deadline")[i]),
              "preds": [new_id[int(p)] for p in get("preds")[i] if p >= 0],
              "job": int(get("job")[i])}
             for i in real_ids]
    return servers, tasks
