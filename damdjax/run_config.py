"""The config every trainer's config extends (`RunConfig`), and the setting it names.

`RunConfig` carries the fields every trainer shares under the flags' names
(`num_tasks`, `lr`, ...; the learning values' defaults are `damdjax.hyper.Hyper`'s),
each declared with its flag's help (`damdjax.configs.option`), and checks itself
on construction (`RunConfig.check`). `--workload SPEC` (`damdjax.workloads`: "" the
random generator, `wfcommons:PATH`, `alibaba:CSV`, `library:FILE.npz`) is a setting
field like the others: recorded in config.json, it decides the padded sizes
(`env_config()`) and the jobs of every env and held-out evaluation of the run.
"""
from __future__ import annotations

import dataclasses

from damdjax import memory
from damdjax.configs import FIELD_TYPES, ConfigError, Field, check_int, check_type, int_limit, option
from damdjax.hyper import Hyper, check_hyper
from damdjax.workloads import WORKLOAD_HELP, check_workload, resolve_workload, workload_config
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.generators import SettingRangeGenerator, workload_generator
from damdjax.envs.workload import JobLibrary

# The environment setting a run is trained and evaluated at (trainer config fields, run
# files and eval.compare's flags all use these names).
SETTING_FIELDS = ("num_tasks", "num_servers", "density", "slack", "queue_capacity", "tau",
                  "workload")


def setting_config(s: dict) -> EnvConfig:
    """The static shapes of a setting dict (keys SETTING_FIELDS; a missing "workload" is
    the random generator's): j_max and p_max are the workload's (`workload_config`)."""
    return workload_config(s.get("workload", ""), n_max=s["num_tasks"], m_max=s["num_servers"],
                           queue_capacity=s["queue_capacity"])


def setting_workload(s: dict) -> JobLibrary | None:
    """The job library of a setting dict's workload (None: the random generator)."""
    return resolve_workload(s.get("workload", ""))


