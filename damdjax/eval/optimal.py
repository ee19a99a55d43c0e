"""How far the heuristics are from the relaxed optimum, instance by instance.

    python -m eval.optimal                                   # 5 instances of 25 tasks
    python -m eval.optimal --episodes 20 --time-limit 20 --workers 2 --methods ES,EF,NF
    python -m eval.optimal --out optimal.json

For each held-out instance of --seed (the instances `eval.compare` draws at the same
setting and seed), the heuristic pairs play it in the environment, and OR-Tools' CP-SAT
solves the clairvoyant, offline relaxation (damdjax.optimal: no memory or queue
limits, every task dispatched at its arrival) for at most --time-limit seconds. The
table gives each method's mean average response time, its gap to the solver's best
schedule (how much a perfect scheduler of the relaxation could gain, at most: that
schedule is not playable online) and to the best lower bound (the larger of the
solver's proven bound and the contention-free bound: no method can beat it), and the
solver's statuses. Needs the `optimal` extra (pip install 'damdjax[optimal]'). The
solver is meant for small instances: more than 40 tasks is refused without
--allow-large.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter

import jax
import numpy as np

from damdjax import optimal
from damdjax.cli import add_config_flags, add_seed_flag, check_int_flag, check_out_flag
from damdjax.eval.compare import (generated_setting, method_list, progress_printer,
                                  summarize, summarize_bound)
from damdjax.evaluation import generate_held_out, held_out_keys
from damdjax.io import json_number, write_json_atomic
from damdjax.family import play_methods
from damdjax.run_config import RunConfig

DEFAULT_METHODS = "ES,EF,EC,NF,RS,LS"
MAX_TASKS = 40      # larger instances need --allow-large


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.optimal", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help="comma-separated heuristic pairs, as eval.compare's --methods "
                        "(default %(default)s)")
    add_config_flags(p, RunConfig, ("num_tasks", "density", "num_servers", "slack",
                                    "queue_capacity"))
    p.set_defaults(num_tasks=25)
    p.add_argument("--episodes", type=int, default=5,
                   help="held-out instances (default %(default)s)")
    add_seed_flag(p, "seed of the held-out instances and the plays (eval.compare's --seed)")
    p.add_argument("--time-limit", type=float, default=10.0,
                   help="CP-SAT's wall-clock limit per instance, seconds (default %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="CP-SAT's search workers; 1 is deterministic up to where the time "
                        "limit cuts the search (default %(default)s)")
    p.add_argument("--resolution", type=float, default=1e-3,
                   help="the solver's tick, time units (default %(default)s)")
    p.add_argument("--rounding", choices=optimal.ROUNDINGS, default="down",
                   help="times rounded to ticks down (the solver's bound valid as it is) or "
                        "up (its schedules' claims valid as they are; docs/optimal.md) "
                        "(default %(default)s)")
    p.add_argument("--solver-seed", type=int, default=0,
                   help="CP-SAT's random seed, in [0, 2**31 - 1] (default %(default)s)")
    p.add_argument("--allow-large", action="store_true",
                   help=f"solve instances of more than {MAX_TASKS} tasks")
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check flags; nonsense values exit with a one-line error (code 2)."""
    p = build_parser()
    args = p.parse_args(argv)
    try:
        args.method_list = method_list(args.methods)
    except ValueError as e:
        p.error(str(e))
    if "best" in args.method_list:
        p.error("--methods best: name the tuned method itself (python -m eval.tune writes "
                "it), so that the table says what ran")
    if not args.method_list:
        p.error(f"--methods {args.methods!r} names no heuristic pair")
    check_int_flag(p, "--num-tasks", args.num_tasks, 1)
    if args.num_tasks > MAX_TASKS and not args.allow_large:
        p.error(f"--num-tasks {args.num_tasks}: the solver is meant for at most {MAX_TASKS} "
                "tasks (--allow-large to try anyway)")
    for name, low in (("--num-servers", 1), ("--episodes", 1), ("--workers", 1),
                      ("--queue-capacity", 1)):
        check_int_flag(p, name, getattr(args, name[2:].replace("-", "_")), low)
    for name in ("density", "slack", "time_limit", "resolution"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            p.error(f"--{name.replace('_', '-')} must be a finite number > 0, got {v}")
    if not 0 <= args.solver_seed < 2**31:
        p.error(f"--solver-seed must be in [0, 2**31 - 1], got {args.solver_seed}")
    check_out_flag(p, args.out)
    args.workload, args.n_max, args.m_max = "", None, None   # generated_config reads them
    return args


def _mean(values) -> float | None:
    values = list(values)
    return math.fsum(values) / len(values) if values else None


def episode_row(methods: dict[str, float], bound: float, result) -> dict:
    """One instance's numbers: each method's average response, the contention-free
    `bound`, the solver's answer, the best lower bound and each method's gaps."""
    lower = max(bound, result.solver_bound) if not math.isnan(result.solver_bound) else bound
    row = {"methods": methods, "bound": bound,
           "solver": {"status": result.status, "objective": result.objective,
                      "solver_objective": result.solver_objective,
                      "solver_bound": result.solver_bound, "wall_s": result.wall_s},
           "best_lower_bound": lower,
           "gap_to_lower_bound": {m: v - lower for m, v in methods.items()}}
    if result.has_schedule:
        row["gap_to_schedule"] = {m: v - result.objective for m, v in methods.items()}
    return row


def totals(rows: list[dict], names: list[str]) -> dict:
    """Means over instances (the solver's schedule and the gaps to it: over the
    instances where it found one) and the count of each solver status."""
    solved = [r for r in rows if "gap_to_schedule" in r]
    bounds = [r["solver"]["solver_bound"] for r in rows]
    return {"episodes": len(rows), "with_schedule": len(solved),
            "statuses": dict(Counter(r["solver"]["status"] for r in rows)),
            "methods": {m: _mean(r["methods"][m] for r in rows) for m in names},
            "bound": _mean(r["bound"] for r in rows),
            "solver_bound": None if any(map(math.isnan, bounds)) else _mean(bounds),
            "objective": _mean(r["solver"]["objective"] for r in solved),
            "best_lower_bound": _mean(r["best_lower_bound"] for r in rows),
            "gap_to_schedule": {m: _mean(r["gap_to_schedule"][m] for r in solved)
                                for m in names},
            "gap_to_lower_bound": {m: _mean(r["gap_to_lower_bound"][m] for r in rows)
                                   for m in names},
            "solver_seconds": math.fsum(r["solver"]["wall_s"] for r in rows)}


def format_table(total: dict) -> str:
    """Mean average response time of each method and the yardsticks, and the gaps."""
    cell = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"{'method':<26} {'avg response':>12} {'- best schedule':>16} "
             f"{'- best lower bound':>19}"]
    for m, v in total["methods"].items():
        lines.append(f"{m:<26} {cell(v):>12} {cell(total['gap_to_schedule'][m]):>16} "
                     f"{cell(total['gap_to_lower_bound'][m]):>19}")
    for label, key in (("solver's best schedule", "objective"),
                       ("solver's lower bound", "solver_bound"),
                       ("contention-free bound", "bound"),
                       ("best lower bound", "best_lower_bound")):
        lines.append(f"{label:<26} {cell(total[key]):>12}")
    statuses = ", ".join(f"{s} {c}" for s, c in sorted(total["statuses"].items()))
    lines.append(f"solver statuses over {total['episodes']} instance(s): {statuses} "
                 f"({total['with_schedule']} with a schedule)")
    return "\n".join(lines)


