"""Workload specs: the one string that names which jobs a run's instances are drawn from.

    ""                   the random DAG generator (damdjax.envs.generator.generate; the default)
    "wfcommons:PATH"     WfFormat workflow files: every *.json of a directory (sorted), or one
    "alibaba:CSV"        an Alibaba v2018 batch_task CSV
    "library:FILE.npz"   a packed job library (damdjax.envs.workload.save_library)
    "wfchef:RECIPE[:TASKS[:SEED]]"  workflows a WfChef recipe generates (damdjax.envs.wfchef;
                         the 'workflows' extra), at most TASKS tasks each (default: the
                         recipe's smallest), convert.WFCHEF_WORKFLOWS of them, drawn with
                         SEED (default 0; the command lines fill in the run's --seed:
                         `seeded_workload`), so the spec names its library completely
    "mix:SPEC+SPEC[+...]"  the jobs of two or more of the specs above joined in one library
                         (`damdjax.envs.workload.join_libraries`), e.g.
                         mix:wfchef:cycles+wfchef:genome:52; every part is resolved as on its
                         own (a wfchef part takes the run's seed where it gives none), and a
                         part's error names the part. A drawn job is uniform over all the
                         joined jobs, so each part's share is its job count over the total
                         (printed on stderr); a part listed twice is drawn twice as often. A
                         part cannot be a mix, nor name a path holding '+'

`resolve_workload(spec)` turns a spec into a `damdjax.envs.workload.JobLibrary` (None for ""):
WfCommons and Alibaba jobs are read with damdjax.envs.convert's readers at its default units
(5 s per time unit; 2**28 bytes or 0.15 plan_mem per data unit), bad jobs skipped as the
converter skips them (and a job with a task larger than the generator's smallest server
memory `mem_low`, which might fit no server), with one summary line on stderr; then
packed by `library_from_specs`. The result is cached per process (`functools.lru_cache`
on the spec string), so every env, trainer and evaluation of a run shares one library
and the summary is printed once (a wfchef spec's seed is part of the spec: the same
spec gives the same library byte for byte). Trainer configs record the spec (`workload` in
config.json) and eval.compare takes the same flag, so evaluation draws from the
distribution the run trained on (docs/model.md, "Real workloads").
"""
from __future__ import annotations

import functools
import os
import sys

from damdjax.envs import convert
from damdjax.envs.config import (SEED_MAX, SIZE_LIMITS, EnvConfig, EnvParams, generated_mean_work,
                                  offered_load)
from damdjax.envs.workload import (JobLibrary, check_library, join_libraries, library_from_specs,
                                   load_library, matched_density, mean_task_work,
                                   required_config)

MIX = "mix"
MIX_JOIN = "+"
KINDS = ("wfcommons", "alibaba", "library", "wfchef", MIX)
WORKLOAD_HELP = ("where jobs come from: '' the random DAG generator (default), "
                 "wfcommons:DIR_OR_FILE (WfFormat .json), alibaba:CSV (v2018 batch_task), "
                 "library:FILE.npz (a packed job library), wfchef:RECIPE[:TASKS] "
                 "(WfChef's generated workflows; the 'workflows' extra) or mix:SPEC+SPEC "
                 "(those specs' jobs joined, drawn uniformly over all)")


class WorkloadError(ValueError):
    """A workload spec that names no usable jobs (one line naming the spec)."""


def parse_workload(spec: str) -> tuple[str, str]:
    """`(kind, path)` of a non-empty spec `KIND:PATH` (`wfchef`: `RECIPE[:TASKS]`, checked
    by `wfchef_request`); WorkloadError naming the spec."""
    kind, colon, path = spec.partition(":")
    if not colon or kind not in KINDS:
        raise WorkloadError(f"workload {spec!r} must be KIND:PATH with KIND one of "
                            f"{', '.join(KINDS)} (or '' for the random generator)")
    if not path:
        raise WorkloadError(f"workload {spec!r} names no path")
    if kind == MIX:
        for part in mix_parts(spec):
            _in_part(spec, part, parse_workload)
    elif kind == "wfchef":
        wfchef_request(spec, path)
    elif not os.path.exists(path):
        raise WorkloadError(f"workload {spec!r}: no such file or directory {path!r}")
    return kind, path


def mix_parts(spec: str) -> list[str]:
    """The part specs of `mix:SPEC+SPEC[+...]`, in order (not resolved); WorkloadError
    naming the spec for fewer than two parts, an empty part or a mix inside a mix."""
    parts = spec.partition(":")[2].split(MIX_JOIN)
    if len(parts) < 2:
        raise WorkloadError(f"workload {spec!r}: a mix joins two or more specs with "
                            f"{MIX_JOIN!r}, got one")
    for i, part in enumerate(parts, 1):
        if not part:
            raise WorkloadError(f"workload {spec!r}: part {i} is empty")
        if part.partition(":")[0] == MIX:
            raise WorkloadError(f"workload {spec!r}: part {part!r} is a mix (a mix cannot "
                                f"hold a mix)")
    return parts


