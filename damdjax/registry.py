"""Named environment settings, in the manner of `gymnax.make` and `jumanji.make`.

    from damdjax.registry import make, names

    env, params = make("Edge-default-v0")                 # the paper's default setting
    env, params = make("Edge-tasks50-v0", density=3.0)    # a figure point, one knob changed
    obs, state = env.reset(key, params)

A name is `<Family>-<setting>-v<version>`; the version changes whenever what the name
builds changes (its sizes, its generator or its parameters), so a result recorded under
a name stays reproducible. Registered at import:

* `Edge-default-v0`: `EnvParams()`'s defaults (100 tasks, density 2 tasks per time unit,
  5 servers, slack 2.5), with `EnvConfig` sized to fit (`n_max = 100`, `m_max = 5`).
* one name per point of the paper's three figure axes (the values of
  `damdjax.eval.figures.AXES`, repeated here because this module sits below
  `damdjax.eval` in the import layers; tests/test_registry.py checks they agree):
  `Edge-tasks{25,50,100,150,200}-v0` (tasks per episode), `Edge-density{1,2,3,4,6}-v0`
  (tasks per time unit), `Edge-servers{2,3,5,8,10}-v0` (edge servers). Every other field
  is at its default; `EnvConfig` is sized to fit the point (`n_max = num_tasks`,
  `m_max = num_servers`). The figures themselves pad every point of an axis to its
  largest point so that one compiled program serves the whole axis; a name here builds
  the smallest env that holds its setting.

* docs/environments.md gives every name's sizes and the spreads between heuristics on it
  (from `python -m eval.spreads`): the dispatcher's choice matters most at
  `Edge-servers10-v0` (the worst dispatch rule's response time is 2.5 times the best's).

Real workloads (the data is not shipped with damdjax: WfCommons' instances are LGPL-3.0,
Alibaba's trace is published for research use) are registered by
`register_workloads(data_dir)`, from a folder holding `wfcommons/` (the six WfInstances
files of `WORKLOAD_FILES`) and `alibaba-v2018-dags.csv`; each file's SHA-256 is checked,
so a name always means the same jobs:

* `Edge-wfcommons-v0` (120 task slots) and `Edge-alibaba-v0` (100): jobs drawn from the
  workload (`damdjax.workloads`) on 5 servers at the density where they offer the random
  generator's default load (`damdjax.envs.workload.matched_density`);
* `Edge-wfcommons-servers3-v0` (120 task slots) and `Edge-alibaba-tasks200-servers3-v0`
  (200): the same jobs and density on 3 servers (offered load 0.75): settings where
  scheduling matters (a uniformly random scheduling rule's response time is more than
  20% above the best heuristic pair's). The random DAG generator has none: its uniform
  task sizes leave a random rule within about 12% of the best at every load tried.

A name's jobs pass the trainers' workload check (`damdjax.workloads.check_workload`), so
`--workload` with the same spec, `--num-tasks` and `--num-servers` trains on the name's
setting. Alibaba jobs longer than the task slots (57 of 1,881 above 100, 1 above 200) are
cut when drawn, like every episode's last job; a note on stderr says how many.

The registry is the module-level dict `_REGISTRY` (name -> factory and description), the
only mutable state; `register` refuses to overwrite a name unless `replace=True`.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, NamedTuple

import numpy as np

from damdjax.envs.config import EnvConfig, EnvParams, check_params
from damdjax.envs.env import EdgeEnv
from damdjax.envs.generators import JobLibraryGenerator
from damdjax.envs.workload import matched_density
from damdjax.io import file_sha256

Factory = Callable[[], "tuple[EdgeEnv, EnvParams]"]

# `<Family>-<setting>-v<version>`: letters, digits, '.', '_' and '-', ending in a version.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9._-]*-v[0-9]+")
PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(EnvParams))
INT_FIELDS = ("num_tasks", "num_servers")   # counts; every other field is a float

# The paper's figure axes: (name prefix, EnvParams field, unit, values). The same values
# as damdjax.eval.figures.AXES (tests/test_registry.py compares them).
FIGURE_AXES = (
    ("tasks", "num_tasks", "tasks per episode", (25, 50, 100, 150, 200)),
    ("density", "density", "tasks per time unit", (1.0, 2.0, 3.0, 4.0, 6.0)),
    ("servers", "num_servers", "edge servers", (2, 3, 5, 8, 10)),
)


class Entry(NamedTuple):
    """A registered setting: `factory() -> (env, params)` and a one-line description."""

    factory: Factory
    description: str


_REGISTRY: dict[str, Entry] = {}


def register(name: str, factory: Factory, description: str | None = None, *,
             replace: bool = False) -> None:
    """Register `factory` (no arguments, returns `(EdgeEnv, EnvParams)`) under `name`.

    `description`: one line saying what the setting is (None: the first line of the
    factory's docstring). ValueError for a name that is not `<Family>-<setting>-v<N>`, a
    name already registered (unless `replace=True`), or a missing or multi-line
    description; TypeError for a factory that is not callable. The factory is called by
    `make`, not here."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"environment name {name!r} must look like 'Edge-<setting>-v<N>' "
                         f"(letters, digits, '.', '_', '-', ending in a version)")
    if not callable(factory):
        raise TypeError(f"the factory of {name!r} must be callable, got "
                        f"{type(factory).__name__}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"environment {name!r} is already registered (replace=True "
                         f"overwrites it)")
    if description is None:
        doc = (getattr(factory, "__doc__", None) or "").strip()
        description = doc.splitlines()[0].strip() if doc else ""
    if not isinstance(description, str) or not description.strip() or "\n" in description:
        raise ValueError(f"environment {name!r} needs a one-line description")
    _REGISTRY[name] = Entry(factory, description.strip())


def names() -> tuple[str, ...]:
    """Every registered name, in registration order."""
    return tuple(_REGISTRY)


def describe(name: str) -> str:
    """The one-line description of a registered setting (ValueError for an unknown name)."""
    return _entry(name).description


def _entry(name: str) -> Entry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown environment {name!r}; registered: "
                         f"{', '.join(_REGISTRY)}") from None


