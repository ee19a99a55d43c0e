"""What every config dataclass shares: checks whose errors name the field, and the
field's flag.

A config checks itself on construction (`__post_init__`) and raises `ConfigError`
(a ValueError) naming the field as written in Python (`lr must be > 0, got -1`);
the command lines build the same config from their flags and print the same
message with the field's flag in its place (`--lr must be > 0, got -1`,
`flag_message`). One set of rules serves Python, the flags and a stored
config.json read back (`from_json`).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

from damdjax.envs.config import INT32_MAX, SEED_MAX, SIZE_LIMITS

# A config field's annotation -> the kind `check_type` checks (and its flag's type).
FIELD_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "tuple": tuple}


def option(default, help: str, *, flag: bool = True, metavar: str | None = None,
           resumable: bool = False):
    """A config field with what its command-line flag needs (`damdjax.cli.add_config_flags`):
    `help` (may name `{decision}`, the config class's `decision`), `flag` False for a
    field without a flag, `metavar`, and `resumable`: the flag defaults to None so that
    --resume can tell it was given (--num-chunks, --eval-episodes)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "flag": flag, "metavar": metavar, "resumable": resumable})


class Field(str):
    """A config field's name inside a `ConfigError`'s message."""


class ConfigError(ValueError):
    """A bad config value. The message is `parts` joined: text, and the `Field`s it names
    (written as in Python; `written(name_of)` writes each as `name_of(field)`, e.g. its
    flag)."""

    def __init__(self, *parts):
        self.parts = parts
        super().__init__("".join(map(str, parts)))

    def written(self, name_of) -> str:
        return "".join(name_of(p) if isinstance(p, Field) else str(p) for p in self.parts)


def flag(field: str, prefix: str = "") -> str:
    """The flag of a config field: `eps_start` -> `--eps-start` (`prefix` "dqn_":
    `--dqn-eps-start`)."""
    return "--" + (prefix + field).replace("_", "-")


def flag_message(err: ValueError, fields: Iterable[str] = (), prefix_of=None) -> str:
    """`err`'s message with each field it names written as its flag: a `ConfigError`'s
    `Field`s, else the first word where it is one of `fields` (the form of
    `damdjax.hyper.check_hyper`'s messages). `prefix_of(field)`: the flag prefix of a field
    (train.damd's stage flags, `--dqn-lr`); default none."""
    text = str(err)
    prefix_of = prefix_of or (lambda field: "")
    if isinstance(err, ConfigError):
        return err.written(lambda f: flag(f, prefix_of(f)))
    name, _, rest = text.partition(" ")
    return f"{flag(name, prefix_of(name))} {rest}" if name in set(fields) else text


def check_type(field: str, value, kind: type) -> None:
    """ConfigError unless `value` is of `kind`: int (not a bool), float (an int or a
    float), bool, str, or tuple (of ints)."""
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        what = "an integer"
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        what = "a number"
    elif kind is bool:
        ok, what = isinstance(value, bool), "true or false"
    elif kind is str:
        ok, what = isinstance(value, str), "a string"
    else:
        ok = (isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool)
                                               for v in value))
        what = "a tuple of integers"
    if not ok:
        raise ConfigError(Field(field), f" must be {what}, got {value!r}")


def check_int(field: str, value: int, low: int, high: int = INT32_MAX,
              why: str = "int32") -> None:
    """ConfigError naming the field, the value and the limit unless `low <= value <= high`
    (default: the int32 maximum, as every count reaches an int32 array)."""
    check_type(field, value, int)
    if value < low:
        raise ConfigError(Field(field), f" must be >= {low}, got {value}")
    if value > high:
        raise ConfigError(Field(field), f" must be <= {high} ({why}), got {value}")


def check_choice(field: str, value: str, choices: Iterable[str]) -> None:
    """ConfigError unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(Field(field), f" must be one of {', '.join(choices)}, got {value!r}")


def int_limit(name: str) -> tuple[int, str]:
    """`(largest value, why)` of an integer field: int32, but `num_tasks`, whose step cap
    `2 N + 2` must fit int32 (`damdjax.envs.config.SIZE_LIMITS`), and `seed`,
    `damdjax.envs.config.SEED_MAX` (seeds are >= 0)."""
    if name == "num_tasks":
        return SIZE_LIMITS["n_max"], "the step cap 2 N + 2 must fit int32"
    if name == "seed":
        return SEED_MAX, "PRNGKey keeps 32 bits"
    return INT32_MAX, "int32"
