"""A run's runner state on the host side: the compiled `init` and `chunk` shared by every
config of a program, the runner a run starts from, and the runner saved to and restored
from the run directory's checkpoint (holding its chunk's metrics rows).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax

from damdjax.checkpoint import load_tree_extra, save_tree
from damdjax.hyper import Hyper
from damdjax.rollout import with_params
from damdjax.rundir import run_paths


@functools.lru_cache(maxsize=8)
def jitted_train(make_train: Callable, program) -> tuple[Callable, Callable]:
    """`(jit(init), jit(chunk))` of `make_train(program)` (`program`: a trainer's
    `program_config`), shared within a process by every config of the same program (any
    seed, hyperparameter values, run length): a resumed run or a second seed compiles
    nothing new."""
    fns = make_train(program)
    return jax.jit(fns.init), jax.jit(fns.chunk)


def first_runner(init: Callable, config, params=None, start_params=None):
    """The runner a single run of `config` starts from: `init(PRNGKey(config.seed), hyper)`
    at `hyper = Hyper.from_config(config, params)` (`params`, an `EnvParams`, where given,
    replaces the setting fields), from `start_params` (a loaded policy's, online and
    target) where given."""
    rs = init(jax.random.PRNGKey(config.seed), Hyper.from_config(config, params))
    return rs if start_params is None else with_params(rs, start_params)


def restore_runner(template, run_dir: str):
    """`(runner, rows)`: the checkpointed runner state of `run_dir`, validated against
    `template`, and the metrics rows of its chunk that the checkpoint holds (None for a
    checkpoint written before it held them). A checkpoint that does not fit `template`
    (another configuration or version) exits with one line naming the first leaf that
    differs."""
    try:
        tree, extra = load_tree_extra(template, run_paths(run_dir)["checkpoint"])
    except ValueError as err:
        raise SystemExit(f"--resume: {err}") from None
    return tree, extra.get("rows")


def save_checkpoint(tree, run_dir: str, rows: list[dict]) -> None:
    """`run_dir/checkpoint.msgpack` holding `tree` and its chunk's metrics `rows` (the
    commit point of a chunk), atomically."""
    save_tree(tree, run_paths(run_dir)["checkpoint"], extra={"rows": rows})
