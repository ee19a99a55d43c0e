"""The config every trainer's config extends (`RunConfig`), and the setting it holds.

A trainer config holds the run's setting in one place each: `env`, an
`damdjax.envs.config.EnvParams` (the generator's and the rewards' knobs, traced in
the program), `env_config`, an `damdjax.envs.config.EnvConfig` (the padded sizes;
derived from `env` and the workload when not given), and where jobs come from:
`workload` (`damdjax.workloads`: "" the random generator, `wfcommons:PATH`,
`alibaba:CSV`, `library:FILE.npz`) and `setting_range` (fields drawn per episode).
Its other fields are the rollout, the learning values (defaults: `damdjax.hyper.Hyper`'s),
the network's widths, the seed and the held-out evaluation size, each declared with
its flag's help (`damdjax.configs.option`). The setting's flags (`--num-tasks`,
`--density`, `--n-max`, ...; SETTING_OPTIONS) name the `EnvParams` and `EnvConfig`
fields by their own names. A config checks itself on construction (`RunConfig.check`).

Stored configs (config.json, policy files' and damd.json's setting) hold `env`,
`env_config` and `workload` as `setting_to_json` writes them; the flat setting fields
that damdjax 0.2 wrote (`num_tasks`, ..., `queue_capacity`, `tau` beside the
learning values) are read into that form (`setting_from_json`, with a note on stderr,
once per process).
"""
from __future__ import annotations

import dataclasses
import functools
import sys

from damdjax import memory
from damdjax.configs import FIELD_TYPES, ConfigError, Field, check_int, check_type, int_limit, option
from damdjax.hyper import SETTING_FIELDS, Hyper, check_hyper
from damdjax.workloads import (WORKLOAD_HELP, check_workload, resolve_workload,
                               seeded_workload, workload_config)
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.generators import SettingRangeGenerator, workload_generator
from damdjax.envs.workload import JobLibrary, check_library

# The setting's flags: the traced `EnvParams` fields (SETTING_FIELDS) and the padded
# sizes of `EnvConfig` a run chooses, each flag named as its field (`--num-tasks`,
# `--n-max`). `n_max` and `m_max` default to the run's `num_tasks` and `num_servers`.
SETTING_OPTIONS = {
    "num_tasks": ("env", "tasks per episode (<= --n-max)"),
    "num_servers": ("env", "edge servers (<= --m-max)"),
    "density": ("env", "task arrival density, tasks per time unit"),
    "slack": ("env", "deadline slack: deadline = arrival + slack x the task's critical-path "
              "time on an average server"),
    "tau": ("env", "reward time constant, time units"),
    "miss_penalty": ("env", "team-reward penalty per missed deadline (the schedulers' "
                     "reward)"),
    "n_max": ("env_config", "padded task slots (default: --num-tasks)"),
    "m_max": ("env_config", "padded server slots (default: --num-servers)"),
    "queue_capacity": ("env_config", "queue slots per server"),
}
SIZE_FIELDS = tuple(k for k, (home, _) in SETTING_OPTIONS.items() if home == "env_config")
# The fields of damdjax 0.2's flat stored setting (read by `setting_from_json`).
FLAT_SETTING_FIELDS = ("num_tasks", "num_servers", "density", "slack", "queue_capacity", "tau")


MIGRATION_NOTE = ("note: a stored setting in damdjax 0.2's flat form (num_tasks, ..., tau) "
                  "was read as env and env_config; runs written from now on store that form")


@functools.lru_cache(maxsize=None)
def say_once(line: str) -> None:
    """Print `line` on stderr the first time this process asks."""
    print(line, file=sys.stderr, flush=True)


def derived_env_config(workload: str, env: EnvParams, n_max: int | None = None,
                       m_max: int | None = None,
                       queue_capacity: int = EnvConfig.queue_capacity) -> EnvConfig:
    """The padded sizes of a run at `env`: `n_max` (default `env.num_tasks`), `m_max`
    (default `env.num_servers`) and `queue_capacity`; j_max, p_max and fan_out the
    workload's (`damdjax.workloads.workload_config`), the random generator's defaults
    for ""."""
    return workload_config(workload, n_max=env.num_tasks if n_max is None else n_max,
                           m_max=env.num_servers if m_max is None else m_max,
                           queue_capacity=queue_capacity)


