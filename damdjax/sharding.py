"""A sweep's member axis over every device: one `Mesh`, one `NamedSharding`.

    mesh = member_mesh()                          # all devices (of all processes), 1-D
    shard = member_sharding(mesh)                 # leading axis split over devices
    k = padded_members(9, mesh)                   # 9 -> 12 on 4 devices
    tree = put_members(host_tree, shard)          # numpy leaves [k, ...] -> global arrays
    host = to_host(tree)                          # global arrays -> numpy (every process)

Every leaf of a member pytree has the member axis first, so one sharding
(`PartitionSpec("member")`) fits them all; `jax.jit(jax.vmap(f),
in_shardings=..., out_shardings=...)` then runs each device's members there,
with no per-device code: the same program on one CPU, one GPU or many
hosts (`jax.distributed.initialize()` first).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MEMBER_AXIS = "member"


def member_mesh(devices=None) -> Mesh:
    """A 1-D mesh named MEMBER_AXIS over `devices` (default: every device of every
    process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (MEMBER_AXIS,))


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh, the rest of each leaf whole on its device."""
    return NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))


def padded_members(count: int, mesh: Mesh) -> int:
    """The least multiple of the mesh's device count that is >= `count`."""
    d = mesh.devices.size
    return -(-count // d) * d


def pad_members(tree, count: int):
    """Numpy leaves [K, ...] -> [count, ...], repeating the last member (count >= K)."""
    def pad(x):
        x = np.asarray(x)
        extra = count - x.shape[0]
        return x if extra == 0 else np.concatenate([x, np.repeat(x[-1:], extra, axis=0)])
    return jax.tree.map(pad, tree)


def put_members(tree, sharding: NamedSharding):
    """Host leaves (the same full arrays on every process) -> global arrays sharded by
    `sharding` (each process places only its own devices' members)."""
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    return jax.tree.map(put, tree)


def to_host(tree):
    """Global arrays -> numpy on every process (an all-gather across processes)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)
