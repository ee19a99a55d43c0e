"""Environment state and joint action (pytrees).

Shapes: `N` task slots, `M` server slots, `Q` queue slots per server.

Every time in the state is finite: a time that has not come is `never(dtype)`
(`damdjax.envs.times.never`), a large finite value above every time an episode reaches,
and "no lower bound" is `-never(dtype)`. So, jitted or not, the state, the observation and the
step's outputs hold no inf or NaN (docs/model.md, "Times not set yet").
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from damdjax.envs.instance import Instance
from damdjax.envs.times import is_set, never


@struct.dataclass
class Action:
    """The joint action of one epoch.

    `dispatch` [] int32: server for the head task (ignored when no dispatch is
    needed). `picks` [M] int32: queue slot each server starts (ignored for
    servers that need no decision).
    """

    dispatch: jax.Array
    picks: jax.Array


@struct.dataclass
class EnvState:
    """Everything that changes during an episode, plus the episode's instance.

    Per task [N], times `never` (`damdjax.envs.times.never`) until set: `server` (-1
    until dispatched), `arrive` (arrival at the server, `never` until dispatched),
    `start` and `finish` (`never` until started: `started`), `ready` (latest
    availability at the task's server of the results of its *started* predecessors,
    `-never` if none), `n_wait` (predecessors not yet started), `dispatch_step` (the
    step that dispatched it, -1 before), `succ_remote` (dispatched successors on another
    server).
    Per server [M]: `running` (task id or -1), `mem_free`; `queue` [M, Q] task
    ids holding a slot (in transit or waiting), -1 for a free slot.
    Scalars: `time`, `step`, `head` (next task to dispatch), `done` (the episode is
    over), `truncated` (it was ended by the step cap, a time limit: the TD target
    bootstraps; every other end is a termination, see docs/model.md).
    Kept so that a step needs no pass over all tasks: `done_at` [N] (`finish
    + k[server]`, when the result reaches the AP, written when the task starts; `never`
    before: `done_time`), `unstarted` [] int32 (real tasks not started, a count) and
    `last_done` [] time (the latest `done_time` of a started task, `-never` if none; a
    running maximum, so exact).
    """

    instance: Instance
    time: jax.Array
    step: jax.Array
    head: jax.Array
    server: jax.Array
    arrive: jax.Array
    start: jax.Array
    finish: jax.Array
    ready: jax.Array
    n_wait: jax.Array
    dispatch_step: jax.Array
    succ_remote: jax.Array
    queue: jax.Array
    running: jax.Array
    mem_free: jax.Array
    done: jax.Array
    truncated: jax.Array
    done_at: jax.Array
    unstarted: jax.Array
    last_done: jax.Array


def done_time(state: EnvState) -> jax.Array:
    """Time each task's result reaches the AP, `finish + k[server]` [N] (`never(dtype)` if
    not started: compare, as `done > deadline` does, or mask with `started`)."""
    return state.done_at


def started(state: EnvState) -> jax.Array:
    """[N] bool: the tasks that have started (their `start`, `finish` and `done_at` set)."""
    return is_set(state.start)


def unstarted_tasks(state: EnvState) -> jax.Array:
    """Real tasks not started [] (int32); at an episode's end, the tasks it stranded (a
    task no server can ever run: too large for every memory)."""
    return state.unstarted


def initial_state(instance: Instance, queue_capacity: int) -> EnvState:
    """The state at time 0, before the clock is advanced to the first epoch."""
    n = instance.size.shape[0]
    m = instance.cpu.shape[0]
    dtype = instance.size.dtype
    unset = jnp.full((n,), never(dtype), dtype)
    n_wait = jnp.sum(instance.preds >= 0, axis=1).astype(jnp.int32)
    return EnvState(
        instance=instance,
        time=jnp.zeros((), dtype),
        step=jnp.zeros((), jnp.int32),
        head=jnp.zeros((), jnp.int32),
        server=jnp.full((n,), -1, jnp.int32),
        arrive=unset, start=unset, finish=unset, done_at=unset,
        ready=jnp.full((n,), -never(dtype), dtype),
        n_wait=n_wait,
        dispatch_step=jnp.full((n,), -1, jnp.int32),
        succ_remote=jnp.zeros((n,), jnp.int32),
        queue=jnp.full((m, queue_capacity), -1, jnp.int32),
        running=jnp.full((m,), -1, jnp.int32),
        mem_free=jnp.where(instance.server_mask, instance.mem, 0.0).astype(dtype),
        done=jnp.zeros((), bool),
        truncated=jnp.zeros((), bool),
        unstarted=jnp.sum(instance.task_mask).astype(jnp.int32),
        last_done=jnp.full((), -never(dtype), dtype),
    )
