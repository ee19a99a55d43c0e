"""The flags the trainers share (train.dqn, train.mdqn): run directory, setting, rollout
and DQN hyperparameters, with their checks (one-line `parser.error`, exit 2).

`RunConfig`, the frozen dataclass every trainer's config extends, carries these
fields under the flags' names (`num_tasks`, `lr`, ...; the learning values'
defaults are `damdjax.hyper.Hyper`'s); `add_common_flags(parser, defaults)` declares them
with the config's defaults and `common_from_args(parser, args, defaults)`
returns them checked, as keyword arguments of the config.

`--workload SPEC` (`damdjax.workloads`: "" the random generator, `wfcommons:PATH`,
`alibaba:CSV`, `library:FILE.npz`) is a setting field like the others: recorded in
config.json, it decides the padded sizes (`env_config()`) and the jobs of every env
and held-out evaluation of the run.
"""
from __future__ import annotations

import argparse
import dataclasses
import math

from damdjax import memory
from damdjax.hyper import Hyper, check_hyper
from damdjax.workloads import WORKLOAD_HELP, check_workload, resolve_workload, workload_config
from damdjax.envs.config import INT32_MAX, SEED_MAX, SIZE_LIMITS, EnvConfig, EnvParams
from damdjax.envs.env import EdgeEnv
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
    """"density=1:6" -> (("density", 1.0, 6.0),) (EdgeEnv's `setting_range`); "" -> ();
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

    # environment
    num_tasks: int = EnvParams.num_tasks
    num_servers: int = EnvParams.num_servers
    density: float = EnvParams.density
    slack: float = EnvParams.slack                # deadline slack (EnvParams.slack)
    queue_capacity: int = EnvConfig.queue_capacity
    tau: float = EnvParams.tau                    # reward time constant (EnvParams.tau)
    workload: str = ""                 # where jobs come from (damdjax.workloads; "": generator)
    setting_range: str = ""            # "FIELD=LOW:HIGH": drawn per training episode (a generalist)
    # rollout
    num_envs: int = 256
    num_chunks: int = 40
    steps_per_chunk: int = 50          # vmapped env steps per chunk (each = num_envs env steps)
    # learning
    buffer_capacity: int = 100_000     # replay entries (per agent where there are several)
    batch_size: int = 256              # replay batch (per agent where there are several)
    lr: float = Hyper.lr
    max_grad_norm: float = Hyper.max_grad_norm
    gamma: float = Hyper.gamma
    eps_start: float = Hyper.eps_start
    eps_end: float = Hyper.eps_end
    eps_decay_steps: int = Hyper.eps_decay_steps      # env steps
    target_every: int = Hyper.target_every            # gradient updates between target copies
    updates_per_step: int = 4          # gradient updates per vmapped env step
    learning_starts: int = Hyper.learning_starts      # env steps before the first update
    double_dqn: float = Hyper.double_dqn              # 1: double DQN targets, 0: max targets
    n_step: int = Hyper.n_step                        # decisions summed per target
    hidden: tuple = (64, 64)
    seed: int = 0
    eval_episodes: int = 200

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
        """The run's env: `env_config()`, drawing jobs from the workload where one is set."""
        return EdgeEnv(self.env_config(), workload=self.job_library(),
                       setting_range=parse_setting_range(self.setting_range))

    def env_params(self) -> EnvParams:
        return setting_params(self.setting())

    def flag_values(self) -> dict:
        """Flag destination -> value: the flags that make this config (the stored config's
        recheck, `damdjax.runs.recheck_config`)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        h = self.hidden
        d["hidden"] = ",".join(map(str, h)) if isinstance(h, (list, tuple)) else h
        return d

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


# The program's sizes (checked here); every value a run may vary is a `Hyper` field, checked
# by `damdjax.hyper.check_hyper` (one set of rules for flags, sweeps and train.damd).
PROGRAM_INTS = ("num_tasks", "num_servers", "queue_capacity", "num_envs", "steps_per_chunk",
                "buffer_capacity", "batch_size", "updates_per_step")
VALUE_FIELDS = ("density", "slack", "tau", "lr", "max_grad_norm", "gamma", "eps_start",
                "eps_end", "eps_decay_steps", "target_every", "learning_starts", "double_dqn",
                "n_step")

def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def add_common_flags(p: argparse.ArgumentParser, d, decision: str, name: str) -> None:
    """Declare the shared flags with defaults from the config instance `d`.

    `decision` names what one transition is (for --gamma's help), e.g. "dispatch
    decision"; `name` is the default run name.
    """
    a = p.add_argument
    a("--name", default=name, help="run name: the run directory is RUN_DIR/NAME "
      "(default %(default)s)")
    a("--run-dir", default="runs", help="parent folder of run directories (default %(default)s)")
    a("--overwrite", action="store_true", help="replace an existing run directory")
    a("--resume", action="store_true",
      help="continue from the run directory's checkpoint (its config.json; only --num-chunks "
           "and --eval-episodes may change)")
    add_setting_flags(p, d)
    a("--num-envs", type=int, default=d.num_envs, help="parallel envs (default %(default)s)")
    a("--num-chunks", type=int, default=None,
      help=f"chunks in all (default {d.num_chunks}; with --resume: the stored value)")
    a("--steps-per-chunk", type=int, default=d.steps_per_chunk,
      help="vmapped env steps per chunk (default %(default)s)")
    a("--buffer-capacity", type=int, default=d.buffer_capacity,
      help="replay entries (per agent where there are several; >= num envs; "
           "default %(default)s)")
    a("--batch-size", type=int, default=d.batch_size,
      help="replay batch (per agent where there are several; default %(default)s)")
    a("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    a("--max-grad-norm", type=float, default=d.max_grad_norm,
      help="global gradient-norm clip (default %(default)s)")
    a("--gamma", type=float, default=d.gamma,
      help=f"discount per {decision}, in [0, 1] (default %(default)s)")
    a("--eps-start", type=float, default=d.eps_start, help="initial epsilon (default %(default)s)")
    a("--eps-end", type=float, default=d.eps_end, help="final epsilon (default %(default)s)")
    a("--eps-decay-steps", type=int, default=d.eps_decay_steps,
      help="env steps of the linear epsilon decay (default %(default)s)")
    a("--target-every", type=int, default=d.target_every,
      help="gradient updates between target-network copies (default %(default)s)")
    a("--updates-per-step", type=int, default=d.updates_per_step,
      help="gradient updates per vmapped env step (default %(default)s)")
    a("--learning-starts", type=int, default=d.learning_starts,
      help="env steps before the first update (default %(default)s)")
    a("--double-dqn", type=float, default=d.double_dqn,
      help="1: double DQN targets (the online network picks the next action, the target "
           "network values it), 0: max targets (default %(default)s)")
    a("--n-step", type=int, default=d.n_step,
      help=f"n-step returns: the discounted rewards of up to this many {decision}s, then "
           "the target network's bootstrap (1: one-step targets; default %(default)s)")
    a("--hidden", default=",".join(map(str, d.hidden)),
      help="hidden layer widths, comma-separated (default %(default)s)")
    a("--seed", type=int, default=d.seed,
      help="seed of everything, in [0, 2**32 - 1] (default %(default)s)")
    a("--eval-episodes", type=int, default=None,
      help=f"held-out evaluation episodes at the end, 0 to skip (default {d.eval_episodes})")


def add_setting_flags(p: argparse.ArgumentParser, d) -> None:
    """--num-tasks, --num-servers, --density, --slack, --queue-capacity, --tau (defaults from
    `d`)."""
    a = p.add_argument
    a("--num-tasks", type=int, default=d.num_tasks, help="tasks per episode (default %(default)s)")
    a("--num-servers", type=int, default=d.num_servers, help="edge servers (default %(default)s)")
    a("--density", type=float, default=d.density,
      help="task arrival density, tasks per time unit (default %(default)s)")
    a("--slack", type=float, default=d.slack,
      help="deadline slack: deadline = arrival + slack x the task's critical-path time on an "
           "average server (default %(default)s)")
    a("--queue-capacity", type=int, default=d.queue_capacity,
      help="queue slots per server (default %(default)s)")
    a("--tau", type=float, default=d.tau,
      help="reward time constant (EnvParams.tau) (default %(default)s)")
    a("--workload", default=d.workload, metavar="SPEC",
      help=f"{WORKLOAD_HELP}; recorded in config.json, so evaluation draws the same jobs; "
           "--num-tasks must hold its longest job")


def check_workload_flag(p: argparse.ArgumentParser, spec: str, num_tasks: int) -> None:
    """`p.error` (one line naming the value) unless `--workload spec` resolves and fits
    `num_tasks` task slots and the default server memory (`workloads.check_workload`)."""
    try:
        check_workload(spec, num_tasks, EnvParams())
    except ValueError as err:
        p.error(f"--{err}")


def check_positive(p: argparse.ArgumentParser, args, ints=(), floats=()) -> None:
    """Integer flags `ints` in [1, INT32_MAX] (they size or count device arrays, int32) and
    float flags `floats` finite and > 0, else `p.error`."""
    for name in ints:
        check_int_flag(p, _flag(name), getattr(args, name), 1, *int_limit(name))
    for name in floats:
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            p.error(f"{_flag(name)} must be > 0, got {v}")


def parse_hidden(p: argparse.ArgumentParser, text: str) -> tuple[int, ...]:
    try:
        hidden = tuple(int(x) for x in text.split(","))
    except ValueError:
        p.error(f"--hidden must be comma-separated integers, got {text!r}")
    if not hidden or min(hidden) < 1:
        p.error(f"--hidden widths must be >= 1, got {text!r}")
    return hidden


def check_int_flag(p: argparse.ArgumentParser, flag: str, value: int, low: int,
                   high: int = INT32_MAX, why: str = "int32") -> None:
    """`p.error` (one line naming the flag, the value and the limit) unless `low <= value
    <= high` (default: the int32 maximum, as every count reaches an int32 array)."""
    if value < low:
        p.error(f"{flag} must be >= {low}, got {value}")
    if value > high:
        p.error(f"{flag} must be <= {high} ({why}), got {value}")


def int_limit(name: str) -> tuple[int, str]:
    """`(largest value, why)` of an integer flag: int32, but --num-tasks, whose step cap
    `2 N + 2` must fit int32 (`damdjax.envs.config.SIZE_LIMITS`), and --seed, `damdjax.envs.config.SEED_MAX`
    (seeds are >= 0: `check_int_flag(p, "--seed", v, 0, *int_limit("seed"))`)."""
    if name == "num_tasks":
        return SIZE_LIMITS["n_max"], "the step cap 2 N + 2 must fit int32"
    if name == "seed":
        return SEED_MAX, "PRNGKey keeps 32 bits"
    return INT32_MAX, "int32"


def check_counts(p: argparse.ArgumentParser, args) -> None:
    """--num-chunks >= 1 and --eval-episodes >= 0 where given (also with --resume), both
    within int32."""
    for name, low in (("num_chunks", 1), ("eval_episodes", 0)):
        v = getattr(args, name, None)
        if v is not None:
            check_int_flag(p, _flag(name), v, low)


def check_program(p: argparse.ArgumentParser, cfg) -> None:
    """Before anything is allocated or compiled (new runs and resumes alike): every int32
    counter of the run stays within int32 to its last chunk (`cfg.counter_totals()`), and
    the memory it holds (`cfg.memory_parts()`, `damdjax.memory`) fits the device (or, on
    CPU, the host). Else `p.error`: one line with the estimate and the flags behind it."""
    for what, total in cfg.counter_totals():
        if total > INT32_MAX:
            p.error(f"{what} = {total} overflow the int32 counters (at most {INT32_MAX})")
    try:
        memory.check_memory(cfg.memory_parts())
    except ValueError as err:
        p.error(str(err))


def common_from_args(p: argparse.ArgumentParser, args, d) -> dict:
    """The shared fields, checked, as config keyword arguments (defaults from `d`)."""
    check_positive(p, args, PROGRAM_INTS)
    check_int_flag(p, "--seed", args.seed, 0, *int_limit("seed"))
    if args.buffer_capacity < args.num_envs:
        p.error(f"--buffer-capacity ({args.buffer_capacity}) must be >= --num-envs "
                f"({args.num_envs})")
    kw = {name: getattr(args, name) for name in PROGRAM_INTS + VALUE_FIELDS + ("seed",)}
    kw["hidden"] = parse_hidden(p, args.hidden)
    kw["num_chunks"] = d.num_chunks if args.num_chunks is None else args.num_chunks
    kw["eval_episodes"] = d.eval_episodes if args.eval_episodes is None else args.eval_episodes
    check_workload_flag(p, args.workload, args.num_tasks)
    kw["workload"] = args.workload
    try:
        check_hyper(Hyper.from_config(argparse.Namespace(**kw)), setting_config(kw))
    except ValueError as err:
        p.error(flag_message(err, Hyper.field_names()))
    return kw


def flag_message(err: ValueError, fields) -> str:
    """`check_hyper`'s one-line error with the value's name as its flag (`lr must be > 0`
    -> `--lr must be > 0`) where it names one of `fields`."""
    name, _, rest = str(err).partition(" ")
    return f"{_flag(name)} {rest}" if name in fields else str(err)