def _in_part(spec: str, part: str, fn, *args):
    """`fn(part, *args)`, its WorkloadError renamed to name the mix `spec` and the part."""
    try:
        return fn(part, *args)
    except WorkloadError as e:
        text, head = str(e), f"workload {part!r}"
        rest = text[len(head):] if text.startswith(head) else f": {text}"
        raise WorkloadError(f"workload {spec!r}, part {part!r}{rest}") from None


def workload_paths(spec: str) -> list[str]:
    """The files or folders a spec reads by path (none for '' and wfchef; a mix: its
    parts'), for the checks that an output path overwrites no input."""
    kind, _, path = spec.partition(":")
    if kind == MIX:
        return [p for part in path.split(MIX_JOIN) for p in workload_paths(part)]
    return [path] if path and kind != "wfchef" else []


def _wfcommons_files(spec: str, path: str) -> list[str]:
    """The WfFormat files of `path`: the directory's *.json (sorted by name), or the file."""
    if not os.path.isdir(path):
        return [path]
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".json"))
    if not files:
        raise WorkloadError(f"workload {spec!r}: no .json file in {path!r}")
    return files


def _spec_int(spec: str, name: str, text: str, high: int) -> int:
    """`text` as an integer in [0, high]; WorkloadError naming the spec and the part."""
    try:
        value = int(text)
    except ValueError:
        raise WorkloadError(f"workload {spec!r}: {name} must be an integer, got "
                            f"{text!r}") from None
    if not 0 <= value <= high:
        raise WorkloadError(f"workload {spec!r}: {name} must be in [0, {high}], got {value}")
    return value


def wfchef_request(spec: str, rest: str) -> tuple[str, int, int]:
    """`(recipe, tasks, seed)` of a spec `wfchef:RECIPE[:TASKS[:SEED]]` (`rest` after
    `wfchef:`): a recipe wfcommons ships, TASKS (default the recipe's smallest workflow)
    at least that smallest, SEED (default 0) in [0, 2**32 - 1]; WorkloadError naming the
    spec (also without the 'workflows' extra)."""
    from damdjax.envs import wfchef
    recipe, _, rest = rest.partition(":")
    tasks_text, _, seed_text = rest.partition(":")
    seed = _spec_int(spec, "SEED", seed_text, SEED_MAX) if seed_text else 0
    try:
        if not tasks_text:
            return recipe, wfchef.smallest_tasks(recipe), seed
        tasks = _spec_int(spec, "TASKS", tasks_text, SIZE_LIMITS["n_max"])
        wfchef.check_size(recipe, tasks, SIZE_LIMITS["n_max"])
    except wfchef.WfChefError as e:
        raise WorkloadError(f"workload {spec!r}: {e}") from None
    return recipe, tasks, seed


def seeded_workload(spec: str, seed: int) -> str:
    """`spec` with a wfchef spec's TASKS and SEED written out (`wfchef:RECIPE:TASKS:SEED`,
    `seed` where the spec gives none), so that the recorded spec names the library the run
    drew from (each wfchef part of a mix likewise); any other spec unchanged. The command
    lines call it with the run's seed."""
    if spec.startswith(f"{MIX}:"):
        return f"{MIX}:" + MIX_JOIN.join(_in_part(spec, part, seeded_workload, seed)
                                         for part in mix_parts(spec))
    if not spec.startswith("wfchef:"):
        return spec
    recipe, tasks, given = wfchef_request(spec, spec.partition(":")[2])
    has_seed = spec.count(":") >= 3
    return f"wfchef:{recipe}:{tasks}:{given if has_seed else seed}"


def _read_jobs(spec: str, kind: str, path: str) -> tuple[list, list, float]:
    """`(valid RawJobs, Skips, data unit)` of a wfcommons, alibaba or wfchef spec."""
    d = convert.DEFAULTS
    if kind == "wfchef":
        from damdjax.envs import wfchef
        recipe, tasks, seed = wfchef_request(spec, path)
        try:
            jobs, skips = convert.read_wfchef(recipe, tasks, convert.WFCHEF_WORKFLOWS, seed)
        except wfchef.WfChefError as e:
            raise WorkloadError(f"workload {spec!r}: {e}") from None
        return jobs, skips, d.wfcommons_data_unit
    if kind == "alibaba":
        try:
            jobs, skips = convert.read_alibaba(path)
        except ValueError as e:   # the readers' one-line errors name the path already
            raise WorkloadError(f"workload {spec!r}: {e}") from None
        except (OSError, KeyError) as e:
            raise WorkloadError(f"workload {spec!r}: cannot read the CSV: {e}") from None
        return jobs, skips, d.alibaba_data_unit
    jobs, skips = convert.read_files(_wfcommons_files(spec, path))
    return jobs, skips, d.wfcommons_data_unit


