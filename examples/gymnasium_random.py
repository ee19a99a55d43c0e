"""A random dispatcher through the Gymnasium API (`damdjax.bridges.gymnasium.DispatcherEnv`).

The plain Python loop any Gymnasium user writes: numpy observations in, an action
out, `terminated` / `truncated` to end the episode and `reset` to start the next. The
agent picks a server uniformly among the valid ones, `env.action_masks()` [M] bool
(the method sb3-contrib's MaskablePPO reads); the servers order their queues by SJF.
At each episode's end `info["episode"]` holds its metrics (average response time,
deadline-miss rate, ...).

    python examples/gymnasium_random.py --env Edge-tasks25-v0 --episodes 5
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from damdjax.bridges.gymnasium import DispatcherEnv
from damdjax.metrics import mean_ci95
from damdjax.registry import make


def run_episode(env: DispatcherEnv, rng: np.random.Generator, seed: int | None) -> dict:
    """One episode of uniformly random valid actions: the env's episode metrics, with the
    return and the invalid-action count (`length`: the decisions)."""
    obs, info = env.reset(seed=seed)
    total, steps, invalid = 0.0, 0, 0
    while True:
        valid = np.flatnonzero(env.action_masks())         # never empty
        action = int(rng.choice(valid))
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        steps += 1
        invalid += info["invalid_dispatch"]                # stays 0: we obey the mask
        if terminated or truncated:
            # info["episode"]: "length" counts our steps (decisions), "epochs" the env's
            assert info["episode"]["length"] == steps
            return {**info["episode"], "return": total, "invalid_actions": invalid,
                    "truncated": truncated}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Edge-tasks25-v0", help="registry name (damdjax.registry)")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    edge_env, params = make(args.env)
    env = DispatcherEnv(edge_env, params)       # the view with SJF schedules inside
    rng = np.random.default_rng(args.seed)
    start = time.time()
    episodes = []
    for i in range(args.episodes):
        # seed the first reset only: later resets continue the env's generator
        ep = run_episode(env, rng, seed=args.seed if i == 0 else None)
        episodes.append(ep)
        print(f"episode {i}: return {ep['return']:8.3f}  decisions {ep['length']}  "
              f"avg response time {ep['avg_response_time']:.3f}  deadline-miss rate "
              f"{ep['deadline_miss_rate']:.3f}  invalid {ep['invalid_actions']}", flush=True)
    wall = time.time() - start

    summary = {}
    for key in ("return", "avg_response_time", "deadline_miss_rate"):
        mean, half = mean_ci95([ep[key] for ep in episodes])
        summary[key] = {"mean": mean, "ci95": None if math.isnan(half) else half}
        print(f"{key}: {mean:.4f}" + ("" if math.isnan(half) else f" ± {half:.4f}"))
    print(f"{args.episodes} episodes in {wall:.1f} s (the first compiles reset and step)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": args.env, "seed": args.seed, "episodes": episodes,
                       "summary": summary, "invalid_actions":
                       sum(ep["invalid_actions"] for ep in episodes),
                       "seconds": wall}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