def setting_to_json(env: EnvParams, env_config: EnvConfig, workload: str) -> dict:
    """`{"env": {...}, "env_config": {...}, "workload": spec}`: a run's setting as stored."""
    return {"env": {f.name: getattr(env, f.name) for f in dataclasses.fields(EnvParams)},
            "env_config": dataclasses.asdict(env_config), "workload": workload}


def setting_from_json(d: dict) -> tuple[EnvParams, EnvConfig, str]:
    """`(env, env_config, workload)` of a stored setting (`setting_to_json`'s form, or
    damdjax 0.2's flat FLAT_SETTING_FIELDS, read as that version did: EnvParams'
    defaults for the other knobs, the padded sizes the counts; `MIGRATION_NOTE` on
    stderr, once per process). A missing "workload" is the random generator's. ValueError naming
    a missing or unknown field."""
    workload = d.get("workload", "")
    if "env" not in d and "num_tasks" in d:
        missing = sorted(set(FLAT_SETTING_FIELDS) - set(d))
        if missing:
            raise ValueError(f"stored setting: missing fields {missing}")
        say_once(MIGRATION_NOTE)
        env = EnvParams(**{f: d[f] for f in FLAT_SETTING_FIELDS if f != "queue_capacity"})
        return env, derived_env_config(workload, env, queue_capacity=d["queue_capacity"]), workload
    for key, cls in (("env", EnvParams), ("env_config", EnvConfig)):
        if not isinstance(d.get(key), dict):
            raise ValueError(f"stored setting: {key!r} must be an object, got {d.get(key)!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = sorted(names - set(d[key])), sorted(set(d[key]) - names)
        if missing or unknown:
            raise ValueError(f"stored setting: {key} has missing fields {missing}, "
                             f"unknown fields {unknown}")
    return EnvParams(**d["env"]), EnvConfig(**d["env_config"]), workload


def setting_flags(env: EnvParams, env_config: EnvConfig, workload: str) -> dict:
    """The setting as its flags' values: `{"num_tasks": ..., "n_max": ..., "workload": ...}`
    (SETTING_OPTIONS' fields and `workload`)."""
    homes = {"env": env, "env_config": env_config}
    return {**{k: getattr(homes[home], k) for k, (home, _) in SETTING_OPTIONS.items()},
            "workload": workload}


def parse_setting_range(text: str) -> tuple:
    """"density=1:6" -> (("density", 1.0, 6.0),) (a `SettingRangeGenerator`'s ranges); "" -> ();
    several fields comma-separated. ValueError on a malformed text."""
    out = []
    for part in filter(None, (t.strip() for t in text.split(","))):
        field, eq, span = part.partition("=")
        low, colon, high = span.partition(":")
        try:
            if not (eq and colon):
                raise ValueError
            out.append((field.strip(), float(low), float(high)))
        except ValueError:
            raise ValueError(f"setting range {part!r} must be FIELD=LOW:HIGH") from None
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The fields every trainer's config holds (train.dqn.DQNConfig and
    train.mdqn.MDQNConfig add their own and their replay defaults): the setting
    (SETTING_FIELDS), the rollout, the learning values (defaults: `Hyper`'s), the
    network's hidden widths, the seed and the held-out evaluation size. All
    JSON-serialisable."""

    # the setting (SETTING_OPTIONS names its flags) and where jobs come from
    env: EnvParams = option(EnvParams(), "the setting: the generator's and the rewards' "
                            "knobs", flag=False)
    env_config: EnvConfig | None = option(None, "the padded sizes (None: "
                                          "`derived_env_config`)", flag=False)
    workload: str = option("", WORKLOAD_HELP + "; recorded in config.json, so evaluation "
                           "draws the same jobs; a job longer than --num-tasks is cut when drawn",
                           metavar="SPEC")
    setting_range: str = option("", "FIELD=LOW:HIGH[,...]: drawn per training episode "
                                "(a generalist; eval.figures --generalist)", flag=False)
    # the rollout
    num_envs: int = option(256, "parallel envs")
    num_chunks: int = option(40, "chunks in all", resumable=True)
    steps_per_chunk: int = option(50, "vmapped env steps per chunk (each = num_envs env "
                                  "steps)")
    # learning
    buffer_capacity: int = option(100_000, "replay entries (per agent where there are "
                                  "several; >= num envs)")
    batch_size: int = option(256, "replay batch (per agent where there are several)")
    lr: float = option(Hyper.lr, "Adam learning rate")
    max_grad_norm: float = option(Hyper.max_grad_norm, "global gradient-norm clip")
    gamma: float = option(Hyper.gamma, "discount per {decision}, in [0, 1]")
    eps_start: float = option(Hyper.eps_start, "initial epsilon")
    eps_end: float = option(Hyper.eps_end, "final epsilon")
    eps_decay_steps: int = option(Hyper.eps_decay_steps,
                                  "env steps of the linear epsilon decay")
    target_every: int = option(Hyper.target_every,
                               "gradient updates between target-network copies")
    updates_per_step: int = option(4, "gradient updates per vmapped env step")
    learning_starts: int = option(Hyper.learning_starts, "env steps before the first update")
    double_dqn: float = option(Hyper.double_dqn, "1: double DQN targets (the online network "
                               "picks the next action, the target network values it), 0: max "
                               "targets")
    n_step: int = option(Hyper.n_step, "n-step returns: the discounted rewards of up to this "
                         "many {decision}s, then the target network's bootstrap (1: one-step "
                         "targets)")
    hidden: tuple = option((64, 64), "hidden layer widths, comma-separated")
    seed: int = option(0, "seed of everything, in [0, 2**32 - 1]")
    eval_episodes: int = option(200, "held-out evaluation episodes at the end, 0 to skip",
                                resumable=True)

    decision = "decision"   # what one transition is (the flags' help: --gamma, --n-step)

    def __post_init__(self):
        """Derive `env_config` where it is None (`derived_env_config`), then check the values
        (`check`); a float field given an integer holds it as a float (as its flag would
        give it)."""
        check_setting_types(self.env)
        object.__setattr__(self, "env", float_setting(self.env))
        if self.env_config is None:
            object.__setattr__(self, "env_config", derived_env_config(
                *checked_workload(self.workload, self.env)))
        self.check()
        for f in dataclasses.fields(self):
            if f.type == "float":
                object.__setattr__(self, f.name, float(getattr(self, f.name)))

    @classmethod
    def from_values(cls, **values):
        """The config of flat values, as the flags give them: the SETTING_OPTIONS fields
        (`num_tasks`, ..., `n_max`, `queue_capacity`; a size left out or None is derived)
        nested into `env` and `env_config`, the rest as given. The sizes are checked
        before the `EnvConfig` is built, with the messages their flags give."""
        if values.get("workload"):   # a wfchef spec records the run's seed
            values["workload"] = seeded_workload(
                values["workload"], values.get("seed", cls.__dataclass_fields__["seed"].default))
        setting = {k: values.pop(k) for k in list(values) if k in SETTING_OPTIONS}
        env = EnvParams(**{k: v for k, v in setting.items()
                           if SETTING_OPTIONS[k][0] == "env"})
        sizes = {k: v for k, v in setting.items() if k in SIZE_FIELDS and v is not None}
        env_config = values.pop("env_config", None)
        if sizes:
            check_setting_types(env)
            for name, v in sizes.items():
                check_int(name, v, 1, *int_limit(name))
            env_config = derived_env_config(
                *checked_workload(values.get("workload", ""), env), **sizes)
        return cls(env=env, env_config=env_config, **values)

    def check(self) -> None:
        """Raise a ValueError naming the field at the first bad value (`ConfigError`, or
        `check_hyper`'s and `check_workload`'s messages, which start with the field): every
        field's type; the setting's counts (`check_setting_types`); the program's sizes
        (PROGRAM_INTS) in [1, int32]; `seed` in [0, 2**32 - 1]; `buffer_capacity` >=
        `num_envs`; `hidden` 1..HIDDEN_MAX_LAYERS widths in 1..HIDDEN_MAX_WIDTH;
        `num_chunks` >= 1 and `eval_episodes` >= 0; a
        `setting_range` of the form FIELD=LOW:HIGH; the learning values and the setting
        (`damdjax.hyper.check_hyper`: `env` within `env_config`); the `workload` resolving
        and fitting `env` and `env_config`. Subclasses extend it with their own fields."""
        for f in dataclasses.fields(self):
            if f.name not in ("env", "env_config"):
                check_type(f.name, getattr(self, f.name), FIELD_TYPES[f.type])
        check_setting_types(self.env)
        if not isinstance(self.env_config, EnvConfig):
            raise ConfigError(Field("env_config"), " must be an EnvConfig, got "
                              f"{type(self.env_config).__name__}")
        for name in PROGRAM_INTS:
            check_int(name, getattr(self, name), 1, *int_limit(name))
        check_int("seed", self.seed, 0, *int_limit("seed"))
        if self.buffer_capacity < self.num_envs:
            raise ConfigError(Field("buffer_capacity"), f" ({self.buffer_capacity}) must be >= ",
                              Field("num_envs"), f" ({self.num_envs})")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(Field("hidden"), " widths must be >= 1, got "
                              f"{','.join(map(str, self.hidden))!r}")
        if max(self.hidden) > HIDDEN_MAX_WIDTH or len(self.hidden) > HIDDEN_MAX_LAYERS:
            raise ConfigError(Field("hidden"), f" must be at most {HIDDEN_MAX_LAYERS} widths "
                              f"of at most {HIDDEN_MAX_WIDTH}, got {len(self.hidden)} "
                              f"(largest {max(self.hidden)})")
        check_int("num_chunks", self.num_chunks, 1)
        check_int("eval_episodes", self.eval_episodes, 0)
        try:
            parse_setting_range(self.setting_range)
        except ValueError as err:
            raise ConfigError(Field("setting_range"), f": {err}") from None
        check_hyper(Hyper.from_config(self), self.env_config)
        check_workload(self.workload, self.env.num_tasks, self.env)
        library = self.job_library()
        if library is not None:
            try:
                check_library(library, self.env_config, None)
            except ValueError as err:
                raise ConfigError(Field("workload"), f" {self.workload!r} does not fit "
                                  f"env_config: {err}") from None

    def setting(self) -> dict:
        """The setting as stored (`setting_to_json`)."""
        return setting_to_json(self.env, self.env_config, self.workload)

    def hyper(self) -> Hyper:
        """The run's traced values (`Hyper.from_config`)."""
        return Hyper.from_config(self)

    def with_hyper(self, hyper: Hyper, seed: int):
        """This config at `hyper`'s values (the fields it has of them; e.g. `polyak` it
        lacks) and `seed`: a sweep member's config."""
        names, values = {f.name for f in dataclasses.fields(self)}, hyper.values()
        env = self.env.replace(**{f: values[f] for f in SETTING_FIELDS})
        return dataclasses.replace(self, seed=seed, env=env,
                                   **{k: v for k, v in values.items() if k in names})

    def stage_plan(self) -> list[tuple[str, int, int]]:
        """`[(stage name, chunks, env steps per chunk)]`: one stage (see train.damd)."""
        return [("train", self.num_chunks, self.steps_per_chunk * self.num_envs)]

    def job_library(self) -> JobLibrary | None:
        """The workload's job library (cached per process), None for the random generator."""
        return resolve_workload(self.workload)

    def make_env(self) -> EdgeEnv:
        """The run's env: `env_config`, drawing jobs from the workload where one is set
        and the `setting_range` fields per episode where given."""
        generator = workload_generator(self.job_library())
        ranges = parse_setting_range(self.setting_range)
        if ranges:
            generator = SettingRangeGenerator(generator, ranges)
        return EdgeEnv(self.env_config, generator)

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(self.setting(), hidden=list(self.hidden))
        return d

    @classmethod
    def from_json(cls, d: dict):
        """The config of a stored dict; ValueError naming missing or unknown fields (a run
        written by another version must not silently take today's defaults). The
        exceptions: fields added since (`added_fields`), whose default is what runs did
        before them, so that such runs still resume; a flat setting (damdjax 0.2) is read
        by `setting_from_json`."""
        d = {**cls.added_fields, **d}
        flat = "env" not in d
        env, env_config, workload = setting_from_json(d)
        d = {**{k: v for k, v in d.items() if not (flat and k in FLAT_SETTING_FIELDS)},
             "env": env, "env_config": env_config, "workload": workload}
        names = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = sorted(names - set(d)), sorted(set(d) - names)
        if missing or unknown:
            raise ValueError(f"{cls.__name__}: missing fields {missing}, unknown fields {unknown}")
        if isinstance(d["hidden"], list):   # JSON has no tuples; anything else: check refuses
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)

    @property
    def total_env_steps(self) -> int:
        return self.num_chunks * self.steps_per_chunk * self.num_envs

    def counter_totals(self, prefix: str = "") -> list[tuple[str, int]]:
        """`[(what, final value)]` of the run's int32 counters (env steps, which also bound
        the replay's write stamps, and gradient updates) after `num_chunks`; `what` names
        the flags (with `prefix`, e.g. "dqn-") whose product it is."""
        f = lambda name: f"--{prefix}{name.replace('_', '-')} {getattr(self, name)}"
        per = self.num_chunks * self.steps_per_chunk
        return [(f"{f('num_chunks')} x {f('steps_per_chunk')} x {f('num_envs')} env steps",
                 per * self.num_envs),
                (f"{f('num_chunks')} x {f('steps_per_chunk')} x {f('updates_per_step')} "
                 "gradient updates", per * self.updates_per_step)]

    # The trainer's per-env runner arrays besides the env state and observation (bytes per
    # env), its replay buffer (bytes) and the policies its evaluation plays.
    def runner_env_bytes(self) -> int:
        raise NotImplementedError

    def replay_memory(self) -> int:
        raise NotImplementedError

    def network_params(self) -> int:
        """Parameters of one of the trainer's networks (`damdjax.memory`)."""
        raise NotImplementedError

    def network_sets(self) -> int:
        """How many networks the trainer trains (one per agent where they do not share)."""
        return 1

    eval_methods = 1
    # Fields added after runs were stored, with the value those runs had (`from_json`):
    # the random generator (no workload), one setting, max targets, one-step targets.
    added_fields = {"workload": "", "setting_range": "", "double_dqn": Hyper.double_dqn,
                    "n_step": Hyper.n_step}
    observation_fields = None   # the observation fields the runner carries (None: all)

    def memory_parts(self, prefix: str = "", eval_flag: str = "--eval-episodes"
                     ) -> list[tuple[str, int]]:
        """`[(what, bytes)]` the run holds (`damdjax.memory`): the vmapped env states and
        runner arrays [num_envs], the replay buffer(s), the held-out evaluation, a gradient
        update's batch (`batch_memory`), the networks (online, target and Adam's moments,
        `network_sets` of them); `what` names
        the flags that drive each (with `prefix`, e.g. "dqn-")."""
        c, f = self.env_config, memory.float_bytes()
        per_env = (memory.env_state_bytes(c, f)
                   + memory.observation_bytes(c, f, self.observation_fields)
                   + self.runner_env_bytes())
        # the flags behind the padded sizes: --num-tasks / --num-servers where they set them
        n = (f"--num-tasks {c.n_max}" if c.n_max == self.env.num_tasks else f"--n-max {c.n_max}")
        m = (f"--num-servers {c.m_max}" if c.m_max == self.env.num_servers
             else f"--m-max {c.m_max}")
        setting = f"{n}, {m}, --queue-capacity {c.queue_capacity}"
        return [(f"the vmapped env states (--{prefix}num-envs {self.num_envs} x "
                 f"{memory.human(per_env)} per env at {setting})", self.num_envs * per_env),
                (f"the replay buffer (--{prefix}buffer-capacity {self.buffer_capacity} "
                 f"at {setting})", self.replay_memory()),
                (f"the held-out evaluation ({eval_flag} {self.eval_episodes} x "
                 f"{self.eval_methods + 1} batches at {setting})",
                 memory.evaluation_bytes(c, self.eval_episodes, self.eval_methods, f)),
                (f"a gradient update's sampled batch (--{prefix}batch-size "
                 f"{self.batch_size}: its entries and the networks' activations)",
                 self.batch_memory()),
                (f"the networks (--{prefix}hidden {','.join(map(str, self.hidden))}: "
                 f"{self.network_params()} parameters x {self.network_sets()} "
                 f"network(s) x online, target and Adam's two moments)",
                 memory.network_bytes(self.network_params(), self.network_sets()))]

    def batch_memory(self) -> int:
        """One gradient update's sampled batch: `batch_size` replay entries (per agent
        where there are several, as the buffer's) and the hidden activations of the
        online and target networks over its states and next states, forward and
        backward (a lower bound: XLA may hold more)."""
        entries = self.replay_memory() * self.batch_size // self.buffer_capacity
        activations = (4 * self.batch_size * sum(self.hidden) * memory.float_bytes()
                       * self.network_sets())
        return entries + activations


