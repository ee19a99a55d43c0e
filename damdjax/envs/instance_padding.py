"""A spec as the simulators' inputs: its tasks in environment order (`job_order`,
`global_index`), the reference simulator's lists (`flat_tasks`,
`servers_list`) and the padded numpy arrays of the JAX environment
(`padded_arrays`, and back: `spec_from_arrays`), with the sizes a spec
needs (`max_job_size`, `max_in_degree`, `max_out_degree`).

Plain Python and numpy only (no JAX): both the reference simulator
(`damdjax.envs.reference`) and the JAX environment (`damdjax.envs.instance`) consume it.
The specs and their validation: `damdjax.envs.instance_format`.

Ordering decision. An `InstanceSpec` keeps the file's order, where a predecessor
may sit at a later position than its successor (`damdjax.envs.instance_format`). The
environment needs every predecessor to have a smaller global index, so
`flat_tasks` and `padded_arrays` number the tasks globally: jobs in file
order (which must be nondecreasing arrival order), each job's tasks contiguous and in
the *stable* topological order of `job_order` (Kahn's algorithm always taking the
smallest ready file position; a job already in topological order keeps its file order).
Each global task carries `job` and `pos` (its position in the file), and
`global_index` maps file positions to global indices, so outputs can be reported
in file order. `padded_arrays` also returns `pos`, so that `spec_from_arrays`
restores the file order exactly. The arrays hold no `name` or `meta`.

Everything invalid raises `InstanceError` (a ValueError) naming what is wrong.
"""

from __future__ import annotations

import collections
import numbers
from typing import Any, Mapping

import numpy as np

from damdjax.envs.instance_format import (  # the private helpers: one list of server
    InstanceError, InstanceSpec, JobSpec,      # keys, one value rendering, one Kahn's order
    _SERVER_KEYS, _show, _topological, parse_instance,
)

__all__ = [
    "job_order",
    "global_index",
    "flat_tasks",
    "servers_list",
    "padded_arrays",
    "spec_from_arrays",
    "max_job_size",
    "max_in_degree",
    "max_out_degree",
]


def job_order(job: JobSpec) -> list[int]:
    """File positions of `job`'s tasks in environment order (stable topological).

    Kahn's algorithm taking the smallest ready file position first: a job whose
    file order is already topological keeps it.
    """
    order, left = _topological([t.preds for t in job.tasks])
    if left:
        raise InstanceError(f"a job's predecessors form a cycle among tasks {sorted(left)}")
    return order


def global_index(spec: InstanceSpec) -> list[list[int]]:
    """`global_index(spec)[j][pos]`: the global task index of job `j`'s task at file position `pos`."""
    out: list[list[int]] = []
    base = 0
    for job in spec.jobs:
        g = [0] * len(job.tasks)
        for rank, pos in enumerate(job_order(job)):
            g[pos] = base + rank
        out.append(g)
        base += len(job.tasks)
    return out


def flat_tasks(spec: InstanceSpec) -> list[dict]:
    """The global task list in environment order (the reference simulator's `tasks`).

    Each dict: `size`, `work`, `arrival`, `deadline` (floats), `preds` (list of
    global indices, each smaller than the task's own, in file order), `job`
    (job index) and `pos` (position of the task in its job in the file).
    """
    gidx = global_index(spec)
    out: list[dict] = []
    for j, job in enumerate(spec.jobs):
        for pos in job_order(job):
            t = job.tasks[pos]
            out.append({
                "size": t.size, "work": t.work, "arrival": job.arrival,
                "deadline": t.deadline, "preds": [gidx[j][p] for p in t.preds],
                "job": j, "pos": pos,
            })
    return out


def servers_list(spec: InstanceSpec) -> list[dict]:
    """Servers as dicts `{cpu, bw, mem, k}` (the reference simulator's `servers`)."""
    return [{"cpu": s.cpu, "bw": s.bw, "mem": s.mem, "k": s.k} for s in spec.servers]


