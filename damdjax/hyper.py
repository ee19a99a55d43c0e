"""The scalars a training run may vary without recompiling: `Hyper`, a pytree.

    hyper = Hyper.from_config(cfg)                     # a trainer config's values
    hyper = hyper.replace(lr=1e-3, density=3.0)        # one run's values
    check_hyper(hyper, cfg.env_config())               # ValueError naming a bad value
    stacked = stack([h1, h2, h3])                      # leaves [3]: vmap over members
    pair = PipelineHyper(dispatcher=h1, schedulers=h2) # train.damd: one Hyper per stage kind

A trainer's frozen config decides the compiled program's shape (array sizes,
network widths, buffer size, number of envs and steps, reward kind,
scheduler); `Hyper` holds every scalar the program reads as a traced value,
so one compiled program serves any values (and `jax.vmap` over a stacked
`Hyper` trains many runs at once). Units: `lr` per gradient step;
`eps_decay_steps` and `learning_starts` in env steps; `target_every` in
gradient updates; `double_dqn` 1 (double DQN targets) or 0 (max targets;
`damdjax.targets.td_targets`); `n_step` in decisions (the returns' length,
`damdjax.replay.sample`; 1: one-step targets); `tau` in time units; the setting fields as in
`damdjax.envs.config.EnvParams` (`num_tasks` <= the config's `n_max`, `num_servers`
<= its `m_max`).
"""
from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from damdjax.envs.config import INT32_MAX, EnvConfig, EnvParams, check_float, check_params


