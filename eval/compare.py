"""Compare methods on average response time and deadline-miss rate.

    python -m eval.compare                                  # generated instances
    python -m eval.compare --num-tasks 200 --density 3 --num-servers 8 --episodes 300
    python -m eval.compare --instance examples/worked_example.json --out result.json

Every method runs on the same instances (the same keys), so differences are
paired. The table gives means with 95% confidence intervals over episodes;
`--out` writes the numbers as JSON (and, for a single instance, the per-task
schedule of each method in file order: jobs in file order, tasks in job order).
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from damdjax.heuristics import pair_from_name, pair_names
from damdjax.io import json_number, write_json_atomic
from damdjax.metrics import METRIC_NAMES, episode_metrics, mean_ci95
from damdjax.rollout import run_from_instance
from envs.config import EnvConfig, EnvParams, check_params
from envs.generator import generate
from envs.instance import instance_from_spec
from envs.instance_io import InstanceError, global_index, load_instance
from envs.state import done_time

DEFAULT_METHODS = "NF,RS,LS"


def build_parser() -> argparse.ArgumentParser:
    defaults = EnvParams()
    p = argparse.ArgumentParser(
        prog="python -m eval.compare", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help="comma-separated methods: two letters, dispatch N(earest)/R(andom)/"
                        "L(east load) then schedule F(CFS)/S(JF)/D (SDF) (default %(default)s)")
    p.add_argument("--instance", metavar="FILE",
                   help="a JSON instance file (MODEL.md format) instead of generated instances")
    p.add_argument("--num-tasks", type=int, default=defaults.num_tasks,
                   help="tasks per generated episode (default %(default)s)")
    p.add_argument("--density", type=float, default=defaults.density,
                   help="task arrival density, tasks per time unit (default %(default)s)")
    p.add_argument("--num-servers", type=int, default=defaults.num_servers,
                   help="edge servers (default %(default)s)")
    p.add_argument("--queue-capacity", type=int, default=None,
                   help="queue slots per server (default: 16 for generated instances, "
                        "the number of tasks for an instance file, so it never binds)")
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes: generated instances, or random draws on --instance "
                        "(default 200, or 1 with --instance)")
    p.add_argument("--seed", type=int, default=0, help="seed of instances and draws (default 0)")
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check flags; nonsense values exit with a one-line error (code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not args.method_list:
            raise ValueError("--methods is empty")
        for m in args.method_list:
            pair_names(m)
        if len(set(args.method_list)) != len(args.method_list):
            raise ValueError(f"--methods lists a method twice: {args.methods}")
    except ValueError as e:
        parser.error(str(e))
    if args.episodes is not None and args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    if args.queue_capacity is not None and args.queue_capacity < 1:
        parser.error(f"--queue-capacity must be >= 1, got {args.queue_capacity}")
    if args.instance is None:
        if args.num_tasks < 1:
            parser.error(f"--num-tasks must be >= 1, got {args.num_tasks}")
        if args.num_servers < 1:
            parser.error(f"--num-servers must be >= 1, got {args.num_servers}")
        if not args.density > 0 or not np.isfinite(args.density):
            parser.error(f"--density must be a finite number > 0, got {args.density}")
    return args


def run_batch(method: str, keys: jax.Array, instances, queue_capacity: int, params: EnvParams):
    """Play every instance (batched on axis 0) with `method`; returns final states."""
    policy = pair_from_name(method)

    @jax.jit
    def play(keys, instances):
        return jax.vmap(lambda k, inst: run_from_instance(
            k, inst, policy, queue_capacity, params.tau, params.miss_penalty)[0])(keys, instances)

    return play(keys, instances)


def summarize(states) -> dict:
    """Means and 95% CI half-widths of the metrics over a batch of final states."""
    metrics = jax.vmap(episode_metrics)(states)
    out = {"episodes": int(states.step.shape[0]),
           "truncated": int(np.sum(np.asarray(states.truncated)))}
    for name in METRIC_NAMES:
        mean, half = mean_ci95(np.asarray(metrics[name]))
        out[name] = mean
        out[name + "_ci95"] = half
    out["_per_episode"] = {name: np.asarray(metrics[name]) for name in
                           ("avg_response_time", "deadline_miss_rate")}
    return out


def schedule_in_file_order(state, spec) -> dict:
    """Per-task `server`, `start`, `finish`, `done` lists in file order (first episode)."""
    first = jax.tree_util.tree_map(lambda x: x[0], state)
    order = [g for job in global_index(spec) for g in job]
    server = np.asarray(first.server)[order]
    return {"server": [int(s) for s in server],
            "start": [float(x) for x in np.asarray(first.start)[order]],
            "finish": [float(x) for x in np.asarray(first.finish)[order]],
            "done": [float(x) for x in np.asarray(done_time(first))[order]]}


def format_table(results: dict) -> str:
    """A plain-text table: method, avg response time ± CI, miss rate ± CI."""
    lines = [f"{'method':<8} {'avg response time':>24} {'deadline-miss rate':>24} {'episodes':>9}"]
    for name, r in results.items():
        def cell(key):
            half = r[key + "_ci95"]
            return f"{r[key]:.4f}" + ("" if np.isnan(half) else f" ± {half:.4f}")
        lines.append(f"{name:<8} {cell('avg_response_time'):>24} "
                     f"{cell('deadline_miss_rate'):>24} {r['episodes']:>9}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Run the comparison; returns `{"setting", "methods"}` (also printed / written)."""
    args = parse_args(argv)
    # One instance file is cheap: run it in float64 so its times come out exact.
    with jax.enable_x64(args.instance is not None):
        return _compare(args)