def max_job_size(spec: InstanceSpec) -> int:
    """Most tasks in one job (the generator's `j_max`; successor window `j_max - 1`)."""
    return max((len(job.tasks) for job in spec.jobs), default=0)


def max_in_degree(spec: InstanceSpec) -> int:
    """Most predecessors of one task (0 if there are no edges)."""
    return max((len(t.preds) for job in spec.jobs for t in job.tasks), default=0)


def max_out_degree(spec: InstanceSpec) -> int:
    """Most successors of one task (0 if there are no edges): the successor slots its
    instance needs (`damdjax.envs.instance.max_fan_out` of its arrays)."""
    counts = [collections.Counter(p for t in job.tasks for p in t.preds) for job in spec.jobs]
    return max((max(c.values(), default=0) for c in counts), default=0)


def _limit(value: int | None, default: int, name: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InstanceError(f"{name} must be an integer >= 1, got {_show(value)}")
    return int(value)


def padded_arrays(
    spec: InstanceSpec,
    *,
    n_max: int | None = None,
    m_max: int | None = None,
    p_max: int | None = None,
    j_max: int | None = None,
    dtype: Any = np.float64,
) -> dict[str, np.ndarray]:
    """Numpy arrays of `spec` in environment order, padded to the limits.

    Limits default to the instance's own sizes (`N` tasks, `M` servers, the
    largest in-degree but at least 1). `j_max`, if given, bounds the tasks of
    one job (the environment's successor window is `j_max - 1`).

    Returns (`F` = `dtype`):
        servers: `cpu, bw, mem, k` [m_max] F (padding 1), `server_mask` [m_max] bool;
        tasks: `size, work` [n_max] F (padding 0), `deadline` [n_max] F (padding
        +inf), `arrival` [n_max] F (padding +inf; an `Instance` holds the finite
        `damdjax.envs.times.never` there instead: `instance_from_arrays`), `preds`
        [n_max, p_max] int32 (global indices, padding -1), `task_mask` [n_max] bool, `job` [n_max]
        int32 and `pos` [n_max] int32 (file position in the job), both -1 padding.

    Raises:
        InstanceError: naming what is over a limit.
    """
    n, m = spec.num_tasks, spec.num_servers
    n_max = _limit(n_max, n, "n_max")
    m_max = _limit(m_max, m, "m_max")
    p_max = _limit(p_max, max(max_in_degree(spec), 1), "p_max")
    j_max = _limit(j_max, max_job_size(spec), "j_max")
    if n > n_max:
        raise InstanceError(f"{n} tasks exceed n_max={n_max}")
    if m > m_max:
        raise InstanceError(f"{m} servers exceed m_max={m_max}")
    for j, job in enumerate(spec.jobs):
        if len(job.tasks) > j_max:
            raise InstanceError(f"job {j}: {len(job.tasks)} tasks exceed j_max={j_max}")
        for t, task in enumerate(job.tasks):
            if len(task.preds) > p_max:
                raise InstanceError(
                    f"job {j}, task {t}: {len(task.preds)} predecessors exceed p_max={p_max}")

    out: dict[str, np.ndarray] = {}
    for key in _SERVER_KEYS:
        arr = np.ones(m_max, dtype)
        arr[:m] = [getattr(s, key) for s in spec.servers]
        out[key] = arr
    out["server_mask"] = np.arange(m_max) < m

    tasks = flat_tasks(spec)
    fill = {"size": 0.0, "work": 0.0, "deadline": np.inf, "arrival": np.inf}
    for key, pad in fill.items():
        arr = np.full(n_max, pad, dtype)
        arr[:n] = [t[key] for t in tasks]
        out[key] = arr
    preds = np.full((n_max, p_max), -1, np.int32)
    for i, t in enumerate(tasks):
        preds[i, :len(t["preds"])] = t["preds"]
    out["preds"] = preds
    out["task_mask"] = np.arange(n_max) < n
    for key in ("job", "pos"):
        arr = np.full(n_max, -1, np.int32)
        arr[:n] = [t[key] for t in tasks]
        out[key] = arr
    return out


def spec_from_arrays(arrays: Mapping[str, Any]) -> InstanceSpec:
    """The validated spec of (padded or unpadded) arrays with `padded_arrays`' keys.

    Real servers and tasks are those of `server_mask` / `task_mask` (all, if a
    mask is absent). Tasks of a job must be contiguous with one arrival time;
    `preds` (global indices, -1 padding) become positions inside the job. If
    `pos` is present the tasks of each job are put back in that file order,
    else they keep the arrays' order. The arrays hold no `name` or `meta`, so
    the spec has None on every level (it equals the original spec only if
    that had no names or meta).

    Raises:
        InstanceError: for arrays that do not describe a valid instance.
    """
    def get(key: str) -> np.ndarray:
        if key not in arrays:
            raise InstanceError(f"arrays: missing key {key!r}")
        return np.asarray(arrays[key])

    cpu = get("cpu")
    smask = (np.asarray(arrays["server_mask"], bool) if "server_mask" in arrays
             else np.ones(cpu.shape, bool))
    real_servers = np.flatnonzero(smask)
    server_cols = {key: get(key)[real_servers] for key in _SERVER_KEYS}
    servers = [{key: float(server_cols[key][i]) for key in _SERVER_KEYS}
               for i in range(len(real_servers))]

    size = get("size")
    tmask = (np.asarray(arrays["task_mask"], bool) if "task_mask" in arrays
             else np.ones(size.shape, bool))
    real = np.flatnonzero(tmask)
    compact = {int(g): i for i, g in enumerate(real)}  # global slot -> compact index
    cols = {key: get(key)[real] for key in ("size", "work", "arrival", "deadline", "job")}
    preds = get("preds")
    if preds.ndim == 1:
        preds = preds[:, None]
    preds = preds[real]
    pos_col = np.asarray(arrays["pos"])[real] if "pos" in arrays else None

    # Split the compact tasks into contiguous jobs.
    groups: list[list[int]] = []
    seen: set[int] = set()
    for i in range(len(real)):
        job_id = int(cols["job"][i])
        if groups and job_id == int(cols["job"][groups[-1][0]]):
            groups[-1].append(i)
            continue
        if job_id in seen:
            raise InstanceError(f"arrays: the tasks of job {job_id} are not contiguous")
        seen.add(job_id)
        groups.append([i])

    jobs = []
    for j, members in enumerate(groups):
        arrivals = {float(cols["arrival"][i]) for i in members}
        if len(arrivals) != 1:
            raise InstanceError(
                f"arrays: job {j}: its tasks have different arrivals {sorted(arrivals)}")
        if pos_col is None:
            file_pos = {i: r for r, i in enumerate(members)}
        else:
            file_pos = {i: int(pos_col[i]) for i in members}
            if sorted(file_pos.values()) != list(range(len(members))):
                raise InstanceError(
                    f"arrays: job {j}: pos {sorted(file_pos.values())} is not a "
                    f"permutation of 0..{len(members) - 1}")
        tasks: list[dict | None] = [None] * len(members)
        for i in members:
            ps = []
            for g in preds[i]:
                g = int(g)
                if g < 0:
                    continue
                if g not in compact or compact[g] not in file_pos:
                    raise InstanceError(
                        f"arrays: job {j}, task {file_pos[i]}: predecessor slot {g} "
                        f"is not a real task of the same job")
                ps.append(file_pos[compact[g]])
            tasks[file_pos[i]] = {"size": float(cols["size"][i]), "work": float(cols["work"][i]),
                                  "deadline": float(cols["deadline"][i]), "preds": ps}
        jobs.append({"arrival": arrivals.pop(), "tasks": tasks})
    return parse_instance({"servers": servers, "jobs": jobs})
