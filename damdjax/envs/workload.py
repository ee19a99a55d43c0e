"""Real-DAG workloads: a packed library of real jobs and a jittable generator drawing from it.

A `JobLibrary` holds real jobs (converted WfCommons / Alibaba jobs, `damdjax.envs.convert`)
as padded arrays. `generate_from_library(key, config, params, lib)` draws an instance like
`damdjax.envs.generator.generate`, except that each job's DAG, task sizes and works are those of a
library job drawn uniformly with replacement; servers, arrivals (a Poisson process at
`params.density` tasks per time unit) and deadlines follow the random generator's rules
(docs/model.md, "Drawing from real jobs: the job library").

    lib = library_from_specs([load_instance("wf.json"), load_instance("ali.json")])
    save_library("jobs.npz", lib)
    lib = load_library("jobs.npz")                      # validated
    env = EdgeEnv(required_config(lib, n_max=100, m_max=10, queue_capacity=16),
                  JobLibraryGenerator(lib))                 # damdjax.envs.generators

Shapes: `J` jobs, `T` task slots per job (the longest job), `P` predecessor slots (the
widest fan-in, at least 1). Inside a job, tasks are in the stable topological order of
`damdjax.envs.instance_padding.job_order` and `preds` are positions in that order, each
smaller than its task's own. The library's arrays are numpy (host constants); the generator
casts the floats to JAX's default float.

Files: `.npz` (no pickle) with the arrays `length`, `size`, `work`, `preds` and `names`
(a unicode string array [J]: each job's provenance), and `sha256` (uint8 [32]: the digest
of the other five, names, dtypes, shapes and bytes; `_digest`). Loading checks the
digest (a damaged file is refused with one line naming it; a file written before
checksums loads with a one-line warning), validates everything and raises
`LibraryError` (a ValueError) with one line naming the file and the field.

What a library may hold (`_validated`, for files and for `library_from_specs` alike):
`length` and `preds` 32- or 64-bit integers, `size` and `work` float32 or float64 (a
float16 array has already lost its values' precision: refused), `names` unicode of at
most NAME_MAX_CHARS characters each; every real task's `size` and `work` finite, > 0 and
within float32's normal range (the device's float: a smaller value flushes to 0, a
larger one is inf, and the task could never run), and each job's sizes and works summed
at most the square root of float32's largest (its tasks run one after another keep
their squared times finite, as an instance file's serial horizon does:
`damdjax.envs.instance_format.check_times`). A file is opened only if it is a regular
file whose zip directory lists the library's arrays alone, decompressing to at most
LIBRARY_MAX_BYTES in all (checked before any member is read, so a small compressed file
cannot expand without bound); arrays are read with `allow_pickle=False`.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from damdjax.io import ReadError, open_regular, warn, write_bytes_atomic
from damdjax.envs.config import EnvConfig, EnvParams, offered_load
from damdjax.envs.generator import finish_instance, generate_servers, layout_jobs
from damdjax.envs.instance import Instance
from damdjax.envs.instance_format import InstanceSpec, JobSpec
from damdjax.envs.instance_padding import job_order

__all__ = [
    "LibraryError", "JobLibrary", "library_from_specs", "save_library", "load_library",
    "check_library", "required_config", "generate_from_library", "mean_task_work",
    "matched_density", "join_libraries",
]

_FIELDS = ("length", "size", "work", "preds", "names")
_CHECKSUM = "sha256"
# The most bytes a library file's arrays may take decompressed, all members together (the
# zip directory's sizes, checked before reading). A library's arrays become constants of
# every compiled program that draws from it, and 1 GiB is far beyond what the converted
# WfCommons and Alibaba libraries take (a few MB); a larger file is refused, not expanded.
LIBRARY_MAX_BYTES = 1 << 30
# The longest job name (its provenance: a file name, a trace's job id), in characters.
NAME_MAX_CHARS = 1024
_F32 = np.finfo(np.float32)


def _digest(arrays: dict) -> np.ndarray:
    """uint8 [32]: sha256 over each field's name, dtype, shape and bytes (in _FIELDS order)."""
    h = hashlib.sha256()
    for key in _FIELDS:
        arr = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return np.frombuffer(h.digest(), np.uint8)


class LibraryError(ValueError):
    """An invalid job library (file or arrays)."""