def _convert(spec: str, kind: str, path: str) -> JobLibrary:
    """The library of a wfcommons, alibaba or wfchef spec (default units; summary and
    the floors' counts on stderr)."""
    jobs, skips, data_unit = _read_jobs(spec, kind, path)
    valid = []
    for job in jobs:
        skip = convert.too_large(job, data_unit, EnvParams.mem_low)
        if skip:
            skips.append(skip)
        else:
            valid.append(job)
    print(f"workload {spec}: {convert.skip_summary(skips, len(valid))}", file=sys.stderr)
    for note in convert.floor_notes(valid, convert.DEFAULTS.min_runtime_s):
        print(f"workload {spec}: {note}", file=sys.stderr)
    if not valid:
        raise WorkloadError(f"workload {spec!r}: no valid job ({convert.skip_summary(skips, 0)})")
    time_unit = convert.DEFAULTS.time_unit_s
    return library_from_specs([convert.job_spec(job, time_unit, data_unit) for job in valid])


@functools.lru_cache(maxsize=None)
def resolve_workload(spec: str) -> JobLibrary | None:
    """The job library a spec names (None for "": the random generator), made once per
    process. Raises WorkloadError (a ValueError) naming the spec: unknown kind, missing
    path, no valid job, an unreadable or invalid library file, an unknown recipe or a
    size it cannot make (in a mix, naming the part)."""
    if not spec:
        return None
    kind, path = parse_workload(spec)
    if kind == MIX:
        parts = mix_parts(spec)
        libs = [_in_part(spec, part, resolve_workload) for part in parts]
        lib = join_libraries(libs)
        shares = ", ".join(f"{part} {p.num_jobs}" for part, p in zip(parts, libs))
        print(f"workload {spec}: jobs drawn uniformly over {lib.num_jobs}: {shares}",
              file=sys.stderr)
    elif kind == "library":
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
    `num_tasks` task slots: a wfchef spec's TASKS (each part's, for a mix) must be at most
    `num_tasks`, checked before anything is generated (more would cut every workflow it
    makes), and (with `params`, concrete) the library's largest task must fit the
    smallest server memory `mem_low`.

    A library job longer than `num_tasks` is not refused: an episode is `num_tasks` task
    slots, and the job drawn last is cut at its end (docs/model.md), so such a job is
    always cut when drawn. The registered names use the same rule (`damdjax.registry`).
    How many of the library's jobs that is goes to stderr once (`note_cut_jobs`)."""
    _check_request(spec, num_tasks)
    lib = resolve_workload(spec)
    if lib is None:
        return
    config = required_config(lib, n_max=num_tasks, m_max=1, queue_capacity=1)
    try:
        check_library(lib, config, params)
    except ValueError as e:
        raise WorkloadError(f"workload {spec!r}: {e}") from None
    note_cut_jobs(spec, num_tasks)


@functools.lru_cache(maxsize=None)
def note_cut_jobs(spec: str, num_tasks: int) -> int:
    """The number of `spec`'s library jobs longer than `num_tasks` tasks (0 for the random
    generator); where there are any, one line on stderr (once per process per pair) says
    that each of them is cut at `num_tasks` when drawn."""
    lib = resolve_workload(spec)
    if lib is None:
        return 0
    longer = int((lib.length > num_tasks).sum())
    if longer:
        print(f"workload {spec}: note: {longer} of its {lib.num_jobs} jobs have more than "
              f"num_tasks={num_tasks} tasks (the longest {lib.max_length}); an episode cuts "
              f"its last job at num_tasks, so each of these is cut when drawn",
              file=sys.stderr)
    return longer


def _check_request(spec: str, num_tasks: int) -> None:
    """WorkloadError naming the spec (and a mix's part) where a wfchef spec's TASKS exceeds
    `num_tasks`, before anything is generated."""
    if spec.startswith(f"{MIX}:"):
        for part in mix_parts(spec):
            _in_part(spec, part, _check_request, num_tasks)
    elif spec.startswith("wfchef:"):
        from damdjax.envs import wfchef
        recipe, tasks, _ = wfchef_request(spec, spec.partition(":")[2])
        try:
            wfchef.check_size(recipe, tasks, num_tasks)
        except wfchef.WfChefError as e:
            raise WorkloadError(f"workload {spec!r}: {e} (raise --num-tasks)") from None
