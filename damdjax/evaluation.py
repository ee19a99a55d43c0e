"""Paired evaluation of named policies on held-out generated instances.

    inst_keys, play_keys = held_out_keys(seed, episodes)
    instances = generate_held_out(config, params, inst_keys)   # leaves [E, ...]
    per = play_named(policies, params, instances, play_keys, config.queue_capacity)
    # name -> metric -> [E] float64 (every policy in one compiled program)
    per |= play_named_pairs(ALL_PAIRS, params, instances, play_keys, config.queue_capacity)
    per["bound"] = bound_of(instances)                  # the contention-free bound
    many = play_generated_members(member_fn, members, config, inst_keys, play_keys)  # [K, E]
    table = paired_summary(per, reference="dqn")         # means, CIs, reference - others
    print(format_paired(table))

Every method plays the same instances with the same play keys, so the
differences are paired. A run with a workload (`damdjax.workloads`) passes its job
library as `workload`: its held-out instances draw their jobs from it, as its training
envs do. Held-out instances come from
`fold_in(PRNGKey(seed), EVAL_FOLD)`; the trainers draw their training
instances from `split` chains of `PRNGKey(seed)` and never fold in EVAL_FOLD.
"""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from damdjax.bound import bound_metrics
from damdjax.heuristics import Policy
from damdjax.io import json_number
from damdjax.metrics import ci_excludes_zero, episode_metrics, mean_ci95
from damdjax.family import play_methods
from damdjax.rollout import play_batch, play_policies
from damdjax.sharding import to_host
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.generators import workload_generator
from damdjax.envs.workload import JobLibrary

EVAL_FOLD = 7_777_777
PAIRED_METRICS = ("avg_response_time", "deadline_miss_rate")


def held_out_keys(seed: int, episodes: int) -> tuple[jax.Array, jax.Array]:
    """`(instance keys [E], play keys [E])` of the held-out episodes of `seed`."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_FOLD)
    k_inst, k_play = jax.random.split(base)
    return jax.random.split(k_inst, episodes), jax.random.split(k_play, episodes)


def generate_held_out(config: EnvConfig, params: EnvParams, inst_keys: jax.Array,
                      workload: JobLibrary | None = None):
    """The instances of `inst_keys` [E] (leaves [E, ...]), generated once for every method;
    jobs drawn from the `workload` library where given, else the random DAG generator's."""
    env = EdgeEnv(config, workload_generator(workload))
    return jax.jit(jax.vmap(lambda k: env.generate(k, params)))(inst_keys)


def _metrics(states) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float64) for k, v in states.items() if k in PAIRED_METRICS}


def play_named(policies: dict[str, Policy], params: EnvParams, instances, play_keys: jax.Array,
               queue_capacity: int) -> dict[str, dict[str, np.ndarray]]:
    """Every policy on `instances` [E] with `play_keys` [E], as one compiled program
    (`rollout.play_policies`); name -> per-episode metrics [E] (float64)."""
    names = list(policies)
    run = jax.jit(lambda k, inst: [jax.vmap(episode_metrics)(st) for st in play_policies(
        [policies[n] for n in names], k, inst, queue_capacity, params)])
    return {n: _metrics(m) for n, m in zip(names, run(play_keys, instances))}


def play_generated_members(member_fn: Callable, members, config: EnvConfig,
                           inst_keys: jax.Array, play_keys: jax.Array, sharding=None,
                           workload: JobLibrary | None = None) -> dict[str, np.ndarray]:
    """Many trained policies at once: per-episode metrics [K, E] (float64).

    `members`: a pytree with leaves [K, ...] (e.g. each member's parameters and
    `Hyper`); `member_fn(member) -> (policy, env params)` builds one member's policy and
    setting from its slice (traced). Every member plays the same keys (`inst_keys`,
    `play_keys` [E]), as `play_named` does for named policies: one compiled program,
    `vmap` over members (sharded over devices by `sharding`, where given, as the members
    are). Jobs come from the `workload` library where given (`generate_held_out`).
    """
    env = EdgeEnv(config, workload_generator(workload))

    def one(member):
        policy, params = member_fn(member)
        instances = jax.vmap(lambda k: env.generate(k, params))(inst_keys)
        states = play_batch(policy, play_keys, instances, config.queue_capacity, params)
        metrics = jax.vmap(episode_metrics)(states)
        return {k: metrics[k] for k in PAIRED_METRICS}

    run = (jax.jit(jax.vmap(one)) if sharding is None else
           jax.jit(jax.vmap(one), in_shardings=(sharding,), out_shardings=sharding))
    out = to_host(run(members))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def play_named_pairs(names, params: EnvParams, instances, play_keys: jax.Array,
                     queue_capacity: int, progress=None) -> dict[str, dict[str, np.ndarray]]:
    """Heuristic methods by name, classic pairs and EFT-family members
    (`damdjax.family.play_methods`: one compilation per classic dispatch rule, one for
    the family), on `instances` [E]; canonical name -> per-episode metrics [E] (float64),
    as `play_named`. `progress`: `play_methods`'."""
    states = play_methods(names, play_keys, instances, queue_capacity, params,
                          progress=progress)
    metrics = jax.jit(jax.vmap(episode_metrics))
    return {name: _metrics(metrics(st)) for name, st in states.items()}