@struct.dataclass
class Hyper:
    """Every scalar of a DQN-style training run that can vary without recompiling.

    Leaves are Python scalars (one run; `jit` traces them, weakly typed) or
    arrays with a leading member axis (`stack`).
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
    tau: float = EnvParams.tau                    # reward time constant (time units)
    miss_penalty: float = EnvParams.miss_penalty  # team-reward penalty per missed deadline
    density: float = EnvParams.density            # tasks per time unit
    slack: float = EnvParams.slack                # deadline slack
    num_tasks: int = EnvParams.num_tasks          # real tasks per episode (<= n_max)
    num_servers: int = EnvParams.num_servers      # real servers (<= m_max)

    @classmethod
    def from_config(cls, cfg, params: EnvParams | None = None) -> "Hyper":
        """The values of a trainer config (fields of the same names); a field the config
        lacks (e.g. `polyak`, `miss_penalty`) takes `Hyper`'s default. `params`, where
        given, replaces the setting fields (SETTING_FIELDS)."""
        h = cls(**{f: getattr(cfg, f) for f in FIELDS if hasattr(cfg, f)})
        if params is not None:
            h = h.replace(**{f: getattr(params, f) for f in SETTING_FIELDS})
        return h

    def env_params(self) -> EnvParams:
        """The generator and reward knobs as `EnvParams` (other knobs at their defaults)."""
        return EnvParams(num_tasks=self.num_tasks, num_servers=self.num_servers,
                         density=self.density, slack=self.slack, tau=self.tau,
                         miss_penalty=self.miss_penalty)

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

    def values(self) -> dict:
        """Field -> Python number (leaves must be scalars)."""
        return {f: _python(getattr(self, f)) for f in FIELDS}

    # The sweep's view of a hyper pytree (shared with PipelineHyper): flat field names.
    @staticmethod
    def field_names() -> tuple[str, ...]:
        return FIELDS

    @staticmethod
    def is_int_field(name: str) -> bool:
        return name in INT_FIELDS

    def with_values(self, **values) -> "Hyper":
        """These fields replaced (names of `field_names()`)."""
        return self.replace(**values)


FIELDS = tuple(f.name for f in dataclasses.fields(Hyper))
INT_FIELDS = frozenset({"eps_decay_steps", "target_every", "learning_starts", "n_step",
                        "num_tasks", "num_servers"})
SETTING_FIELDS = ("num_tasks", "num_servers", "density", "slack", "tau", "miss_penalty")


# Hyper fields that a trainer config also reads as the padded sizes (n_max, m_max).
PADDED_FIELDS = ("num_tasks", "num_servers")


def program_of(config, **run_values):
    """`config` (a trainer's frozen config dataclass) with every field that leaves its
    `make_train(config).init` and `.chunk` unchanged set to a fixed value: the `Hyper`
    fields it holds at its class's defaults (but PADDED_FIELDS, which also size the
    program), and `run_values`, the fields only the host reads (seed, run length,
    evaluation size, a starting-parameters file). Two configs have the same program
    exactly when their `program_of` are equal (a cache key)."""
    cls = type(config)
    fixed = {f: getattr(cls, f) for f in FIELDS if hasattr(cls, f) and f not in PADDED_FIELDS}
    return dataclasses.replace(config, **fixed, **run_values)


def _python(x):
    if type(x) in (int, float):   # a Python number as given (any size: checked later)
        return x
    x = np.asarray(x)
    return int(x) if x.dtype.kind in "iub" else float(x)


def check_hyper(h, config: EnvConfig) -> None:
    """Raise ValueError naming the first bad value of `h` (concrete values; Python boundary;
    a `PipelineHyper`: each stage kind's, named with its prefix).

    `lr`, `max_grad_norm`, `eps_decay_steps`, `target_every` > 0; `gamma`, `eps_start`,
    `eps_end` in [0, 1]; `polyak` in (0, 1]; `double_dqn` 0 or 1; `n_step` >= 1;
    `learning_starts` >= 0;
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
        if name in INT_FIELDS and float(getattr(h, name)) != int(v[name]):
            raise ValueError(f"{name} must be an integer, got {float(getattr(h, name)):g}")
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
    check_params(config, h.env_params())


def stack(hypers: list):
    """One `Hyper` (or `PipelineHyper`) with leaves [K] (int32 for INT_FIELDS, float32
    otherwise) from K runs."""
    if isinstance(hypers[0], PipelineHyper):
        return PipelineHyper(dispatcher=stack([h.dispatcher for h in hypers]),
                             schedulers=stack([h.schedulers for h in hypers]))

    def col(name):
        dtype = np.int32 if name in INT_FIELDS else np.float32
        return np.asarray([getattr(h, name) for h in hypers], dtype)
    return Hyper(**{name: col(name) for name in FIELDS})


def member(stacked, i: int):
    """Member `i` of a stacked `Hyper` (or `PipelineHyper`), as Python scalars."""
    if isinstance(stacked, PipelineHyper):
        return PipelineHyper(dispatcher=member(stacked.dispatcher, i),
                             schedulers=member(stacked.schedulers, i))
    return Hyper(**{f: _python(np.asarray(getattr(stacked, f))[i]) for f in FIELDS})


# ---------------------------------------------------------------------------
# The DAMD pipeline's values: one Hyper for the dispatcher stages, one for the schedulers'
# ---------------------------------------------------------------------------

DISPATCHER_PREFIX, SCHEDULERS_PREFIX = "dqn_", "mdqn_"   # as train.damd's --dqn-* / --mdqn-*
LEARNING_FIELDS = tuple(f for f in FIELDS if f not in SETTING_FIELDS)


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
        return PipelineHyper(dispatcher=self.dispatcher.replace(**d),
                             schedulers=self.schedulers.replace(**s))

    def values(self) -> dict:
        """Flat field -> Python number (the setting from `dispatcher`; both hold it)."""
        d, s = self.dispatcher.values(), self.schedulers.values()
        return {**{f: d[f] for f in SETTING_FIELDS},
                **{DISPATCHER_PREFIX + f: d[f] for f in LEARNING_FIELDS},
                **{SCHEDULERS_PREFIX + f: s[f] for f in LEARNING_FIELDS}}

    def env_params(self) -> EnvParams:
        return self.dispatcher.env_params()


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
