"""Throughput benchmark: the vmapped JAX environment against the plain-Python reference.

    PYTHONPATH=. python -m eval.bench                       # full run (default sizes)
    PYTHONPATH=. python -m eval.bench --quick --out b.json  # smoke run, numbers to JSON

For each batch size `B` a jitted, vmapped function draws `B` instances from
keys (damdjax.envs.generator) and plays every episode to its end with a heuristic
policy (damdjax.rollout.run_from_instance). Timed on its own first: the
ahead-of-time compile (`jit(...).lower(...).compile()`); then one untimed
warm-up call and `--repeats` timed calls with fresh keys, each ended by
`jax.block_until_ready`. The median wall time gives:

* env steps/s: sum over the batch of the final `state.step`, per second;
* decisions/s: dispatches plus picks of real tasks (`2 N` per finished
  episode), per second;
* episodes/s: `B` per second.

Right after each batch size, the reference simulator (envs/reference.py)
plays `--ref-episodes` of the same generated instances (episode `i` of the
first timed repeat) with the same heuristic pair; its decisions/s is the sum
of decisions over the sum of `simulate` wall times (the conversion of the
instances is not timed). Measuring it next to each JAX measurement keeps the
ratio fair on a machine whose load changes during the run. The `JAX / ref`
column is JAX decisions/s over that adjacent reference decisions/s; the JSON
also holds the ratio of decisions per process CPU second (`speedup_cpu`; all
threads count, so it shows the per-core ratio when XLA spreads a large batch
over several cores).

Timings include instance generation on the JAX side (it is part of every
fresh episode); they exclude it on the reference side (the instance is given).

Then the views (`damdjax.eval.bench_views`): the raw env and each view of
`damdjax.views` play the same instances at batch `--views-batch` with EFT dispatch and
SJF picks, each through its own API; their epochs/s, decisions/s (the view's decisions)
and epochs/s over the raw env's, from the same run (`--no-views` skips it).

Then the memory traffic of one env step (eval/traffic.py): bytes accessed and flops per
env step of `transition`, `observe`, each heuristic rule, the `--method` pair and the
whole training step, from XLA's cost analysis of the compiled programs at each
`--traffic-n-max`, with the implied H100/H200 rooflines beside the env steps/s measured
above at the largest batch (a proxy from this backend's compiler; `--no-traffic` skips it).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from damdjax.cli import add_seed_flag, check_int_flag, check_out_flag
from damdjax.memory import check_memory, evaluation_bytes, float_bytes
from damdjax.heuristics import pair_from_name, pair_names
from damdjax.rollout import run_from_instance
from damdjax.envs import reference
from damdjax.envs.config import EnvConfig, EnvParams, check_params
from damdjax.envs.generator import generate
from damdjax.envs.instance import instance_to_arrays, to_reference_input
from damdjax.envs.state import started, unstarted_tasks
from damdjax.eval.bench_views import bench_views, markdown_views
from damdjax.eval.traffic import BANDWIDTH, DEFAULT_BATCH, DEFAULT_N_MAX, EPISODE_STEP
from damdjax.eval.traffic import markdown_traffic, traffic_report
from damdjax.eval.benchkit import (check_method_flag, compile_runner, check_n_max_flag, fmt, int_list, machine_info,
                                    print_machine_and_write)

DEFAULT_BATCH_SIZES = (1, 64, 256, 1024, 4096)
DEFAULT_VIEWS_BATCH = 1024
QUICK_VIEWS_BATCH = 8
DEFAULT_REPEATS = 5
DEFAULT_REF_EPISODES = 64
QUICK_BATCH_SIZES = (1, 8)
QUICK_REPEATS = 2
QUICK_REF_EPISODES = 4
QUICK_TRAFFIC_N_MAX = (100,)
QUICK_TRAFFIC_BATCH = 64


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (every flag documented in --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m eval.bench",
        description="Episodes per second, env steps per second and decisions per second of "
                    "the vmapped JAX environment under a heuristic policy, against the "
                    "plain-Python reference simulator on the same instances "
                    "(default EnvConfig/EnvParams).",
    )
    parser.add_argument(
        "--method", default="LS",
        help="heuristic pair: two letters, dispatch N(earest)/R(andom)/L(east load)/E(FT) "
             "then schedule F(CFS)/S(JF)/D (SDF)/C(ritical path)/X (least laxity), e.g. NF, "
             "RS, LS, EC, or 'nearest+fcfs' (default: LS = least_load + sdf)")
    parser.add_argument(
        "--batch-sizes", type=int_list, default=None, metavar="B1,B2,...",
        help="comma-separated batch sizes, each >= 1 "
             f"(default: {','.join(map(str, DEFAULT_BATCH_SIZES))}; "
             f"--quick: {','.join(map(str, QUICK_BATCH_SIZES))})")
    parser.add_argument(
        "--repeats", type=int, default=None,
        help=f"timed calls per batch size, each with fresh keys; the median is reported "
             f"(default: {DEFAULT_REPEATS}; --quick: {QUICK_REPEATS})")
    parser.add_argument(
        "--ref-episodes", type=int, default=None,
        help=f"episodes the reference simulator plays, >= 1 (default: {DEFAULT_REF_EPISODES}; "
             f"--quick: {QUICK_REF_EPISODES})")
    add_seed_flag(parser, "root PRNG seed of the instances")
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: batch sizes, repeats and reference episodes default to "
             "the small values above (explicit flags still win)")
    parser.add_argument(
        "--traffic-n-max", type=int_list, default=None, metavar="N1,N2,...",
        help="task slots of each config whose per-step traffic is measured, each >= 1 "
             f"(default: {','.join(map(str, DEFAULT_N_MAX))}; "
             f"--quick: {','.join(map(str, QUICK_TRAFFIC_N_MAX))})")
    parser.add_argument(
        "--traffic-batch", type=int, default=None,
        help=f"vmapped batch of the traffic programs (compiled, never run), >= 1 "
             f"(default: {DEFAULT_BATCH}; --quick: {QUICK_TRAFFIC_BATCH})")
    parser.add_argument(
        "--views-batch", type=int, default=None,
        help=f"batch at which the views play beside the raw env, >= 1 "
             f"(default: {DEFAULT_VIEWS_BATCH}; --quick: {QUICK_VIEWS_BATCH})")
    parser.add_argument(
        "--no-views", action="store_true",
        help="skip the views' table")
    parser.add_argument(
        "--no-traffic", action="store_true",
        help="skip the traffic table (throughput only)")
    parser.add_argument(
        "--out", default=None, metavar="FILE.json",
        help="also write every number (and the machine) to this JSON file (atomic write)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate the flags; a bad one exits 2 with a one-line error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_out_flag(parser, args.out)   # before any work: a writable folder
    if args.batch_sizes is None:
        args.batch_sizes = QUICK_BATCH_SIZES if args.quick else DEFAULT_BATCH_SIZES
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.ref_episodes is None:
        args.ref_episodes = QUICK_REF_EPISODES if args.quick else DEFAULT_REF_EPISODES
    if args.traffic_n_max is None:
        args.traffic_n_max = QUICK_TRAFFIC_N_MAX if args.quick else DEFAULT_N_MAX
    if args.views_batch is None:
        args.views_batch = QUICK_VIEWS_BATCH if args.quick else DEFAULT_VIEWS_BATCH
    if args.traffic_batch is None:
        args.traffic_batch = QUICK_TRAFFIC_BATCH if args.quick else DEFAULT_BATCH
    bad = [b for b in args.batch_sizes if b <= 0]
    if bad:
        parser.error(f"--batch-sizes must all be >= 1, got {bad[0]}")
    check_int_flag(parser, "--repeats", args.repeats, 1)
    check_int_flag(parser, "--ref-episodes", args.ref_episodes, 1)
    check_int_flag(parser, "--traffic-batch", args.traffic_batch, 1)
    check_int_flag(parser, "--views-batch", args.views_batch, 1)
    check_n_max_flag(parser, "--traffic-n-max", args.traffic_n_max)
    check_method_flag(parser, args.method)
    try:
        check_memory(memory_parts(EnvConfig(), args))
    except ValueError as err:
        parser.error(str(err))
    return args


def memory_parts(config: EnvConfig, args: argparse.Namespace) -> list[tuple[str, int]]:
    """`[(what, bytes)]` a run holds (`damdjax.memory`): the largest batch's instances and
    final states, the views' batch's (unless `--no-views`; measured after the batches,
    counted with them: an overestimate) and the reference's instances."""
    f, batch = float_bytes(), max(args.batch_sizes)
    views = [] if args.no_views else [
        (f"the views' batch, --views-batch {args.views_batch} (instances and final states)",
         evaluation_bytes(config, args.views_batch, 1, f))]
    return [(f"the batch of --batch-sizes {batch} (instances and final states)",
             evaluation_bytes(config, batch, 1, f)), *views,
            (f"the reference's instances (--ref-episodes {args.ref_episodes})",
             evaluation_bytes(config, args.ref_episodes, 0, f))]