@struct.dataclass
class JobLibrary:
    """Real jobs as padded numpy arrays (host constants).

    `length` [J] int32 tasks of each job (1..T); `size` [J, T] float64 data and `work`
    [J, T] float64 work units (0 beyond the job's length); `preds` [J, T, P] int32
    positions of each task's predecessors inside its job (ascending, -1 padding, each
    smaller than the task's position); `names` [J] each job's provenance (static).
    """

    length: np.ndarray
    size: np.ndarray
    work: np.ndarray
    preds: np.ndarray
    names: tuple[str, ...] = struct.field(pytree_node=False)

    @property
    def num_jobs(self) -> int:
        """`J`."""
        return int(self.length.shape[0])

    @property
    def max_length(self) -> int:
        """`T`: task slots per job (the longest job's tasks)."""
        return int(self.size.shape[1])

    @property
    def max_preds(self) -> int:
        """`P`: predecessor slots per task (the widest fan-in, at least 1)."""
        return int(self.preds.shape[2])

    @property
    def max_fan_out(self) -> int:
        """`D`: the most successors of one task in any job (the widest fan-out, at least 1):
        the successor slots an instance drawn from the library needs."""
        jobs, slots = self.size.shape
        edges = (np.arange(jobs)[:, None, None] * slots + self.preds)[self.preds >= 0]
        return max(int(np.bincount(edges).max(initial=0)) if edges.size else 0, 1)

    @property
    def max_depth(self) -> int:
        """The longest chain of tasks in any job (1..T): the relaxation rounds that make a
        critical path exact (`damdjax.envs.generator.critical_path`)."""
        depth = np.zeros(self.size.shape, np.int64)  # [J, T] tasks on the longest chain to it
        rows = np.arange(depth.shape[0])[:, None]
        for t in range(depth.shape[1]):  # predecessors come first
            preds = self.preds[:, t]  # [J, P]
            before = np.where(preds >= 0, depth[rows, np.maximum(preds, 0)], 0)
            depth[:, t] = 1 + before.max(axis=1)
        return int(np.where(np.arange(depth.shape[1]) < self.length[:, None], depth, 0).max())


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _validated(arrays: dict, where: str) -> JobLibrary:
    """The `JobLibrary` of raw arrays, checked and trimmed to the tightest padding.

    Raises LibraryError (one line, prefixed with `where`) naming the first bad field.
    """
    for key in _FIELDS:
        if key not in arrays:
            raise LibraryError(f"{where}: missing array {key!r} (need {', '.join(_FIELDS)})")
    unknown = sorted(set(arrays) - set(_FIELDS))
    if unknown:
        raise LibraryError(f"{where}: unknown array {unknown[0]!r} (allowed: {', '.join(_FIELDS)})")
    length, size, work, preds, names = (np.asarray(arrays[key]) for key in _FIELDS)
    _check_dtypes(where, length=length, preds=preds, size=size, work=work, names=names)
    if length.ndim != 1 or length.shape[0] < 1:
        raise LibraryError(f"{where}: length must have shape [J] with J >= 1, got {length.shape}")
    jobs = length.shape[0]
    if size.ndim != 2 or size.shape[0] != jobs or size.shape[1] < 1:
        raise LibraryError(f"{where}: size must have shape [J, T] = [{jobs}, T >= 1] "
                           f"(J from length), got {size.shape}")
    if work.shape != size.shape:
        raise LibraryError(f"{where}: work has shape {work.shape}, size has {size.shape}")
    slots = size.shape[1]
    if preds.ndim != 3 or preds.shape[:2] != size.shape or preds.shape[2] < 1:
        raise LibraryError(f"{where}: preds must have shape [J, T, P] = [{jobs}, {slots}, "
                           f"P >= 1], got {preds.shape}")
    if names.shape != (jobs,):
        raise LibraryError(f"{where}: names must have shape [J] = [{jobs}], got {names.shape}")
    chars = np.char.str_len(names)
    bad = np.flatnonzero(chars > NAME_MAX_CHARS)
    if bad.size:
        j = int(bad[0])
        raise LibraryError(f"{where}: names[{j}] is {int(chars[j])} characters long, more "
                           f"than {NAME_MAX_CHARS}")
    bad = np.flatnonzero((length < 1) | (length > slots))
    if bad.size:
        j = int(bad[0])
        raise LibraryError(f"{where}: length[{j}] = {int(length[j])} is not in 1..T={slots}")
    position = np.arange(slots)
    real = position[None, :] < length[:, None]  # [J, T]
    for key, arr in (("size", size), ("work", work)):
        arr = arr.astype(np.float64)
        bad = np.argwhere(real & ~(np.isfinite(arr) & (arr > 0)))
        if bad.size:
            j, t = (int(x) for x in bad[0])
            raise LibraryError(f"{where}: {key}[{j}, {t}] = {float(arr[j, t])!r} must be "
                               f"finite and > 0 (job {str(names[j])!r})")
        bad = np.argwhere(~real & (arr != 0))
        if bad.size:
            j, t = (int(x) for x in bad[0])
            raise LibraryError(f"{where}: {key}[{j}, {t}] = {float(arr[j, t])!r} lies beyond "
                               f"length[{j}] = {int(length[j])} (padding must be 0)")
        _check_range(where, key, arr, real, names)
    ok = (preds == -1) | ((preds >= 0) & (preds < position[None, :, None]))
    bad = np.argwhere(real[:, :, None] & ~ok)
    if bad.size:
        j, t, s = (int(x) for x in bad[0])
        raise LibraryError(f"{where}: preds[{j}, {t}, {s}] = {int(preds[j, t, s])} is not an "
                           f"earlier task of the job (must be -1 or in 0..{t - 1})")
    bad = np.argwhere(~real[:, :, None] & (preds != -1))
    if bad.size:
        j, t, s = (int(x) for x in bad[0])
        raise LibraryError(f"{where}: preds[{j}, {t}, {s}] = {int(preds[j, t, s])} lies beyond "
                           f"length[{j}] = {int(length[j])} (padding must be -1)")
    ordered = np.sort(np.where(preds < 0, slots, preds), axis=2)  # padding last
    twice = (ordered[:, :, 1:] == ordered[:, :, :-1]) & (ordered[:, :, 1:] < slots)
    bad = np.argwhere(twice)
    if bad.size:
        j, t, s = (int(x) for x in bad[0])
        raise LibraryError(f"{where}: preds[{j}, {t}] lists task {int(ordered[j, t, s])} twice")
    # Canonical form: ascending predecessors, padding trimmed to the longest job and the
    # widest fan-in (the padding was checked empty, so nothing is lost).
    longest = int(length.max())
    widest = max(int((preds >= 0).sum(axis=2).max()), 1)
    ordered = np.where(ordered == slots, -1, ordered)[:, :longest, :widest]
    return JobLibrary(
        length=length.astype(np.int32),
        size=size[:, :longest].astype(np.float64),
        work=work[:, :longest].astype(np.float64),
        preds=ordered.astype(np.int32),
        names=tuple(str(name) for name in names),
    )