def _scalar(field: str, value) -> float:
    """`value` as a Python float; ValueError naming `field` unless it is one real number."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{field} must be a real number, got {value!r}")
    try:
        array = np.asarray(value)
    except Exception:   # an object numpy cannot read
        raise ValueError(f"{field} must be a real number, got {value!r}") from None
    if array.ndim != 0 or array.dtype.kind not in "iuf":
        raise ValueError(f"{field} must be a real scalar, got {value!r}")
    return float(array.astype(np.float64))


def make(name: str, **overrides) -> tuple[EdgeEnv, EnvParams]:
    """Build the registered setting `name`: `(env, params)`.

    `overrides` replace `EnvParams` fields by name (`num_tasks`, `num_servers`,
    `density`, `slack`, ...; units as in `damdjax.envs.config.EnvParams`), within the
    setting's padded sizes (`env.config`; e.g. `num_tasks <= n_max`). Each value must be
    a real scalar; counts are stored as Python ints and every other field as a Python
    float, the defaults' types, so a program compiled for one setting serves another.
    The result passes `check_params(env.config, params)`.

    Raises ValueError for an unknown name, an unknown field (named), a value that is not
    a real scalar (its field named), or params the config cannot hold or that make no
    sense (`check_params`' message, which names the field)."""
    entry = _entry(name)
    env, params = entry.factory()
    if not isinstance(params, EnvParams) or not isinstance(getattr(env, "config", None),
                                                             EnvConfig):
        raise TypeError(f"the factory of {name!r} must return (EdgeEnv, EnvParams), got "
                        f"({type(env).__name__}, {type(params).__name__})")
    unknown = [k for k in overrides if k not in PARAM_FIELDS]
    if unknown:
        raise ValueError(f"unknown EnvParams field(s) {', '.join(map(repr, unknown))} for "
                         f"{name!r}; fields: {', '.join(PARAM_FIELDS)}")
    values = {k: _scalar(k, v) for k, v in overrides.items()}
    params = params.replace(**values)
    try:
        check_params(env.config, params)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    ints = {k: int(v) for k, v in values.items() if k in INT_FIELDS}
    return env, params.replace(**ints)


def _fitted(**fields) -> Factory:
    """A factory of `EnvParams(**fields)` on an `EdgeEnv` whose `EnvConfig` holds exactly
    its tasks and servers (`n_max = num_tasks`, `m_max = num_servers`; other sizes at
    their defaults) with the random DAG generator."""
    def factory() -> tuple[EdgeEnv, EnvParams]:
        params = EnvParams(**fields)
        config = EnvConfig(n_max=int(params.num_tasks), m_max=int(params.num_servers))
        return EdgeEnv(config), params
    return factory


def _label(value) -> str:
    """A setting value as it appears in a name: 25, 2, 1.5 (no trailing '.0')."""
    return f"{value:g}"


def _register_defaults() -> None:
    d = EnvParams()
    register("Edge-default-v0", _fitted(),
             f"the paper's default setting: {d.num_tasks} tasks, density {d.density:g} tasks "
             f"per time unit, {d.num_servers} servers, slack {d.slack:g} (random DAG jobs)")
    for axis, field, unit, values in FIGURE_AXES:
        for value in values:
            same = " (the default setting)" if value == getattr(d, field) else ""
            register(f"Edge-{axis}{_label(value)}-v0", _fitted(**{field: value}),
                     f"{axis} axis point: {field} = {_label(value)} {unit}, every other "
                     f"field at its default{same}")


# Real workloads: the files each name is defined on, by SHA-256 (paths relative to the
# data folder given to register_workloads).
WORKLOAD_FILES = {
    "alibaba-v2018-dags.csv":
        "ad1bdb3720c4fdd7562dfdbc9ffb463b0d719331c79c8cc9b1b6d09df6b32ccc",
    "wfcommons/1000genome-chameleon-2ch-100k-001.json":
        "dfbaa266f7902cf92595a1d87b4947676a1281f85f994dea1ba0d9db34ae5f3d",
    "wfcommons/blast-chameleon-small-001.json":
        "5e132ac7f63096dec62173da1c7512554f9ddb08dc420f2005af277a04b8e845",
    "wfcommons/epigenomics-chameleon-hep-1seq-100k-001.json":
        "51c22cd98a078adc4303fe19dfcf7b7186f6d3e0c0cadddb10bb901cee01fa5d",
    "wfcommons/helloworld-forkjoin-10-chameleon.json":
        "7046b65845190ed9cb009d5b740c51826c61768a88e6f8b997ea373558c871df",
    "wfcommons/montage-chameleon-dss-05d-001.json":
        "91c6f58feea7a62f7b40a19c8e851ceb09ce57e2ccc8fb48697b60877ddb208b",
    "wfcommons/srasearch-chameleon-10a-001.json":
        "c2b5d73841750b5af68e5ff65f5f2d04b51a4b6b18086e7a5b1dfb72317fd4b6",
}
# The real-workload names: (name, workload kind, path in the data folder, task slots,
# servers). All at the density matched to the random generator's default load on 5
# servers; the 3-server ones (offered load 0.75) are where scheduling matters (a random
# scheduling rule more than 20% above the best pair: docs/environments.md).
WORKLOAD_NAMES = (
    ("Edge-wfcommons-v0", "wfcommons", "wfcommons", 120, 5),
    ("Edge-wfcommons-servers3-v0", "wfcommons", "wfcommons", 120, 3),
    ("Edge-alibaba-v0", "alibaba", "alibaba-v2018-dags.csv", 100, 5),
    ("Edge-alibaba-tasks200-servers3-v0", "alibaba", "alibaba-v2018-dags.csv", 200, 3),
)


def check_workload_files(data_dir: str) -> None:
    """ValueError naming the first file of `WORKLOAD_FILES` that is missing from
    `data_dir` or is not the file the names are defined on (its SHA-256 differs), or a
    `.json` in `data_dir/wfcommons` that is not one of them (the workload reads every
    `.json` of that folder)."""
    for rel, expected in WORKLOAD_FILES.items():
        path = os.path.join(data_dir, rel)
        if not os.path.isfile(path):
            raise ValueError(f"register_workloads: no file {path!r} (the folder must hold "
                             f"{', '.join(sorted(WORKLOAD_FILES))})")
        if file_sha256(path) != expected:
            raise ValueError(f"register_workloads: {path!r} is not the file the real-workload "
                             f"names are defined on (SHA-256 {expected})")
    folder = os.path.join(data_dir, "wfcommons")
    ours = {os.path.basename(r) for r in WORKLOAD_FILES if r.startswith("wfcommons/")}
    extra = sorted(f for f in os.listdir(folder) if f.endswith(".json") and f not in ours)
    if extra:
        raise ValueError(f"register_workloads: {os.path.join(folder, extra[0])!r} is not one "
                         f"of the WfCommons files the names are defined on")


def _workload_factory(spec: str, n_max: int, num_servers: int) -> Factory:
    """A factory of the workload `spec`'s jobs on `num_servers` servers at the density
    matched to the random generator's default load on 5 servers."""
    def factory() -> tuple[EdgeEnv, EnvParams]:
        from damdjax.workloads import check_workload, resolve_workload, workload_config
        lib = resolve_workload(spec)
        density = matched_density(lib, EnvParams())
        params = EnvParams(num_tasks=n_max, num_servers=num_servers, density=density)
        check_workload(spec, n_max, params)   # the trainers' rule (and its note on stderr)
        config = workload_config(spec, n_max, num_servers, EnvConfig().queue_capacity)
        return EdgeEnv(config, JobLibraryGenerator(lib)), params
    return factory


def register_workloads(data_dir: str, *, replace: bool = False) -> tuple[str, ...]:
    """Register the real-workload names (`WORKLOAD_NAMES`: the module docstring) on the
    files of `data_dir`, after checking them (`check_workload_files`). Returns the names
    registered. The jobs are read at the first `make` of a name (once per process:
    `damdjax.workloads.resolve_workload`). Registering again needs `replace=True` (as
    `register`)."""
    data_dir = os.path.abspath(data_dir)
    check_workload_files(data_dir)
    for name, kind, rel, n_max, servers in WORKLOAD_NAMES:
        scheduling = (" (offered load 0.75): scheduling matters"
                      if servers < EnvParams().num_servers else "")
        register(name, _workload_factory(f"{kind}:{os.path.join(data_dir, rel)}", n_max,
                                         servers),
                 f"{kind} jobs, {n_max} task slots, {servers} servers, at the density matching "
                 f"the random generator's default load on 5 servers{scheduling}",
                 replace=replace)
    return tuple(name for name, *_ in WORKLOAD_NAMES)


_register_defaults()
