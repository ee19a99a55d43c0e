"""Run directories and the host loop shared by the trainers (train.dqn, train.mdqn,
train.damd, train.sweep).

A run directory `RUN_DIR/NAME/` holds `config.json`, `metrics.jsonl` (one row
per chunk), `checkpoint.msgpack` (the whole runner state: resume is exact),
the trainer's policy file and the marker `.damdjax-run` (what `--overwrite`
requires before it deletes anything). It belongs to one process at a time:
`open_run` takes an exclusive `fcntl.flock` on `RUN_DIR/.NAME.lock` for the
whole run; a second command on the same name is refused with one line naming
the holder.

The loop runs compiled chunks. After each, the checkpoint is replaced
(atomically, checksummed) holding the chunk's metrics rows; then the policy
file is written and the rows appended to metrics.jsonl. The checkpoint is the
commit point: `--resume` rebuilds metrics.jsonl and the policy file from it
(rows past it dropped, a missing last row restored, a torn last line
dropped), so a kill -9 at any instant leaves a run that resumes to the same
files. `--overwrite` moves the old run aside (`RUN_DIR/.NAME.replaced`) and
deletes it only once the new run's first checkpoint exists; a new run that
fails or is stopped before that puts it back (a killed one: the next command
on the name does). Ctrl-C stops the loop between chunks.

Test hook: DAMDJAX_TEST_KILL_AT=POINT[:CHUNK] makes the process SIGKILL
itself at POINT (after-chunk, after-checkpoint, after-policy, after-metrics)
of chunk CHUNK (any chunk where omitted; a chunk counts within its stage);
only the kill tests set it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable, Sequence

import jax

from damdjax.checkpoint import load_tree_extra, read_file, save_tree
from damdjax.cli import check_counts, check_program
from damdjax.hyper import Hyper
from damdjax.io import remove_stale_temps, warn, write_bytes_atomic, write_json_atomic
from damdjax.rollout import with_params
from damdjax.sharding import to_host

CHECKPOINT = "checkpoint.msgpack"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
MARKER = ".damdjax-run"          # says "a damdjax run directory": --overwrite may delete it
KILL_ENV = "DAMDJAX_TEST_KILL_AT"
# Flags that may be given with --resume (besides these, the stored config rules).
RESUME_FLAGS = frozenset({"name", "run_dir", "resume", "num_chunks", "eval_episodes"})

# run directory -> {"fd": lock file descriptor, "aside": the old run's path or None,
# "checkpoint": the first checkpoint's path}: the runs this process holds.
_OPEN: dict[str, dict] = {}


def kill_point(point: str, chunk: int) -> None:
    """The kill tests' hook (KILL_ENV): SIGKILL this process at `point` of `chunk`."""
    want = os.environ.get(KILL_ENV)
    if not want:
        return
    name, _, at = want.partition(":")
    if name == point and (not at or int(at) == chunk):
        os.kill(os.getpid(), signal.SIGKILL)


def _side_paths(run_dir: str) -> tuple[str, str]:
    """`(lock file, aside folder)` of `run_dir`: siblings `.NAME.lock`, `.NAME.replaced`."""
    parent, name = os.path.split(os.path.normpath(run_dir))
    return os.path.join(parent, f".{name}.lock"), os.path.join(parent, f".{name}.replaced")


def _lock(run_dir: str) -> int:
    """An exclusive flock on `run_dir`'s lock file (holder's pid and command written in
    it); ValueError naming the holder where another process has it."""
    path = _side_paths(run_dir)[0]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ValueError(f"run directory {run_dir} is in use by {holder} "
                         f"(lock {path}); wait for it or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:200]})\n".encode(), 0)
    return fd


def _recover(run_dir: str, checkpoint: str) -> None:
    """Finish an --overwrite that a kill interrupted: the old run set aside comes back if
    the new one never reached its first checkpoint, else it is deleted."""
    aside = _side_paths(run_dir)[1]
    if not os.path.isdir(aside):
        return
    if os.path.exists(os.path.join(run_dir, checkpoint)):
        shutil.rmtree(aside)
        return
    if os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    os.rename(aside, run_dir)
    warn(f"{run_dir}: an --overwrite was interrupted before its first checkpoint; "
         f"the earlier run is back")


def _release(run_dir: str) -> None:
    """Give up `run_dir` (see `held`)."""
    entry = _OPEN.pop(run_dir, None)
    if entry is None:
        return
    try:
        if entry["aside"] is not None:  # the new run never reached its first checkpoint
            if os.path.exists(entry["checkpoint"]):
                shutil.rmtree(entry["aside"])
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
                os.rename(entry["aside"], run_dir)
                print(f"{run_dir}: the new run made no checkpoint; the earlier run is kept",
                      file=sys.stderr, flush=True)
    finally:
        os.close(entry["fd"])