# --------------------------------------------------------------------------
# JAX side
# --------------------------------------------------------------------------


def episode_keys(seed: int, repeat: int, batch: int) -> jax.Array:
    """Keys of episodes `0..batch-1` of timed call `repeat`.

    Episode `i` of repeat `r` gets the same key whatever the batch size, so the
    reference can replay exactly the instances the JAX side played.
    """
    root = jax.random.fold_in(jax.random.key(seed), repeat)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(batch))


def build_batch_runner(config: EnvConfig, policy: Callable) -> Callable:
    """A jittable `(keys [B], params) -> per-episode counts`: generate, then play to the end.

    Returns a dict of [B] arrays: `steps` (final `state.step`), `decisions`
    (dispatched plus started real tasks), `tasks` (real tasks), `truncated` (the step cap
    ended it) and `stranded` (real tasks never started).
    """
    def one(key, params):
        k_gen, k_play = jax.random.split(key)
        instance = generate(k_gen, config, params)
        state, _ = run_from_instance(k_play, instance, policy, config.queue_capacity, params)
        real = instance.task_mask
        dispatched = jnp.sum(real & (state.server >= 0))
        began = jnp.sum(real & started(state))
        return {"steps": state.step, "decisions": dispatched + began,
                "tasks": jnp.sum(real), "truncated": state.truncated,
                "stranded": unstarted_tasks(state)}

    return jax.vmap(one, in_axes=(0, None))


