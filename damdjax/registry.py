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

The registry is the module-level dict `_REGISTRY` (name -> factory and description), the
only mutable state; `register` refuses to overwrite a name unless `replace=True`.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, NamedTuple

import numpy as np

from damdjax.envs.config import EnvConfig, EnvParams, check_params
from damdjax.envs.env import EdgeEnv

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
    :func:`make`, not here."""
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


_register_defaults()