@contextlib.contextmanager
def held(run_dir: str):
    """The block that uses a run directory `open_run` opened: on leaving it (normally or
    not) the lock is released and, where an --overwrite's new run made no checkpoint, the
    earlier run put back."""
    try:
        yield run_dir
    finally:
        _release(run_dir)


def _settle(run_dir: str) -> None:
    """A checkpoint now exists in `run_dir` (or a stage folder inside it): the run an
    --overwrite set aside is deleted."""
    real = os.path.abspath(run_dir)
    for root, entry in _OPEN.items():
        top = os.path.abspath(root)
        if entry["aside"] is not None and (real == top or real.startswith(top + os.sep)):
            shutil.rmtree(entry["aside"], ignore_errors=True)
            entry["aside"] = None


class _Refused(ValueError):
    """A parser error raised instead of exiting (a stored config's values rechecked)."""


def _raising_parser(build_parser) -> argparse.ArgumentParser:
    p = build_parser()

    def error(message):
        raise _Refused(message)
    p.error = error
    return p


def config_argv(parser: argparse.ArgumentParser, values: dict) -> list[str]:
    """The command line that sets `values` (flag destination -> value; a list for a
    multi-value flag, a bool for a switch) on `parser`'s flags; destinations without a
    flag are left out."""
    argv = []
    for action in parser._actions:
        if action.dest not in values or not action.option_strings:
            continue
        v = values[action.dest]
        if isinstance(action, argparse._StoreTrueAction):
            if v is True:
                argv.append(action.option_strings[0])
            elif v is not False:
                raise ValueError(f"{action.dest} must be true or false, got {v!r}")
        elif action.nargs in ("+", "*"):
            if v:
                argv += [action.option_strings[0], *map(str, v)]
        else:
            if isinstance(v, (list, dict)) or v is None:
                raise ValueError(f"{action.dest} has a bad value {v!r}")
            argv += [action.option_strings[0], str(v)]
    return argv


def _first_difference(stored, made, where: str = "") -> str | None:
    """Where `stored` (a config's JSON as read) differs from `made` (as the flags make
    it): a value, or its type (an int field holding 1.5 or "8", a bool holding 1)."""
    if isinstance(made, dict):
        if not isinstance(stored, dict) or set(stored) != set(made):
            return where or "root"
        for k in made:
            d = _first_difference(stored[k], made[k], f"{where}.{k}" if where else k)
            if d:
                return d
        return None
    if isinstance(made, (list, tuple)):
        if not isinstance(stored, (list, tuple)) or len(stored) != len(made):
            return where
        for i, (a, b) in enumerate(zip(stored, made)):
            d = _first_difference(a, b, f"{where}[{i}]")
            if d:
                return d
        return None
    if isinstance(made, bool) or isinstance(stored, bool):
        return None if type(made) is type(stored) and made == stored else where
    if isinstance(made, float):
        return None if isinstance(stored, (int, float)) and stored == made else where
    return None if type(stored) is type(made) and stored == made else where


def recheck_config(cfg, build_parser, config_from_args: Callable) -> None:
    """ValueError (one line) unless the stored config `cfg` is what its own flags
    (`cfg.flag_values()`, `config_argv`) make through `config_from_args(parser, args)`:
    the flags' checks, types and values (damdjax.hyper.check_hyper, the trainers'
    `config_from_args`), applied to a stored config."""
    p = _raising_parser(build_parser)
    try:
        argv = config_argv(p, cfg.flag_values())
        made = config_from_args(p, p.parse_args(argv))
    except (_Refused, ValueError, TypeError) as err:
        raise ValueError(str(err)) from None
    stored = cfg.to_json()
    where = _first_difference(stored, made.to_json())
    if where is not None:
        value = functools.reduce(
            lambda d, k: d[k] if isinstance(d, dict) else d, where.split("."), stored)
        raise ValueError(f"{where} = {value!r} is not a valid value")


