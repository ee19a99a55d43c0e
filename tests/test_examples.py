"""The runnable examples in examples/: each runs end to end with tiny flags, and the
trained policies' action masking holds.

Each example runs as a subprocess, as a user runs it (`python examples/x.py ...`), and
must exit 0 and write its --out JSON with finite numbers under the expected keys. The
subprocesses inherit the suite's compilation cache and compiler flags (conftest.py).
The masking checks import the examples' networks and need no environment compile.
"""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, *flags: str, tmp_path: Path) -> dict:
    """Run examples/`name` with `flags` and `--out`; its JSON results."""
    out = tmp_path / f"{Path(name).stem}.json"
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *flags, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text())


def load_example(name: str):
    """examples/`name` as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{Path(name).stem}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses (NamedTuple, flax) look it up
    spec.loader.exec_module(module)
    return module


def assert_finite_summary(summary: dict, methods: tuple[str, ...], reference: str):
    """A `damdjax.evaluation.paired_summary` with finite means for every method."""
    assert summary["reference"] == reference
    assert set(summary["methods"]) == {reference, *methods}
    assert set(summary["differences"]) == set(methods)
    for stats in [*summary["methods"].values(), *summary["differences"].values()]:
        for metric in ("avg_response_time", "deadline_miss_rate"):
            assert math.isfinite(stats[metric]["mean"]), (metric, stats)


# Tiny flags: a few updates of a few envs, a few evaluation episodes against two
# heuristics (each one more policy to compile in the evaluation). Edge-servers2-v0
# (2 servers, long queues) is a setting where the dispatch mask excludes a server at
# about a quarter of the decisions, so masked sampling is actually exercised.
def test_ppo_dispatcher_runs_and_never_samples_an_invalid_server(tmp_path):
    result = run_example("ppo_dispatcher.py", "--env", "Edge-servers2-v0", "--num-envs", "4",
                         "--num-steps", "32", "--num-updates", "3", "--episodes", "3",
                         "--heuristics", "ES,RS", "--print-every", "1", tmp_path=tmp_path)
    assert result["decisions"] == 4 * 32 * 3
    assert result["masked_steps"] > 0            # the check below means something
    assert result["invalid_actions"] == 0        # the masked sampler obeyed every mask
    for key in ("train_seconds", "eval_seconds", "first_episode_return",
                "final_episode_return"):
        assert math.isfinite(result[key]), key
    assert_finite_summary(result["evaluation"], ("ES", "RS"), "PPO")


def test_ippo_schedulers_runs_and_never_picks_an_unavailable_slot(tmp_path):
    result = run_example("ippo_schedulers.py", "--env", "Edge-servers2-v0", "--num-envs", "4",
                         "--num-steps", "16", "--num-updates", "2", "--episodes", "3",
                         "--heuristics", "ES,EF", "--print-every", "1", tmp_path=tmp_path)
    assert result["decisions"] == 4 * 16 * 2
    assert result["choices"] > 0
    assert result["invalid_actions"] == 0
    for key in ("train_seconds", "eval_seconds", "first_episode_return",
                "final_episode_return"):
        assert math.isfinite(result[key]), key
    assert_finite_summary(result["evaluation"], ("ES", "EF"), "IPPO")


def test_gymnasium_random_runs(tmp_path):
    result = run_example("gymnasium_random.py", "--env", "Edge-tasks25-v0", "--episodes", "2",
                         tmp_path=tmp_path)
    assert len(result["episodes"]) == 2
    assert result["invalid_actions"] == 0
    for episode in result["episodes"]:
        assert episode["length"] == 25             # one decision per task
        assert not episode["truncated"]
    for key in ("return", "avg_response_time", "deadline_miss_rate"):
        assert math.isfinite(result["summary"][key]["mean"]), key


# --- the networks' masking and observation layout, without an environment ------------

@pytest.fixture(scope="module")
def ppo():
    return load_example("ppo_dispatcher.py")


@pytest.fixture(scope="module")
def ippo():
    return load_example("ippo_schedulers.py")


def random_masks(key, shape):
    """Random bool masks [..., A] with at least one True per row (the views' guarantee)."""
    k_mask, k_keep = jax.random.split(key)
    mask = jax.random.bernoulli(k_mask, 0.4, shape)
    keep = jax.nn.one_hot(jax.random.randint(k_keep, shape[:-1], 0, shape[-1]), shape[-1])
    return mask | keep.astype(bool)


def check_masked_sampling(logits, mask, log_probs, entropy):
    """Samples lie in the mask; log-probabilities and entropies are finite (no -inf)."""
    samples = jax.random.categorical(jax.random.PRNGKey(1), logits, shape=(64,) + mask.shape[:-1])
    chosen = jnp.take_along_axis(jnp.broadcast_to(mask, (64,) + mask.shape),
                                 samples[..., None], axis=-1)
    assert bool(jnp.all(chosen))
    assert bool(jnp.all(jnp.isfinite(log_probs))) and bool(jnp.all(jnp.isfinite(entropy)))
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_ppo_network_masks_and_sees_servers_by_row(ppo):
    """The actor samples only valid servers, with finite log-probabilities; and it reads
    the view's layout (task, then one row per server): permuting the server rows and the
    mask permutes the logits the same way (a wrong task/server split would not)."""
    m, f_t, f_s, batch = 5, 6, 14, 32
    net = ppo.ActorCritic(num_servers=m, task_size=f_t, hidden=16)
    k_obs, k_mask, k_init = jax.random.split(jax.random.PRNGKey(0), 3)
    task = jax.random.normal(k_obs, (batch, f_t))
    servers = jax.random.normal(jax.random.fold_in(k_obs, 1), (batch, m, f_s))
    mask = random_masks(k_mask, (batch, m))
    obs = jnp.concatenate([task, servers.reshape(batch, -1)], axis=-1)
    params = net.init(k_init, obs, mask)
    # a larger actor head than the near-zero init, so the logits differ across servers
    params = jax.tree.map(lambda x: x * 50.0, params)
    logits, value = net.apply(params, obs, mask)
    assert logits.shape == (batch, m) and value.shape == (batch,)
    check_masked_sampling(logits, mask, ppo.masked_log_probs(logits), ppo.entropy(logits))

    perm = jnp.array([3, 0, 4, 1, 2])
    obs_p = jnp.concatenate([task, servers[:, perm].reshape(batch, -1)], axis=-1)
    logits_p, _ = net.apply(params, obs_p, mask[:, perm])
    np.testing.assert_allclose(np.asarray(logits_p), np.asarray(logits[:, perm]),
                               rtol=1e-5, atol=1e-5)


def test_ippo_network_masks_and_sees_slots_by_row(ippo):
    """As for PPO, per queue slot: only available actions are sampled, and permuting the
    slot rows and their mask permutes the slot logits."""
    q, f_o, f_q, m, batch = 4, 7, 10, 3, 32
    net = ippo.ActorCritic(queue_capacity=q, own_size=f_o, num_agents=m, hidden=16)
    k_obs, k_mask, k_init = jax.random.split(jax.random.PRNGKey(0), 3)
    own = jax.random.normal(k_obs, (batch, m, 2 * f_o))
    slots = jax.random.normal(jax.random.fold_in(k_obs, 1), (batch, m, q, f_q))
    avail = random_masks(k_mask, (batch, m, q + 1))
    obs = ippo.with_agent_ids(jnp.concatenate([own, slots.reshape(batch, m, -1)], axis=-1))
    params = jax.tree.map(lambda x: x * 50.0, net.init(k_init, obs, avail))
    logits, value = net.apply(params, obs, avail)
    assert logits.shape == (batch, m, q + 1) and value.shape == (batch, m)
    check_masked_sampling(logits, avail, jax.nn.log_softmax(logits), ippo.entropy(logits))

    perm = jnp.array([2, 0, 3, 1])
    full = jnp.concatenate([perm, jnp.array([q])])               # the no-op stays last
    obs_p = ippo.with_agent_ids(
        jnp.concatenate([own, slots[:, :, perm].reshape(batch, m, -1)], axis=-1))
    logits_p, _ = net.apply(params, obs_p, avail[..., full])
    np.testing.assert_allclose(np.asarray(logits_p), np.asarray(logits[..., full]),
                               rtol=1e-5, atol=1e-5)
