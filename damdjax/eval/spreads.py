"""What each named setting separates: the spreads between the heuristics on it.

    PYTHONPATH=. python -m eval.spreads                                # every registered name
    PYTHONPATH=. python -m eval.spreads --data DATA --out spreads.json   # + the real-workload names
    PYTHONPATH=. python -m eval.spreads --names Edge-default-v0,Edge-hetero-v0 --episodes 32

For each name of `damdjax.registry` (with `--data`, the real-workload names of
`register_workloads` too), every heuristic pair (`damdjax.heuristics.ALL_PAIRS`: four
dispatch rules by five scheduling rules) and each dispatch rule with uniformly random
picks (`damdjax.heuristics.random_pick`) play the same `--episodes` held-out instances
(`damdjax.evaluation`, seed `--seed`). Per name, from the mean average response time:

* `best`, `worst`: the best and worst pairs, and `pairs`: worst / best - 1;
* `scheduling`: the best pair's dispatch rule with random picks, over the best pair,
  - 1 (how much a scheduling agent that picks at random loses to the best rule);
* `dispatch`: the worst dispatch rule with the best pair's scheduling rule, over the
  best pair, - 1 (how much the dispatcher's choice matters).

A spread above 0.2 means that choice moves the average response time by more than 20%.
The table also gives each name's sizes and the best pair's deadline-miss rate.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import numpy as np

from damdjax import registry
from damdjax.cli import add_seed_flag, check_int_flag, check_out_flag
from damdjax.envs.config import offered_load
from damdjax.envs.workload import mean_task_work
from damdjax.evaluation import (best_pair, generate_held_out, held_out_keys, play_named,
                                play_named_pairs)
from damdjax.eval.benchkit import machine_info, print_machine_and_write
from damdjax.heuristics import ALL_PAIRS, DISPATCH_RULES, pair, pair_names, random_pick

DEFAULT_EPISODES = 64
RANDOM_PICKS = "+random picks"   # suffix of a dispatch rule played with random picks


def setting_spreads(name: str, episodes: int, seed: int) -> dict:
    """The row of one registered name (the module docstring)."""
    env, params = registry.make(name)
    config = env.config
    library = getattr(env.generator, "library", None)
    inst_keys, play_keys = held_out_keys(seed, episodes)
    instances = generate_held_out(config, params, inst_keys, library)
    q = config.queue_capacity
    per = play_named_pairs(ALL_PAIRS, params, instances, play_keys, q)
    randoms = {f"{d}{RANDOM_PICKS}": pair(rule, random_pick) for d, rule in DISPATCH_RULES.items()}
    per |= play_named(randoms, params, instances, play_keys, q)
    mean = {k: float(np.mean(v["avg_response_time"])) for k, v in per.items()}
    miss = {k: float(np.mean(v["deadline_miss_rate"])) for k, v in per.items()}
    best, worst = best_pair(per, ALL_PAIRS), max(ALL_PAIRS, key=mean.get)
    best_dispatch, best_schedule = pair_names(best)
    same_schedule = [n for n in ALL_PAIRS if pair_names(n)[1] == best_schedule]
    worst_dispatch = max(same_schedule, key=mean.get)
    mean_work = None if library is None else mean_task_work(library)
    return {
        "name": name, "description": registry.describe(name),
        "n_max": config.n_max, "m_max": config.m_max, "queue_capacity": q,
        "num_tasks": int(params.num_tasks), "num_servers": int(params.num_servers),
        "density": float(params.density), "offered_load": offered_load(params, mean_work),
        "best": best, "best_response": mean[best], "best_miss": miss[best],
        "worst": worst, "worst_response": mean[worst],
        "pairs": mean[worst] / mean[best] - 1,
        "scheduling": mean[f"{best_dispatch}{RANDOM_PICKS}"] / mean[best] - 1,
        "dispatch": mean[worst_dispatch] / mean[best] - 1,
        "worst_dispatch": worst_dispatch,
        "mean_response": mean, "miss_rate": miss,
    }


def markdown_spreads(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| name | tasks | servers | density | load | best (response) | worst (response) "
             "| pairs | scheduling | dispatch | best's miss rate |",
             "|---|" + "---:|" * 4 + "---|---|" + "---:|" * 4]
    for r in rows:
        lines.append(
            f"| `{r['name']}` | {r['num_tasks']} | {r['num_servers']} | {r['density']:.3g} "
            f"| {r['offered_load']:.2f} | {r['best']} ({r['best_response']:.2f}) "
            f"| {r['worst']} ({r['worst_response']:.2f}) | {r['pairs']:+.0%} "
            f"| {r['scheduling']:+.0%} | {r['dispatch']:+.0%} | {r['best_miss']:.3f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eval.spreads",
        description="The spreads between the heuristics on each named setting "
                    "(damdjax.registry): what each setting separates.")
    parser.add_argument("--names", default=None, metavar="NAME,NAME,...",
                        help="registered names (default: every registered name, with --data "
                             "the real-workload names too)")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="a data folder for damdjax.registry.register_workloads "
                             "(wfcommons/ and alibaba-v2018-dags.csv)")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES,
                        help=f"held-out episodes per name (default {DEFAULT_EPISODES})")
    add_seed_flag(parser, "seed of the held-out episodes")
    parser.add_argument("--out", default=None, metavar="FILE.json",
                        help="also write every number to this JSON file (atomic write)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    check_out_flag(parser, args.out)
    check_int_flag(parser, "--episodes", args.episodes, 2)
    if args.data is not None:
        try:
            registry.register_workloads(args.data, replace=True)
        except (ValueError, OSError) as err:
            parser.error(f"--data: {err}")
    chosen = registry.names() if args.names is None else tuple(
        n.strip() for n in args.names.split(",") if n.strip())
    unknown = [n for n in chosen if n not in registry.names()]
    if unknown or not chosen:
        parser.error(f"--names: unknown name {unknown[0]!r}" if unknown else
                     "--names: no name given")
    rows = []
    for name in chosen:
        t0 = time.perf_counter()
        rows.append(setting_spreads(name, args.episodes, args.seed))
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"command: python -m eval.spreads {' '.join(argv)}")
    print(f"episodes: {args.episodes}, seed: {args.seed}; spreads of the mean average response "
          f"time: pairs = worst/best - 1, scheduling = best dispatch with random picks / best "
          f"- 1, dispatch = worst dispatch with the best's scheduling rule / best - 1")
    print()
    print(markdown_spreads(rows))
    print()
    payload = {"command": "python -m eval.spreads " + " ".join(argv),
               "episodes": args.episodes, "seed": args.seed, "machine": machine_info(),
               "results": rows}
    print_machine_and_write(payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
