"""A sweep's member axis over every device: one `Mesh`, one `NamedSharding`.

    mesh = member_mesh()                          # all devices (of all processes), 1-D
    shard = member_sharding(mesh)                 # leading axis split over devices
    k = padded_members(9, mesh)                   # 9 -> 12 on 4 devices
    tree = put_members(host_tree, shard)          # numpy leaves [k, ...] -> global arrays
    host = to_host(tree)                          # global arrays -> numpy (every process)
    tree = from_process_0(host_tree)              # process 0's numpy leaves, everywhere

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


def _same(xs):
    return xs


def to_host(tree):
    """Global arrays -> numpy on every process: the leaves spread over several processes
    gathered in one program (one all-gather, replicated on every device), a process's own
    arrays and numpy leaves as they are."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    leaves, treedef = jax.tree.flatten(tree)
    spread = [i for i, x in enumerate(leaves) if not getattr(x, "is_fully_addressable", True)]
    if spread:
        parts = [leaves[i] for i in spread]
        whole = jax.jit(_same, out_shardings=[NamedSharding(x.sharding.mesh, PartitionSpec())
                                              for x in parts])(parts)
        for i, x in zip(spread, whole):
            leaves[i] = np.asarray(x.addressable_data(0))
    return jax.tree.unflatten(treedef, jax.device_get(leaves))


def from_process_0(tree):
    """Numpy leaves as process 0 holds them, on every process, bit for bit (the others
    pass leaves of the same shapes and dtypes, any values): a broadcast over the devices,
    each leaf's bits as unsigned integers (a float sum would turn -0.0 into 0.0)."""
    if jax.process_count() == 1:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [np.asarray(x) for x in leaves]
    bits = [np.ascontiguousarray(x).view(np.dtype(f"u{x.dtype.itemsize}")) for x in leaves]
    sent = multihost_utils.broadcast_one_to_all(bits)
    return jax.tree.unflatten(treedef, [np.asarray(b).view(x.dtype).reshape(x.shape)
                                        for b, x in zip(sent, leaves)])