def time_calls(compiled, seed: int, batch: int, params: EnvParams, repeats: int):
    """Wall and CPU times and counts of `repeats` calls, each on fresh keys (after a warm-up).

    Returns `(wall seconds list, process CPU seconds list, counts dict of numpy
    arrays from the first timed call)`.
    """
    warm_up = repeats  # a repeat index no timed call uses
    jax.block_until_ready(compiled(episode_keys(seed, warm_up, batch), params))
    seconds, cpu_seconds, first = [], [], None
    for r in range(repeats):
        keys = jax.block_until_ready(episode_keys(seed, r, batch))
        t0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(compiled(keys, params))
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
        counts = {name: np.asarray(v) for name, v in out.items()}
        if first is None:
            first = counts
        if counts["truncated"].any() or counts["stranded"].any():
            raise RuntimeError(f"batch {batch}, repeat {r}: an episode was truncated or "
                               "left tasks that never started")
    return seconds, cpu_seconds, first


def bench_batch(config: EnvConfig, params: EnvParams, policy: Callable, seed: int,
                batch: int, repeats: int) -> dict:
    """Compile and time one batch size; the row of the results table (a dict)."""
    runner = build_batch_runner(config, policy)
    compiled, compile_s = compile_runner(runner, episode_keys(seed, 0, batch), params)
    seconds, cpu_seconds, counts = time_calls(compiled, seed, batch, params, repeats)
    median = statistics.median(seconds)
    median_cpu = statistics.median(cpu_seconds)
    steps = int(counts["steps"].sum())
    decisions = int(counts["decisions"].sum())
    return {
        "batch_size": batch,
        "compile_s": compile_s,
        "times_s": seconds,
        "median_s": median,
        "cpu_times_s": cpu_seconds,
        "median_cpu_s": median_cpu,
        "steps": steps,
        "decisions": decisions,
        "tasks": int(counts["tasks"].sum()),
        "steps_per_s": steps / median,
        "decisions_per_s": decisions / median,
        "episodes_per_s": batch / median,
        "decisions_per_cpu_s": decisions / median_cpu,
    }


