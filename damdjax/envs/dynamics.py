"""The event-driven dynamics as pure functions (docs/model.md, "Epochs").

A step applies the joint action at the current epoch (the head task's
dispatch, then one pick per idle server) and moves the clock to the next epoch
in closed form: between two epochs nothing starts and nothing is dispatched,
so each server completes at most one task and the next time a decision is
possible is a minimum over servers. There is no event loop inside a step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from damdjax.envs.state import Action, EnvState, done_time, initial_state
from damdjax.envs.times import is_set, never


def take(x: jax.Array, idx: jax.Array, fill) -> jax.Array:
    """`x[idx]` where `idx >= 0`, `fill` where `idx == -1` (any shape of idx)."""
    return jnp.where(idx >= 0, x[jnp.clip(idx, 0)], fill)


def head_task(state: EnvState) -> tuple[jax.Array, jax.Array]:
    """`(h, exists)`: the lowest-index undispatched task (clipped) and whether it is real."""
    n = state.server.shape[0]
    h = jnp.minimum(state.head, n - 1)
    return h, (state.head < n) & state.instance.task_mask[h]


def queue_length(state: EnvState) -> jax.Array:
    """Occupied queue slots per server [M] (in transit or waiting)."""
    return jnp.sum(state.queue >= 0, axis=1)


def dispatch_feasible(state: EnvState) -> jax.Array:
    """[M] bool: real servers with room (memory and a slot) for the head task."""
    inst = state.instance
    h, exists = head_task(state)
    has_slot = queue_length(state) < state.queue.shape[1]
    return exists & inst.server_mask & (state.mem_free >= inst.size[h]) & has_slot


def dispatch_needed(state: EnvState) -> jax.Array:
    """[] bool: the head task is at the AP and some server can take it now."""
    h, exists = head_task(state)
    arrived = state.instance.arrival[h] <= state.time
    return exists & arrived & jnp.any(dispatch_feasible(state))


def _eligible_per_task(state: EnvState) -> jax.Array:
    """[N] `max(arrive, ready)` once every predecessor has started, else `never` (time)."""
    unset = never(state.time.dtype)
    return jnp.where(state.n_wait == 0, jnp.maximum(state.arrive, state.ready), unset)


def eligible_time(state: EnvState, tasks: jax.Array) -> jax.Array:
    """Earliest time each task could start at its server (any shape; -1 -> `never`).

    `max(arrive, ready)` once every predecessor has started, else `never`
    (`damdjax.envs.times.never`; computed over tasks, then gathered once).
    """
    return take(_eligible_per_task(state), tasks, never(state.time.dtype))


def eligible_slots(state: EnvState) -> jax.Array:
    """[M, Q] bool: queued tasks that may start now.

    `eligible_time(queue) <= time`, compared per task before the gather so that only
    booleans are gathered (a quarter of the bytes), from a table with False appended
    for the free slots (-1 -> N): one plain gather, which XLA writes once for all its
    readers (with `take`'s select around it, the observation re-gathered it per reader).
    """
    can_start = jnp.append(_eligible_per_task(state) <= state.time, False)  # [N + 1]
    q = state.queue
    return can_start[jnp.where(q >= 0, q, can_start.shape[0] - 1)]


def pick_needed(state: EnvState, eligible: jax.Array | None = None) -> jax.Array:
    """[M] bool: idle real servers with at least one eligible queued task (`eligible`:
    `eligible_slots(state)` [M, Q] where the caller has it already)."""
    eligible = eligible_slots(state) if eligible is None else eligible
    idle = state.running < 0
    return idle & state.instance.server_mask & jnp.any(eligible, axis=1)


def least_load(state: EnvState) -> jax.Array:
    """[M] estimated wait before a new task could start: `(rem + queued) / cpu` (time)."""
    inst = state.instance
    run = state.running
    rem = take(inst.work, run, 0.0) - jnp.where(
        run >= 0, (state.time - take(state.start, run, 0.0)) * inst.cpu, 0.0)
    queued = jnp.sum(take(inst.work, state.queue, 0.0), axis=1)
    return (rem + queued) / inst.cpu


def pred_availability(state: EnvState, preds: jax.Array, server: jax.Array) -> jax.Array:
    """When each started predecessor's result is available at `server` (`-never` if not
    started or -1).

    preds: [..., P] task ids; server: broadcastable [...] server ids.
    """
    inst = state.instance
    unset = never(state.time.dtype)
    fin = take(state.finish, preds, unset)
    started = is_set(fin)  # False for -1 too
    m = take(state.server, preds, 0)
    server = jnp.broadcast_to(server[..., None], preds.shape)
    relayed = (fin + inst.k[jnp.clip(m, 0)]) + inst.k[server]
    return jnp.where(started, jnp.where(m == server, fin, relayed), -unset)


def apply_dispatch(state: EnvState, choice: jax.Array, live=True
                   ) -> tuple[EnvState, jax.Array, jax.Array]:
    """Dispatch the head task to `choice` if a dispatch is needed (and `live` [] bool).

    An infeasible choice is replaced by the lowest-index feasible server.
    Returns `(state, dispatched_task or -1, invalid [] bool)`.
    """
    inst = state.instance
    need = live & dispatch_needed(state)
    feasible = dispatch_feasible(state)
    m = feasible.shape[0]
    in_range = (choice >= 0) & (choice < m)
    valid = in_range & feasible[jnp.clip(choice, 0, m - 1)]
    n_srv = jnp.where(valid, jnp.clip(choice, 0, m - 1), jnp.argmax(feasible)).astype(jnp.int32)
    h, _ = head_task(state)
    t = state.time
    # One-task updates, written only when a dispatch happens (index n drops the write).
    n = state.server.shape[0]
    at = jnp.where(need, h, n)
    arrive = (t + inst.k[n_srv]) + inst.size[h] / inst.bw[n_srv]
    preds = inst.preds[h]
    ready = jnp.max(pred_availability(state, preds, n_srv), initial=-never(t.dtype))
    slot = jnp.argmax(state.queue[n_srv] < 0)
    remote = (preds >= 0) & (take(state.server, preds, -1) != n_srv)
    state = state.replace(
        server=state.server.at[at].set(n_srv, mode="drop"),
        arrive=state.arrive.at[at].set(arrive, mode="drop"),
        ready=state.ready.at[at].set(ready, mode="drop"),
        dispatch_step=state.dispatch_step.at[at].set(state.step, mode="drop"),
        succ_remote=state.succ_remote.at[jnp.where(remote & need, preds, n)].add(1, mode="drop"),
        queue=state.queue.at[n_srv, slot].set(jnp.where(need, h, state.queue[n_srv, slot])),
        mem_free=state.mem_free.at[n_srv].add(jnp.where(need, -inst.size[h], 0.0)),
        head=state.head + need.astype(jnp.int32),
    )
    return state, jnp.where(need, h, -1), need & ~valid


def apply_picks(state: EnvState, picks: jax.Array, live=True
                ) -> tuple[EnvState, jax.Array, jax.Array]:
    """Start the picked queue slot on every server that needs a decision (if `live` [] bool).

    A pick of an empty or ineligible slot is replaced by the lowest eligible slot.
    Returns `(state, started task per server [M] or -1, invalid pick count [])`.
    """
    inst = state.instance
    eligible = eligible_slots(state)  # [M, Q]
    need = live & pick_needed(state, eligible)  # [M]
    m, q = eligible.shape
    rows = jnp.arange(m)
    in_range = (picks >= 0) & (picks < q)
    valid = in_range & eligible[rows, jnp.clip(picks, 0, q - 1)]
    slot = jnp.where(valid, jnp.clip(picks, 0, q - 1), jnp.argmax(eligible, axis=1))
    task = jnp.where(need, state.queue[rows, slot], -1)  # [M]
    n = state.server.shape[0]
    at = jnp.where(need, task, n)
    t = state.time
    finish = t + take(inst.work, task, 0.0) / inst.cpu  # [M]
    # A started task's result is done at `finish + k` of its server (done_time's sum).
    done_at = finish + inst.k
    state = state.replace(
        start=state.start.at[at].set(t, mode="drop"),
        finish=state.finish.at[at].set(finish, mode="drop"),
        done_at=state.done_at.at[at].set(done_at, mode="drop"),
        queue=state.queue.at[rows, slot].set(jnp.where(need, -1, state.queue[rows, slot])),
        running=jnp.where(need, task, state.running),
        unstarted=state.unstarted - jnp.sum(need).astype(jnp.int32),
        last_done=jnp.maximum(state.last_done,
                              jnp.max(jnp.where(need, done_at, -never(t.dtype)))),
    )
    # Tell each started task's successors: one fewer predecessor to wait for, and
    # (if already dispatched) when this result will be available at their server.
    offset = inst.succ[jnp.clip(task, 0)]  # [M, D] successor offsets, 0 = none
    succ = task[:, None] + offset.astype(jnp.int32)  # [M, D]
    is_succ = need[:, None] & (task[:, None] >= 0) & (offset > 0)  # [M, D]
    succ_at = jnp.where(is_succ, succ, n)
    succ_srv = take(state.server, jnp.where(is_succ, succ, -1), -1)  # [M, D]
    srv_c = jnp.clip(succ_srv, 0)
    avail = jnp.where(succ_srv == rows[:, None], finish[:, None],
                      (finish[:, None] + inst.k[:, None]) + inst.k[srv_c])
    avail_at = jnp.where(is_succ & (succ_srv >= 0), succ, n)
    state = state.replace(
        n_wait=state.n_wait.at[succ_at].add(-1, mode="drop"),
        ready=state.ready.at[avail_at].max(avail, mode="drop"),
    )
    return state, task, jnp.sum(need & ~valid)


def next_epoch_time(state: EnvState) -> jax.Array:
    """The next time (>= now) at which some decision is possible; `never` if never."""
    inst = state.instance
    t = state.time
    unset = never(t.dtype)
    run = state.running
    running = run >= 0
    run_finish = take(state.finish, run, unset)
    run_size = take(inst.size, run, 0.0)
    # Dispatch: memory suffices now, or once the running task completes.
    h, exists = head_task(state)
    size_h = inst.size[h]
    t_h = jnp.maximum(t, inst.arrival[h])
    has_slot = inst.server_mask & (queue_length(state) < state.queue.shape[1])
    # Memory once the running task completes: all of it if nothing else is held.
    freed = jnp.where(queue_length(state) == 0, inst.mem, state.mem_free + run_size)
    t_room = jnp.where(state.mem_free >= size_h, t_h,
                       jnp.where(running & (freed >= size_h),
                                 jnp.maximum(t_h, run_finish), unset))
    t_dispatch = jnp.where(exists, jnp.min(jnp.where(has_slot, t_room, unset)), unset)
    # Picks: once idle and some queued task is eligible.
    idle_at = jnp.where(running, run_finish, t)
    first_eligible = jnp.min(eligible_time(state, state.queue), axis=1)
    t_pick = jnp.where(inst.server_mask, jnp.maximum(idle_at, first_eligible), unset)
    return jnp.minimum(t_dispatch, jnp.min(t_pick))


def advance(state: EnvState) -> EnvState:
    """Move the clock to the next epoch, applying completions up to it.

    When no decision will ever be needed again the clock goes to the last
    result's return and the episode is done: a termination, also when tasks were
    left that no server can ever run (`state.unstarted_tasks` counts them).
    """
    inst = state.instance
    t_next = next_epoch_time(state)
    final = ~is_set(t_next)
    # Once every real task has started, the latest done time is the running maximum.
    t_end = jnp.maximum(state.last_done, state.time)
    t_new = jnp.where(final, jnp.where(state.unstarted == 0, t_end, state.time), t_next)
    run = state.running
    completes = (run >= 0) & (take(state.finish, run, never(t_new.dtype)) <= t_new)
    mem_free = state.mem_free + jnp.where(completes, take(inst.size, run, 0.0), 0.0)
    # A server that holds nothing gets exactly its memory back (no rounding drift).
    empty = completes & (queue_length(state) == 0)
    return state.replace(
        time=t_new,
        mem_free=jnp.where(empty, jnp.where(inst.server_mask, inst.mem, 0.0), mem_free),
        running=jnp.where(completes, -1, run),
        done=final,
    )


def time_in_system(state: EnvState, t0: jax.Array, t1: jax.Array) -> jax.Array:
    """Total time real tasks spent arrived-but-not-done during `[t0, t1)` (time)."""
    inst = state.instance
    done = done_time(state)
    overlap = jnp.minimum(done, t1) - jnp.maximum(inst.arrival, t0)
    return jnp.sum(jnp.where(inst.task_mask, jnp.maximum(overlap, 0.0), 0.0))


def missed_by(state: EnvState, t: jax.Array, since: jax.Array | None = None) -> jax.Array:
    """Real tasks whose deadline passed in `[since, t)` (no lower bound for None) without
    their result done []."""
    inst = state.instance
    done = done_time(state)
    d = inst.deadline
    after = True if since is None else d >= since
    return jnp.sum(inst.task_mask & after & (d < t) & (done > d))


def reset_to_instance(instance, queue_capacity: int) -> EnvState:
    """The state at the first epoch of `instance` (no observation; see damdjax.envs.env)."""
    return advance(initial_state(instance, queue_capacity))


def transition(state: EnvState, action: Action, tau, miss_penalty
               ) -> tuple[EnvState, jax.Array, dict]:
    """One epoch: apply `action`, advance the clock, score the interval.

    Returns `(state, team_reward [], info)`. A state already done is returned
    unchanged with reward 0. See docs/model.md for the reward and info keys.
    """
    inst = state.instance
    t0 = state.time
    # A finished episode stays as it is: its per-task writes are dropped (every scatter
    # is gated by `live`) and its per-server and scalar fields selected back below.
    live = ~state.done
    s, dispatched, bad_dispatch = apply_dispatch(
        state, jnp.asarray(action.dispatch, jnp.int32), live)
    s, started, bad_picks = apply_picks(s, jnp.asarray(action.picks, jnp.int32), live)
    s = advance(s.replace(step=s.step + 1))
    max_steps = 2 * inst.size.shape[0] + 2
    capped = ~s.done & (s.step >= max_steps)
    s = s.replace(done=s.done | capped, truncated=s.truncated | capped)
    keep = lambda old, new: jnp.where(live, new, old)
    s = s.replace(**{f: keep(getattr(state, f), getattr(s, f)) for f in (
        "time", "step", "head", "running", "mem_free", "done", "truncated", "unstarted",
        "last_done")})
    t1 = s.time
    # The interval's scores in one pass over the tasks; the missed count is the
    # difference of missed_by at t1 and t0 (integers, so exactly).
    reward = (-time_in_system(s, t0, t1) / tau
              - miss_penalty * missed_by(s, t1, since=t0))
    done_t = done_time(s)
    newly_done = live & inst.task_mask & (done_t > t0) & (done_t <= t1)
    info = {
        "dispatched_task": dispatched,
        "started_tasks": started,
        "invalid_dispatch": bad_dispatch,
        "invalid_picks": bad_picks,
        "newly_done": newly_done,
        "response_time": jnp.where(newly_done, done_t - inst.arrival, 0.0),
        "time": t1,
        "truncated": s.truncated,
    }
    return s, jnp.where(live, reward, 0.0), info