def _compare(args: argparse.Namespace) -> dict:
    params = EnvParams()
    key = jax.random.PRNGKey(args.seed)
    k_inst, k_play = jax.random.split(key)
    if args.instance is not None:
        try:
            spec = load_instance(args.instance)
        except InstanceError as e:
            sys.exit(f"error: {e}")
        instance, q_default = instance_from_spec(spec)
        episodes = args.episodes or 1
        instances = jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x, (episodes,) + x.shape), instance)
        setting = {"instance": args.instance}
    else:
        spec = None
        args.episodes = args.episodes or 200
        params = params.replace(num_tasks=args.num_tasks, num_servers=args.num_servers,
                                density=args.density)
        config = EnvConfig(n_max=args.num_tasks, m_max=args.num_servers)
        try:
            check_params(config, params)
        except ValueError as e:
            sys.exit(f"error: {e}")
        q_default = config.queue_capacity
        episodes = args.episodes
        instances = jax.jit(jax.vmap(lambda k: generate(k, config, params)))(
            jax.random.split(k_inst, episodes))
        setting = {"num_tasks": args.num_tasks, "density": args.density,
                   "num_servers": args.num_servers}
    q = args.queue_capacity or q_default
    setting.update(queue_capacity=q, episodes=episodes, seed=args.seed)
    play_keys = jax.random.split(k_play, episodes)
    print(f"comparing {', '.join(args.method_list)} on {episodes} episode(s): {setting}",
          flush=True)
    results = {}
    for method in args.method_list:
        t0 = time.perf_counter()
        states = run_batch(method, play_keys, instances, q, params)
        results[method] = summarize(states)
        results[method]["seconds"] = time.perf_counter() - t0
        if spec is not None:
            results[method].update(schedule_in_file_order(states, spec))
    print(format_table(results))
    for name, r in results.items():
        if r["truncated"]:
            print(f"warning: {name}: {r['truncated']} episode(s) hit the step cap", file=sys.stderr)
    out = {"setting": setting,
           "methods": {name: {k: json_number(v) for k, v in r.items() if not k.startswith("_")}
                       for name, r in results.items()}}
    if args.out:
        write_json_atomic(out, args.out)
        print(f"wrote {args.out}")
    return {"setting": setting, "methods": results}


if __name__ == "__main__":
    main()