def _check_dtypes(where: str, **arrays: np.ndarray) -> None:
    """LibraryError naming the first array whose dtype is not what a library holds:
    `length`, `preds` 32- or 64-bit integers; `size`, `work` float32 or float64;
    `names` unicode strings."""
    for key, arr in arrays.items():
        kinds, want, sized = {"length": ("iu", "integers", "i"), "preds": ("iu", "integers", "i"),
                              "size": ("iuf", "real numbers", "f"),
                              "work": ("iuf", "real numbers", "f"),
                              "names": ("U", "unicode strings", "U")}[key]
        if arr.dtype.kind not in kinds:
            raise LibraryError(f"{where}: {key} must hold {want}, got dtype {arr.dtype}")
        if sized != "U" and not (arr.dtype.kind == sized and arr.dtype.itemsize in (4, 8)):
            names = "int32 or int64" if sized == "i" else "float32 or float64"
            raise LibraryError(f"{where}: {key} must be {names}, got dtype {arr.dtype}")


def _check_range(where: str, key: str, arr: np.ndarray, real: np.ndarray, names) -> None:
    """LibraryError naming the first real task whose `key` value (finite, > 0: checked
    before) lies outside float32's normal range, or the first job whose values sum above
    the square root of float32's largest."""
    bad = np.argwhere(real & ((arr < _F32.tiny) | (arr > _F32.max)))
    if bad.size:
        j, t = (int(x) for x in bad[0])
        raise LibraryError(f"{where}: {key}[{j}, {t}] = {float(arr[j, t])!r} is outside "
                           f"float32's normal range [{float(_F32.tiny):.6g}, "
                           f"{float(_F32.max):.6g}] (job {str(names[j])!r})")
    limit = float(np.sqrt(_F32.max))
    total = np.where(real, arr, 0.0).sum(axis=1)
    bad = np.flatnonzero(total > limit)
    if bad.size:
        j = int(bad[0])
        raise LibraryError(f"{where}: job {j} ({str(names[j])!r}) has {key}s summing to "
                           f"{float(total[j]):.6g}, above {limit:.6g}, where its tasks' "
                           f"squared times overflow float32")


