"""The trainers' shared command line (train.dqn, train.mdqn, train.damd, train.sweep):
the run flags checked and the run directory opened (`open_run`: a new run, an
--overwrite, or a --resume checked before anything is written), a single run trained
(`train_single`), its held-out evaluation written (`write_evaluation`), and a whole
trainer's `main` (`trainer_main`).

The run directory itself is `damdjax.rundir`'s (marker, lock, --overwrite), the
metrics log `damdjax.runlog`'s, the runner's checkpoint `damdjax.runner`'s and the loop over chunks `damdjax.chunks`'s.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable

from damdjax import run_inputs, rundir
from damdjax.checkpoint import read_file
from damdjax.chunks import RunStopped, chunk_loop, divergence
from damdjax.cli import check_counts, check_program, explicit_flags
from damdjax.io import write_json_atomic
from damdjax.runlog import check_log, metrics_row, progress_line
from damdjax.runner import restore_runner, save_checkpoint

# Flags that may be given with --resume (besides these, the stored config rules).
RESUME_FLAGS = frozenset({"name", "run_dir", "resume", "num_chunks", "eval_episodes"})


def open_run(parser: argparse.ArgumentParser, build_parser, args, argv, *,
             config_from_args: Callable, config_from_json: Callable[[dict], Any],
             resume_flags: frozenset = RESUME_FLAGS,
             refuse_resume: Callable[[str], str | None] | None = None) -> tuple[Any, str]:
    """Check the run flags, take `RUN_DIR/NAME` and prepare it; returns `(config, run_dir)`.
    Use the run inside `with rundir.held(run_dir):` (it releases the lock). The config
    returned is the run's local one (`damdjax.run_inputs`): the files it reads by path
    (job library, partner policy, starting parameters) are the run directory's copies,
    made when the run starts; config.json keeps the values the user gave.

    First, with nothing written, `rundir.resolve` checks --name and --run-dir and gives
    the run directory's one path (RUN_DIR's links resolved: every trainer and spelling
    locks the same file; a run directory that is a link is refused). Every refusal of
    the run directory is one line (`parser.error`, exit 2) naming the path or the name.

    New run: `config_from_args(parser, args)` (which may `parser.error`), then the lock,
    then the folder is created with its marker (refused if it exists, unless
    --overwrite and it holds the marker: then the old run is moved aside until the new
    one's first checkpoint). --resume: the lock, then the folder checked to hold only
    regular files and folders (`rundir.check_tree`: no link to follow), then the stored
    config.json (a dataclass with `num_chunks` and `eval_episodes` fields, or an object
    with a `with_counts(num_chunks=, eval_episodes=)` method; either with `env_config`,
    `check_inputs()` and `to_json()`) read back with `config_from_json`, which checks its
    values by the config's own rules (the flags' messages, written with field names),
    then the files it names (`check_inputs`), every checkpoint in the folder verified
    and the metrics files read, all before anything is written; then --num-chunks and
    --eval-episodes applied where given; any flag outside `resume_flags` is refused
    rather than silently ignored; it needs the run's checkpoint.msgpack, and
    `refuse_resume(run_dir)`, where given, may refuse the directory first (the reason it
    returns, one line; None: resumable). A refused resume writes nothing. (A
    multi-process run opens it in process 0 alone, which sends the others what it read:
    train.sweep's `open_shared`.) Either way the config passes `cli.check_program` (int32 counters, the
    memory estimate) before anything is written.
    """
    run_dir = _or_exit(parser, rundir.resolve, args.run_dir, args.name)
    paths = rundir.run_paths(run_dir)
    if args.resume:
        if args.overwrite:
            parser.error("--resume and --overwrite exclude each other")
        others = explicit_flags(build_parser, argv) - resume_flags
        if others:
            flags = ", ".join("--" + d.replace("_", "-") for d in sorted(others))
            allowed = ", ".join("--" + d.replace("_", "-") for d in sorted(
                resume_flags - {"name", "run_dir", "resume"}))
            parser.error(f"--resume continues the stored configuration; it takes only "
                         f"{allowed}, not {flags}")
        if not os.path.isdir(run_dir) and not os.path.lexists(rundir.aside_path(run_dir)):
            parser.error(f"--resume: no run directory {run_dir}")
        why = refuse_resume(run_dir) if refuse_resume is not None else None
        if why:
            parser.error(f"--resume: {why}")
    else:
        cfg = config_from_args(parser, args)
        check_program(parser, cfg)
    _or_exit(parser, rundir.make_parent, run_dir)
    _or_exit(parser, rundir.take, run_dir)
    try:
        _or_exit(parser, rundir.recover, run_dir)
        if args.resume:
            cfg, stored = _resume_config(parser, args, run_dir, config_from_json)
            check_program(parser, cfg)
            if not rundir.has_marker(run_dir):  # an older version's run
                rundir.write_marker(run_dir)
            rundir.remove_stale(run_dir)
            stored = run_inputs.as_stored(cfg.to_json(), stored)
        else:
            if os.path.lexists(run_dir):
                if not args.overwrite:
                    parser.error(f"run directory {run_dir} exists: pass --overwrite or --resume")
                if not rundir.has_marker(run_dir):
                    parser.error(f"--overwrite: {run_dir} is not a damdjax run directory (no "
                                 f"{rundir.MARKER} marker); not deleting it")
                _or_exit(parser, rundir.set_aside, run_dir)
            os.makedirs(run_dir)
            rundir.write_marker(run_dir)
            stored, cfg = cfg.to_json(), run_inputs.keep(cfg, run_dir)
        write_json_atomic(stored, paths["config"])
    except BaseException:
        rundir.release(run_dir)
        raise
    return cfg, run_dir


def _or_exit(parser: argparse.ArgumentParser, fn: Callable, *args, prefix: str = ""):
    """`fn(*args)`, its ValueError (a run directory's one-line refusal) turned into
    `parser.error` (exit 2), after `prefix`."""
    try:
        return fn(*args)
    except ValueError as err:
        parser.error(f"{prefix}{err}")


def _with_counts(cfg, args):
    counts = {k: getattr(args, k, None) for k in ("num_chunks", "eval_episodes")
              if getattr(args, k, None) is not None}
    return (cfg.with_counts(**counts) if hasattr(cfg, "with_counts")
            else dataclasses.replace(cfg, **counts))


def _resume_config(parser, args, run_dir: str, config_from_json: Callable):
    """`(local config, stored config.json)` of a run to resume, checked as `open_run` says
    (no write). The local config reads the run's own copies of its inputs, and no init
    file (`run_inputs.for_resume`)."""
    paths = rundir.run_paths(run_dir)
    _or_exit(parser, rundir.check_tree, run_dir, prefix="--resume: ")
    if not (os.path.exists(paths["checkpoint"]) and os.path.exists(paths["config"])):
        parser.error(f"--resume: no checkpoint in {run_dir}")
    try:
        with open(paths["config"]) as f:
            stored = json.load(f)
    except ValueError as err:
        parser.error(f"--resume: {paths['config']} is not a valid config ({err})")
    local = _or_exit(parser, run_inputs.for_resume, stored, run_dir, prefix="--resume: ")
    try:
        cfg = config_from_json(local)
        cfg.check_inputs()   # the files it names (the run's copies, or a scheduler rule)
        cfg.env_config  # resolves its recorded workload (a file gone: refused here)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        parser.error(f"--resume: {paths['config']} is not a valid config ({err})")
    try:
        for root, _, files in os.walk(run_dir):
            if rundir.CHECKPOINT in files:
                read_file(os.path.join(root, rundir.CHECKPOINT))   # its checksum
            check_log(os.path.join(root, rundir.METRICS))
    except ValueError as err:
        parser.error(f"--resume: {err}")
    return _with_counts(cfg, args), stored


def train_single(cfg, run_dir: str, resume: bool, *, runner, chunk: Callable,
                 save_policy_file: Callable) -> tuple[Any, bool]:
    """A trainer's single run (the host side of its `make_train(cfg)`): from `runner` (its
    initial state) or, with `resume`, the checkpoint in `run_dir`, `chunk(runner) ->
    (runner, metrics)` (jitted, at the run's `Hyper`) until `cfg.num_chunks`
    (`chunk_loop`: after each chunk the checkpoint, `save_policy_file(run_dir, cfg,
    params)`, one metrics row and a progress line; Ctrl-C between chunks). Returns
    `(runner, interrupted)`.

    `runner` needs `chunk`, `env_steps` and `updates` scalars; the chunk's metrics
    need `episodes`, `avg_response_time`, `deadline_miss_rate`, `loss`, `epsilon`.
    """
    restored = None
    if resume:
        runner, restored = restore_runner(runner, run_dir)
    steps = cfg.steps_per_chunk * cfg.num_envs

    def save(rs, new_rows):
        save_checkpoint(rs, run_dir, new_rows)

    def rows(rs, m, dt):
        return [metrics_row(int(rs.chunk), int(rs.env_steps), int(rs.updates), dt, steps, m)]

    return chunk_loop(
        chunk, runner, num_chunks=cfg.num_chunks, chunks_done=lambda r: int(r.chunk),
        run_dir=run_dir, save=save, rows=rows, progress=lambda rs_: progress_line(rs_[0]),
        header=f"run {run_dir}: {cfg.num_chunks} chunks x {steps} env steps, "
               f"from chunk {int(runner.chunk)}",
        save_policy=lambda rs: save_policy_file(run_dir, cfg, rs.params),
        restored_rows=restored,
        diverged=lambda rs, m: divergence(rs.params, m["loss"]))


def write_evaluation(cfg, q_params, run_dir: str, evaluate: Callable, format_eval: Callable
                     ) -> dict | None:
    """The held-out evaluation at the end of a run (`evaluate(cfg, q_params, episodes)`):
    written to `run_dir/eval.json` and printed; None when `cfg.eval_episodes` is 0."""
    if cfg.eval_episodes <= 0:
        return None
    ev = evaluate(cfg, q_params, cfg.eval_episodes)
    write_json_atomic(ev, os.path.join(run_dir, "eval.json"))
    print(format_eval(ev), flush=True)
    return ev


def report_stop(err: RunStopped) -> int:
    """Print a stopped run's one line on stderr; the command's exit code, 1."""
    print(f"error: {err}", file=sys.stderr, flush=True)
    return 1


def trainer_main(argv, *, build_parser: Callable[[], argparse.ArgumentParser],
                 config_from_args: Callable, config_from_json: Callable, train: Callable,
                 evaluate: Callable, format_eval: Callable) -> int:
    """A trainer's command line: parse and check flags (`config_from_args(parser, args)`),
    open the run directory, train (`train(cfg, run_dir, resume) -> (runner, interrupted)`),
    evaluate. Returns the exit code: 0, or 130 after Ctrl-C."""
    p = build_parser()
    args = p.parse_args(argv)
    check_counts(p, args)
    cfg, run_dir = open_run(p, build_parser, args, argv, config_from_args=config_from_args,
                            config_from_json=config_from_json)
    with rundir.held(run_dir):
        try:
            rs, interrupted = train(cfg, run_dir, args.resume)
        except RunStopped as err:
            return report_stop(err)
        if interrupted:
            return 130
        write_evaluation(cfg, rs.params, run_dir, evaluate, format_eval)
    return 0
