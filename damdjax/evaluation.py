"""Paired evaluation of named policies on held-out generated instances.

    inst_keys, play_keys = held_out_keys(seed, episodes)
    per = {name: play_generated(policy, config, params, inst_keys, play_keys)
           for name, policy in policies.items()}       # metric -> [episodes] float64
    table = paired_summary(per, reference="dqn")         # means, CIs, reference - others
    print(format_paired(table))

Every method plays the same instances with the same play keys, so the
differences are paired. Held-out instances come from
`fold_in(PRNGKey(seed), EVAL_FOLD)`; the trainers draw their training
instances from `split` chains of `PRNGKey(seed)` and never fold in EVAL_FOLD.
"""
from __future__ import annotations

import jax
import numpy as np

from damdjax.heuristics import Policy
from damdjax.io import json_number
from damdjax.metrics import episode_metrics, mean_ci95
from damdjax.rollout import play_batch
from envs.config import EnvConfig, EnvParams
from envs.generator import generate

EVAL_FOLD = 7_777_777
PAIRED_METRICS = ("avg_response_time", "deadline_miss_rate")


def held_out_keys(seed: int, episodes: int) -> tuple[jax.Array, jax.Array]:
    """`(instance keys [E], play keys [E])` of the held-out episodes of `seed`."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_FOLD)
    k_inst, k_play = jax.random.split(base)
    return jax.random.split(k_inst, episodes), jax.random.split(k_play, episodes)


def play_generated(policy: Policy, config: EnvConfig, params: EnvParams, inst_keys: jax.Array,
                   play_keys: jax.Array) -> dict[str, np.ndarray]:
    """Generate an instance per key and play it with `policy`; per-episode metrics [E] (float64)."""

    @jax.jit
    def run(ik, pk):
        instances = jax.vmap(lambda k: generate(k, config, params))(ik)
        states = play_batch(policy, pk, instances, config.queue_capacity, params.tau,
                            params.miss_penalty)
        return jax.vmap(episode_metrics)(states)

    metrics = run(inst_keys, play_keys)
    return {k: np.asarray(metrics[k], np.float64) for k in PAIRED_METRICS}


def evaluate_paired(policies: dict[str, Policy], config: EnvConfig, params: EnvParams,
                    seed: int, episodes: int, reference: str) -> dict:
    """Play every policy on the held-out episodes of `seed`; `paired_summary` vs `reference`."""
    inst_keys, play_keys = held_out_keys(seed, episodes)
    per = {name: play_generated(policy, config, params, inst_keys, play_keys)
           for name, policy in policies.items()}
    return paired_summary(per, reference=reference)


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
            lo_hi = (None if d["ci95"] is None else (d["mean"] - d["ci95"], d["mean"] + d["ci95"]))
            d["excludes_zero"] = lo_hi is not None and (lo_hi[0] > 0 or lo_hi[1] < 0)
            diffs[k] = d
        out["differences"][name] = diffs
    return out


def format_paired(summary: dict, title: str = "") -> str:
    """The summary as a plain-text table: methods, then `reference - other` rows."""
    def cell(d):
        half = d["ci95"]
        return f"{d['mean']:.4f}" + ("" if half is None else f" ± {half:.4f}")

    lines = [title] if title else []
    lines.append(f"{'method':<16}{'avg response time':>26}{'deadline-miss rate':>26}")
    for name, m in summary["methods"].items():
        lines.append(f"{name:<16}{cell(m['avg_response_time']):>26}"
                     f"{cell(m['deadline_miss_rate']):>26}")
    ref = summary["reference"]
    for name, m in summary["differences"].items():
        marks = ["*" if m[k]["excludes_zero"] else " " for k in PAIRED_METRICS]
        lines.append(f"{(ref + ' - ' + name):<16}{cell(m['avg_response_time']) + marks[0]:>26}"
                     f"{cell(m['deadline_miss_rate']) + marks[1]:>26}")
    if summary["differences"]:
        lines.append(f"paired over {summary['episodes']} episodes; * = the 95% CI of the "
                     "difference excludes 0")
    return "\n".join(lines)