# --------------------------------------------------------------------------
# Reference side
# --------------------------------------------------------------------------


def generate_instances(config: EnvConfig, params: EnvParams, seed: int, count: int) -> dict:
    """The instances of episodes `0..count-1` of timed repeat 0, as batched numpy arrays."""
    def one(key):
        k_gen, _ = jax.random.split(key)  # the same split as build_batch_runner
        return generate(k_gen, config, params)

    batch = jax.jit(jax.vmap(one))(episode_keys(seed, 0, count))
    return instance_to_arrays(batch)


def bench_reference(arrays: dict, count: int, method: str, queue_capacity: int) -> dict:
    """Decisions/s of the reference simulator over `count` episodes (only `simulate` timed)."""
    dispatch, schedule = pair_names(method)
    inputs = [to_reference_input(arrays, i) for i in range(count)]
    seconds = cpu_seconds = 0.0
    decisions = steps = 0
    for i, (servers, tasks) in enumerate(inputs):
        t0, c0 = time.perf_counter(), time.process_time()
        result = reference.simulate(servers, tasks, queue_capacity=queue_capacity,
                                    dispatch=dispatch, schedule=schedule, seed=i)
        seconds += time.perf_counter() - t0
        cpu_seconds += time.process_time() - c0
        decisions += result.num_decisions
        steps += result.num_steps
    return {
        "episodes": count,
        "dispatch": dispatch,
        "schedule": schedule,
        "total_s": seconds,
        "total_cpu_s": cpu_seconds,
        "steps": steps,
        "decisions": decisions,
        "steps_per_s": steps / seconds,
        "decisions_per_s": decisions / seconds,
        "episodes_per_s": count / seconds,
        "decisions_per_cpu_s": decisions / cpu_seconds,
    }


