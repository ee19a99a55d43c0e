"""Where an episode's jobs come from: instance generators.

A generator is a callable object, as Jumanji's `Generator`:

    instance = generator(key, config, params)   # jittable, vmappable over keys and params
    generator.check(config)                     # host side: ValueError if `config` is too small

`generator(key, config, params)` draws one `Instance` padded to `config`'s sizes;
`check(config)` raises ValueError (naming the size) where the padded sizes cannot hold what
it may draw. `damdjax.envs.env.EdgeEnv(config, generator)` checks its generator once and
draws every episode's instance from it:

    RandomDAGGenerator()                                    the random DAG model (the default)
    JobLibraryGenerator(lib)                                jobs drawn from a job library
    SettingRangeGenerator(base, (("density", 1.0, 6.0),))   setting fields drawn per episode,
                                                            then `base` at that setting

Generators are frozen dataclasses (hashable: a job library by identity), constants of an env.
"""
from __future__ import annotations

import abc
import dataclasses

import jax

from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.generator import check_generator_config, generate
from damdjax.envs.instance import Instance
from damdjax.envs.workload import JobLibrary, check_library, generate_from_library

__all__ = ["Generator", "RandomDAGGenerator", "JobLibraryGenerator", "SettingRangeGenerator",
           "RANGE_FIELDS", "draw_setting", "workload_generator"]

# The EnvParams fields a SettingRangeGenerator may draw per episode.
RANGE_FIELDS = ("num_tasks", "num_servers", "density", "slack")
_INTEGER_FIELDS = {"num_tasks": "n_max", "num_servers": "m_max"}  # field -> its EnvConfig cap


class Generator(abc.ABC):
    """Draws instances: `generator(key, config, params) -> Instance`, and `check(config)`."""

    @abc.abstractmethod
    def __call__(self, key: jax.Array, config: EnvConfig, params: EnvParams) -> Instance:
        """One instance padded to `config` (jittable, vmappable over keys and params)."""

    @abc.abstractmethod
    def check(self, config: EnvConfig) -> None:
        """Raise ValueError if `config`'s padded sizes cannot hold every instance drawn
        (host side, before tracing)."""


@dataclasses.dataclass(frozen=True)
class RandomDAGGenerator(Generator):
    """The random DAG model (`damdjax.envs.generator.generate`): random servers, random DAG
    jobs of 1..`j_max` tasks, Poisson arrivals."""

    def __call__(self, key: jax.Array, config: EnvConfig, params: EnvParams) -> Instance:
        return generate(key, config, params)

    def check(self, config: EnvConfig) -> None:
        """`damdjax.envs.generator.check_generator_config`: the successor slots must be the
        whole window `j_max - 1`."""
        check_generator_config(config)


@dataclasses.dataclass(frozen=True, eq=False)
class JobLibraryGenerator(Generator):
    """Jobs drawn uniformly with replacement from a job library of real jobs
    (`damdjax.envs.workload.generate_from_library`); servers, arrivals and deadlines as the
    random model's. Compared and hashed by identity (the library holds numpy arrays)."""

    library: JobLibrary

    def __call__(self, key: jax.Array, config: EnvConfig, params: EnvParams) -> Instance:
        return generate_from_library(key, config, params, self.library)

    def check(self, config: EnvConfig) -> None:
        """`damdjax.envs.workload.check_library` (a LibraryError, a ValueError): `config` must
        fit the library (`damdjax.envs.workload.required_config`)."""
        check_library(self.library, config)


def draw_setting(key: jax.Array, params: EnvParams, ranges: tuple) -> EnvParams:
    """`params` with each `(field, low, high)` of `ranges` drawn uniformly in [low, high]
    (num_tasks, num_servers: integers); field `i` draws with `fold_in(key, i)`."""
    values = {}
    for i, (field, low, high) in enumerate(ranges):
        k = jax.random.fold_in(key, i)
        if field in _INTEGER_FIELDS:
            values[field] = jax.random.randint(k, (), int(low), int(high) + 1)
        else:
            values[field] = jax.random.uniform(k, (), minval=low, maxval=high)
    return params.replace(**values)


@dataclasses.dataclass(frozen=True)
class SettingRangeGenerator(Generator):
    """`base` at a setting drawn per episode: each `(field, low, high)` of `ranges` (fields of
    RANGE_FIELDS) replaces `params`' value by a uniform draw in [low, high] (integers for
    num_tasks and num_servers), as a generalist's training envs do (eval.figures
    --generalist).

    The key splits into `(base key, draw key)` (`draw_setting`); with no range the key and
    `params` go to `base` unchanged. Raises ValueError at construction for a field outside
    RANGE_FIELDS or bounds not `0 < low <= high`, and in `check` for integer bounds that are
    not integers or exceed the padding (`n_max`, `m_max`).
    """

    base: Generator
    ranges: tuple = ()   # ((field, low, high), ...)

    def __post_init__(self):
        ranges = tuple(tuple(r) for r in self.ranges)
        for r in ranges:
            if len(r) != 3:
                raise ValueError(f"setting range {r!r}: must be (field, low, high)")
        for field, low, high in ranges:
            if field not in RANGE_FIELDS or not 0 < low <= high:
                raise ValueError(f"setting range {field}={low}:{high}: the field must be one "
                                 f"of {', '.join(RANGE_FIELDS)} and 0 < low <= high")
        object.__setattr__(self, "ranges", ranges)

    def __call__(self, key: jax.Array, config: EnvConfig, params: EnvParams) -> Instance:
        if self.ranges:
            key, k_draw = jax.random.split(key)
            params = draw_setting(k_draw, params, self.ranges)
        return self.base(key, config, params)

    def check(self, config: EnvConfig) -> None:
        """`base`'s check, then each integer field's bounds: integers up to its cap."""
        self.base.check(config)
        for field, low, high in self.ranges:
            cap = getattr(config, _INTEGER_FIELDS[field]) if field in _INTEGER_FIELDS else None
            if cap is not None and (low != int(low) or high != int(high) or high > cap):
                raise ValueError(f"setting range {field}={low}:{high}: integers up to {cap}")


def workload_generator(library: JobLibrary | None) -> Generator:
    """`JobLibraryGenerator(library)`, or the random DAG model for None (no workload)."""
    return RandomDAGGenerator() if library is None else JobLibraryGenerator(library)
