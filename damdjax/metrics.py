"""Episode metrics (jittable, per episode; vmap for batches) and confidence intervals.

Definitions in docs/model.md ("Metrics").
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from damdjax.envs.state import EnvState, done_time, started
from damdjax.envs.times import never

METRIC_NAMES = ("avg_response_time", "deadline_miss_rate", "makespan", "utilisation",
                "fairness", "end_time")


def episode_metrics(state: EnvState) -> dict[str, jax.Array]:
    """Scalars of one finished episode: the METRIC_NAMES.

    Finite wherever every real task has started (every episode of the env's generators).
    A task that never started (stranded, docs/model.md "Termination and truncation")
    counts as missed with an infinite response time, so the response times, the makespan
    and the fairness are then inf or NaN; its zero busy time leaves the utilisation finite.
    """
    inst = state.instance
    real = inst.task_mask
    n = jnp.maximum(jnp.sum(real), 1)
    ran = started(state)
    done = jnp.where(ran, done_time(state), jnp.inf)
    response = jnp.where(real, done - inst.arrival, 0.0)
    missed = real & (done > inst.deadline)
    end = state.time
    # Makespan per job: max done - arrival over its tasks (segment max over job ids).
    num_slots = real.shape[0]
    job = jnp.where(real, inst.job, num_slots)
    unset = never(end.dtype)
    job_end = jax.ops.segment_max(jnp.where(real, done, -unset), job, num_segments=num_slots + 1)
    job_arrival = jax.ops.segment_min(jnp.where(real, inst.arrival, unset), job,
                                      num_segments=num_slots + 1)
    has_job = job_arrival[:num_slots] < unset
    makespan = jnp.sum(jnp.where(has_job, job_end[:num_slots] - job_arrival[:num_slots], 0.0)
                       ) / jnp.maximum(jnp.sum(has_job), 1)
    busy = jax.ops.segment_sum(jnp.where(real & ran, state.finish - state.start, 0.0),
                               jnp.where(real, state.server, inst.cpu.shape[0]),
                               num_segments=inst.cpu.shape[0] + 1)[:-1]
    servers = inst.server_mask
    utilisation = jnp.sum(jnp.where(servers, busy / end, 0.0)) / jnp.sum(servers)
    fairness = jnp.sum(response) ** 2 / (n * jnp.sum(response ** 2))
    return {
        "avg_response_time": jnp.sum(response) / n,
        "deadline_miss_rate": jnp.sum(missed) / n,
        "makespan": makespan,
        "utilisation": utilisation,
        "fairness": fairness,
        "end_time": end,
    }


# Two-sided 97.5% quantiles of Student's t for small samples (df 1..30); normal beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.959964 + 2.37 / df  # within 1e-3 of the exact quantile for df > 30


def mean_ci95(values) -> tuple[float, float]:
    """`(mean, half-width)` of a Student-t 95% confidence interval over samples."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    half = t_quantile_975(x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def ci_excludes_zero(mean: float, half: float | None) -> bool:
    """Whether the CI `mean ± half` excludes 0 (False where it is undefined: None or NaN)."""
    return half is not None and bool(abs(mean) > half)
