"""Run directories and the host loop shared by the trainers (train.dqn, train.mdqn).

A run directory `RUN_DIR/NAME/` holds `config.json`, `metrics.jsonl` (one row
per chunk), `checkpoint.msgpack` (the whole runner state: resume is exact)
and the trainer's policy file. The loop runs compiled chunks, writes the
checkpoint (atomically) and then the chunk's metrics row, and prints one
progress line per chunk. Ctrl-C stops it between writes: the checkpoint is
always a complete earlier chunk, and `--resume` drops log rows past it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import signal
import threading
import time
from typing import Any, Callable, Sequence

import jax

from damdjax.checkpoint import load_tree, save_tree
from damdjax.cli import check_counts, check_program
from damdjax.hyper import Hyper
from damdjax.io import write_bytes_atomic, write_json_atomic
from damdjax.rollout import with_params
from damdjax.sharding import to_host

CHECKPOINT = "checkpoint.msgpack"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
# Flags that may be given with --resume (besides these, the stored config rules).
RESUME_FLAGS = frozenset({"name", "run_dir", "resume", "num_chunks", "eval_episodes"})


def explicit_flags(build_parser: Callable[[], argparse.ArgumentParser],
                   argv: Sequence[str] | None) -> set[str]:
    """Destinations of the flags actually given in `argv` (not defaulted)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    given, _ = p.parse_known_args(argv)
    return set(vars(given))


def run_paths(run_dir: str) -> dict[str, str]:
    return {"config": os.path.join(run_dir, CONFIG), "checkpoint": os.path.join(run_dir, CHECKPOINT),
            "metrics": os.path.join(run_dir, METRICS)}


def open_run(parser: argparse.ArgumentParser, build_parser, args, argv, *,
             config_from_args: Callable[[], Any], config_from_json: Callable[[dict], Any],
             resume_flags: frozenset = RESUME_FLAGS, writer: bool = True,
             checkpoint: str = CHECKPOINT) -> tuple[Any, str]:
    """Check the run flags and prepare `RUN_DIR/NAME`; returns `(config, run_dir)`.

    New run: `config_from_args()` (which may `parser.error`), then the folder is
    created (refused if it exists, unless --overwrite). --resume: the stored
    config.json (a dataclass with `num_chunks` and `eval_episodes` fields, or an object
    with a `with_counts(num_chunks=, eval_episodes=)` method; either with `env_config()`,
    which resolves its recorded workload) with --num-chunks and
    --eval-episodes applied where given; any flag outside `resume_flags` is refused
    rather than silently ignored; it needs `checkpoint` (a path inside the run directory:
    train.damd's first stage's) to exist. With `writer` False (not the first process of
    a multi-host run) nothing is created or written. Either way the config passes
    `cli.check_program` (int32 counters, the memory estimate) before anything is written.
    """
    if not args.name or os.sep in args.name or args.name in (".", ".."):
        parser.error(f"--name must be a plain folder name, got {args.name!r}")
    run_dir = os.path.join(args.run_dir, args.name)
    paths = run_paths(run_dir)
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
        if not (os.path.exists(os.path.join(run_dir, checkpoint))
                and os.path.exists(paths["config"])):
            parser.error(f"--resume: no checkpoint in {run_dir}")
        try:
            with open(paths["config"]) as f:
                cfg = config_from_json(json.load(f))
            cfg.env_config()  # resolves its recorded workload (a file gone: refused here)
        except (ValueError, TypeError, KeyError) as err:
            parser.error(f"--resume: {paths['config']} is not a valid config ({err})")
        counts = {k: getattr(args, k, None) for k in ("num_chunks", "eval_episodes")
                  if getattr(args, k, None) is not None}
        cfg = (cfg.with_counts(**counts) if hasattr(cfg, "with_counts")
               else dataclasses.replace(cfg, **counts))
        check_program(parser, cfg)
    else:
        cfg = config_from_args()
        check_program(parser, cfg)
        if writer:  # (the other processes of a multi-host run may see it made already)
            if os.path.exists(run_dir):
                if not args.overwrite:
                    parser.error(f"run directory {run_dir} exists: pass --overwrite or --resume")
                shutil.rmtree(run_dir)
            os.makedirs(run_dir)
    if writer:
        write_json_atomic(cfg.to_json(), paths["config"])
    return cfg, run_dir


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
    """The checkpointed runner state of `run_dir`, validated against `template`."""
    return load_tree(template, run_paths(run_dir)["checkpoint"])


