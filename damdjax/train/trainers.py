"""The trainers by name, and what every trainer module offers (`Trainer`).

`make_train(config)` builds the compiled training functions of whichever trainer
takes `config` (a `DQNConfig`, `MDQNConfig` or `DAMDConfig`): the PureJaxRL-style
entry point of the library (`damdjax.make_train`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from damdjax.rollout import TrainFns
from damdjax.train import damd, dqn, mdqn


class Trainer(NamedTuple):
    """What the sweep needs of a trainer module (train.dqn, train.mdqn, train.damd): its
    config class (with `hyper()`, `with_hyper(hyper, seed)`, `stage_plan()`, `seed`,
    `num_chunks`, `eval_episodes`, `env_config`, `env`, `job_library()`,
    `to_json()` and
    `from_json`) and `make_train(config, axis_name)`, `program_config(config)`,
    `add_flags(parser, name, init)`, `config_from_args(parser, args)`,
    `greedy_policy(config, params, time_scale)` and `save_policy_file(run_dir, config,
    params)`."""

    config_class: type
    make_train: Callable
    program_config: Callable
    add_flags: Callable
    config_from_args: Callable
    greedy_policy: Callable
    save_policy_file: Callable


def _trainer(module, config_class: type) -> Trainer:
    return Trainer(config_class, *(getattr(module, f) for f in Trainer._fields[1:]))


# name -> trainer
TRAINERS = {"dqn": _trainer(dqn, dqn.DQNConfig), "mdqn": _trainer(mdqn, mdqn.MDQNConfig),
            "damd": _trainer(damd, damd.DAMDConfig)}
DEFAULT_TRAINER = "dqn"


def trainer_of(config) -> Trainer:
    """The trainer whose config class `config` is an instance of."""
    for t in TRAINERS.values():
        if isinstance(config, t.config_class):
            return t
    raise TypeError(f"no trainer takes a {type(config).__name__}")


def make_train(config, axis_name: str | None = None) -> TrainFns:
    """The trainer's `TrainFns` (`init(key, hyper)`, `chunk(runner, hyper)`, ...) for
    `config`: `dqn.make_train`, `mdqn.make_train` or `damd.make_train` by its type."""
    return trainer_of(config).make_train(config, axis_name)
