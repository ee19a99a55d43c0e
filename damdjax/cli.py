"""The command-line flags: generated from the config dataclasses' fields, read back into
a config that checks itself, and the run-directory and program checks of the trainers.

Every config field declared with `damdjax.configs.option` has a flag of the same name
(`num_envs` -> `--num-envs`; train.damd's stages with a prefix, `--dqn-lr`), typed by
the field's annotation, its help and default the field's: `add_config_flags` declares
them, `config_values` reads them back as keyword arguments, and `config_or_exit`
builds the config, printing its check's message with the fields written as flags.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Callable, Iterable, Sequence

from damdjax import memory
from damdjax.configs import FIELD_TYPES, flag, flag_message
from damdjax.io import check_output
from damdjax.hyper import Hyper
from damdjax.run_config import SETTING_OPTIONS, RunConfig
from damdjax.workloads import check_workload
from damdjax.envs.config import INT32_MAX, EnvConfig, EnvParams
from damdjax.envs.convert import seed_type

# The field names a check's message may start with (`damdjax.configs.flag_message`).
FLAG_FIELDS = (frozenset(f.name for f in dataclasses.fields(RunConfig)) | set(Hyper.field_names())
               | set(SETTING_OPTIONS) | {"grid", "seeds", "trainer", "rounds"})
# The fields `add_common_flags` declares for every single-run trainer (train.dqn,
# train.mdqn): the setting's (SETTING_OPTIONS) and RunConfig's own.
COMMON_FIELDS = tuple(SETTING_OPTIONS) + tuple(f.name for f in dataclasses.fields(RunConfig)
                                               if f.metadata["flag"])


def add_run_flags(p: argparse.ArgumentParser, name: str, resume_help: str) -> None:
    """--name (default `name`), --run-dir, --overwrite and --resume (`resume_help`)."""
    a = p.add_argument
    a("--name", default=name, help="run name: the run directory is RUN_DIR/NAME "
      "(default %(default)s)")
    a("--run-dir", default="runs", help="parent folder of run directories (default %(default)s)")
    a("--overwrite", action="store_true", help="replace an existing run directory")
    a("--resume", action="store_true", help=resume_help)


def add_common_flags(p: argparse.ArgumentParser, cls: type, name: str) -> None:
    """The run flags and a flag for every `RunConfig` field of the trainer's config class
    `cls` (its defaults and `decision`)."""
    add_run_flags(p, name, "continue from the run directory's checkpoint (its config.json; "
                  "only --num-chunks and --eval-episodes may change)")
    add_config_flags(p, cls, COMMON_FIELDS)


@dataclasses.dataclass(frozen=True)
class _Flag:
    """What a field's flag needs: its type, default, help, metavar, resumable."""
    kind: type
    default: object
    help: str
    metavar: str | None = None
    resumable: bool = False


def _flag_of(cls: type, name: str, defaults) -> _Flag:
    """The flag of field `name` of `cls` (declared with `damdjax.configs.option`), or of a
    setting field (`damdjax.run_config.SETTING_OPTIONS`: an `EnvParams` field, default
    `defaults.env`'s or EnvParams'; a padded size, default `defaults.env_config`'s, or
    derived (None) for `n_max`/`m_max`)."""
    if name in SETTING_OPTIONS:
        home, text = SETTING_OPTIONS[name]
        if home == "env":
            f = {f.name: f for f in dataclasses.fields(EnvParams)}[name]
            env = defaults.env if defaults is not None else EnvParams()
            return _Flag(FIELD_TYPES[f.type], getattr(env, name), text)
        if name in ("n_max", "m_max"):
            return _Flag(int, None, text)
        sizes = defaults.env_config if defaults is not None else EnvConfig()
        return _Flag(int, getattr(sizes, name), text)
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = f.metadata
    return _Flag(FIELD_TYPES[f.type], getattr(defaults, name) if defaults is not None
                 else f.default, meta["help"], meta["metavar"], meta["resumable"])


def add_config_flags(p: argparse.ArgumentParser, cls: type, names: Iterable[str], *,
                     prefix: str = "", defaults=None, help_prefix: str = "",
                     unset: dict[str, str] | None = None) -> None:
    """A flag for each field `names` of the config class `cls` (declared with
    `damdjax.configs.option`): `--{prefix}{name}` (dashes for underscores), typed by the
    field's annotation (a bool: a switch; a tuple: comma-separated integers), its help
    (`help_prefix` before it, `{decision}` the class's) and default (`defaults`' value,
    an instance of `cls`, else the field's; a resumable field's flag defaults to None).
    `unset`: fields whose flag defaults to None, the command deciding the value (its
    help ends with the text given, e.g. "the run's recorded value")."""
    unset = unset or {}
    for name in names:
        spec = _flag_of(cls, name, defaults)
        if name in unset:
            spec = dataclasses.replace(spec, default=None,
                                       help=f"{spec.help} (default: {unset[name]})")
        kind, default = spec.kind, spec.default
        text = help_prefix + spec.help.format(decision=getattr(cls, "decision", "decision"))
        opts = {"metavar": spec.metavar} if spec.metavar else {}
        if kind is bool:
            p.add_argument(flag(name, prefix), action="store_true",
                           help=f"{text} (default {'on' if default else 'off'})")
        elif spec.resumable:
            p.add_argument(flag(name, prefix), type=kind, default=None, **opts,
                           help=f"{text} (default {default}; with --resume: the stored value)")
        elif kind is tuple:
            p.add_argument(flag(name, prefix), default=",".join(map(str, default)), **opts,
                           help=f"{text} (default %(default)s)")
        elif default is None:
            p.add_argument(flag(name, prefix), type=kind, default=None, **opts, help=text)
        else:
            p.add_argument(flag(name, prefix), type=kind, default=default, **opts,
                           help=f"{text} (default %(default)s)")