def summarize_reference(measurements: list[dict]) -> dict:
    """The reference's measurements of one run (one per batch size) and their medians."""
    first = measurements[0]
    return {
        "episodes": first["episodes"],
        "dispatch": first["dispatch"],
        "schedule": first["schedule"],
        "decisions_per_episode": first["decisions"] / first["episodes"],
        "steps_per_episode": first["steps"] / first["episodes"],
        "decisions_per_s": statistics.median(m["decisions_per_s"] for m in measurements),
        "decisions_per_cpu_s": statistics.median(m["decisions_per_cpu_s"] for m in measurements),
        "measurements": measurements,
    }


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def markdown_table(rows: list[dict]) -> str:
    """The results as a markdown table (one row per batch size)."""
    head = ("| batch | compile s | median s | env steps/s | decisions/s | episodes/s "
            "| ref decisions/s | JAX / ref |")
    lines = [head, "|" + "---:|" * 8]
    for row in rows:
        lines.append("| " + " | ".join([
            str(row["batch_size"]), fmt(row["compile_s"]), fmt(row["median_s"]),
            fmt(row["steps_per_s"]), fmt(row["decisions_per_s"]), fmt(row["episodes_per_s"]),
            fmt(row["ref_decisions_per_s"]), f"{row['speedup']:.2f}x"]) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> dict:
    """Every measurement of one run, as a JSON-ready dict."""
    config, params = EnvConfig(), EnvParams()
    check_params(config, params)
    policy = pair_from_name(args.method)
    arrays = generate_instances(config, params, args.seed, args.ref_episodes)
    rows, ref_runs = [], []
    for batch in args.batch_sizes:
        row = bench_batch(config, params, policy, args.seed, batch, args.repeats)
        ref = bench_reference(arrays, args.ref_episodes, args.method, config.queue_capacity)
        row["ref_decisions_per_s"] = ref["decisions_per_s"]
        row["speedup"] = row["decisions_per_s"] / ref["decisions_per_s"]
        row["speedup_cpu"] = row["decisions_per_cpu_s"] / ref["decisions_per_cpu_s"]
        print(f"batch {batch}: compile {row['compile_s']:.2f} s, median {row['median_s']:.4f} s, "
              f"reference {ref['decisions_per_s']:,.0f} decisions/s",
              file=sys.stderr, flush=True)
        rows.append(row)
        ref_runs.append(ref)
    views = None
    if not args.no_views:
        views = bench_views(config, params,
                            lambda r: episode_keys(args.seed, r, args.views_batch), args.repeats,
                            lambda line: print(line, file=sys.stderr, flush=True))
    traffic = None
    if not args.no_traffic:
        traffic = traffic_report(args.traffic_n_max, args.method, args.traffic_batch,
                                 lambda line: print(line, file=sys.stderr, flush=True))
        largest = max(rows, key=lambda row: row["batch_size"])
        traffic["measured"] = {"n_max": config.n_max, "batch_size": largest["batch_size"],
                               "env_steps_per_s": largest["steps_per_s"]}
    return {
        "command": "python -m eval.bench " + " ".join(args.argv),
        "method": args.method,
        "seed": args.seed,
        "repeats": args.repeats,
        "compile_time_method": "jax.jit(f).lower(keys, params).compile(), timed apart; "
                               "then one untimed warm-up call",
        "jax_time_includes": "instance generation and the whole episode (while_loop)",
        "speedup_definition": "JAX decisions/s over the reference's decisions/s measured right "
                              "after that batch size (speedup: wall time; speedup_cpu: process "
                              "CPU time of all threads, XLA's worker threads included, so "
                              "a JAX run that uses several cores counts each)",
        "config": {k: getattr(config, k) for k in ("n_max", "m_max", "p_max",
                                                   "queue_capacity", "j_max")},
        "params": {k: float(v) for k, v in vars(params).items()},
        "machine": machine_info(),
        "results": rows,
        "reference": summarize_reference(ref_runs),
        "views": views,
        "traffic": traffic,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and the machine, optionally write JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    payload = run_benchmark(args)
    print(f"command: {payload['command']}")
    print(f"method: {args.method} ({payload['reference']['dispatch']} + "
          f"{payload['reference']['schedule']}), repeats: {args.repeats}, "
          f"reference episodes: {args.ref_episodes}")
    print()
    print(markdown_table(payload["results"]))
    print()
    print("compile s: jit(...).lower(...).compile(), timed apart; median s: median wall time of "
          "the timed calls (generation + whole episodes); ref decisions/s: the reference "
          "measured right after each batch size; JAX / ref: ratio of decisions/s.")
    print()
    if payload["views"] is not None:
        print(f"Views at batch {args.views_batch}, EFT dispatch + SJF picks, same instances:")
        print(markdown_views(payload["views"]))
        print("epochs/s: env epochs (EdgeEnv.step) per second; decisions/s: the view's "
              "decisions per second (with max_epochs, steps that decide nothing excluded); "
              "vs raw: epochs/s over the raw env's in this run.")
        print()
    if payload["traffic"] is not None:
        print(traffic_summary(payload["traffic"]))
        print()
    print_machine_and_write(payload, args.out)
    return 0


def traffic_summary(traffic: dict) -> str:
    """The traffic table, what it is, and the measured env steps/s beside the roofline."""
    measured = traffic["measured"]
    lines = [markdown_traffic(traffic), "",
             f"backend {traffic['backend']}, batch {traffic['batch']}: {traffic['what']}."]
    same = [s for s in traffic["sizes"] if s["n_max"] == measured["n_max"]]
    if same:
        ceilings = ", ".join(
            f"{gpu} {same[0]['roofline_env_steps_per_s'][gpu][EPISODE_STEP]:.3g}"
            for gpu in BANDWIDTH)
        lines.append(f"Measured above on {traffic['backend']} (n_max {measured['n_max']}, "
                     f"batch {measured['batch_size']}, whole episodes): "
                     f"{measured['env_steps_per_s']:,.0f} env steps/s; the memory-bound "
                     f"ceiling of their loop body (the {EPISODE_STEP}) at that size: "
                     f"{ceilings} env steps/s.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
