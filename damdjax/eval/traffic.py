"""Memory traffic of one env step, from XLA's cost analysis (used by `eval.bench`).

    PYTHONPATH=. python -m eval.traffic                    # the table at n_max 100, 400, 1600
    PYTHONPATH=. python -m eval.traffic --n-max 100 --kernels "train step, state donated"
                                                           # where one part's bytes go

A vmapped env step over thousands of envs is bound by memory traffic, not arithmetic.
XLA's cost analysis of a compiled program (`jax.jit(f).lower(...).compile()
.cost_analysis()`) counts the bytes every instruction of the optimized program reads
and writes ("bytes accessed") and its floating-point operations ("flops"). Divided by
the batch it gives a per-env-step figure for each part of a step:

* `transition`: damdjax.envs.dynamics.transition (dispatch, picks, clock, reward, info);
* `observe`: damdjax.envs.observation.observe;
* each heuristic dispatch rule and scheduling rule alone, and the `--method` pair;
* `episode step`: the pair's action, then `env.step` without its observation (XLA
  removes it): the loop body of eval.bench's whole-episode runs, whose measured env
  steps/s sit beside its ceiling;
* `train step`: the pair's action, then `env.step` with its observation (what a
  training loop's env side does per step); `train step, state donated`: the same with
  the input state's buffers donated (`donate_argnums`), as a loop carrying the state
  updates it in place instead of copying what passes through unchanged.
* `train step, dispatcher's observation` (`schedulers' observation`): the train step
  returning only that part of the observation (`damdjax.envs.observation.observation_part`):
  the env side of train.dqn (train.mdqn), which carries only what its agents read.

Only shapes matter, so the programs are lowered from abstract inputs and never run.
The figures are a proxy from whatever backend compiles them (the CPU compiler on a
machine without a GPU): another compiler fuses differently, so its bytes differ. The
roofline is the memory-bound ceiling `bandwidth / bytes per env step` on an H100
(3.35 TB/s) and an H200 (4.8 TB/s); measured throughput is what eval.bench times.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Callable, Sequence

import jax

from damdjax.cli import check_int_flag
from damdjax.eval.benchkit import check_method_flag, check_n_max_flag, int_list
from damdjax.heuristics import DISPATCH_RULES, SCHEDULE_RULES, pair_from_name, pair_names
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.dynamics import transition
from damdjax.envs.env import EdgeEnv
from damdjax.envs.observation import (DISPATCHER_FIELDS, SCHEDULER_FIELDS, observation_part,
                              observe)

BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}   # bytes/s of HBM
DEFAULT_N_MAX = (100, 400, 1600)
DEFAULT_BATCH = 1024
TRAIN_STEP = "train step"
EPISODE_STEP = "episode step"
DONATED = ", state donated"   # a part's name with this suffix: the state's buffers donated
CEILING_PARTS = (EPISODE_STEP, TRAIN_STEP, TRAIN_STEP + DONATED)
# The observation parts the trainers carry (train.dqn: the dispatcher's; train.mdqn: the
# schedulers'): their env step computes only that part.
AGENT_PARTS = {"dispatcher's observation": DISPATCHER_FIELDS,
               "schedulers' observation": SCHEDULER_FIELDS}


def cost(fn: Callable, *args, donate: tuple[int, ...] = ()) -> dict[str, float]:
    """`{"bytes": bytes accessed, "flops": flops}` of `jit(fn)` compiled for `args`
    (arrays or abstract `jax.ShapeDtypeStruct`s; nothing runs)."""
    return cost_of(jax.jit(fn, donate_argnums=donate).lower(*args).compile())


def cost_of(compiled) -> dict[str, float]:
    """`{"bytes", "flops"}` from a compiled program's cost analysis (see `cost`)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):   # older JAX: one dict per computation
        analysis = analysis[0]
    return {"bytes": float(analysis.get("bytes accessed", 0.0)),
            "flops": float(analysis.get("flops", 0.0))}


# Bytes per element of the HLO element types (what a shape such as `f32[1024,10]` holds).
_HLO_ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                   "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
                   "c128": 16}
_HLO_ARRAY = re.compile(r"\b(" + "|".join(_HLO_ITEM_BYTES) + r")\[([0-9,]*)\]")
_HLO_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)")
# Instructions that move no data of their own (views, tuples, inputs).
_NO_KERNEL = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}


