"""What the learning agents see (pytrees of fixed-size arrays).

Times are divided by `params.time_scale`, data by the instance's mean real
memory, so features are of order one. Masks say which decisions are needed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from damdjax.envs.dynamics import (
    pred_availability, take, dispatch_feasible, dispatch_needed, eligible_slots, eligible_time,
    head_task, least_load, pick_needed, queue_length)
from damdjax.envs.state import EnvState
from damdjax.envs.times import is_set, never

TASK_FEATURES = ("size", "work", "slack", "waited", "num_preds", "preds_unstarted")
SERVER_FEATURES = (
    "feasible", "cpu", "bw", "k", "mem_free", "mem_free_after", "load", "upload",
    "est_start", "est_finish", "preds_here", "pred_ready", "queue_fill", "idle")
SLOT_FEATURES = (
    "occupied", "eligible", "proc_time", "slack", "slack_after", "waited_here",
    "until_eligible", "num_succ", "succ_remote", "in_system")
OWN_FEATURES = ("idle", "busy_left", "queue_fill", "mem_free", "cpu", "load", "num_eligible")


@struct.dataclass
class Observation:
    """Per-epoch observation.

    `dispatch_needed` [] bool, `dispatch_mask` [M] bool, `task` [F_t] (head
    task), `servers` [M, F_s] (each server seen by the dispatcher);
    `pick_needed` [M] bool, `pick_mask` [M, Q] bool, `slots` [M, Q, F_q] (each
    queue slot seen by its server's scheduler), `own` [M, F_o] (each server's
    own state), `server_mask` [M] bool, `time` [] (raw time units).
    Feature names in order: TASK_FEATURES, SERVER_FEATURES, SLOT_FEATURES,
    OWN_FEATURES.
    """

    dispatch_needed: jax.Array
    dispatch_mask: jax.Array
    task: jax.Array
    servers: jax.Array
    pick_needed: jax.Array
    pick_mask: jax.Array
    slots: jax.Array
    own: jax.Array
    server_mask: jax.Array
    time: jax.Array


# What each learning agent reads (damdjax.networks.dispatch_inputs,
# damdjax.schedulers.scheduler_inputs): a trainer that carries only its agents' part
# lets XLA leave the rest of the observation uncomputed (`observation_part`).
DISPATCHER_FIELDS = ("dispatch_needed", "dispatch_mask", "task", "servers", "server_mask")
SCHEDULER_FIELDS = ("pick_needed", "pick_mask", "slots", "own", "server_mask")


def observation_part(obs: Observation, fields: tuple[str, ...]) -> Observation:
    """`obs` with every field outside `fields` set to None (an empty pytree node), any
    batch axes. Under `jit`, a program whose outputs hold only this part never computes
    the others; a field it reads by mistake is None and fails loudly."""
    unknown = set(fields) - set(Observation.__dataclass_fields__)
    if unknown:
        raise ValueError(f"observation fields {sorted(unknown)} do not exist")
    return obs.replace(**{f: None for f in Observation.__dataclass_fields__
                          if f not in fields})


def masked_stack(features: list[jax.Array], mask: jax.Array) -> jax.Array:
    """`features` (F arrays shaped like `mask`) stacked on a new last axis, 0 where `~mask`.

    Built as [..., G, F/G] groups of at most 8 features, then reshaped to [..., F]: XLA's
    CPU fusion leaves a concatenate of more than 8 operands unfused, which writes every
    feature, then the stack, then the masked copy; this way one fusion writes the result.
    """
    f = len(features)
    groups = -(-f // 8)
    assert f % groups == 0, f"{f} features do not split into {groups} equal groups"
    per = f // groups
    masked = [jnp.where(mask, x, 0.0) for x in features]
    stacked = jnp.stack([jnp.stack(masked[i:i + per], axis=-1) for i in range(0, f, per)],
                        axis=-2)
    return stacked.reshape(mask.shape + (f,))


def observe(state: EnvState, time_scale) -> Observation:
    """Observation of `state` (jittable). `time_scale`: time units per feature unit."""
    inst = state.instance
    t = state.time
    dtype = t.dtype
    ts = time_scale
    real = inst.server_mask
    data_scale = jnp.sum(jnp.where(real, inst.mem, 0.0)) / jnp.maximum(jnp.sum(real), 1)
    h, exists = head_task(state)
    size_h, work_h = inst.size[h], inst.work[h]
    preds_h = inst.preds[h]
    has_pred = preds_h >= 0
    unstarted = has_pred & ~is_set(take(state.finish, preds_h, never(dtype)))
    task = masked_stack([
        size_h / data_scale, work_h / ts, (inst.deadline[h] - t) / ts,
        jnp.maximum(t - inst.arrival[h], 0.0) / ts,
        jnp.sum(has_pred).astype(dtype), jnp.sum(unstarted).astype(dtype)], exists)

    feasible = dispatch_feasible(state)
    load = least_load(state)
    upload = inst.k + size_h / inst.bw
    m = inst.cpu.shape[0]
    servers_idx = jnp.arange(m)
    pred_avail = pred_availability(state, jnp.broadcast_to(preds_h, (m,) + preds_h.shape),
                                    servers_idx)  # [M, P]
    pred_ready = jnp.maximum(jnp.max(pred_avail, axis=1, initial=-never(dtype)) - t, 0.0)
    est_start = jnp.maximum(jnp.maximum(load, upload), pred_ready)
    preds_here = jnp.sum(has_pred[None, :] & (take(state.server, preds_h, -1)[None, :]
                                               == servers_idx[:, None]), axis=1)
    qcap = state.queue.shape[1]
    qlen = queue_length(state)
    idle = state.running < 0
    servers = masked_stack([
        feasible.astype(dtype), inst.cpu, inst.bw / data_scale, inst.k / ts,
        state.mem_free / data_scale, (state.mem_free - size_h) / data_scale, load / ts,
        upload / ts, est_start / ts, (est_start + work_h / inst.cpu) / ts,
        preds_here.astype(dtype), pred_ready / ts, qlen / qcap, idle.astype(dtype)], real)

    q = state.queue
    occupied = q >= 0
    eligible = eligible_slots(state)  # [M, Q], gathered once, read by four features
    # A task for every slot (a free one reads task 0: its features are masked). Gathers at
    # these ids fuse with the slots' stack; at `take`'s ids, XLA's CSE would share them
    # with least_load's gather of `work`, written [M, Q] and read back.
    tasks = jnp.where(occupied, q, 0)
    e_time = eligible_time(state, tasks)
    proc = inst.work[tasks] / inst.cpu[:, None]
    deadline = inst.deadline[tasks]
    slots = masked_stack([
        occupied.astype(dtype), eligible.astype(dtype), proc / ts, (deadline - t) / ts,
        (deadline - t - proc) / ts, (t - state.arrive[tasks]) / ts,
        jnp.where(is_set(e_time), jnp.maximum(e_time - t, 0.0), -1.0 * ts) / ts,
        inst.num_succ[tasks].astype(dtype), state.succ_remote[tasks].astype(dtype),
        (t - inst.arrival[tasks]) / ts], occupied)

    run_finish = take(state.finish, state.running, t)
    own = masked_stack([
        idle.astype(dtype), (run_finish - t) / ts, qlen / qcap, state.mem_free / data_scale,
        inst.cpu, load / ts, jnp.sum(eligible, axis=1).astype(dtype)], real)
    return Observation(
        dispatch_needed=dispatch_needed(state), dispatch_mask=feasible, task=task,
        servers=servers, pick_needed=pick_needed(state, eligible),
        pick_mask=eligible & real[:, None],
        slots=slots, own=own, server_mask=real, time=t)
