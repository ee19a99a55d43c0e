"""Where the rollout targets' spread comes from: the tasks arrived at a decision, or later.

    PYTHONPATH=. python -m eval.target_spread                         # 25 to 200 tasks
    PYTHONPATH=. python -m eval.target_spread --num-tasks 100 --states 64 --out s.json

`train.dqn --targets rollout` fits the dispatcher network to `rollout_targets` of the
episode's total response time played out from every server
(`damdjax.lookahead.lookahead_costs`). The network sees the present; the totals
also hold the tasks that arrive after the decision. This measures, per setting, at
`--states` decision states (each drawn by playing an episode with the base pair for
a uniform number of steps in [N/5, 8N/5), then on to its next dispatch decision):

* the targets' mean square over the feasible servers (`rollout_targets` of the full
  totals: the squared error of predicting 0, the loss scale `rollout_loss` starts
  from; its per-server loss is half of it), split as `arrived + later + 2 cov`: the
  targets of the totals over the tasks arrived by the decision (the head task and
  earlier ones; `lookahead_costs(..., horizon=0)`, what `--rollout-tasks arrived`
  fits, here from the same full play-outs) and of the rest (the full total minus that);
* how often the arrived tasks' best server is the full total's (`agree`);
* the fraction of the real tasks arrived at the decision states.

States with fewer than two feasible servers or an infinite total are left out
(`rollout_targets` stores none either). Only the base pair plays (no network).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from damdjax import memory
from damdjax.cli import add_seed_flag, check_int_flag, check_out_flag
from damdjax.heuristics import Policy, pair_from_name
from damdjax.io import write_json_atomic
from damdjax.lookahead import played_out, rollout_targets, total_response_time
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.dynamics import dispatch_feasible, dispatch_needed
from damdjax.envs.env import EdgeEnv
from damdjax.eval.benchkit import check_method_flag, check_n_max_flag


def decision_state(key: jax.Array, env: EdgeEnv, params: EnvParams, base: Policy):
    """A state of a fresh episode (`key`) played with `base` for a uniform number of steps
    in [N/5, 8N/5) (N = `params.num_tasks`), then on to its next dispatch decision (or its
    end, where none is left), stepped by `env.step`."""
    n = params.num_tasks
    k_gen, k_len, k_act = jax.random.split(key, 3)
    _, state = env.reset(k_gen, params)
    steps = jax.random.randint(k_len, (), n // 5, max(8 * n // 5, n // 5 + 1))

    def body(i, s):
        go = ~s.done & ((i < steps) | ~dispatch_needed(s))
        nxt = env.step(k_act, s, base(k_act, s), params)[1]   # only the state is kept
        return jax.tree.map(lambda a, b: jnp.where(go, a, b), nxt, s)
    return jax.lax.fori_loop(0, env.config.max_steps, body, state)


def spread_parts(key: jax.Array, state, base: Policy, time_scale: float) -> dict:
    """At one decision `state`: the targets [M] of the full totals, of the arrived tasks'
    totals and of the rest, the feasible servers [M], whether the state counts (a dispatch
    needed, two feasible servers, finite totals) [] and the arrived fraction []."""
    ends = played_out(key, state, base)   # one full play-out per server gives both totals
    total = jax.vmap(total_response_time)(ends)
    arrived = jax.vmap(lambda e: total_response_time(e, state.time))(ends)
    mask = dispatch_feasible(state) & dispatch_needed(state)
    t_all, ok_all = rollout_targets(total, mask, time_scale)
    t_arr, ok_arr = rollout_targets(arrived, mask, time_scale)
    t_later, _ = rollout_targets(jnp.where(mask, total - arrived, 0.0), mask, time_scale)
    inst = state.instance
    counts = ok_all & ok_arr & (jnp.sum(mask) > 1)
    frac = jnp.sum(inst.task_mask & (inst.arrival <= state.time)) / jnp.sum(inst.task_mask)
    return {"all": t_all, "arrived": t_arr, "later": t_later, "mask": mask,
            "counts": counts, "arrived_fraction": frac}


def measure(num_tasks: int, states: int, seed: int, method: str) -> dict:
    """The spread row of one setting (`EnvParams` defaults but `num_tasks`, n_max =
    num_tasks): mean squares of the target parts over the counted states (see the module
    docstring)."""
    config, params = EnvConfig(n_max=num_tasks), EnvParams(num_tasks=num_tasks)
    env, base = EdgeEnv(config), pair_from_name(method)

    def one(key):
        state = decision_state(key, env, params, base)
        return spread_parts(jax.random.fold_in(key, 1), state, base, params.time_scale)
    keys = jax.random.split(jax.random.key(seed), states)
    out = {k: np.asarray(v, np.float64) for k, v in jax.jit(jax.vmap(one))(keys).items()}
    ok, mask = out["counts"].astype(bool), out["mask"].astype(bool)
    width = mask.sum(1)[ok]
    mean_sq = lambda a, b: float(np.mean((a * b).sum(1)[ok] / width))
    best = lambda t: np.where(mask, t, -np.inf).argmax(1)
    return {"num_tasks": num_tasks, "states": int(ok.sum()), "drawn": states,
            "mean_square": mean_sq(out["all"], out["all"]),
            "arrived": mean_sq(out["arrived"], out["arrived"]),
            "later": mean_sq(out["later"], out["later"]),
            "cross": 2 * mean_sq(out["arrived"], out["later"]),
            "agree": float(np.mean((best(out["all"]) == best(out["arrived"]))[ok])),
            "arrived_fraction": float(np.mean(out["arrived_fraction"][ok]))}


def markdown(rows: list[dict], method: str) -> str:
    lines = [f"| tasks | states | targets' mean square (base {method}) | arrived tasks' part | "
             "later tasks' part | 2 cov | arrived best = full best | tasks arrived |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['num_tasks']} | {r['states']} | {r['mean_square']:.3f} | "
                     f"{r['arrived']:.3f} | {r['later']:.3f} | {r['cross']:+.3f} | "
                     f"{r['agree']:.2f} | {r['arrived_fraction']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from damdjax.eval.bench import int_list  # the flag type the benchmarks share
    p = argparse.ArgumentParser(prog="python -m eval.target_spread", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-tasks", type=int_list, default=(25, 50, 100, 150, 200),
                   metavar="N1,N2,...", help="real tasks per episode of each measured "
                   "setting (n_max the same), each >= 1 (default: 25,50,100,150,200)")
    p.add_argument("--states", type=int, default=256,
                   help="decision states drawn per setting, >= 1 (default %(default)s)")
    add_seed_flag(p, "key of the states", default=7)
    p.add_argument("--method", default="ES",
                   help="the base pair the rollouts play (default %(default)s)")
    p.add_argument("--out", metavar="FILE.json", help="write the rows as JSON")
    args = p.parse_args(argv)
    check_int_flag(p, "--states", args.states, 1)
    check_n_max_flag(p, "--num-tasks", args.num_tasks)
    check_method_flag(p, args.method)
    for n in args.num_tasks:   # a state and one play-out per server, all held at once
        config = EnvConfig(n_max=n)
        try:
            memory.check_memory([(f"the states (--states {args.states} x {config.m_max + 1} "
                                  f"env states at --num-tasks {n})", memory.evaluation_bytes(
                                      config, args.states, config.m_max + 1,
                                      memory.float_bytes()))])
        except ValueError as err:
            p.error(str(err))
    if args.out:
        check_out_flag(p, args.out)
    rows = []
    for n in args.num_tasks:
        rows.append(measure(n, args.states, args.seed, args.method))
        print(f"[target_spread] {n} tasks: {rows[-1]['states']} states", file=sys.stderr,
              flush=True)
    print(markdown(rows, args.method))
    if args.out:
        write_json_atomic({"method": args.method, "seed": args.seed, "rows": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
