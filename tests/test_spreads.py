"""eval.spreads: the spreads between the heuristics on a named setting, recomputed here from
the per-method means it reports, and its flag errors."""
from __future__ import annotations

import json

import pytest

from damdjax import registry
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.eval import spreads
from damdjax.heuristics import DISPATCH_RULES, pair_names


@pytest.fixture
def tiny(monkeypatch):
    """A small registered setting (one compiled program per dispatch rule, quickly)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("Edge-tiny-v0", lambda: (EdgeEnv(EnvConfig(n_max=12, m_max=3)),
                                               EnvParams(num_tasks=12, num_servers=3)),
                      "twelve tasks on three servers")
    return "Edge-tiny-v0"


def test_spreads_follow_from_the_means(tiny, tmp_path, capsys, monkeypatch):
    """Two dispatch rules by two scheduling rules (one compiled program per dispatch rule,
    and one for the random picks): the reported spreads are the ratios of the means."""
    monkeypatch.setattr(spreads, "ALL_PAIRS", ("ES", "EF", "NS", "NF"))
    monkeypatch.setattr(spreads, "DISPATCH_RULES",
                        {k: DISPATCH_RULES[k] for k in ("nearest", "eft")})
    out = tmp_path / "s.json"
    assert spreads.main(["--names", tiny, "--episodes", "4", "--out", str(out)]) == 0
    row, = json.loads(out.read_text())["results"]
    mean = row["mean_response"]
    pairs = spreads.ALL_PAIRS
    assert set(mean) == set(pairs) | {f"{d}{spreads.RANDOM_PICKS}" for d in ("nearest", "eft")}
    best = min(pairs, key=mean.get)
    worst = max(pairs, key=mean.get)
    assert (row["best"], row["worst"]) == (best, worst)
    assert row["pairs"] == pytest.approx(mean[worst] / mean[best] - 1)
    dispatch, schedule = pair_names(best)
    assert row["scheduling"] == pytest.approx(
        mean[f"{dispatch}{spreads.RANDOM_PICKS}"] / mean[best] - 1)
    same = [n for n in pairs if pair_names(n)[1] == schedule]
    assert row["dispatch"] == pytest.approx(max(mean[n] for n in same) / mean[best] - 1)
    assert (row["num_tasks"], row["num_servers"], row["n_max"]) == (12, 3, 12)
    assert f"| `{tiny}` | 12 | 3 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--names", "Edge-nope-v0"], "unknown name 'Edge-nope-v0'"),
    (["--episodes", "1"], "--episodes"),
    (["--data", "/nonexistent"], "--data: register_workloads: no file"),
])
def test_flag_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        spreads.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