def _arrays(lib: JobLibrary) -> dict[str, np.ndarray]:
    return {"length": np.asarray(lib.length), "size": np.asarray(lib.size),
            "work": np.asarray(lib.work), "preds": np.asarray(lib.preds),
            "names": np.array(lib.names, dtype=str)}


# --------------------------------------------------------------------------
# Building, saving, loading
# --------------------------------------------------------------------------


def library_from_specs(specs_or_jobs: Iterable[InstanceSpec | JobSpec]) -> JobLibrary:
    """A library of every job of the given instance specs (and/or single JobSpecs), in order.

    Tasks are put in `job_order` (stable topological) order and `preds` become positions
    in that order; sizes (data) and works (work units) are kept as they are, arrivals,
    deadlines and servers dropped. Duplicates are kept (a job listed twice is drawn twice
    as often). `names[j]`: the job's `name`, else `"<instance name>#<job index>"`.

    Raises:
        LibraryError: for no job at all.
    """
    jobs: list[tuple[str, JobSpec]] = []
    for item in specs_or_jobs:
        if isinstance(item, JobSpec):
            jobs.append((item.name or f"job#{len(jobs)}", item))
        elif isinstance(item, InstanceSpec):
            jobs += [(job.name or f"{item.name or 'instance'}#{j}", job)
                     for j, job in enumerate(item.jobs)]
        else:
            raise LibraryError(f"library_from_specs: expected InstanceSpec or JobSpec, got "
                               f"{type(item).__name__}")
    if not jobs:
        raise LibraryError("library_from_specs: no job given")
    slots = max(len(job.tasks) for _, job in jobs)
    width = max(max((len(t.preds) for _, job in jobs for t in job.tasks), default=0), 1)
    count = len(jobs)
    length = np.array([len(job.tasks) for _, job in jobs], np.int32)
    size = np.zeros((count, slots))
    work = np.zeros((count, slots))
    preds = np.full((count, slots, width), -1, np.int32)
    for j, (_, job) in enumerate(jobs):
        order = job_order(job)
        rank = {pos: r for r, pos in enumerate(order)}
        for r, pos in enumerate(order):
            task = job.tasks[pos]
            size[j, r], work[j, r] = task.size, task.work
            ps = sorted(rank[p] for p in task.preds)
            preds[j, r, :len(ps)] = ps
    names = np.array([name for name, _ in jobs], dtype=str)
    return _validated({"length": length, "size": size, "work": work, "preds": preds,
                       "names": names}, "library")


def join_libraries(libs: Iterable[JobLibrary]) -> JobLibrary:
    """One library of every job of `libs`, in order (each job's arrays as they are, padded
    to the widest part); a job drawn from it is drawn uniformly over all of them.

    Raises:
        LibraryError: for no library at all.
    """
    libs = list(libs)
    if not libs:
        raise LibraryError("join_libraries: no library given")
    slots = max(lib.max_length for lib in libs)
    width = max(lib.max_preds for lib in libs)

    def padded(arr: np.ndarray, fill) -> np.ndarray:
        pad = [(0, 0), (0, slots - arr.shape[1]), (0, width - arr.shape[-1])][:arr.ndim]
        return np.pad(arr, pad, constant_values=fill)

    return _validated({
        "length": np.concatenate([lib.length for lib in libs]),
        "size": np.concatenate([padded(lib.size, 0.0) for lib in libs]),
        "work": np.concatenate([padded(lib.work, 0.0) for lib in libs]),
        "preds": np.concatenate([padded(lib.preds, -1) for lib in libs]),
        "names": np.array([name for lib in libs for name in lib.names], dtype=str)}, "library")


