"""Tuning the heuristics without peeking: every classic pair and every member of the EFT
family's grid played on *tuning* episodes, the best chosen there, then evaluated on the
held-out episodes, which the choice never saw.

    result = tune(config, params, seed=0, episodes=200)      # a TuningResult
    result.best                                              # e.g. "eft[queued/load/r0/l0.25]+sjf"

Tuning episodes come from `fold_in(PRNGKey(seed), TUNE_FOLD)`; held-out ones from
`damdjax.evaluation.EVAL_FOLD` and training episodes from `split` chains of
`PRNGKey(seed)`: three disjoint key streams. The grid's members run as one compiled
program over traced parameters (`damdjax.family.play_members`), as the sweeps run their
members over traced hyperparameters.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import jax
import numpy as np

from damdjax.eft import HOLDER_CHOICES, WAIT_CHOICES, EftParams
from damdjax.evaluation import best_pair, generate_held_out, play_named_pairs
from damdjax.family import SCHEDULES, Member, canonical_name
from damdjax.heuristics import ALL_PAIRS
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.workload import JobLibrary

TUNE_FOLD = 5_555_555
RELAYS = (0.0, 0.5, 1.0)
LOOKAHEADS = (0.0, 0.25, 1.0)


def tuning_keys(seed: int, episodes: int) -> tuple[jax.Array, jax.Array]:
    """`(instance keys [E], play keys [E])` of the tuning episodes of `seed`."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), TUNE_FOLD)
    k_inst, k_play = jax.random.split(base)
    return jax.random.split(k_inst, episodes), jax.random.split(k_play, episodes)


def family_grid(relays=RELAYS, lookaheads=LOOKAHEADS, schedules=SCHEDULES) -> list[Member]:
    """Every holders x wait x relay x lookahead x scheduling rule (432 by default); the
    named rules (`eft`, `heft`, `peft`) are points of it."""
    return [Member(EftParams(holders=h, wait=w, relay=r, lookahead=look), s)
            for h, w, r, look, s in itertools.product(
                HOLDER_CHOICES.values(), WAIT_CHOICES.values(), relays, lookaheads, schedules)]


@dataclass(frozen=True)
class TuningResult:
    """Mean response time (time units) of every candidate on the tuning episodes, and the
    best (smallest mean; the first listed wins a tie)."""

    seed: int
    episodes: int
    means: dict[str, float] = field(repr=False)
    best: str = ""

    def ranking(self, top: int = 10) -> list[tuple[str, float]]:
        return sorted(self.means.items(), key=lambda kv: kv[1])[:top]

    def to_json(self) -> dict:
        return {"seed": self.seed, "episodes": self.episodes, "fold": TUNE_FOLD,
                "best": self.best, "means": self.means}

    @classmethod
    def from_json(cls, d) -> "TuningResult":
        """The inverse of `to_json` (other keys ignored); a ValueError names what is
        missing or wrong: the fold, a mean that is not a finite number, a best that is
        not the smallest mean or not a method name."""
        if not isinstance(d, dict):
            raise ValueError(f"a tuning is a JSON object, got {type(d).__name__}")
        for key in ("seed", "episodes", "fold", "best", "means"):
            if key not in d:
                raise ValueError(f"no {key!r} in the tuning")
        if d["fold"] != TUNE_FOLD:
            raise ValueError(f"fold {d['fold']!r} is not the tuning episodes' {TUNE_FOLD}")
        means = d["means"]
        if not isinstance(means, dict) or not means or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                for v in means.values()):
            raise ValueError("'means' must map methods to finite numbers")
        best = d["best"]
        if best not in means or means[best] != min(means.values()):
            raise ValueError(f"best {best!r} is not the method with the smallest mean")
        canonical_name(best)   # a method this version knows (ValueError otherwise)
        if not all(isinstance(d[k], int) and not isinstance(d[k], bool) and d[k] >= 0
                   for k in ("seed", "episodes")):
            raise ValueError("'seed' and 'episodes' must be integers >= 0")
        return cls(seed=d["seed"], episodes=d["episodes"],
                   means={k: float(v) for k, v in means.items()}, best=best)


def tune(config: EnvConfig, params: EnvParams, seed: int, episodes: int,
         workload: JobLibrary | None = None, candidates=None, progress=None) -> TuningResult:
    """Play every candidate (method names: classic pairs and family members; default
    `ALL_PAIRS` and `family_grid()`) on `episodes` tuning episodes of `seed` at the
    setting (`config`, `params`, `workload` as `generate_held_out` takes them) and pick
    the smallest mean response time. `progress(done, total)` after each chunk."""
    if episodes < 1:
        raise ValueError(f"tuning needs at least 1 episode, got {episodes}")
    names = list(dict.fromkeys(canonical_name(n) for n in (
        candidates if candidates is not None else [*ALL_PAIRS, *(m.name for m in family_grid())])))
    inst_keys, play_keys = tuning_keys(seed, episodes)
    instances = generate_held_out(config, params, inst_keys, workload)
    per = play_named_pairs(names, params, instances, play_keys, config.queue_capacity,
                           progress=progress)
    means = {name: float(np.mean(per[name]["avg_response_time"])) for name in names}
    return TuningResult(seed=seed, episodes=episodes, means=means, best=best_pair(per, names))