def setting_params(s: dict) -> EnvParams:
    """The generator/reward knobs of a setting dict (keys SETTING_FIELDS); the rest default."""
    return EnvParams(num_tasks=s["num_tasks"], num_servers=s["num_servers"],
                     density=s["density"], slack=s["slack"], tau=s["tau"])


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

    # the setting
    num_tasks: int = option(EnvParams.num_tasks,
                            "tasks per episode (also the padded task slots)")
    num_servers: int = option(EnvParams.num_servers,
                              "edge servers (also the padded server slots)")
    density: float = option(EnvParams.density, "task arrival density, tasks per time unit")
    slack: float = option(EnvParams.slack, "deadline slack: deadline = arrival + slack x the "
                          "task's critical-path time on an average server")
    queue_capacity: int = option(EnvConfig.queue_capacity, "queue slots per server")
    tau: float = option(EnvParams.tau, "reward time constant (EnvParams.tau)")
    workload: str = option("", WORKLOAD_HELP + "; recorded in config.json, so evaluation "
                           "draws the same jobs; --num-tasks must hold its longest job",
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
        """Check the values (`check`); a float field given an integer holds it as a float
        (as its flag would give it)."""
        self.check()
        for f in dataclasses.fields(self):
            if f.type == "float":
                object.__setattr__(self, f.name, float(getattr(self, f.name)))

    def check(self) -> None:
        """Raise a ValueError naming the field at the first bad value (`ConfigError`, or
        `check_hyper`'s and `check_workload`'s messages, which start with the field): every
        field's type; the program's sizes (PROGRAM_INTS) in [1, int32] (`num_tasks`: the
        step cap's limit); `seed` in [0, 2**32 - 1]; `buffer_capacity` >= `num_envs`;
        `hidden` widths >= 1; `num_chunks` >= 1 and `eval_episodes` >= 0; a
        `setting_range` of the form FIELD=LOW:HIGH; the `workload` resolving and fitting;
        the learning values and the setting (`damdjax.hyper.check_hyper`). Subclasses
        extend it with their own fields."""
        for f in dataclasses.fields(self):
            check_type(f.name, getattr(self, f.name), FIELD_TYPES[f.type])
        for name in PROGRAM_INTS:
            check_int(name, getattr(self, name), 1, *int_limit(name))
        check_int("seed", self.seed, 0, *int_limit("seed"))
        if self.buffer_capacity < self.num_envs:
            raise ConfigError(Field("buffer_capacity"), f" ({self.buffer_capacity}) must be >= ",
                              Field("num_envs"), f" ({self.num_envs})")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(Field("hidden"), " widths must be >= 1, got "
                              f"{','.join(map(str, self.hidden))!r}")
        check_int("num_chunks", self.num_chunks, 1)
        check_int("eval_episodes", self.eval_episodes, 0)
        try:
            parse_setting_range(self.setting_range)
        except ValueError as err:
            raise ConfigError(Field("setting_range"), f": {err}") from None
        check_workload(self.workload, self.num_tasks, EnvParams())
        check_hyper(Hyper.from_config(self), self.env_config())

    def setting(self) -> dict:
        return {k: getattr(self, k) for k in SETTING_FIELDS}

    def hyper(self) -> Hyper:
        """The run's traced values (`Hyper.from_config`)."""
        return Hyper.from_config(self)

    def with_hyper(self, hyper: Hyper, seed: int):
        """This config at `hyper`'s values (the fields it has of them; e.g. `polyak` it
        lacks) and `seed`: a sweep member's config."""
        names = {f.name for f in dataclasses.fields(self)}
        return dataclasses.replace(self, seed=seed, **{k: v for k, v in hyper.values().items()
                                                       if k in names})

    def stage_plan(self) -> list[tuple[str, int, int]]:
        """`[(stage name, chunks, env steps per chunk)]`: one stage (see train.damd)."""
        return [("train", self.num_chunks, self.steps_per_chunk * self.num_envs)]

    def env_config(self) -> EnvConfig:
        """The padded sizes: the workload's `required_config` where one is set."""
        return setting_config(self.setting())

    def job_library(self) -> JobLibrary | None:
        """The workload's job library (cached per process), None for the random generator."""
        return resolve_workload(self.workload)

    def make_env(self) -> EdgeEnv:
        """The run's env: `env_config()`, drawing jobs from the workload where one is set
        and the `setting_range` fields per episode where given."""
        generator = workload_generator(self.job_library())
        ranges = parse_setting_range(self.setting_range)
        if ranges:
            generator = SettingRangeGenerator(generator, ranges)
        return EdgeEnv(self.env_config(), generator)

    def env_params(self) -> EnvParams:
        return setting_params(self.setting())

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_json(cls, d: dict):
        """The config of a stored dict; ValueError naming missing or unknown fields (a run
        written by another version must not silently take today's defaults). The
        exceptions: fields added since (`added_fields`), whose default is what runs did
        before them, so that such runs still resume."""
        d = {**cls.added_fields, **d}
        names = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = sorted(names - set(d)), sorted(set(d) - names)
        if missing or unknown:
            raise ValueError(f"{cls.__name__}: missing fields {missing}, unknown fields {unknown}")
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

    eval_methods = 1
    # Fields added after runs were stored, with the value those runs had (`from_json`):
    # the random generator (no workload), one setting, max targets, one-step targets.
    added_fields = {"workload": "", "setting_range": "", "double_dqn": Hyper.double_dqn,
                    "n_step": Hyper.n_step}
    observation_fields = None   # the observation fields the runner carries (None: all)

    def memory_parts(self, prefix: str = "", eval_flag: str = "--eval-episodes"
                     ) -> list[tuple[str, int]]:
        """`[(what, bytes)]` the run holds (`damdjax.memory`): the vmapped env states and
        runner arrays [num_envs], the replay buffer(s), the held-out evaluation; `what`
        names the flags that drive each (with `prefix`, e.g. "dqn-")."""
        c, f = self.env_config(), memory.float_bytes()
        per_env = (memory.env_state_bytes(c, f)
                   + memory.observation_bytes(c, f, self.observation_fields)
                   + self.runner_env_bytes())
        setting = (f"--num-tasks {self.num_tasks}, --num-servers {self.num_servers}, "
                   f"--queue-capacity {self.queue_capacity}")
        return [(f"the vmapped env states (--{prefix}num-envs {self.num_envs} x "
                 f"{memory.human(per_env)} per env at {setting})", self.num_envs * per_env),
                (f"the replay buffer (--{prefix}buffer-capacity {self.buffer_capacity} "
                 f"at {setting})", self.replay_memory()),
                (f"the held-out evaluation ({eval_flag} {self.eval_episodes} x "
                 f"{self.eval_methods + 1} batches at {setting})",
                 memory.evaluation_bytes(c, self.eval_episodes, self.eval_methods, f))]


# The program's sizes: each in [1, int32] (`RunConfig.check`); every value a run may vary
# is a `Hyper` field, checked by `damdjax.hyper.check_hyper` (one set of rules for
# configs, flags, sweeps and train.damd).
PROGRAM_INTS = ("num_tasks", "num_servers", "queue_capacity", "num_envs", "steps_per_chunk",
                "buffer_capacity", "batch_size", "updates_per_step")
