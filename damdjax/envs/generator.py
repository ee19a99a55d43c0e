"""Jittable instance generator: random servers, random DAG jobs, Poisson arrivals.

`generate(key, config, params)` draws one `Instance` on the device, so
`reset` can draw fresh instances inside `vmap` and `lax.scan`.

Model (see docs/calibration.md for the defaults and why):
- servers: `cpu`, `bw`, `mem` uniform in their ranges; each server sits at a
  uniform point of the unit disk around the access point, `k = k_low +
  (k_high - k_low) * distance`;
- jobs: sizes uniform in `1..j_max`, arrivals a Poisson process of rate
  `density / E[job size]` (so tasks arrive at `density` per time unit on
  average), the first job at time 0; the last job is cut at `num_tasks`;
- DAG: every task but the first of its job gets `1..min(P_max, position)`
  distinct predecessors, drawn uniformly among the earlier tasks of its job;
- task size uniform in `[size_low, size_high]`, rounded down to a multiple of
  1/64 (at least 1/64) (so memory sums are exact in floating point), `work = size`;
- deadline: `arrival + slack * (critical-path time of the task on an average
  server + k_ref)`, the critical path including the upload `k_ref + size /
  bw_ref` and computing at `cpu_ref` (means over the real servers).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.instance import Instance, dag_fields
from damdjax.envs.times import never

SIZE_QUANTUM = 1.0 / 64.0


def _uniform(key, shape, low, high, dtype):
    return low + (high - low) * jax.random.uniform(key, shape, dtype)


def generate_servers(key: jax.Array, config: EnvConfig, params: EnvParams, dtype):
    """Servers `(cpu, bw, mem, k, server_mask)`, each [M]."""
    m = config.m_max
    k_cpu, k_bw, k_mem, k_pos = jax.random.split(key, 4)
    mask = jnp.arange(m) < params.num_servers
    cpu = _uniform(k_cpu, (m,), params.cpu_low, params.cpu_high, dtype)
    bw = _uniform(k_bw, (m,), params.bw_low, params.bw_high, dtype)
    mem = _uniform(k_mem, (m,), params.mem_low, params.mem_high, dtype)
    distance = jnp.sqrt(jax.random.uniform(k_pos, (m,), dtype))  # uniform in the unit disk
    k = params.k_low + (params.k_high - params.k_low) * distance
    one = jnp.ones((m,), dtype)
    return (jnp.where(mask, cpu, one), jnp.where(mask, bw, one), jnp.where(mask, mem, one),
            jnp.where(mask, k, one), mask)


def generate_jobs(key: jax.Array, config: EnvConfig, params: EnvParams, dtype):
    """Job structure: `(job [N], position [N], arrival [N], task_mask [N])`."""
    k_size, k_gap = jax.random.split(key)
    job_sizes = jax.random.randint(k_size, (config.n_max,), 1, config.j_max + 1)
    return layout_jobs(k_gap, job_sizes, (config.j_max + 1) / 2.0, config, params, dtype)


def layout_jobs(key: jax.Array, job_sizes: jax.Array, mean_job_size, config: EnvConfig,
                params: EnvParams, dtype):
    """Lay `job_sizes` [N] (tasks, each >= 1) end to end over the N task slots.

    Jobs arrive as a Poisson process whose mean gap is `mean_job_size / density` time
    units (so tasks arrive at `density` per time unit), the first at time 0; `key` draws
    the gaps. The last job is cut at `params.num_tasks`. Returns `(job [N] (-1 padding),
    position [N] (inside its job), arrival [N] (time, `never` padding:
    `damdjax.envs.times.never`), task_mask [N])`.
    """
    n = config.n_max
    ends = jnp.cumsum(job_sizes)
    idx = jnp.arange(n)
    job = jnp.searchsorted(ends, idx, side="right").astype(jnp.int32)
    position = idx - (ends[job] - job_sizes[job])
    gaps = jax.random.exponential(key, (n,), dtype) * mean_job_size / params.density
    job_arrival = jnp.concatenate([jnp.zeros((1,), dtype), jnp.cumsum(gaps[1:])])
    task_mask = idx < params.num_tasks
    arrival = jnp.where(task_mask, job_arrival[job], never(dtype))
    return jnp.where(task_mask, job, -1), position, arrival, task_mask


def generate_preds(key: jax.Array, position: jax.Array, config: EnvConfig) -> jax.Array:
    """Predecessors [N, P]: `1..min(P, position)` distinct earlier tasks of the job."""
    n, p, w = config.n_max, config.p_max, config.succ_window
    k_count, k_pick = jax.random.split(key)
    back = jnp.arange(1, w + 1)  # candidate offsets i - d, d in 1..W
    allowed = back[None, :] <= position[:, None]  # [N, W]
    scores = jnp.where(allowed, jax.random.uniform(k_pick, (n, w)), 2.0)
    order = jnp.argsort(scores, axis=1)[:, :p]  # [N, P] chosen offsets (index into back)
    if order.shape[1] < p:  # W < P: pad the choice
        order = jnp.pad(order, ((0, 0), (0, p - order.shape[1])), constant_values=0)
    most = jnp.minimum(position, p)
    count = jax.random.randint(k_count, (n,), 1, jnp.maximum(most, 1) + 1)
    count = jnp.where(most > 0, count, 0)
    slot = jnp.arange(p)[None, :]
    preds = jnp.arange(n)[:, None] - back[order]
    return _sorted_preds(jnp.where(slot < count[:, None], preds, -1), n)


def _sorted_preds(preds: jax.Array, n: int) -> jax.Array:
    """Sort each row ascending, padding (-1) last."""
    keyed = jnp.sort(jnp.where(preds < 0, n, preds), axis=1)
    return jnp.where(keyed == n, -1, keyed).astype(jnp.int32)


def critical_path(preds, size, work, cpu_ref, bw_ref, k_ref, depth: int):
    """Unloaded finish time of each task on an average server, from its job's arrival.

    `ef[i] = max(k_ref + size[i] / bw_ref, max_p ef[p]) + work[i] / cpu_ref`;
    `depth` relaxation rounds (>= the longest chain) make it exact. Returns [N].
    """
    upload = k_ref + size / bw_ref
    compute = work / cpu_ref
    has = preds >= 0
    safe = jnp.clip(preds, 0)

    def relax(_, ef):
        pred_ef = jnp.max(jnp.where(has, ef[safe], -never(ef.dtype)), axis=1)
        return jnp.maximum(upload, pred_ef) + compute

    return jax.lax.fori_loop(0, depth, relax, upload + compute)


def finish_instance(servers, arrival, task_mask, job, preds, size, work, config: EnvConfig,
                    params: EnvParams, depth: int | None = None) -> Instance:
    """The `Instance` of drawn servers and tasks, with the derived fields.

    `servers` = `(cpu, bw, mem, k, server_mask)` [M] (`generate_servers`);
    `arrival`, `task_mask`, `job` [N] (`layout_jobs`); `preds` [N, P] global
    indices (-1 padding); `size` [N] data, `work` [N] work units (0 for padding).
    Adds the deadlines (`arrival + slack * (critical path on the mean server + k_ref)`,
    relaxed `depth` rounds: at least the longest chain of tasks of any job; default
    `config.j_max`) and the DAG fields (`damdjax.envs.instance.dag_fields`: the successor list
    [N, `config.succ_slots`], the upward rank [N] and the successor counts [N]).
    """
    cpu, bw, mem, k, server_mask = servers
    real = server_mask.astype(size.dtype)
    count = jnp.sum(real)
    cpu_ref = jnp.sum(cpu * real) / count
    bw_ref = jnp.sum(bw * real) / count
    k_ref = jnp.sum(k * real) / count
    ef = critical_path(preds, size, work, cpu_ref, bw_ref, k_ref,
                       config.j_max if depth is None else depth)
    deadline = jnp.where(task_mask, arrival + params.slack * (ef + k_ref), never(size.dtype))
    return Instance(
        cpu=cpu, bw=bw, mem=mem, k=k, server_mask=server_mask,
        size=size, work=work, arrival=arrival, deadline=deadline,
        preds=preds, task_mask=task_mask, job=job,
        **dag_fields(preds, config.succ_window, config.succ_slots, work, cpu, k, server_mask),
    )


def check_generator_config(config: EnvConfig) -> None:
    """ValueError unless `config` holds every DAG `generate` may draw: a task may
    have any of the `W` later tasks of its job as successors, so the successor slots must
    be the whole window (`fan_out` None or `W`). Host side, before tracing."""
    if config.succ_slots < config.succ_window:
        raise ValueError(f"EnvConfig.fan_out={config.fan_out} is below the successor window "
                         f"j_max - 1 = {config.succ_window}: the random generator may draw a "
                         f"task with that many successors (leave fan_out None)")


def generate(key: jax.Array, config: EnvConfig, params: EnvParams) -> Instance:
    """Draw one instance (jittable, vmappable over keys and params). `config` must hold
    every DAG drawn (`check_generator_config`)."""
    check_generator_config(config)
    dtype = jnp.zeros(()).dtype
    k_srv, k_job, k_dag, k_size = jax.random.split(key, 4)
    servers = generate_servers(k_srv, config, params, dtype)
    job, position, arrival, task_mask = generate_jobs(k_job, config, params, dtype)
    preds = generate_preds(k_dag, position, config)
    preds = jnp.where(task_mask[:, None], preds, -1)
    raw = _uniform(k_size, (config.n_max,), params.size_low, params.size_high, dtype)
    # Round down, so a size never exceeds size_high (<= mem_low: it fits every server).
    size = jnp.minimum(jnp.maximum(jnp.floor(raw / SIZE_QUANTUM), 1.0) * SIZE_QUANTUM,
                       params.size_high)
    size = jnp.where(task_mask, size, 0.0)
    return finish_instance(servers, arrival, task_mask, job, preds, size, size, config, params)