# The program's sizes: each in [1, int32] (`RunConfig.check`); every value a run may vary
# is a `Hyper` field, checked by `damdjax.hyper.check_hyper` (one set of rules for
# configs, flags, sweeps and train.damd).
PROGRAM_INTS = ("num_envs", "steps_per_chunk", "buffer_capacity", "batch_size",
                "updates_per_step")
# The networks' hidden widths (`hidden`: a run's config, a policy file's meta). A width
# above 2**16 makes a square layer of 2**32 weights, 16 GiB in float32 (64 GiB with the
# target copy and Adam's two moments): more than one device holds; past 64 layers the
# unrolled MLP's compile time dominates while no task here needs more than a few. Within
# them, `memory_parts` counts the networks' bytes against the device.
HIDDEN_MAX_WIDTH = 1 << 16
HIDDEN_MAX_LAYERS = 64


def checked_workload(workload, env: EnvParams) -> tuple[str, EnvParams]:
    """`(workload, env)` once the spec is a string that resolves and fits a run of
    `env.num_tasks` task slots (`damdjax.workloads.check_workload`'s messages)."""
    check_type("workload", workload, str)
    check_workload(workload, env.num_tasks, EnvParams())
    return workload, env


def float_setting(env: EnvParams) -> EnvParams:
    """`env` with every float field a Python float (an integer given for one is traced
    as the float its flag would give)."""
    return env.replace(**{f.name: float(getattr(env, f.name))
                          for f in dataclasses.fields(EnvParams) if f.type == "float"})


def check_setting_types(env) -> None:
    """ConfigError naming the field unless `env` is an `EnvParams` whose counts
    (`num_tasks`, `num_servers`) are integers in [1, int32] (`num_tasks`: the step cap's
    limit) and whose other fields are numbers (their ranges: `check_params`)."""
    if not isinstance(env, EnvParams):
        raise ConfigError(Field("env"), f" must be an EnvParams, got {type(env).__name__}")
    for f in dataclasses.fields(EnvParams):
        if f.name in ("num_tasks", "num_servers"):
            check_int(f.name, getattr(env, f.name), 1, *int_limit(f.name))
        else:
            check_type(f.name, getattr(env, f.name), float)