def save_library(path: str | os.PathLike, lib: JobLibrary) -> None:
    """Validate `lib` and write it as an uncompressed `.npz` atomically (no pickle)."""
    arrays = _arrays(lib)
    _validated(arrays, os.fspath(path))  # never write a file that would not load
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{_CHECKSUM: _digest(arrays)})
    write_bytes_atomic(buffer.getvalue(), path)


def load_library(path: str | os.PathLike) -> JobLibrary:
    """Read and validate a library `.npz` (a regular file; its zip directory checked by
    `_check_archive` first; `np.load(allow_pickle=False)`).

    Raises:
        LibraryError: one line naming the file and the bad field or value.
    """
    where = os.fspath(path)
    try:
        fd = open_regular(where, "library file")
    except ReadError as err:
        raise LibraryError(str(err)) from None
    with os.fdopen(fd, "rb") as f:
        _check_archive(f, where)
        f.seek(0)
        arrays = _read_arrays(f, where)
    digest = arrays.pop(_CHECKSUM, None)
    if digest is None:
        warn(f"{where}: a library without a checksum (an older damdjax): loaded unchecked")
    elif (not set(_FIELDS) <= set(arrays) or digest.dtype != np.uint8
          or not np.array_equal(digest, _digest(arrays))):
        raise LibraryError(f"{where}: damaged (checksum mismatch); not loaded")
    return _validated(arrays, where)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check_archive(f, where: str) -> None:
    """LibraryError unless the zip file `f` (where it is one: anything else is left to
    `np.load` to name) lists only the library's arrays (`_FIELDS` and the checksum) and
    they decompress to at most LIBRARY_MAX_BYTES in all (the sizes its directory
    declares, which bound what zipfile ever yields)."""
    if not zipfile.is_zipfile(f):
        return
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise LibraryError(f"{where}: not a readable .npz file: {_one_line(e)}") from None
    allowed = (*_FIELDS, _CHECKSUM)
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if key not in allowed:
            raise LibraryError(f"{where}: unknown array {key[:100]!r} (allowed: "
                               f"{', '.join(_FIELDS)})")
    total = sum(info.file_size for info in infos)
    if total > LIBRARY_MAX_BYTES:
        raise LibraryError(f"{where}: its arrays take {total} bytes decompressed, more than "
                           f"the limit of {LIBRARY_MAX_BYTES} (LIBRARY_MAX_BYTES)")