def _hlo_shape_bytes(shape: str) -> int:
    """Bytes of every array in an HLO shape's text (a tuple's arrays summed)."""
    total = 0
    for item, dims in _HLO_ARRAY.findall(shape):
        total += _HLO_ITEM_BYTES[item] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def kernels(fn: Callable, *args, donate: tuple[int, ...] = ()) -> dict:
    """Where the bytes of `jit(fn)` compiled for `args` go, one row per kernel.

    Reads the compiled program's top-level (entry) instructions: a kernel's bytes are
    its operands' plus its output's sizes (what XLA's cost analysis charges a kernel
    that reads and writes its arrays whole), its kind the root instruction of a fused
    kernel, seen through bitcasts (`fusion:gather`, `fusion:scatter`, ...), or its own
    opcode (`copy`, ...).
    Returns `{"cost_analysis_bytes", "kernel_bytes" (the rows' sum), "kernels": [{"name",
    "kind", "bytes"}] (largest first), "by_kind": {kind: {"count", "bytes"}}}`. Where the
    program has no loops the rows add up to `cost`'s bytes; a loop (`while`, or a `call`
    of one: the CPU compiler's older emitters write a scatter so) is one row here, its
    operands and outputs, which the cost analysis counts otherwise."""
    compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
    # One pass over the program's text: each computation's instructions, in order, as
    # {name: (shape, opcode, operands, rest of the line)}, and its root's name.
    computations, roots, entry, body = {}, {}, None, None
    for line in compiled.as_text().splitlines():
        if line and not line[0].isspace() and "{" in line:   # a computation's header
            head = line.split()
            name = head[head[0] == "ENTRY"].lstrip("%")
            entry = name if head[0] == "ENTRY" else entry
            body = computations.setdefault(name, {})
            continue
        match = _HLO_INSTRUCTION.match(line)
        if match and body is not None:
            inst, shape, opcode, rest = match.groups()
            body[inst] = (shape, opcode, re.findall(r"%([\w.\-]+)", rest.split("), ")[0]),
                          rest)
            if line.lstrip().startswith("ROOT"):
                roots[name] = inst

    def root_opcode(name: str) -> str:   # a fused computation's root, seen through bitcasts
        body, inst = computations.get(name, {}), roots.get(name)
        while inst in body and body[inst][1] == "bitcast" and body[inst][2]:
            inst = body[inst][2][0]
        return body[inst][1] if inst in body else "?"

    program = computations[entry]
    rows = []
    for inst, (shape, opcode, operands, rest) in program.items():
        if opcode in _NO_KERNEL:
            continue
        kind = opcode
        if opcode == "fusion":
            called = re.search(r"calls=%?([\w.\-]+)", rest)
            kind = "fusion:" + root_opcode(called.group(1) if called else "")
        rows.append({"name": inst, "kind": kind, "bytes": float(_hlo_shape_bytes(shape) + sum(
            _hlo_shape_bytes(program[o][0]) for o in operands if o in program))})
    rows.sort(key=lambda r: -r["bytes"])
    by_kind: dict[str, dict] = {}
    for row in rows:
        group = by_kind.setdefault(row["kind"], {"count": 0, "bytes": 0.0})
        group["count"] += 1
        group["bytes"] += row["bytes"]
    return {"cost_analysis_bytes": cost_of(compiled)["bytes"],
            "kernel_bytes": sum(r["bytes"] for r in rows), "kernels": rows,
            "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1]["bytes"]))}


def step_parts(config: EnvConfig, params: EnvParams, method: str) -> dict[str, tuple]:
    """`{part: fn}`: every part of one env step, each a function of a batch's
    `(keys [B], states [B], actions [B])` that uses what it needs."""
    env = EdgeEnv(config)
    policy = pair_from_name(method)
    batched = lambda f: (lambda k, s, a: jax.vmap(f)(k, s))   # a rule or a policy
    parts = {
        # The transition alone (no observation) is this part's measure, so it calls
        # `transition` itself rather than `env.step`, whose observation it would return.
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
    parts[EPISODE_STEP] = batched(lambda k, s: _without_observation(
        env.step(k, s, policy(k, s), params)))
    parts[TRAIN_STEP] = batched(lambda k, s: env.step(k, s, policy(k, s), params))
    for label, fields in AGENT_PARTS.items():   # what train.dqn / train.mdqn carry
        parts[f"{TRAIN_STEP}, {label}"] = batched(
            lambda k, s, fields=fields: _with_part(env.step(k, s, policy(k, s), params), fields))
    return parts


def _without_observation(step_out: tuple) -> tuple:
    """`(state, reward, info)` of `env.step`'s output: `transition`'s (the observation and
    `done`, the state's own flag, left out)."""
    _, state, reward, _, info = step_out
    return state, reward, info


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
    rows[TRAIN_STEP + DONATED] = {"bytes": donated["bytes"] / batch,
                                  "flops": donated["flops"] / batch}
    roofline = {gpu: {part: bw / rows[part]["bytes"] for part in CEILING_PARTS}
                for gpu, bw in BANDWIDTH.items()}
    return {"n_max": config.n_max, "config": {k: getattr(config, k) for k in (
                "n_max", "m_max", "p_max", "queue_capacity", "j_max")},
            "state_bytes_per_env": state_bytes / batch, "parts": rows,
            "roofline_env_steps_per_s": roofline}


def traffic_report(n_max_values: Sequence[int], method: str, batch: int,
                   progress: Callable[[str], None] | None = None) -> dict:
    """`traffic` at `EnvConfig(n_max=n)` for each n (the env's default params, fitted to
    the config), JSON-ready."""
    sizes = []
    for n in n_max_values:
        if progress is not None:
            progress(f"traffic: compiling every part at n_max {n} (batch {batch})")
        config = EnvConfig(n_max=n)
        sizes.append(traffic(config, EdgeEnv(config).default_params, method, batch))
    return {"backend": jax.default_backend(), "batch": batch, "method": method,
            "bandwidth_bytes_per_s": BANDWIDTH,
            "what": "XLA cost analysis of the compiled vmapped programs (bytes accessed, "
                    "flops), divided by the batch: a proxy from this backend's compiler, "
                    "not a measurement of memory traffic",
            "sizes": sizes}


def part_names(method: str) -> list[str]:
    """Every part `kernel_report` can break down: `step_parts`' and the donated train step."""
    return [*step_parts(EnvConfig(), EnvParams(), method), TRAIN_STEP + DONATED]


def kernel_report(n_max_values: Sequence[int], method: str, batch: int, part: str,
                  progress: Callable[[str], None] | None = None) -> dict:
    """`kernels` of one part (a `part_names` entry) at `EnvConfig(n_max=n)` for each n,
    bytes per env step (divided by the batch), JSON-ready (the env's default params,
    fitted to the config)."""
    donated = part.endswith(DONATED)
    base = part.removesuffix(DONATED) if donated else part
    per_env = lambda x: x / batch
    sizes = []
    for n in n_max_values:
        if progress is not None:
            progress(f"traffic: compiling {part!r} at n_max {n} (batch {batch})")
        config = EnvConfig(n_max=n)
        params = EdgeEnv(config).default_params
        k = kernels(step_parts(config, params, method)[base],
                    *abstract_batch(config, params, batch), donate=(1,) if donated else ())
        sizes.append({"n_max": n, "cost_analysis_bytes": per_env(k["cost_analysis_bytes"]),
                      "kernel_bytes": per_env(k["kernel_bytes"]),
                      "by_kind": {kind: {"count": v["count"], "bytes": per_env(v["bytes"])}
                                  for kind, v in k["by_kind"].items()}})
    return {"backend": jax.default_backend(), "batch": batch, "method": method, "part": part,
            "sizes": sizes}


def markdown_kernels(report: dict) -> str:
    """The kernel report as a markdown table: a row per kind, kernels / bytes per n_max."""
    sizes = report["sizes"]
    kinds = sorted({k for s in sizes for k in s["by_kind"]},
                   key=lambda k: -sizes[0]["by_kind"].get(k, {"bytes": 0.0})["bytes"])
    lines = [f"{report['part']}: kernels of the compiled program, bytes per env step",
             "", "| kind of kernel | " + " | ".join(
                 f"n_max {s['n_max']}: kernels / bytes" for s in sizes) + " |",
             "|---|" + "---:|" * len(sizes)]
    for kind in kinds:
        cells = []
        for s in sizes:
            v = s["by_kind"].get(kind)
            cells.append(f"{v['count']} / {_num(v['bytes'])}" if v else "-")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines.append("| all kernels (operands + outputs) | " + " | ".join(
        f"{sum(v['count'] for v in s['by_kind'].values())} / {_num(s['kernel_bytes'])}"
        for s in sizes) + " |")
    lines.append("| cost analysis (bytes accessed) | " + " | ".join(
        f"{_num(s['cost_analysis_bytes'])}" for s in sizes) + " |")
    return "\n".join(lines)


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
    parser.add_argument("--kernels", metavar="PART", default=None,
                        help="instead of the table: where one part's bytes go, grouped by "
                             "kind of kernel of the compiled program (e.g. 'train step, "
                             "state donated')")
    args = parser.parse_args(argv)
    check_int_flag(parser, "--batch", args.batch, 1)
    check_n_max_flag(parser, "--n-max", args.n_max)
    check_method_flag(parser, args.method)
    progress = lambda line: print(line, file=sys.stderr, flush=True)
    if args.kernels is not None:
        names = part_names(args.method)
        if args.kernels not in names:
            parser.error(f"--kernels: unknown part {args.kernels!r}; one of "
                         + ", ".join(repr(n) for n in names))
        report = kernel_report(args.n_max, args.method, args.batch, args.kernels, progress)
        print(markdown_kernels(report))
        print(f"\nbackend: {report['backend']}; a kernel's bytes are its operands' and its "
              "output's sizes (a loop counts once); the cost analysis' total beside them")
        return 0
    report = traffic_report(args.n_max, args.method, args.batch, progress)
    print(markdown_traffic(report))
    print(f"\nbackend: {report['backend']}; {report['what']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