def config_values(p: argparse.ArgumentParser, args, cls: type, names: Iterable[str], *,
                  prefix: str = "", defaults=None) -> dict:
    """The fields `names` of `cls` as keyword arguments, read from the flags
    `add_config_flags` declared (unchecked: the config checks itself); a resumable flag
    left out takes `defaults`' (or the field's) value."""
    out = {}
    for name in names:
        spec = _flag_of(cls, name, defaults)
        v = getattr(args, prefix + name)
        if v is None and spec.resumable:
            v = spec.default
        if spec.kind is tuple:
            v = parse_widths(p, flag(name, prefix), v)
        out[name] = v
    return out


def add_seed_flag(p: argparse.ArgumentParser, help: str, default: int = 0,
                  name: str = "--seed") -> None:
    """A seed flag, checked as it is parsed: an integer in [0, 2**32 - 1] (what
    `jax.random.PRNGKey` keeps), else argparse's one-line error naming the flag and the
    value. Every command's seed flags are declared here (the trainers' by `RunConfig`)."""
    p.add_argument(name, type=seed_type, default=default,
                   help=f"{help}, in [0, 2**32 - 1] (default %(default)s)")


def parse_widths(p: argparse.ArgumentParser, flag_name: str, text: str) -> tuple[int, ...]:
    """"64,64" -> (64, 64), or `p.error` naming the flag (the widths' values are the
    config's to check)."""
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        p.error(f"{flag_name} must be comma-separated integers, got {text!r}")


def check_out_flag(p: argparse.ArgumentParser, out: str | None, inputs=()) -> None:
    """`p.error` (one line) unless `--out` is absent or can be written without harming an
    input (`damdjax.io.check_output`): call it before any work."""
    if out is not None:
        try:
            check_output(out, inputs)
        except ValueError as err:
            p.error(str(err))


def check_workload_flag(p: argparse.ArgumentParser, spec: str, num_tasks: int) -> None:
    """`p.error` (one line naming the value) unless `--workload spec` resolves and fits
    `num_tasks` task slots and the default server memory (`workloads.check_workload`)."""
    try:
        check_workload(spec, num_tasks, EnvParams())
    except ValueError as err:
        p.error(f"--{err}")


def check_int_flag(p: argparse.ArgumentParser, flag: str, value: int, low: int,
                   high: int = INT32_MAX, why: str = "int32") -> None:
    """`p.error` (one line naming the flag, the value and the limit) unless `low <= value
    <= high` (default: the int32 maximum, as every count reaches an int32 array)."""
    if value < low:
        p.error(f"{flag} must be >= {low}, got {value}")
    if value > high:
        p.error(f"{flag} must be <= {high} ({why}), got {value}")


def check_counts(p: argparse.ArgumentParser, args) -> None:
    """--num-chunks >= 1 and --eval-episodes >= 0 where given (also with --resume), both
    within int32."""
    for name, low in (("num_chunks", 1), ("eval_episodes", 0)):
        v = getattr(args, name, None)
        if v is not None:
            check_int_flag(p, flag(name), v, low)


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


def config_or_exit(p: argparse.ArgumentParser, make, prefix_of=None):
    """`make()` (a config's construction, which checks it), or `p.error` with its
    ValueError's message, the fields written as their flags (`damdjax.configs.flag_message`;
    `prefix_of(field)`: train.damd's stage prefixes)."""
    try:
        return make()
    except ValueError as err:
        p.error(flag_message(err, FLAG_FIELDS, prefix_of))


def config_from_flags(p: argparse.ArgumentParser, args, cls: type, own: Iterable[str],
                      init_field: str):
    """A single-run trainer's config (class `cls`) from its flags: the `RunConfig` fields,
    its `own` fields and `init_field` where the parser offers it; the config checks its
    values, then the files it names (`check_inputs`). One-line `p.error` otherwise."""
    names = COMMON_FIELDS + tuple(own) + ((init_field,) if hasattr(args, init_field) else ())
    cfg = config_or_exit(p, lambda: cls.from_values(**config_values(p, args, cls, names)))
    config_or_exit(p, cfg.check_inputs)
    return cfg


def explicit_flags(build_parser: Callable[[], argparse.ArgumentParser],
                   argv: Sequence[str] | None) -> set[str]:
    """Destinations of the flags actually given in `argv` (not defaulted)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    given, _ = p.parse_known_args(argv)
    return set(vars(given))