def _json(value):
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return json_number(value)


def main(argv=None) -> dict:
    """Run the comparison; returns `{"setting", "solver", "episodes", "total"}` (also
    printed, and written with --out)."""
    args = parse_args(argv)
    try:
        optimal.cp_model()
    except optimal.MissingExtraError as err:
        sys.exit(f"error: {err}")
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C): nothing written", file=sys.stderr, flush=True)
        sys.exit(130)


def _run(args: argparse.Namespace) -> dict:
    import ortools

    try:
        params, config, setting = generated_setting(args)
    except ValueError as e:
        sys.exit(f"error: {e}")
    inst_keys, play_keys = held_out_keys(args.seed, args.episodes)
    instances = generate_held_out(config, params, inst_keys)
    setting.update(queue_capacity=args.queue_capacity, episodes=args.episodes, seed=args.seed)
    solver = {"time_limit": args.time_limit, "workers": args.workers,
              "resolution": args.resolution, "rounding": args.rounding,
              "seed": args.solver_seed, "ortools": ortools.__version__}
    print(f"eval.optimal: {', '.join(args.method_list)} and CP-SAT on {args.episodes} "
          f"instance(s): {setting}, solver {solver}", flush=True)
    states = play_methods(args.method_list, play_keys, instances, args.queue_capacity, params,
                          chunked={"progress": progress_printer("heuristics")})
    per = {m: np.asarray(summarize(st)["_per_episode"]["avg_response_time"], np.float64)
           for m, st in states.items()}
    bounds = summarize_bound(instances)["_per_episode"]["avg_response_time"]
    rows = []
    t0 = time.perf_counter()
    for e in range(args.episodes):
        problem = optimal.Problem.from_instance(
            jax.tree_util.tree_map(lambda x: x[e], instances))
        result = optimal.solve(problem, time_limit=args.time_limit,
                               num_workers=args.workers, resolution=args.resolution,
                               rounding=args.rounding, seed=args.solver_seed)
        row = episode_row({m: float(v[e]) for m, v in per.items()}, float(bounds[e]), result)
        rows.append({"index": e, "num_tasks": problem.num_tasks, **row})
        best = min(row["methods"], key=row["methods"].get)
        print(f"instance {e + 1}/{args.episodes}: {result.status}, best schedule "
              f"{result.objective:.4f}, lower bound {row['best_lower_bound']:.4f} (solver "
              f"{result.solver_bound:.4f}, contention-free {row['bound']:.4f}), best method "
              f"{best} {row['methods'][best]:.4f}, {result.wall_s:.1f} s "
              f"({time.perf_counter() - t0:.0f} s in all)", file=sys.stderr, flush=True)
    total = totals(rows, args.method_list)
    print(format_table(total))
    out = {"setting": setting, "solver": solver, "episodes": _json(rows), "total": _json(total)}
    if args.out:
        write_out(out, args.out)
    return out


def write_out(obj: dict, path: str) -> None:
    """`obj` as JSON at `path`, atomically: a failed write (a full disk) leaves nothing
    half-written and exits with one line."""
    try:
        write_json_atomic(obj, path)
    except OSError as err:
        sys.exit(f"error: --out {path}: cannot write it: {err}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