def _trim_log(path: str, chunk: int) -> None:
    """Drop metrics rows past `chunk` (written after the checkpoint a resume starts from)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip()]
    keep = [ln for ln in lines if json.loads(ln)["chunk"] <= chunk]
    if len(keep) != len(lines):
        write_bytes_atomic("".join(keep).encode(), path)


def _fmt(value, width: int, digits: int) -> str:
    """A number, or '-' (right-aligned) where there is none."""
    return f"{value:{width}.{digits}f}" if value is not None else "-".rjust(width)


def progress_line(row: dict) -> str:
    return (f"chunk {row['chunk']:>4}  env steps {row['env_steps']:>10}  "
            f"{row['env_steps_per_s']:>9.0f}/s  updates {row['updates']:>7}  "
            f"episodes {int(row['episodes']):>5}  resp {_fmt(row['avg_response_time'], 7, 3)}  "
            f"miss {_fmt(row['deadline_miss_rate'], 5, 3)}  loss {row['loss']:.4f}  "
            f"eps {row['epsilon']:.3f}")


@contextlib.contextmanager
def _sigint_deferred(prefix: str):
    """Within the block, the first Ctrl-C only sets `flag["stop"]` (the loop stops at its
    next check, never between a checkpoint and its log row); a second one aborts at once."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        flag["stop"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(f"\n{prefix}Ctrl-C: stopping after this chunk is saved (again to abort)",
              flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def chunk_loop(train_chunk: Callable, rs, *, num_chunks: int, chunks_done: Callable[[Any], int],
               run_dir: str, save: Callable[[Any], None],
               rows: Callable[[Any, dict, float], list[dict]],
               progress: Callable[[list[dict]], str], header: str, label: str = "",
               writer: bool = True) -> tuple[Any, bool]:
    """Run `train_chunk` until `chunks_done(rs) == num_chunks`; returns `(rs, interrupted)`.

    Before: metrics rows past the state's chunk are dropped (a resume) and `header` is
    printed. After each chunk: `rows(rs, metrics on the host, seconds)`, `save(rs)` (the
    checkpoint, atomic, and any policy file), then the rows appended to metrics.jsonl
    and `progress(rows)` printed. Ctrl-C stops the loop once the current chunk is fully
    recorded and returns it with `interrupted=True` (a second Ctrl-C aborts at once; the
    checkpoint is still a complete chunk, being written atomically). With `writer`
    False (a process other than the first of a multi-host run) the loop writes no log;
    `save` is called on every process (it may gather) and writes only where it should.
    """
    paths = run_paths(run_dir)
    if writer:
        _trim_log(paths["metrics"], chunks_done(rs))
    prefix = f"[{label}] " if label else ""
    print(prefix + header, flush=True)
    with _sigint_deferred(prefix) as flag:
        while chunks_done(rs) < num_chunks and not flag["stop"]:
            t0 = time.perf_counter()
            rs, m = train_chunk(rs)
            m = to_host(m)
            dt = time.perf_counter() - t0
            new_rows = rows(rs, m, dt)
            save(rs)
            if writer:
                with open(paths["metrics"], "a") as log:
                    log.write("".join(json.dumps(row) + "\n" for row in new_rows))
            print(prefix + progress(new_rows), flush=True)
    if flag["stop"]:
        print(f"{prefix}interrupted: {paths['checkpoint']} holds chunk {chunks_done(rs)}; "
              f"continue with --resume", flush=True)
    return rs, flag["stop"]


def metrics_row(chunk: int, env_steps: int, updates: int, seconds: float,
                env_steps_per_chunk: int, metrics: dict) -> dict:
    """One run's metrics.jsonl row for a chunk: its counters, timing and `metrics` (scalars
    on the host: `episodes`, `avg_response_time`, `deadline_miss_rate`, ...), the two
    episode means None where no episode ended in the chunk (nothing to average)."""
    row = {"chunk": chunk, "env_steps": env_steps, "updates": updates, "seconds": seconds,
           "env_steps_per_s": env_steps_per_chunk / seconds,
           **{k: float(v) for k, v in metrics.items()}}
    if row["episodes"] == 0:
        row["avg_response_time"] = row["deadline_miss_rate"] = None
    return row


def train_single(cfg, run_dir: str, resume: bool, label: str, *, runner, chunk: Callable,
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
    if resume:
        runner = restore_runner(runner, run_dir)
    checkpoint = run_paths(run_dir)["checkpoint"]
    steps = cfg.steps_per_chunk * cfg.num_envs

    def save(rs):
        save_tree(rs, checkpoint)
        save_policy_file(run_dir, cfg, rs.params)

    def rows(rs, m, dt):
        return [metrics_row(int(rs.chunk), int(rs.env_steps), int(rs.updates), dt, steps, m)]

    return chunk_loop(
        chunk, runner, num_chunks=cfg.num_chunks, chunks_done=lambda r: int(r.chunk),
        run_dir=run_dir, save=save, rows=rows, progress=lambda rs_: progress_line(rs_[0]),
        header=f"run {run_dir}: {cfg.num_chunks} chunks x {steps} env steps, "
               f"from chunk {int(runner.chunk)}", label=label)


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


def trainer_main(argv, *, build_parser: Callable[[], argparse.ArgumentParser],
                 config_from_args: Callable, config_from_json: Callable, train: Callable,
                 evaluate: Callable, format_eval: Callable) -> int:
    """A trainer's command line: parse and check flags (`config_from_args(parser, args)`),
    open the run directory, train (`train(cfg, run_dir, resume) -> (runner, interrupted)`),
    evaluate. Returns the exit code: 0, or 130 after Ctrl-C."""
    p = build_parser()
    args = p.parse_args(argv)
    check_counts(p, args)
    cfg, run_dir = open_run(p, build_parser, args, argv,
                            config_from_args=lambda: config_from_args(p, args),
                            config_from_json=config_from_json)
    rs, interrupted = train(cfg, run_dir, args.resume)
    if interrupted:
        return 130
    write_evaluation(cfg, rs.params, run_dir, evaluate, format_eval)
    return 0