def check_log(path: str) -> None:
    """ValueError naming `path` and the line where a metrics file holds a line that is not
    a JSON row (a torn last line, a killed append, is allowed: the resume drops it)."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
            row["chunk"]
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:   # no newline after it: a torn append
                continue
            raise ValueError(f"{path}: line {i + 1} is not a metrics row") from None


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
             config_from_args: Callable, config_from_json: Callable[[dict], Any],
             resume_flags: frozenset = RESUME_FLAGS, writer: bool = True,
             checkpoint: str = CHECKPOINT,
             config_parser: Callable[[Any], Callable] | None = None) -> tuple[Any, str]:
    """Check the run flags, take `RUN_DIR/NAME` and prepare it; returns `(config, run_dir)`.
    Use the run inside `with held(run_dir):` (it releases the lock).

    New run: `config_from_args(parser, args)` (which may `parser.error`), then the lock,
    then the folder is created with its marker (refused if it exists, unless
    --overwrite and it holds the marker: then the old run is moved aside until the new
    one's first checkpoint). --resume: the lock, then the stored config.json (a
    dataclass with `num_chunks` and `eval_episodes` fields, or an object with a
    `with_counts(num_chunks=, eval_episodes=)` method; either with `env_config()`,
    `flag_values()` and `to_json()`) rechecked through the flags (`recheck_config`),
    every checkpoint in the folder verified and the metrics files read, all before
    anything is written; then --num-chunks and --eval-episodes applied where given; any
    flag outside `resume_flags` is refused rather than silently ignored; it needs
    `checkpoint` (a path inside the run directory: train.damd's first stage's) to exist.
    `config_parser(cfg)`, where given, is the `build_parser` that rechecks a stored
    config (train.sweep: its trainer's flags). A refused resume writes nothing. With
    `writer` False (not the first process of a
    multi-host run) nothing is locked, created or written. Either way the config
    passes `cli.check_program` (int32 counters, the memory estimate) before anything is
    written.
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
        if not os.path.isdir(run_dir) and not os.path.isdir(_side_paths(run_dir)[1]):
            parser.error(f"--resume: no run directory {run_dir}")
    else:
        cfg = config_from_args(parser, args)
        check_program(parser, cfg)
    if not writer:  # (the other processes of a multi-host run: the first one writes)
        if args.resume:
            with open(paths["config"]) as f:
                cfg = _with_counts(config_from_json(json.load(f)), args)
            check_program(parser, cfg)
        return cfg, run_dir
    os.makedirs(args.run_dir, exist_ok=True)
    try:
        fd = _lock(run_dir)
    except ValueError as err:
        parser.error(str(err))
    entry = {"fd": fd, "aside": None, "checkpoint": os.path.join(run_dir, checkpoint)}
    _OPEN[run_dir] = entry
    try:
        _recover(run_dir, checkpoint)
        if args.resume:
            cfg = _resume_config(parser, build_parser, args, run_dir, checkpoint,
                                 config_from_args, config_from_json, config_parser)
            check_program(parser, cfg)
            if not os.path.exists(os.path.join(run_dir, MARKER)):  # an older version's run
                write_bytes_atomic(b"damdjax run directory\n", os.path.join(run_dir, MARKER))
            for path in remove_stale_temps(run_dir):
                print(f"removed {path} (a write a kill interrupted)", flush=True)
        else:
            if os.path.exists(run_dir):
                if not args.overwrite:
                    parser.error(f"run directory {run_dir} exists: pass --overwrite or --resume")
                if not os.path.exists(os.path.join(run_dir, MARKER)):
                    parser.error(f"--overwrite: {run_dir} is not a damdjax run directory (no "
                                 f"{MARKER} marker); not deleting it")
                entry["aside"] = _side_paths(run_dir)[1]
                os.rename(run_dir, entry["aside"])
            os.makedirs(run_dir)
            write_bytes_atomic(b"damdjax run directory\n", os.path.join(run_dir, MARKER))
        write_json_atomic(cfg.to_json(), paths["config"])
    except BaseException:
        _release(run_dir)
        raise
    return cfg, run_dir


def _with_counts(cfg, args):
    counts = {k: getattr(args, k, None) for k in ("num_chunks", "eval_episodes")
              if getattr(args, k, None) is not None}
    return (cfg.with_counts(**counts) if hasattr(cfg, "with_counts")
            else dataclasses.replace(cfg, **counts))


def _resume_config(parser, build_parser, args, run_dir: str, checkpoint: str,
                   config_from_args: Callable, config_from_json: Callable, config_parser=None):
    """The stored config of a run to resume, checked as `open_run` says (no write)."""
    paths = run_paths(run_dir)
    if not (os.path.exists(os.path.join(run_dir, checkpoint))
            and os.path.exists(paths["config"])):
        parser.error(f"--resume: no checkpoint in {run_dir}")
    try:
        with open(paths["config"]) as f:
            cfg = config_from_json(json.load(f))
        recheck_config(cfg, config_parser(cfg) if config_parser else build_parser,
                       config_from_args)
        cfg.env_config()  # resolves its recorded workload (a file gone: refused here)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        parser.error(f"--resume: {paths['config']} is not a valid config ({err})")
    try:
        for root, _, files in os.walk(run_dir):
            if CHECKPOINT in files:
                read_file(os.path.join(root, CHECKPOINT))   # its checksum
            check_log(os.path.join(root, METRICS))
    except ValueError as err:
        parser.error(f"--resume: {err}")
    return _with_counts(cfg, args)


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


def _rows_text(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _repair_log(path: str, chunk: int, rows: list[dict] | None) -> None:
    """metrics.jsonl made to match a checkpoint of `chunk` holding `rows`: the rows of
    earlier chunks kept, the checkpoint's own rows in place of whatever the file holds for
    `chunk` (a missing or torn row restored), later rows dropped. `rows` None (an older
    checkpoint): rows past `chunk` dropped, a torn last line too."""
    text = open(path, "rb").read().decode(errors="replace") if os.path.exists(path) else ""
    kept = []
    for ln in text.split("\n"):
        try:
            row = json.loads(ln)
        except ValueError:
            continue   # blank, or the torn last line (check_log refused any other)
        if row["chunk"] < chunk or (rows is None and row["chunk"] == chunk):
            kept.append(row)
    new = _rows_text(kept + (rows or []))
    if new != text and (new or os.path.exists(path)):
        write_bytes_atomic(new.encode(), path)


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
               run_dir: str, save: Callable[[Any, list[dict]], None],
               rows: Callable[[Any, dict, float], list[dict]],
               progress: Callable[[list[dict]], str], header: str, label: str = "",
               writer: bool = True, save_policy: Callable[[Any], None] | None = None,
               restored_rows: list[dict] | None = None,
               checkpoint_every: int = 1) -> tuple[Any, bool]:
    """Run `train_chunk` until `chunks_done(rs) == num_chunks`; returns `(rs, interrupted)`.

    Before, where `rs` is a checkpoint's (chunks done > 0; `restored_rows` its rows):
    metrics.jsonl is rebuilt to match it (`_repair_log`) and `save_policy(rs)` rewrites
    the policy file from it; then `header` is printed. After each chunk: `rows(rs, metrics
    on the host, seconds)`, `save(rs, rows)` (the checkpoint holding the rows:
    `save_checkpoint`; the commit point), `save_policy(rs)`, the rows appended to
    metrics.jsonl and `progress(rows)` printed. With `checkpoint_every` K > 1, `save` and
    `save_policy` run only after every K-th chunk, the last one and the one Ctrl-C stops
    at (a big sweep's checkpoint can take longer to write than a chunk to run); the rows
    of the chunks between are logged all the same, and a resume from the checkpoint
    drops them and runs those chunks again (the same values: a chunk is a function of the
    checkpoint). Ctrl-C stops the loop once the current chunk is fully recorded and
    returns it with `interrupted=True` (a second Ctrl-C aborts at once; the checkpoint is
    still a complete chunk, being written atomically).
    With `writer` False (a process other than the first of a multi-host run) the loop
    writes no log; `save` and `save_policy` are called on every process (they may gather)
    and write only where they should.
    """
    paths = run_paths(run_dir)
    start = chunks_done(rs)
    if start > 0:
        if writer:
            _repair_log(paths["metrics"], start, restored_rows)
        if save_policy is not None:
            save_policy(rs)
    prefix = f"[{label}] " if label else ""
    print(prefix + header, flush=True)
    with _sigint_deferred(prefix) as flag:
        while chunks_done(rs) < num_chunks and not flag["stop"]:
            t0 = time.perf_counter()
            rs, m = train_chunk(rs)
            m = to_host(m)
            dt = time.perf_counter() - t0
            new_rows = rows(rs, m, dt)
            done = chunks_done(rs)
            kill_point("after-chunk", done)
            if done % checkpoint_every == 0 or done >= num_chunks or flag["stop"]:
                save(rs, new_rows)
                kill_point("after-checkpoint", done)
                if writer:
                    _settle(run_dir)
                if save_policy is not None:
                    save_policy(rs)
                kill_point("after-policy", done)
            if writer:
                with open(paths["metrics"], "a") as log:
                    log.write(_rows_text(new_rows))
            kill_point("after-metrics", done)
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
               f"from chunk {int(runner.chunk)}", label=label,
        save_policy=lambda rs: save_policy_file(run_dir, cfg, rs.params),
        restored_rows=restored)


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
    cfg, run_dir = open_run(p, build_parser, args, argv, config_from_args=config_from_args,
                            config_from_json=config_from_json)
    with held(run_dir):
        rs, interrupted = train(cfg, run_dir, args.resume)
        if interrupted:
            return 130
        write_evaluation(cfg, rs.params, run_dir, evaluate, format_eval)
    return 0
