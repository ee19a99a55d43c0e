"""Training throughput benchmark: env steps and gradient updates per second of a trainer.

    PYTHONPATH=. python -m eval.bench_train                               # 256, 1024, 4096 envs
    PYTHONPATH=. python -m eval.bench_train --num-envs 64 --out t.json    # one size, to JSON
    PYTHONPATH=. python -m eval.bench_train --sweep                       # K = 1, 4, 16 members

For each `--num-envs` E the trainer's config is its default except `num_envs=E`,
`learning_starts=0` (every timed chunk does its gradient updates),
`buffer_capacity=max(default or --buffer-capacity, E)` and the sizes given by
flags. Its jitted chunk (train/<trainer>.py: `make_train(config).chunk`) runs
`steps_per_chunk` vmapped env steps of E envs, each followed by
`updates_per_step` gradient updates on a replay batch of `batch_size`
transitions (the batch does not grow with E).

Timed on its own first: the ahead-of-time compile
(`chunk.lower(runner_state, ...).compile()`); then one untimed warm-up chunk
and `--repeats` timed chunks, each ended by `jax.block_until_ready`. Chunks are
consecutive (the runner state carries on, as in a real run). The median wall
time gives:

* env steps/s: `steps_per_chunk * E` per second;
* updates/s: `steps_per_chunk * updates_per_step` gradient updates per second
  (the work is the same whether or not an update is applied: an update with no
  ready transition is computed and discarded; the JSON also holds the updates
  actually applied in each timed chunk);
* vmapped steps/s: `steps_per_chunk` per second.

--sweep: for each K of --members, K runs (seeds 0..K-1) as one sweep
(train.sweep's program: vmapped over members, sharded over every device)
against the same K runs one after another (`bench_sweep`): total env steps/s
over members and each mode's measured wall time, compiles included
(--num-envs defaults to 256 here).

Trainers are listed in TRAINERS (name -> module, config class) and imported
lazily; a trainer module must provide `make_train(config)` and
`program_config(config)`, and its config class the fields `num_envs`,
`learning_starts`, `buffer_capacity`, `steps_per_chunk`, `updates_per_step`,
`batch_size`, `env` (an `EnvParams`) and `env_config` (an `EnvConfig`).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import statistics
import sys
import time
from types import ModuleType
from typing import Any, Sequence

import jax
import numpy as np

from damdjax.hyper import Hyper
from damdjax.members import member_inputs, member_program
from damdjax.sharding import member_mesh, padded_members
from damdjax.cli import check_int_flag, check_out_flag
from damdjax.configs import int_limit
from damdjax.memory import check_memory
from damdjax.envs.config import INT32_MAX, check_params
from damdjax.eval.benchkit import fmt, int_list, machine_info, print_machine_and_write

# name -> (module path, config class name). Add a trainer with one line here.
TRAINERS: dict[str, tuple[str, str]] = {
    "dqn": ("damdjax.train.dqn", "DQNConfig"),
    "mdqn": ("damdjax.train.mdqn", "MDQNConfig"),
}
DEFAULT_TRAINER = "dqn"
DEFAULT_NUM_ENVS = (256, 1024, 4096)
SWEEP_NUM_ENVS = (256,)
DEFAULT_MEMBERS = (1, 4, 16)
DEFAULT_REPEATS = 3


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def load_trainer(name: str) -> tuple[ModuleType, type]:
    """`(module, config class)` of the registered trainer `name` (imported now).

    Raises ValueError (one line) for an unknown name, a missing module or class.
    """
    if name not in TRAINERS:
        raise ValueError(f"--trainer must be one of {', '.join(TRAINERS)}, got {name!r}")
    module_path, class_name = TRAINERS[name]
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as err:
        if err.name is not None and (module_path + ".").startswith(err.name + "."):
            raise ValueError(f"--trainer {name}: module {module_path} does not exist") from None
        raise
    config_cls = getattr(module, class_name, None)
    if config_cls is None:
        raise ValueError(f"--trainer {name}: {module_path} has no {class_name}")
    return module, config_cls


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (every flag documented in --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m eval.bench_train",
        description="Training throughput of a trainer's jitted train_chunk: env steps/s, "
                    "gradient updates/s and vmapped steps/s at several numbers of parallel "
                    "envs (the trainer's default hyperparameters, learning_starts=0).",
    )
    parser.add_argument(
        "--trainer", default=DEFAULT_TRAINER, metavar="NAME",
        help=f"trainer to measure: {', '.join(TRAINERS)} (default: {DEFAULT_TRAINER})")
    parser.add_argument(
        "--num-envs", type=int_list, default=None, metavar="E1,E2,...",
        help="comma-separated numbers of parallel envs, each >= 1 "
             f"(default: {','.join(map(str, DEFAULT_NUM_ENVS))})")
    parser.add_argument(
        "--steps-per-chunk", type=int, default=None,
        help="vmapped env steps per timed chunk, >= 1 (default: the trainer config's)")
    parser.add_argument(
        "--repeats", type=int, default=DEFAULT_REPEATS,
        help=f"timed chunks per number of envs, >= 1; the median is reported "
             f"(default: {DEFAULT_REPEATS})")
    parser.add_argument(
        "--num-tasks", type=int, default=None,
        help="tasks per episode, >= 1 (default: the trainer config's)")
    parser.add_argument(
        "--num-servers", type=int, default=None,
        help="edge servers, >= 1 (default: the trainer config's)")
    parser.add_argument(
        "--batch-size", type=int, default=None,
        help="replay batch of each gradient update, >= 1 (default: the trainer config's)")
    parser.add_argument(
        "--buffer-capacity", type=int, default=None,
        help="replay buffer entries, >= 1; raised to the number of envs where smaller "
             "(default: the trainer config's)")
    parser.add_argument(
        "--sweep", action="store_true",
        help="compare K members in one sweep (train.sweep: vmapped, sharded over every "
             "device) with the same K runs one after another, for each K of --members "
             f"(--num-envs defaults to {','.join(map(str, SWEEP_NUM_ENVS))})")
    parser.add_argument(
        "--members", type=int_list, default=DEFAULT_MEMBERS, metavar="K1,K2,...",
        help="with --sweep: comma-separated member counts, each >= 1 "
             f"(default: {','.join(map(str, DEFAULT_MEMBERS))})")
    parser.add_argument(
        "--out", default=None, metavar="FILE.json",
        help="also write every number (and the machine) to this JSON file (atomic write)")
    return parser


def make_configs(config_cls: type, args: argparse.Namespace) -> list[Any]:
    """One trainer config per `--num-envs` value (defaults except the benchmark's fields)."""
    default = config_cls()
    env = default.env.replace(num_tasks=args.num_tasks, num_servers=args.num_servers)
    configs = []
    for e in args.num_envs:
        changes = {"num_envs": e, "learning_starts": 0,
                   "buffer_capacity": max(args.buffer_capacity, e)}
        for name in ("steps_per_chunk", "batch_size"):
            changes[name] = getattr(args, name)
        configs.append(dataclasses.replace(default, env=env, env_config=None, **changes))
    return configs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate the flags; a bad one exits 2 with a one-line error.

    Also imports the trainer and builds the configs (`args.module`,
    `args.config_cls`, `args.configs`), before anything compiles.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    check_out_flag(parser, args.out)   # before any work: a writable folder
    if args.num_envs is None:
        args.num_envs = SWEEP_NUM_ENVS if args.sweep else DEFAULT_NUM_ENVS
    bad = [k for k in args.members if k <= 0]
    if bad:
        parser.error(f"--members must all be >= 1, got {bad[0]}")
    bad = [e for e in args.num_envs if e <= 0]
    if bad:
        parser.error(f"--num-envs must all be >= 1, got {bad[0]}")
    check_int_flag(parser, "--repeats", args.repeats, 1)
    try:
        args.module, args.config_cls = load_trainer(args.trainer)
    except ValueError as err:
        parser.error(str(err))
    default = args.config_cls()
    for name in ("steps_per_chunk", "num_tasks", "num_servers", "batch_size", "buffer_capacity"):
        value = getattr(args, name)
        if value is None:
            setattr(args, name, getattr(default.env if name in ("num_tasks", "num_servers")
                                        else default, name))
        else:
            check_int_flag(parser, f"--{name.replace('_', '-')}", value, 1, *int_limit(name))
    args.configs = make_configs(args.config_cls, args)
    try:
        check_params(args.configs[0].env_config, args.configs[0].env)
    except ValueError as err:
        parser.error(str(err))
    check_program(parser, args)
    return args


def check_program(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Before anything is allocated or compiled: each config's int32 counters (env steps,
    gradient updates) stay within int32 over the warm-up and the --repeats timed chunks, and
    what it holds (`RunConfig.memory_parts`: the vmapped env states, the replay buffer, the
    networks; times the largest --members with --sweep) fits the device (`damdjax.memory`)."""
    chunks = f"(--repeats {args.repeats} + 1 warm-up) chunks"
    k = max(args.members) if args.sweep else 1
    for cfg in args.configs:
        per = (args.repeats + 1) * cfg.steps_per_chunk
        for what, total in ((f"--num-envs {cfg.num_envs} env steps", per * cfg.num_envs),
                            (f"{cfg.updates_per_step} gradient updates per step",
                             per * cfg.updates_per_step)):
            if total > INT32_MAX:
                parser.error(f"{chunks} x --steps-per-chunk {cfg.steps_per_chunk} x {what} = "
                             f"{total} overflow the int32 counters (at most {INT32_MAX})")
        parts = dataclasses.replace(cfg, eval_episodes=0).memory_parts()   # no evaluation
        if args.sweep:
            parts = [(f"{k} members (--members {k}) x {what}", k * b) for what, b in parts]
        try:
            check_memory(parts)
        except ValueError as err:
            parser.error(str(err))


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------


def compile_chunk(train_chunk, *args):
    """`(compiled, seconds)`: ahead-of-time `train_chunk.lower(*args).compile()`, timed."""
    t0 = time.perf_counter()
    compiled = train_chunk.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _updates(runner_state) -> int | None:
    """Gradient updates applied so far, summed over a sweep's members (None where the
    runner state does not count them)."""
    updates = getattr(runner_state, "updates", None)
    return None if updates is None else int(np.sum(np.asarray(updates)))


def time_chunks(compiled, runner_state, repeats: int):
    """Wall and CPU seconds and applied updates of `repeats` consecutive chunks (after a warm-up).

    `compiled(runner_state) -> (runner_state, metrics)`. Returns `(wall seconds list,
    process CPU seconds list, updates applied list or None)`.
    """
    runner_state, _ = jax.block_until_ready(compiled(runner_state))  # warm-up
    seconds, cpu_seconds, applied = [], [], []
    for _ in range(repeats):
        before = _updates(runner_state)
        t0, c0 = time.perf_counter(), time.process_time()
        runner_state, _ = jax.block_until_ready(compiled(runner_state))
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
        if before is not None:
            applied.append(_updates(runner_state) - before)
    return seconds, cpu_seconds, applied if len(applied) == repeats else None


def init_state(init, *args):
    """`(runner state, seconds)`: `init(*args)` (a jitted init: op-by-op it takes far longer
    than compiling it), timed, compile included."""
    t0 = time.perf_counter()
    state = jax.block_until_ready(init(*args))
    return state, time.perf_counter() - t0


def chunk_pieces(module: ModuleType, config: Any):
    """`(runner state, init seconds, jitted chunk, its extra arguments)` of one run: the
    trainer's `make_train(config)`, its jitted init at `PRNGKey(config.seed)` and chunk
    `(runner, hyper)` at `Hyper.from_config(config)`."""
    fns, hyper = module.make_train(config), Hyper.from_config(config)
    state, init_s = init_state(jax.jit(fns.init), jax.random.PRNGKey(config.seed), hyper)
    return state, init_s, jax.jit(fns.chunk), (hyper,)


def bench_config(module: ModuleType, config: Any, repeats: int) -> dict:
    """Compile and time one trainer config; the row of the results table (a dict)."""
    runner_state, init_s, train_chunk, extra = chunk_pieces(module, config)
    compiled, compile_s = compile_chunk(train_chunk, runner_state, *extra)
    seconds, cpu_seconds, applied = time_chunks(lambda rs: compiled(rs, *extra), runner_state,
                                                repeats)
    median = statistics.median(seconds)
    steps = config.steps_per_chunk
    updates = steps * config.updates_per_step
    return {
        "num_envs": config.num_envs,
        "steps_per_chunk": steps,
        "updates_per_step": config.updates_per_step,
        "batch_size": config.batch_size,
        "buffer_capacity": config.buffer_capacity,
        "init_s": init_s,
        "compile_s": compile_s,
        "times_s": seconds,
        "median_s": median,
        "cpu_times_s": cpu_seconds,
        "median_cpu_s": statistics.median(cpu_seconds),
        "env_steps_per_chunk": steps * config.num_envs,
        "updates_per_chunk": updates,
        "updates_applied": applied,
        "env_steps_per_s": steps * config.num_envs / median,
        "updates_per_s": updates / median,
        "vmapped_steps_per_s": steps / median,
    }


def bench_sweep(module: ModuleType, config: Any, members: int, repeats: int) -> list[dict]:
    """K members in one sweep vs the same K runs one after another, one config of the
    trainer `module`.

    Sweep: `damdjax.members.member_program` (init and chunk vmapped over K members with
    seeds 0..K-1, sharded over every device): its init (jitted, compile included), the chunk
    compiled ahead of time, one warm-up chunk, then `repeats` timed chunks. One after
    another: the single run's jitted init and chunk (compiled once: the seed and the
    values are traced), then for each member its init, a warm-up chunk and `repeats`
    timed chunks. Both modes do the same work; `wall_s` is each mode's measured wall
    time from the start to its last chunk, compiles included.
    `wall_separate_processes_s` (one after another only, derived) is K times one run's
    compiles and chunks, as if every run were its own process. Returns the two rows.
    """
    steps = config.steps_per_chunk * config.num_envs
    t_start = time.perf_counter()
    mesh = member_mesh()
    count = padded_members(members, mesh)
    init, stages, shard = member_program(module.make_train, module.program_config(config),
                                         tuple(mesh.devices.flat))
    chunk = stages[0].chunk   # (dqn, mdqn: the only stage)
    keys, hyper = member_inputs(list(range(members)),
                                      [Hyper.from_config(config)] * members, count, shard)
    state, init_s = init_state(init, keys, hyper)
    compiled, compile_s = compile_chunk(chunk, state, hyper)
    seconds, _, _ = time_chunks(lambda rs: compiled(rs, hyper), state, repeats)
    median = statistics.median(seconds)
    rows = [{"mode": "sweep", "members": members, "padded_members": count,
             "devices": int(mesh.devices.size), "num_envs": config.num_envs, "init_s": init_s,
             "compile_s": compile_s, "times_s": seconds, "median_chunk_s": median,
             "env_steps_per_s": members * steps / median,
             "wall_s": time.perf_counter() - t_start}]

    t_start = time.perf_counter()
    fns, single = module.make_train(config), Hyper.from_config(config)
    init1 = jax.jit(fns.init)
    seconds, compile_s, init_s, inits = [], None, None, []
    for s in range(members):
        state, dt = init_state(init1, jax.random.PRNGKey(s), single)
        inits.append(dt)
        if compile_s is None:
            compiled, compile_s = compile_chunk(jax.jit(fns.chunk), state, single)
        seconds += time_chunks(lambda rs: compiled(rs, single), state, repeats)[0]
    median = statistics.median(seconds)
    rows.append({"mode": "sequential", "members": members, "padded_members": members,
                 "devices": 1, "num_envs": config.num_envs, "init_s": inits[0],
                 "compile_s": compile_s, "times_s": seconds, "median_chunk_s": median,
                 "env_steps_per_s": steps / median, "wall_s": time.perf_counter() - t_start,
                 "wall_separate_processes_s": members * (inits[0] + compile_s
                                                         + (repeats + 1) * median)})
    return rows


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def device_info() -> dict:
    """The first JAX device: kind and platform."""
    dev = jax.devices()[0]
    return {"device_kind": dev.device_kind, "device_platform": dev.platform}


def markdown_table(rows: list[dict]) -> str:
    """The results as a markdown table (one row per number of envs)."""
    head = "| num envs | compile s | median chunk s | env steps/s | updates/s | vmapped steps/s |"
    lines = [head, "|" + "---:|" * 6]
    for row in rows:
        lines.append("| " + " | ".join([
            str(row["num_envs"]), fmt(row["compile_s"]), fmt(row["median_s"]),
            fmt(row["env_steps_per_s"]), fmt(row["updates_per_s"]),
            fmt(row["vmapped_steps_per_s"])]) + " |")
    return "\n".join(lines)


def _config_json(config: Any) -> dict:
    """A trainer config as JSON-ready data."""
    if hasattr(config, "to_json"):
        return config.to_json()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def run_benchmark(args: argparse.Namespace) -> dict:
    """Every measurement of one run, as a JSON-ready dict."""
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if args.sweep:
        return run_sweep_benchmark(args, load_at_start)
    rows = []
    for config in args.configs:
        row = bench_config(args.module, config, args.repeats)
        print(f"num_envs {config.num_envs}: compile {row['compile_s']:.2f} s, "
              f"median chunk {row['median_s']:.4f} s, "
              f"{row['env_steps_per_s']:,.0f} env steps/s, {row['updates_per_s']:,.1f} updates/s",
              file=sys.stderr, flush=True)
        rows.append(row)
    first = args.configs[0]
    module_path, class_name = TRAINERS[args.trainer]
    return {
        "command": "python -m eval.bench_train " + " ".join(args.argv),
        "trainer": args.trainer,
        "trainer_module": module_path,
        "config_class": class_name,
        "repeats": args.repeats,
        "steps_per_chunk": first.steps_per_chunk,
        "updates_per_step": first.updates_per_step,
        "batch_size": first.batch_size,
        "num_tasks": first.env.num_tasks,
        "num_servers": first.env.num_servers,
        "compile_time_method": "train_chunk.lower(runner_state).compile(), timed apart; "
                               "then one untimed warm-up chunk; timed chunks are consecutive "
                               "(init_s: the jitted init, compile included, not part "
                               "of compile_s)",
        "definitions": {
            "env_steps_per_s": "steps_per_chunk * num_envs / median_s",
            "updates_per_s": "steps_per_chunk * updates_per_step / median_s "
                             "(each update on batch_size transitions, whatever num_envs)",
            "vmapped_steps_per_s": "steps_per_chunk / median_s",
        },
        "configs": [_config_json(c) for c in args.configs],
        "machine": {**device_info(), **machine_info(),
                    "load_average_1_5_15min_at_start": load_at_start},
        "results": rows,
    }


def sweep_table(rows: list[dict]) -> str:
    """The --sweep results as a markdown table (sweep and one-after-another rows per K)."""
    head = ("| members | num envs | mode | devices | compile s | median chunk s | "
            "env steps/s | wall s | sweep speed-up |")
    lines = [head, "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for sweep_row, seq_row in zip(rows[::2], rows[1::2]):
        for row in (sweep_row, seq_row):
            speed = (fmt(seq_row["wall_s"] / sweep_row["wall_s"]) + "x"
                     if row is sweep_row else "")
            lines.append("| " + " | ".join([
                str(row["members"]), str(row["num_envs"]), row["mode"], str(row["devices"]),
                fmt(row["compile_s"]), fmt(row["median_chunk_s"]),
                fmt(row["env_steps_per_s"]), fmt(row["wall_s"]), speed]) + " |")
    return "\n".join(lines)


def run_sweep_benchmark(args: argparse.Namespace, load_at_start) -> dict:
    """--sweep: `bench_sweep` for every --num-envs config and --members count."""
    rows = []
    for config in args.configs:
        for k in args.members:
            pair = bench_sweep(args.module, config, k, args.repeats)
            for row in pair:
                print(f"num_envs {config.num_envs}, {k} members, {row['mode']}: compile "
                      f"{row['compile_s']:.2f} s, median chunk {row['median_chunk_s']:.4f} s, "
                      f"{row['env_steps_per_s']:,.0f} env steps/s, wall {row['wall_s']:.2f} s",
                      file=sys.stderr, flush=True)
            rows += pair
    first = args.configs[0]
    return {
        "command": "python -m eval.bench_train " + " ".join(args.argv),
        "trainer": args.trainer,
        "mode": "sweep",
        "repeats": args.repeats,
        "members": list(args.members),
        "steps_per_chunk": first.steps_per_chunk,
        "updates_per_step": first.updates_per_step,
        "batch_size": first.batch_size,
        "num_tasks": first.env.num_tasks,
        "num_servers": first.env.num_servers,
        "definitions": {
            "sweep": "the K members (seeds 0..K-1) as one program: "
                     "damdjax.members.member_program (vmap over members, member axis sharded over every device); "
                     "chunk.lower(...).compile() timed apart, one warm-up chunk, then "
                     "`repeats` timed chunks",
            "sequential": "the same K runs one after another in one process: the single "
                          "run's jitted chunk, compiled once (seed and values are traced); "
                          "per run its init, a warm-up chunk and `repeats` timed chunks",
            "env_steps_per_s": "env steps of all members per second: K * steps_per_chunk * "
                               "num_envs / median_chunk_s (sweep), steps_per_chunk * num_envs "
                               "/ median_chunk_s (sequential)",
            "wall_s": "measured wall time of the mode from its start to its last chunk: "
                      "compiles, inits, a warm-up chunk and `repeats` timed chunks for "
                      "every member (the same work in both modes)",
            "wall_separate_processes_s": "sequential only: K * (init_s + compile_s + "
                                         "(repeats + 1) * median_chunk_s), as if each run "
                                         "were its own process with its own compiles "
                                         "(derived)",
        },
        "configs": [_config_json(c) for c in args.configs],
        "machine": {**device_info(), **machine_info(),
                    "load_average_1_5_15min_at_start": load_at_start},
        "results": rows,
    }


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and the machine, optionally write JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    first = args.configs[0]
    dev = device_info()
    print(f"command: python -m eval.bench_train {' '.join(argv)}".rstrip())
    print(f"trainer: {args.trainer} ({'.'.join(TRAINERS[args.trainer])}), device: "
          f"{dev['device_kind']} ({dev['device_platform']}), jax {jax.__version__}")
    print(f"steps per chunk: {first.steps_per_chunk}, updates per step: {first.updates_per_step} "
          f"(each on a replay batch of {first.batch_size}, whatever num_envs), "
          f"repeats: {args.repeats}, tasks: {first.env.num_tasks}, servers: {first.env.num_servers}, "
          f"learning_starts: 0", flush=True)
    payload = run_benchmark(args)
    print()
    if args.sweep:
        print(sweep_table(payload["results"]))
        print()
        print("sweep: K members as one vmapped program (sharded over every device); "
              "sequential: the same K runs one after another (one compile); median chunk s: "
              "per chunk of all K members (sweep) or of one run (sequential); env steps/s: all "
              "members; wall s: measured, compiles, inits and every chunk of every member "
              "(a warm-up and --repeats timed chunks each); speed-up: sequential wall / "
              "sweep wall.")
        print()
        print_machine_and_write(payload, args.out)
        return 0
    print(markdown_table(payload["results"]))
    print()
    print("compile s: train_chunk.lower(...).compile(), timed apart; median chunk s: median wall "
          "time of the timed chunks (after one warm-up chunk); env steps/s = steps per chunk x "
          "num envs / median; updates/s = steps per chunk x updates per step / median; "
          "vmapped steps/s = steps per chunk / median.")
    print()
    print_machine_and_write(payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