def _read_arrays(f, where: str) -> dict[str, np.ndarray]:
    """Every array of the open `.npz` file `f`, without pickle; LibraryError otherwise."""
    try:
        data = np.load(f, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError) as e:
        # Not an npz: numpy falls back to a pickle, which allow_pickle=False refuses.
        reason = "not an .npz archive" if isinstance(e, ValueError) else _one_line(e)
        raise LibraryError(f"{where}: not a readable .npz file: {reason}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise LibraryError(f"{where}: not a readable .npz file: a single .npy array")
    arrays = {}
    with data:
        for key in data.files:
            try:
                arrays[key] = data[key]
            except ValueError as e:
                if "allow_pickle" not in str(e):
                    raise LibraryError(f"{where}: array {key!r} is unreadable (damaged?): "
                                       f"{type(e).__name__}: {_one_line(e)}") from None
                # an object array: it would need pickle
                raise LibraryError(f"{where}: array {key!r} cannot be read without pickle "
                                   f"(object arrays are refused)") from None
            except Exception as e:  # zipfile and numpy raise many types on damaged data
                raise LibraryError(f"{where}: array {key!r} is unreadable (damaged?): "
                                   f"{type(e).__name__}: {_one_line(e)}") from None
    return arrays


def mean_task_work(lib: JobLibrary) -> float:
    """Expected work units per drawn task (jobs drawn uniformly): `E[job work] / E[length]`,
    for `damdjax.envs.config.offered_load`."""
    return float(lib.work.sum(axis=1).mean() / lib.length.mean())


def matched_density(lib: JobLibrary, params: EnvParams) -> float:
    """The arrival density (tasks per time unit) at which `lib`'s jobs offer the load that
    the random generator offers at `params` (`damdjax.envs.config.offered_load`): `params.density *
    generator mean work / library mean work`."""
    return offered_load(params) / offered_load(params.replace(density=1.0), mean_task_work(lib))


# --------------------------------------------------------------------------
# Padding and drawing
# --------------------------------------------------------------------------


def required_config(lib: JobLibrary, n_max: int, m_max: int, queue_capacity: int
                    ) -> EnvConfig:
    """The EnvConfig that fits `lib`: `j_max = T` (the longest job, so the successor window
    `T - 1` and the critical path's `T` relaxation rounds cover every job), `p_max = P`
    (the widest fan-in) and `fan_out = D` (the widest fan-out: each task's successor list
    is `D` wide, not the window's `T - 1`)."""
    return EnvConfig(n_max=n_max, m_max=m_max, p_max=lib.max_preds,
                     queue_capacity=queue_capacity, j_max=lib.max_length,
                     fan_out=lib.max_fan_out)


def check_library(lib: JobLibrary, config: EnvConfig, params: EnvParams | None = None) -> None:
    """Raise LibraryError if `config` is too small for `lib` (`j_max < T`, `p_max < P` or
    successor slots `config.succ_slots < D`), or (with concrete `params`) if a library
    task is larger than `mem_low`, so that it might fit no server. Host side, before
    compiling."""
    if config.j_max < lib.max_length:
        raise LibraryError(f"EnvConfig.j_max={config.j_max} is below the library's longest "
                           f"job ({lib.max_length} tasks); see required_config")
    if config.p_max < lib.max_preds:
        raise LibraryError(f"EnvConfig.p_max={config.p_max} is below the library's widest "
                           f"fan-in ({lib.max_preds}); see required_config")
    if config.succ_slots < lib.max_fan_out:
        raise LibraryError(f"EnvConfig.fan_out={config.succ_slots} is below the library's "
                           f"widest fan-out ({lib.max_fan_out} successors of one task); see "
                           f"required_config")
    if params is not None:
        mem_low = float(jnp.asarray(params.mem_low))
        largest = float(np.max(lib.size))
        if largest > mem_low:
            raise LibraryError(f"a library task of size {largest:g} exceeds mem_low={mem_low:g}: "
                               f"it could fit no server")


def generate_from_library(key: jax.Array, config: EnvConfig, params: EnvParams,
                          lib: JobLibrary) -> Instance:
    """Draw one instance whose jobs are library jobs (jittable, vmappable over keys and params).

    Servers are exactly `damdjax.envs.generator.generate`'s for the same key. The N task slots are
    filled in order by jobs drawn uniformly with replacement from `lib` (DAG, sizes, works
    as they are), the last one cut at `params.num_tasks`. Jobs arrive as a Poisson process:
    the first at 0, then gaps of mean `mean(lib.length) / params.density` time units, so
    tasks arrive at `density` per time unit on average. Deadlines, the successor list and
    the upward rank follow `generate` (the critical path relaxed `lib.max_depth` rounds, which
is exact). `config` must fit `lib` (`required_config`).
    """
    check_library(lib, config)
    dtype = jnp.zeros(()).dtype
    k_srv, k_job, _, _ = jax.random.split(key, 4)  # as generate: the same servers
    servers = generate_servers(k_srv, config, params, dtype)
    k_pick, k_gap = jax.random.split(k_job)
    n = config.n_max
    length = jnp.asarray(lib.length, jnp.int32)
    pick = jax.random.randint(k_pick, (n,), 0, length.shape[0])  # [N] library job per job slot
    mean_length = jnp.mean(length.astype(dtype))
    job, position, arrival, task_mask = layout_jobs(k_gap, length[pick], mean_length, config,
                                                    params, dtype)
    source = pick[jnp.clip(job, 0)]  # [N] library job of each task
    local = jnp.asarray(lib.preds, jnp.int32)[source, position]  # [N, P_lib]
    first = (jnp.arange(n) - position)[:, None]  # global index of the job's first task
    preds = jnp.where((local >= 0) & task_mask[:, None], first + local, -1).astype(jnp.int32)
    preds = jnp.pad(preds, ((0, 0), (0, config.p_max - preds.shape[1])), constant_values=-1)
    size = jnp.where(task_mask, jnp.asarray(lib.size, dtype)[source, position], 0.0)
    work = jnp.where(task_mask, jnp.asarray(lib.work, dtype)[source, position], 0.0)
    return finish_instance(servers, arrival, task_mask, job, preds, size, work, config, params,
                           depth=lib.max_depth)