def bound_of(instances) -> dict[str, np.ndarray]:
    """The contention-free bound's per-episode metrics [E] (float64) of `instances` [E]."""
    return _metrics(jax.jit(jax.vmap(bound_metrics))(instances))


def best_pair(per: dict[str, dict[str, np.ndarray]], names) -> str:
    """The name among `names` with the smallest mean response time in `per` (first wins ties)."""
    return min(names, key=lambda n: float(np.mean(per[n]["avg_response_time"])))


def evaluate_paired(policies: dict[str, Policy], config: EnvConfig, params: EnvParams,
                    seed: int, episodes: int, reference: str, heuristics=(), keep=None,
                    bound: bool = True, workload: JobLibrary | None = None) -> dict:
    """Play every policy, and every heuristic pair named in `heuristics` (one compilation
    per dispatch rule), on the held-out episodes of `seed`; `paired_summary` vs `reference`.

    With `keep` (pair names), the summary shows only those pairs and the best of
    `heuristics` (smallest mean response time; its name in `"best_heuristic"`), and
    lists every pair's means under `"heuristics"`. The contention-free `bound` row is
    added unless `bound` is False. The instances draw their jobs from the `workload`
    library where given (`generate_held_out`).
    """
    inst_keys, play_keys = held_out_keys(seed, episodes)
    instances = generate_held_out(config, params, inst_keys, workload)
    q = config.queue_capacity
    per = play_named(policies, params, instances, play_keys, q)
    pairs = play_named_pairs(heuristics, params, instances, play_keys, q) if heuristics else {}
    extra = {}
    if keep is not None and pairs:
        best = best_pair(pairs, list(pairs))
        extra = {"best_heuristic": best,
                 "heuristics": {n: {k: _ci(v) for k, v in m.items()} for n, m in pairs.items()}}
        pairs = {n: pairs[n] for n in dict.fromkeys([*keep, best])}
    per.update(pairs)
    if bound:
        per["bound"] = bound_of(instances)
    return {**paired_summary(per, reference=reference), **extra}


def _ci(values) -> dict:
    mean, half = mean_ci95(values)
    return {"mean": json_number(mean), "ci95": json_number(half)}


def paired_summary(per: dict[str, dict[str, np.ndarray]], reference: str) -> dict:
    """Means with 95% CIs per method, and `reference - other` paired differences.

    `per`: method -> metric -> [E]. Returns JSON-ready
    `{"episodes", "reference", "methods": {m: {metric: {mean, ci95}}},
    "differences": {m: {metric: {mean, ci95, excludes_zero}}}}`.
    """
    if reference not in per:
        raise ValueError(f"reference method {reference!r} is not among {sorted(per)}")
    episodes = len(next(iter(per[reference].values())))
    out = {"episodes": episodes, "reference": reference, "methods": {}, "differences": {}}
    for name, vals in per.items():
        out["methods"][name] = {k: _ci(v) for k, v in vals.items()}
    for name, vals in per.items():
        if name == reference:
            continue
        diffs = {}
        for k in per[reference]:
            d = _ci(per[reference][k] - vals[k])
            d["excludes_zero"] = ci_excludes_zero(d["mean"], d["ci95"])
            diffs[k] = d
        out["differences"][name] = diffs
    return out


def format_paired(summary: dict, title: str = "") -> str:
    """The summary as a plain-text table: methods, then `reference - other` rows."""
    def cell(d):
        half = d["ci95"]
        return f"{d['mean']:.4f}" + ("" if half is None else f" ± {half:.4f}")

    ref = summary["reference"]
    w = max([16, *(len(f"{ref} - {name}") for name in [*summary["methods"],
                                                        *summary["differences"]])])
    lines = [title] if title else []
    lines.append(f"{'method':<{w}}{'avg response time':>26}{'deadline-miss rate':>26}")
    for name, m in summary["methods"].items():
        lines.append(f"{name:<{w}}{cell(m['avg_response_time']):>26}"
                     f"{cell(m['deadline_miss_rate']):>26}")
    for name, m in summary["differences"].items():
        marks = ["*" if m[k]["excludes_zero"] else " " for k in PAIRED_METRICS]
        lines.append(f"{(ref + ' - ' + name):<{w}}{cell(m['avg_response_time']) + marks[0]:>26}"
                     f"{cell(m['deadline_miss_rate']) + marks[1]:>26}")
    if summary["differences"]:
        lines.append(f"paired over {summary['episodes']} episodes; * = the 95% CI of the "
                     "difference excludes 0")
    return "\n".join(lines)
