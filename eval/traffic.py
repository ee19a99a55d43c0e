"""Memory traffic of one env step, from XLA's cost analysis (used by `eval.bench`).

    PYTHONPATH=. python -m eval.traffic                    # the table at n_max 100, 400, 1600

A vmapped env step over thousands of envs is bound by memory traffic, not arithmetic.
XLA's cost analysis of a compiled program (`jax.jit(f).lower(...).compile()
.cost_analysis()`) counts the bytes every instruction of the optimized program reads
and writes ("bytes accessed") and its floating-point operations ("flops"). Divided by
the batch it gives a per-env-step figure for each part of a step:

* `transition`: envs.dynamics.transition (dispatch, picks, clock, reward, info);
* `observe`: envs.observation.observe;
* each heuristic dispatch rule and scheduling rule alone, and the `--method` pair;
* `episode step`: the pair's action, then `transition` (no observation): the loop body
  of eval.bench's whole-episode runs, whose measured env steps/s sit beside its ceiling;
* `train step`: the pair's action, then `env.step` with its observation (what a
  training loop's env side does per step); `train step, state donated`: the same with
  the input state's buffers donated (`donate_argnums`), as a loop carrying the state
  updates it in place instead of copying what passes through unchanged.
* `train step, dispatcher's observation` (`schedulers' observation`): the train step
  returning only that part of the observation (`envs.observation.observation_part`):
  the env side of train.dqn (train.mdqn), which carries only what its agents read.

Only shapes matter, so the programs are lowered from abstract inputs and never run.
The figures are a proxy from whatever backend compiles them (the CPU compiler on a
machine without a GPU): another compiler fuses differently, so its bytes differ. The
roofline is the memory-bound ceiling `bandwidth / bytes per env step` on an H100
(3.35 TB/s) and an H200 (4.8 TB/s); measured throughput is what eval.bench times.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

import jax

from damdjax.cli import check_int_flag
from damdjax.heuristics import DISPATCH_RULES, SCHEDULE_RULES, pair_from_name, pair_names
from envs.config import EnvConfig, EnvParams
from envs.dynamics import transition
from envs.env import EdgeEnv
from envs.observation import (DISPATCHER_FIELDS, SCHEDULER_FIELDS, observation_part,
                              observe)

BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}   # bytes/s of HBM
DEFAULT_N_MAX = (100, 400, 1600)
DEFAULT_BATCH = 1024
TRAIN_STEP = "train step"
EPISODE_STEP = "episode step"
CEILING_PARTS = (EPISODE_STEP, TRAIN_STEP, TRAIN_STEP + ", state donated")
# The observation parts the trainers carry (train.dqn: the dispatcher's; train.mdqn: the
# schedulers'): their env step computes only that part.
AGENT_PARTS = {"dispatcher's observation": DISPATCHER_FIELDS,
               "schedulers' observation": SCHEDULER_FIELDS}


def cost(fn: Callable, *args, donate: tuple[int, ...] = ()) -> dict[str, float]:
    """`{"bytes": bytes accessed, "flops": flops}` of `jit(fn)` compiled for `args`
    (arrays or abstract `jax.ShapeDtypeStruct`s; nothing runs)."""
    analysis = jax.jit(fn, donate_argnums=donate).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):   # older JAX: one dict per computation
        analysis = analysis[0]
    return {"bytes": float(analysis.get("bytes accessed", 0.0)),
            "flops": float(analysis.get("flops", 0.0))}


def step_parts(config: EnvConfig, params: EnvParams, method: str) -> dict[str, tuple]:
    """`{part: fn}`: every part of one env step, each a function of a batch's
    `(keys [B], states [B], actions [B])` that uses what it needs."""
    env = EdgeEnv(config)
    policy = pair_from_name(method)
    batched = lambda f: (lambda k, s, a: jax.vmap(f)(k, s))   # a rule or a policy
    parts = {
        "transition": lambda k, s, a: jax.vmap(
            lambda s, a: transition(s, a, params.tau, params.miss_penalty))(s, a),
        "observe": lambda k, s, a: jax.vmap(lambda s: observe(s, params.time_scale))(s),
    }
    for name, rule in DISPATCH_RULES.items():
        parts[f"dispatch {name}"] = batched(rule)
    for name, rule in SCHEDULE_RULES.items():
        parts[f"schedule {name}"] = batched(rule)
    d, s = pair_names(method)
    parts[f"policy {method} ({d}+{s})"] = batched(policy)
    parts[EPISODE_STEP] = batched(lambda k, s: transition(s, policy(k, s), params.tau,
                                                          params.miss_penalty))
    parts[TRAIN_STEP] = batched(lambda k, s: env.step(k, s, policy(k, s), params))
    for label, fields in AGENT_PARTS.items():   # what train.dqn / train.mdqn carry
        parts[f"{TRAIN_STEP}, {label}"] = batched(
            lambda k, s, fields=fields: _with_part(env.step(k, s, policy(k, s), params), fields))
    return parts


def _with_part(step_out: tuple, fields: tuple[str, ...]) -> tuple:
    obs, *rest = step_out
    return (observation_part(obs, fields), *rest)


def abstract_batch(config: EnvConfig, params: EnvParams, batch: int):
    """`(keys, states, actions)` of a batch as abstract values (shapes and dtypes only)."""
    env = EdgeEnv(config)
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
    states = jax.eval_shape(lambda k: jax.vmap(env.reset, in_axes=(0, None))(k, params)[1],
                            keys)
    actions = jax.eval_shape(lambda: jax.vmap(lambda _: env.dummy_action())(keys))
    return keys, states, actions


def traffic(config: EnvConfig, params: EnvParams, method: str, batch: int) -> dict:
    """Per-env-step bytes accessed and flops of every part (`step_parts`) at `config`,
    the state's bytes per env, and the rooflines (env steps/s) of the episode step and
    the train step."""
    batch_args = abstract_batch(config, params, batch)
    states = batch_args[1]
    state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(states))
    parts = step_parts(config, params, method)
    rows = {}
    for name, fn in parts.items():
        c = cost(fn, *batch_args)
        rows[name] = {"bytes": c["bytes"] / batch, "flops": c["flops"] / batch}
    donated = cost(parts[TRAIN_STEP], *batch_args, donate=(1,))
    rows[TRAIN_STEP + ", state donated"] = {"bytes": donated["bytes"] / batch,
                                            "flops": donated["flops"] / batch}
    roofline = {gpu: {part: bw / rows[part]["bytes"] for part in CEILING_PARTS}
                for gpu, bw in BANDWIDTH.items()}
    return {"n_max": config.n_max, "config": {k: getattr(config, k) for k in (
                "n_max", "m_max", "p_max", "queue_capacity", "j_max")},
            "state_bytes_per_env": state_bytes / batch, "parts": rows,
            "roofline_env_steps_per_s": roofline}


def traffic_report(n_max_values: Sequence[int], method: str, batch: int,
                   progress: Callable[[str], None] | None = None) -> dict:
    """`traffic` at `EnvConfig(n_max=n)` for each n (default params), JSON-ready."""
    params = EnvParams()
    sizes = []
    for n in n_max_values:
        if progress is not None:
            progress(f"traffic: compiling every part at n_max {n} (batch {batch})")
        sizes.append(traffic(EnvConfig(n_max=n), params, method, batch))
    return {"backend": jax.default_backend(), "batch": batch, "method": method,
            "bandwidth_bytes_per_s": BANDWIDTH,
            "what": "XLA cost analysis of the compiled vmapped programs (bytes accessed, "
                    "flops), divided by the batch: a proxy from this backend's compiler, "
                    "not a measurement of memory traffic",
            "sizes": sizes}


def check_n_max_flag(parser: argparse.ArgumentParser, flag: str, values) -> None:
    """`parser.error` (one line naming the flag and the value) unless every `n_max` of
    `values` makes a valid `EnvConfig` (>= 1, within the int32 limit)."""
    for n in values:
        try:
            EnvConfig(n_max=n)
        except ValueError as err:
            parser.error(f"{flag}: {err}")


def check_method_flag(parser: argparse.ArgumentParser, method: str) -> None:
    """`parser.error` (one line naming the value) unless `method` names a heuristic pair."""
    try:
        pair_names(method)
    except ValueError as err:
        parser.error(str(err))


def _num(x: float) -> str:
    return f"{x:,.0f}"


def markdown_traffic(report: dict) -> str:
    """The report as a markdown table: a row per part, bytes / flops per n_max."""
    sizes = report["sizes"]
    head = "| per env step | " + " | ".join(f"n_max {s['n_max']}: bytes / flops"
                                            for s in sizes) + " |"
    lines = [head, "|---|" + "---:|" * len(sizes)]
    lines.append("| the state (all leaves) | " + " | ".join(
        f"{_num(s['state_bytes_per_env'])} / -" for s in sizes) + " |")
    for part in sizes[0]["parts"]:
        lines.append(f"| {part} | " + " | ".join(
            f"{_num(s['parts'][part]['bytes'])} / {_num(s['parts'][part]['flops'])}"
            for s in sizes) + " |")
    for gpu in BANDWIDTH:
        for part in sizes[0]["roofline_env_steps_per_s"][gpu]:
            lines.append(f"| roofline {gpu}, {part} (env steps/s) | " + " | ".join(
                f"{s['roofline_env_steps_per_s'][gpu][part]:.3g}" for s in sizes) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the traffic table (the same as eval.bench's, alone)."""
    from eval.bench import int_list  # the flag type the benchmarks share
    parser = argparse.ArgumentParser(prog="python -m eval.traffic",
                                     description="Bytes accessed and flops per env step of "
                                                 "each part of a step (XLA cost analysis).")
    parser.add_argument("--n-max", type=int_list, default=DEFAULT_N_MAX, metavar="N1,N2,...",
                        help="task slots of each measured config, each >= 1 (default: "
                             f"{','.join(map(str, DEFAULT_N_MAX))})")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                        help=f"vmapped batch of the compiled programs, >= 1 "
                             f"(default: {DEFAULT_BATCH})")
    parser.add_argument("--method", default="LS", help="heuristic pair (default: LS)")
    args = parser.parse_args(argv)
    check_int_flag(parser, "--batch", args.batch, 1)
    check_n_max_flag(parser, "--n-max", args.n_max)
    check_method_flag(parser, args.method)
    report = traffic_report(args.n_max, args.method, args.batch,
                            lambda line: print(line, file=sys.stderr, flush=True))
    print(markdown_traffic(report))
    print(f"\nbackend: {report['backend']}; {report['what']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
