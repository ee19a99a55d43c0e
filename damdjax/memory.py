"""How much memory a run will hold, estimated from its config before anything is allocated
or compiled, and the check against what the machine has.

One function per structure, each in bytes, from the padded sizes (`damdjax.envs.config.EnvConfig`:
`N` = n_max, `M` = m_max, `P` = p_max, `Q` = queue_capacity, `W` = succ_window, `D` =
succ_slots) and the float width (4: float32; 8 under `jax_enable_x64`):

    instance_bytes(config)            one episode's `damdjax.envs.instance.Instance`
    env_state_bytes(config)           one `EnvState` (its instance included)
    observation_bytes(config, fields) one `damdjax.envs.observation.Observation` (or a part)
    dispatch_view_bytes(config, extra)  one replay entry's dispatcher view (`DispatchView`)
    scheduler_view_bytes(config)      one replay entry's scheduler view (one agent)
    replay_bytes(entry, capacity, next_entry)   a `damdjax.replay.ReplayBuffer` of such entries
    evaluation_bytes(config, episodes, methods)   a held-out evaluation's batches
    dispatcher_params(hidden, extra)  parameters of one `damdjax.networks.DispatchQNetwork`
    scheduler_params(hidden)          parameters of one `damdjax.networks.SlotQNetwork`
    network_bytes(params, sets)       a trainer's networks: online, target, Adam's moments

The trainers' configs add them up (`RunConfig.memory_parts`: the vmapped env states
[num_envs], the replay buffer(s), the evaluation, the networks; train.damd both stage
kinds; a sweep times its members) and `check_memory` compares the sum with
`available_memory()`: the first device's `bytes_limit` where it reports one (a GPU), else
the host's physical memory. The sizes are exact for the env states, the replay buffers
and the networks with their optimizer state (tests hold them to `jax.eval_shape` of the
trainers' `init`); XLA's temporaries (a gradient, activations) are left out, so the
check refuses only what can never fit, not everything that will.
"""
from __future__ import annotations

import os

import numpy as np

from damdjax.envs.config import EnvConfig
from damdjax.envs.instance import count_dtype
from damdjax.envs.observation import OWN_FEATURES, SERVER_FEATURES, SLOT_FEATURES, TASK_FEATURES

I32 = 4      # int32 (indices, counters, stamps)
B1 = 1       # bool


def float_bytes() -> int:
    """4, or 8 under `jax_enable_x64` (the simulator's float type)."""
    import jax
    return 8 if jax.config.jax_enable_x64 else 4


def instance_bytes(config: EnvConfig, f: int = 4) -> int:
    """One `Instance`: cpu, bw, mem, k [M] F, server_mask [M]; size, work, arrival,
    deadline, rank [N] F; preds [N, P] int32; task_mask [N]; job [N] int32; succ [N, D]
    and num_succ [N] (`count_dtype(W)`)."""
    n, m, p, d = config.n_max, config.m_max, config.p_max, config.succ_slots
    offset = np.dtype(count_dtype(config.succ_window)).itemsize
    return m * (4 * f + B1) + n * (5 * f + B1 + I32) + n * p * I32 + n * (d + 1) * offset


def env_state_bytes(config: EnvConfig, f: int = 4) -> int:
    """One `EnvState`: its instance; time, last_done [] F; step, head, unstarted [] int32;
    server, n_wait, dispatch_step, succ_remote [N] int32; arrive, start, finish, ready,
    done_at [N] F; queue [M, Q] int32; running [M] int32, mem_free [M] F; done, truncated
    []."""
    n, m, q = config.n_max, config.m_max, config.queue_capacity
    return (instance_bytes(config, f) + 2 * f + 3 * I32 + n * (4 * I32 + 5 * f)
            + m * q * I32 + m * (I32 + f) + 2 * B1)


def observation_field_bytes(config: EnvConfig) -> dict[str, int]:
    """Each field of one `Observation` (float32 features): task [T]; servers [M, S]; slots
    [M, Q, L]; own [M, O]; time []; dispatch_needed []; dispatch_mask, pick_needed,
    server_mask [M]; pick_mask [M, Q]."""
    m, q = config.m_max, config.queue_capacity
    return {"dispatch_needed": B1, "dispatch_mask": m * B1, "task": 4 * len(TASK_FEATURES),
            "servers": 4 * m * len(SERVER_FEATURES), "pick_needed": m * B1,
            "pick_mask": m * q * B1, "slots": 4 * m * q * len(SLOT_FEATURES),
            "own": 4 * m * len(OWN_FEATURES), "server_mask": m * B1, "time": 4}


