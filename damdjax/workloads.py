"""Workload specs: the one string that names which jobs a run's instances are drawn from.

    ""                   the random DAG generator (damdjax.envs.generator.generate; the default)
    "wfcommons:PATH"     WfFormat workflow files: every *.json of a directory (sorted), or one
    "alibaba:CSV"        an Alibaba v2018 batch_task CSV
    "library:FILE.npz"   a packed job library (damdjax.envs.workload.save_library)

`resolve_workload(spec)` turns a spec into a `damdjax.envs.workload.JobLibrary` (None for ""):
WfCommons and Alibaba jobs are read with damdjax.envs.convert's readers at its default units
(5 s per time unit; 2**28 bytes or 0.15 plan_mem per data unit), bad jobs skipped as the
converter skips them (and a job with a task larger than the generator's smallest server
memory `mem_low`, which might fit no server), with one summary line on stderr; then
packed by `library_from_specs`. The result is cached per process (`functools.lru_cache`
on the spec string), so every env, trainer and evaluation of a run shares one library
and the summary is printed once. Trainer configs record the spec (`workload` in
config.json) and eval.compare takes the same flag, so evaluation draws from the
distribution the run trained on (docs/model.md, "Real workloads").
"""
from __future__ import annotations

import functools
import os
import sys

from damdjax.envs import convert
from damdjax.envs.config import EnvConfig, EnvParams, generated_mean_work, offered_load
from damdjax.envs.workload import (JobLibrary, check_library, library_from_specs, load_library,
                           matched_density, mean_task_work, required_config)

KINDS = ("wfcommons", "alibaba", "library")
WORKLOAD_HELP = ("where jobs come from: '' the random DAG generator (default), "
                 "wfcommons:DIR_OR_FILE (WfFormat .json), alibaba:CSV (v2018 batch_task) "
                 "or library:FILE.npz (a packed job library)")


class WorkloadError(ValueError):
    """A workload spec that names no usable jobs (one line naming the spec)."""


def parse_workload(spec: str) -> tuple[str, str]:
    """`(kind, path)` of a non-empty spec `KIND:PATH`; WorkloadError naming the spec."""
    kind, colon, path = spec.partition(":")
    if not colon or kind not in KINDS:
        raise WorkloadError(f"workload {spec!r} must be KIND:PATH with KIND one of "
                            f"{', '.join(KINDS)} (or '' for the random generator)")
    if not path:
        raise WorkloadError(f"workload {spec!r} names no path")
    if not os.path.exists(path):
        raise WorkloadError(f"workload {spec!r}: no such file or directory {path!r}")
    return kind, path


def _wfcommons_files(spec: str, path: str) -> list[str]:
    """The WfFormat files of `path`: the directory's *.json (sorted by name), or the file."""
    if not os.path.isdir(path):
        return [path]
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".json"))
    if not files:
        raise WorkloadError(f"workload {spec!r}: no .json file in {path!r}")
    return files


def _read_jobs(spec: str, kind: str, path: str) -> tuple[list, list, float]:
    """`(valid RawJobs, Skips, data unit)` of a wfcommons or alibaba spec."""
    d = convert.DEFAULTS
    if kind == "alibaba":
        try:
            jobs, skips = convert.read_alibaba(path)
        except ValueError as e:   # the readers' one-line errors name the path already
            raise WorkloadError(f"workload {spec!r}: {e}") from None
        except (OSError, KeyError) as e:
            raise WorkloadError(f"workload {spec!r}: cannot read the CSV: {e}") from None
        return jobs, skips, d.alibaba_data_unit
    jobs, skips = [], []
    for file in _wfcommons_files(spec, path):
        try:
            jobs.append(convert.read_wfcommons(file))
        except convert.Skip as s:
            skips.append(s)
    return jobs, skips, d.wfcommons_data_unit


def _convert(spec: str, kind: str, path: str) -> JobLibrary:
    """The library of a wfcommons or alibaba spec (default units; summary on stderr)."""
    jobs, skips, data_unit = _read_jobs(spec, kind, path)
    valid = []
    for job in jobs:
        skip = convert.too_large(job, data_unit, EnvParams.mem_low)
        if skip:
            skips.append(skip)
        else:
            valid.append(job)
    print(f"workload {spec}: {convert.skip_summary(skips, len(valid))}", file=sys.stderr)
    if not valid:
        raise WorkloadError(f"workload {spec!r}: no valid job ({convert.skip_summary(skips, 0)})")
    time_unit = convert.DEFAULTS.time_unit_s
    return library_from_specs([convert.job_spec(job, time_unit, data_unit) for job in valid])


@functools.lru_cache(maxsize=None)
def resolve_workload(spec: str) -> JobLibrary | None:
    """The job library a spec names (None for "": the random generator), made once per
    process. Raises WorkloadError (a ValueError) naming the spec: unknown kind, missing
    path, no valid job, an unreadable or invalid library file."""
    if not spec:
        return None
    kind, path = parse_workload(spec)
    if kind == "library":
        try:
            lib = load_library(path)
        except ValueError as e:
            raise WorkloadError(f"workload {spec!r}: {e}") from None
    else:
        lib = _convert(spec, kind, path)
    print(f"workload {spec}: {load_summary(lib)}", file=sys.stderr)
    return lib


def load_summary(lib: JobLibrary, params: EnvParams = EnvParams()) -> str:
    """One line on the load `lib`'s jobs offer (`damdjax.envs.config.offered_load`) against the
    random generator's at `params`, and the density that matches it."""
    work = mean_task_work(lib)
    return (f"{lib.num_jobs} jobs, {work:.3g} work units per task (the random generator's "
            f"{generated_mean_work(params):.3g}); at "
            f"--density {float(params.density):g} they offer load "
            f"{offered_load(params, work):.3g} against the generator's "
            f"{offered_load(params):.3g}, matched at --density "
            f"{matched_density(lib, params):.3g}")


def workload_config(spec: str, n_max: int, m_max: int, queue_capacity: int) -> EnvConfig:
    """The padded sizes of a run: `EnvConfig(n_max, m_max, queue_capacity)` for the random
    generator, the library's `required_config` (j_max = its longest job, p_max = its
    widest fan-in) for a workload."""
    lib = resolve_workload(spec)
    if lib is None:
        return EnvConfig(n_max=n_max, m_max=m_max, queue_capacity=queue_capacity)
    return required_config(lib, n_max=n_max, m_max=m_max, queue_capacity=queue_capacity)


def check_workload(spec: str, num_tasks: int, params: EnvParams | None = None) -> None:
    """WorkloadError naming the spec if it does not resolve or does not fit a run of
    `num_tasks` task slots: its longest job must fit in one episode, and (with `params`,
    concrete) its largest task in the smallest server memory `mem_low`."""
    lib = resolve_workload(spec)
    if lib is None:
        return
    if lib.max_length > num_tasks:
        raise WorkloadError(f"workload {spec!r}: its longest job has {lib.max_length} tasks, "
                            f"more than num_tasks={num_tasks} (raise --num-tasks)")
    config = required_config(lib, n_max=num_tasks, m_max=1, queue_capacity=1)
    try:
        check_library(lib, config, params)
    except ValueError as e:
        raise WorkloadError(f"workload {spec!r}: {e}") from None
