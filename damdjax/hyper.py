"""The scalars a training run may vary without recompiling: `Hyper`, a pytree.

    hyper = Hyper.from_config(cfg)                      # a trainer config's values
    hyper = hyper.with_values(lr=1e-3, density=3.0)     # one run's values (density: hyper.env)
    check_hyper(hyper, cfg.env_config)                  # ValueError naming a bad value
    stacked = stack([h1, h2, h3])                       # leaves [3]: vmap over members
    pair = PipelineHyper(dispatcher=h1, schedulers=h2)  # train.damd: one Hyper per stage kind

A trainer's frozen config decides the compiled program's shape (array sizes,
network widths, buffer size, number of envs and steps, reward kind,
scheduler); `Hyper` holds every scalar the program reads as a traced value,
so one compiled program serves any values (and `jax.vmap` over a stacked
`Hyper` trains many runs at once). Units: `lr` per gradient step;
`eps_decay_steps` and `learning_starts` in env steps; `target_every` in
gradient updates; `double_dqn` 1 (double DQN targets) or 0 (max targets;
`damdjax.targets.td_targets`); `n_step` in decisions (the returns' length,
`damdjax.replay.sample`; 1: one-step targets). The setting is not copied here:
`hyper.env` is the run's `damdjax.envs.config.EnvParams`, whose SETTING_FIELDS
are traced (`num_tasks` <= the config's `n_max`, `num_servers` <= its `m_max`);
flat names (`field_names()`, a sweep's grid) spell them as `EnvParams` does.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from damdjax.envs.config import INT32_MAX, EnvConfig, EnvParams, check_float, check_params


# The setting fields a run traces: one compiled program serves any of their values (and a
# sweep's grid may vary them). The other `EnvParams` fields are the program's constants.
SETTING_FIELDS = ("num_tasks", "num_servers", "density", "slack", "tau", "miss_penalty")
CONSTANT_FIELDS = tuple(f.name for f in dataclasses.fields(EnvParams)
                        if f.name not in SETTING_FIELDS)


@dataclasses.dataclass(frozen=True)
class Hyper:
    """Every scalar of a DQN-style training run that can vary without recompiling: the
    learning values, and `env`, the run's setting (an `EnvParams`).

    A pytree: its leaves are the learning values and `env`'s SETTING_FIELDS, each a Python
    scalar (one run; `jit` traces them, weakly typed) or an array with a leading member
    axis (`stack`). `env`'s other fields (CONSTANT_FIELDS: the server and task ranges,
    `time_scale`) are part of the tree's structure, so the program holds them as
    constants: Python numbers, equal across a stack's members; changing one compiles anew.
    """

    lr: float = 5e-4                   # Adam learning rate
    gamma: float = 0.9                 # discount per decision
    eps_start: float = 1.0             # epsilon at env step 0
    eps_end: float = 0.05              # epsilon after the decay
    eps_decay_steps: int = 100_000     # env steps of the linear epsilon decay
    target_every: int = 100            # gradient updates between target updates
    polyak: float = 1.0                # target <- polyak*online + (1-polyak)*target (1: copy)
    double_dqn: float = 0.0            # 1: double DQN targets (online net picks), 0: max
    n_step: int = 1                    # decisions summed per target (1: one-step targets)
    learning_starts: int = 5_000       # env steps before the first gradient update
    max_grad_norm: float = 10.0        # global gradient-norm clip
    env: EnvParams = dataclasses.field(default_factory=EnvParams)   # the setting

    def __post_init__(self):
        for name in CONSTANT_FIELDS:
            value = getattr(self.env, name)
            if not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
                raise TypeError(f"Hyper.env.{name} is a program constant and must be a "
                                f"number, got {type(value).__name__} (only "
                                f"{', '.join(SETTING_FIELDS)} are traced)")

    def replace(self, **changes) -> "Hyper":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_config(cls, cfg, params: EnvParams | None = None) -> "Hyper":
        """The values of a trainer config: its learning fields (a field the config lacks,
        e.g. `polyak`, takes `Hyper`'s default) and its setting `cfg.env`, or `params`
        where given."""
        return cls(**{f: getattr(cfg, f) for f in LEARNING_FIELDS if hasattr(cfg, f)},
                   env=cfg.env if params is None else params)

    def optimizer(self) -> optax.GradientTransformation:
        """Adam at `lr` after global-norm clipping at `max_grad_norm`, built from (possibly
        traced) values: build it inside the traced function. Its state does not depend on
        the values, so `init` may use any `Hyper`."""
        return optax.chain(optax.clip_by_global_norm(self.max_grad_norm), optax.adam(self.lr))

    def epsilon(self, env_steps):
        """Epsilon at `env_steps` []: `eps_start` to `eps_end` linearly over
        `eps_decay_steps` (at least 1), then `eps_end` (optax.linear_schedule's formula)."""
        steps = jnp.maximum(self.eps_decay_steps, 1)
        frac = 1 - jnp.clip(env_steps, 0, steps) / steps
        return (self.eps_start - self.eps_end) * frac + self.eps_end

    def value(self, name: str):
        """The value of a flat field name (`field_names()`): a learning field, or a
        setting field of `env`."""
        return getattr(self.env, name) if name in SETTING_FIELDS else getattr(self, name)

    def values(self) -> dict:
        """Flat field -> Python number (leaves must be scalars)."""
        return {f: _python(self.value(f)) for f in FIELDS}

    # The sweep's view of a hyper pytree (shared with PipelineHyper): flat field names.
    @staticmethod
    def field_names() -> tuple[str, ...]:
        return FIELDS

    @staticmethod
    def is_int_field(name: str) -> bool:
        return name in INT_FIELDS

    def with_values(self, **values) -> "Hyper":
        """These flat fields replaced (names of `field_names()`; a setting field in `env`).
        ValueError naming an unknown field."""
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
        setting = {k: v for k, v in values.items() if k in SETTING_FIELDS}
        return self.replace(**{k: v for k, v in values.items() if k not in SETTING_FIELDS},
                            env=self.env.replace(**setting))


LEARNING_FIELDS = tuple(f.name for f in dataclasses.fields(Hyper) if f.name != "env")
# The flat fields in the order of the tree's leaves.
FIELDS = LEARNING_FIELDS + ("tau", "miss_penalty", "density", "slack", "num_tasks",
                            "num_servers")
INT_FIELDS = frozenset({"eps_decay_steps", "target_every", "learning_starts", "n_step",
                        "num_tasks", "num_servers"})


def _flatten_with_keys(h: Hyper):
    children = [(jax.tree_util.GetAttrKey(f), h.value(f)) for f in FIELDS]
    return children, tuple(getattr(h.env, f) for f in CONSTANT_FIELDS)


def _unflatten(constants: tuple, leaves) -> Hyper:
    values = dict(zip(FIELDS, leaves))
    h = object.__new__(Hyper)   # leaves may be tracers or placeholders: no checks here
    for f in LEARNING_FIELDS:
        object.__setattr__(h, f, values[f])
    object.__setattr__(h, "env", EnvParams(**{f: values[f] for f in SETTING_FIELDS},
                                           **dict(zip(CONSTANT_FIELDS, constants))))
    return h


jax.tree_util.register_pytree_with_keys(
    Hyper, _flatten_with_keys, _unflatten,
    lambda h: ([h.value(f) for f in FIELDS], _flatten_with_keys(h)[1]))


def program_of(config, **run_values):
    """`config` (a trainer's frozen config dataclass) with every field that leaves its
    `make_train(config).init` and `.chunk` unchanged set to a fixed value: the learning
    fields it holds at its class's defaults, its setting's traced fields (SETTING_FIELDS)
    at the padded sizes and `EnvParams`' defaults (its constant fields stay: the program
    holds them), and `run_values`, the fields only the host reads (seed, run length,
    evaluation size, a starting-parameters file). Two configs have the same program
    exactly when their `program_of` are equal (a cache key)."""
    cls, defaults = type(config), EnvParams()
    fixed = {f: getattr(cls, f) for f in LEARNING_FIELDS if hasattr(cls, f)}
    env = config.env.replace(**{**{f: getattr(defaults, f) for f in SETTING_FIELDS},
                                "num_tasks": config.env_config.n_max,
                                "num_servers": config.env_config.m_max})
    return dataclasses.replace(config, **fixed, env=env, **run_values)


def _python(x):
    if type(x) in (int, float):   # a Python number as given (any size: checked later)
        return x
    x = np.asarray(x)
    return int(x) if x.dtype.kind in "iub" else float(x)


def check_hyper(h, config: EnvConfig) -> None:
    """Raise ValueError naming the first bad value of `h` (concrete values; Python boundary;
    a `PipelineHyper`: each stage kind's, named with its prefix).

    `lr`, `max_grad_norm`, `eps_decay_steps`, `target_every` > 0; `gamma`, `eps_start`,
    `eps_end` in [0, 1]; `polyak` in (0, 1]; `double_dqn` 0 or 1; `n_step` in [1,
    `config.max_steps`] (the step cap 2 n_max + 2: every transition of an agent takes at
    least one env step and a return never crosses an episode's end, so a longer walk
    only loops over nothing, and `damdjax.replay.n_step_walk` runs `n_step` iterations
    per sampled batch); `learning_starts` >= 0;
    integers within int32 where INT_FIELDS, the other values within float32
    (`damdjax.envs.config.check_float`); the setting as `damdjax.envs.config.check_params` within
    `config`'s padding.
    """
    if isinstance(h, PipelineHyper):
        for prefix, part in ((DISPATCHER_PREFIX, h.dispatcher), (SCHEDULERS_PREFIX, h.schedulers)):
            try:
                check_hyper(part, config)
            except ValueError as err:
                msg = str(err)
                name = msg.split(" ", 1)[0]
                raise ValueError(prefix + msg if name in LEARNING_FIELDS else msg) from None
        return
    v = h.values()
    for name in FIELDS:
        if not math.isfinite(v[name]):
            raise ValueError(f"{name} must be finite, got {v[name]}")
        if name in INT_FIELDS and float(h.value(name)) != int(v[name]):
            raise ValueError(f"{name} must be an integer, got {float(h.value(name)):g}")
        if name in INT_FIELDS and abs(v[name]) > INT32_MAX:   # traced as int32
            raise ValueError(f"{name} must be <= {INT32_MAX} (int32), got {v[name]}")
        if name not in INT_FIELDS:   # traced (and stacked) as float32
            check_float(name, v[name], np.float32)
    for name in ("lr", "max_grad_norm", "eps_decay_steps", "target_every", "n_step"):
        if not v[name] > 0:
            raise ValueError(f"{name} must be > 0, got {v[name]:g}")
    for name in ("gamma", "eps_start", "eps_end"):
        if not 0 <= v[name] <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {v[name]:g}")
    if not 0 < v["polyak"] <= 1:
        raise ValueError(f"polyak must be in (0, 1], got {v['polyak']:g}")
    if v["double_dqn"] not in (0, 1):
        raise ValueError(f"double_dqn must be 0 or 1, got {v['double_dqn']:g}")
    if v["learning_starts"] < 0:
        raise ValueError(f"learning_starts must be >= 0, got {v['learning_starts']}")
    if v["n_step"] > config.max_steps:   # a return spans at most one episode's steps
        raise ValueError(f"n_step must be <= {config.max_steps} (the episode's step cap "
                         f"2 n_max + 2: no return spans more), got {v['n_step']}")
    check_params(config, h.env)


def stack(hypers: list):
    """One `Hyper` (or `PipelineHyper`) with leaves [K] (int32 for INT_FIELDS, float32
    otherwise) from K runs."""
    if isinstance(hypers[0], PipelineHyper):
        return PipelineHyper(dispatcher=stack([h.dispatcher for h in hypers]),
                             schedulers=stack([h.schedulers for h in hypers]))

    constants = {tuple(getattr(h.env, f) for f in CONSTANT_FIELDS) for h in hypers}
    if len(constants) > 1:
        raise ValueError("stacked runs must share the setting's constant fields "
                         f"({', '.join(CONSTANT_FIELDS)}): one program holds them")

    def col(name):
        dtype = np.int32 if name in INT_FIELDS else np.float32
        return np.asarray([h.value(name) for h in hypers], dtype)
    return jax.tree.unflatten(jax.tree.structure(hypers[0]), [col(name) for name in FIELDS])


def member(stacked, i: int):
    """Member `i` of a stacked `Hyper` (or `PipelineHyper`), as Python scalars."""
    if isinstance(stacked, PipelineHyper):
        return PipelineHyper(dispatcher=member(stacked.dispatcher, i),
                             schedulers=member(stacked.schedulers, i))
    return jax.tree.map(lambda x: _python(np.asarray(x)[i]), stacked)


# ---------------------------------------------------------------------------
# The DAMD pipeline's values: one Hyper for the dispatcher stages, one for the schedulers'
# ---------------------------------------------------------------------------

DISPATCHER_PREFIX, SCHEDULERS_PREFIX = "dqn_", "mdqn_"   # as train.damd's --dqn-* / --mdqn-*


@struct.dataclass
class PipelineHyper:
    """The values of a dispatcher-then-schedulers pipeline (train.damd): `dispatcher` (its
    DQN stages) and `schedulers` (its MDQN stages). Flat field names: the setting fields
    (SETTING_FIELDS, one value for both: the same environment) and each learning field
    twice, prefixed `dqn_` (dispatcher) and `mdqn_` (schedulers), e.g. `mdqn_gamma`."""

    dispatcher: Hyper
    schedulers: Hyper

    @staticmethod
    def field_names() -> tuple[str, ...]:
        return PIPELINE_FIELDS

    @staticmethod
    def is_int_field(name: str) -> bool:
        return _pipeline_field(name)[1] in INT_FIELDS

    def with_values(self, **values) -> "PipelineHyper":
        """These flat fields replaced (a setting field in both stage kinds' values)."""
        d, s = {}, {}
        for name, v in values.items():
            part, field = _pipeline_field(name)
            for which, out in (("dispatcher", d), ("schedulers", s)):
                if part in (which, None):
                    out[field] = v
        return PipelineHyper(dispatcher=self.dispatcher.with_values(**d),
                             schedulers=self.schedulers.with_values(**s))

    def values(self) -> dict:
        """Flat field -> Python number (the setting from `dispatcher`; both hold it)."""
        d, s = self.dispatcher.values(), self.schedulers.values()
        return {**{f: d[f] for f in SETTING_FIELDS},
                **{DISPATCHER_PREFIX + f: d[f] for f in LEARNING_FIELDS},
                **{SCHEDULERS_PREFIX + f: s[f] for f in LEARNING_FIELDS}}

    @property
    def env(self) -> EnvParams:
        """The setting (both stage kinds hold it)."""
        return self.dispatcher.env


PIPELINE_FIELDS = (SETTING_FIELDS + tuple(DISPATCHER_PREFIX + f for f in LEARNING_FIELDS)
                   + tuple(SCHEDULERS_PREFIX + f for f in LEARNING_FIELDS))


def _pipeline_field(name: str) -> tuple[str | None, str]:
    """`(stage kind or None for both, Hyper field)` of a flat PipelineHyper field name."""
    if name in SETTING_FIELDS:
        return None, name
    for prefix, part in ((DISPATCHER_PREFIX, "dispatcher"), (SCHEDULERS_PREFIX, "schedulers")):
        if name.startswith(prefix) and name[len(prefix):] in LEARNING_FIELDS:
            return part, name[len(prefix):]
    raise ValueError(f"unknown field {name!r} (fields: {', '.join(PIPELINE_FIELDS)})")