def observation_bytes(config: EnvConfig, f: int = 4, fields: tuple[str, ...] | None = None
                      ) -> int:
    """One `Observation`, or only its `fields` (`damdjax.envs.observation.observation_part`: what a
    trainer's runner carries); float32 features whatever the simulator's float type."""
    del f
    sizes = observation_field_bytes(config)
    return sum(sizes[k] for k in (sizes if fields is None else fields))


def dispatch_view_bytes(config: EnvConfig, extra: int = 0) -> int:
    """One dispatcher view (`damdjax.networks.DispatchView`): task [T], servers [M, S +
    extra] (`extra`: appended server features, e.g. `damdjax.policies.eft_view`'s),
    mask [M], server_mask [M]."""
    m = config.m_max
    return 4 * (len(TASK_FEATURES) + m * (len(SERVER_FEATURES) + extra)) + 2 * m * B1


def scheduler_view_bytes(config: EnvConfig) -> int:
    """One agent's scheduler view: slots [Q, L], own [O], others [O], mask [Q]."""
    q = config.queue_capacity
    return 4 * (q * len(SLOT_FEATURES) + 2 * len(OWN_FEATURES)) + q * B1


def replay_bytes(entry: int, capacity: int, next_entry: int | None = None) -> int:
    """A `ReplayBuffer` of `capacity` entries: obs of `entry` bytes and next_obs of
    `next_entry` (None: `entry`; 0 for a buffer without next observations), action,
    reward, stamp, succ, succ_stamp (4 bytes each), terminal, has_reward, has_next; 3
    int32 scalars."""
    next_entry = entry if next_entry is None else next_entry
    return capacity * (entry + next_entry + 5 * 4 + 3 * B1) + 3 * I32


def mlp_params(inputs: int, hidden) -> int:
    """Parameters of `damdjax.networks._mlp_head` on `inputs` features: a Dense layer
    (kernel and bias) per `hidden` width, then a scalar head."""
    total, width_in = 0, inputs
    for width in (*hidden, 1):
        total += (width_in + 1) * width
        width_in = width
    return total


def dispatcher_params(hidden, extra: int = 0) -> int:
    """One `DispatchQNetwork` (pooled): each server's input is its features (with `extra`
    appended ones), the task's and the pooled servers'."""
    return mlp_params(2 * (len(SERVER_FEATURES) + extra) + len(TASK_FEATURES), hidden)


def scheduler_params(hidden) -> int:
    """One `SlotQNetwork` (pooled): each slot's input is its features, the agent's own,
    the others' summary and the pooled slots'."""
    return mlp_params(2 * len(SLOT_FEATURES) + 2 * len(OWN_FEATURES), hidden)


# float32 copies of a network a trainer holds: online, target, Adam's two moments.
NETWORK_COPIES = 4


def network_bytes(params: int, sets: int = 1) -> int:
    """`sets` networks (agents) of `params` float32 parameters each as a trainer holds
    them: NETWORK_COPIES copies and Adam's int32 step count."""
    return sets * (NETWORK_COPIES * 4 * params + I32)


def evaluation_bytes(config: EnvConfig, episodes: int, methods: int, f: int = 4) -> int:
    """A held-out evaluation of `methods` policies on `episodes` instances: the instances
    [episodes] and every method's final states [episodes] (they are played as one
    vmapped batch and held together until summarized)."""
    return episodes * (instance_bytes(config, f) + methods * env_state_bytes(config, f))


def available_memory() -> tuple[int, str]:
    """`(bytes, what)`: the first local device's `bytes_limit` where it reports one (GPU,
    TPU), else the host's physical memory."""
    import jax
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # a backend without memory stats
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{jax.local_devices()[0].device_kind} memory"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host memory"


def human(n: float) -> str:
    """Bytes as `12.3 GiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} EiB"


def check_memory(parts: list[tuple[str, int]], limit: tuple[int, str] | None = None) -> None:
    """ValueError (one line) where the sum of `parts` (`(what, bytes)`, `what` naming the
    flags that drive it, e.g. "the replay buffer (--buffer-capacity 1000000)") exceeds
    `limit` (default `available_memory()`); the message gives the estimate and names the
    largest part."""
    total = sum(b for _, b in parts)
    have, where = limit if limit is not None else available_memory()
    if total > have:
        what, biggest = max(parts, key=lambda x: x[1])
        raise ValueError(
            f"{what} needs an estimated {human(biggest)} (the run {human(total)} in all), "
            f"more than the {human(have)} of {where}")
