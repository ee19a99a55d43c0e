"""The environment's outputs, bitwise, against values recorded before the step was rewritten
for speed (tests/data/step_digests.json).

A rewrite of `transition` or `observe` for speed must compute the same numbers: in
float64, over the differential test's generated instance families, every step's team
reward, done flag, observation leaf and info leaf must hash to what the code recorded
then. The actions mix the LS heuristic's choices with uniform integers that are often
out of range or infeasible (so the replacement rules run too).

Values are hashed after a cast to float64 / int64, so narrower storage types give the
same digests; the compiler mode matters (XLA may round a fused program differently), so
the file holds one set per mode of tests/compile_modes.py (the suite's default, the
same without the older emitters, and users' optimized mode).

Recording again is a deliberate act, never part of a test run:

    PYTHONPATH=. python tests/test_step_digests.py          # both modes, rewrites the file
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compile_modes import MODES, mode, xla_flags_with
from damdjax.heuristics import pair_from_name
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.generator import generate
from damdjax.envs.state import Action

PATH = os.path.join(os.path.dirname(__file__), "data", "step_digests.json")
SMALL = EnvParams(num_tasks=40, num_servers=5)
# (family, seed, episodes, params): the generated families of tests/test_differential.py.
FAMILIES = {
    16: [("default", 1, 4, EnvParams()),
         ("small", 2, 4, SMALL),
         ("tight memory", 3, 4, SMALL.replace(mem_low=4.0, mem_high=5.0, density=4.0)),
         ("single server", 5, 4, SMALL.replace(num_servers=1)),
         ("one task", 10, 2, SMALL.replace(num_tasks=1, num_servers=1)),
         ("padded servers", 11, 2, SMALL.replace(num_tasks=23, num_servers=10))],
    2: [("small queue", 8, 4, SMALL.replace(num_servers=3, density=4.0)),
        ("burst", 9, 4, SMALL.replace(density=1000.0, num_servers=4))],
}
# One program for every family: the setting is traced (a third of the time of generating
# each family op by op, whose float64 times differ in the last bits: the digests were
# recorded again for that change alone, with transition and observe as they were).
_generate = jax.jit(jax.vmap(lambda k, p: generate(k, EnvConfig(), p), in_axes=(0, None)))


def instances(queue_capacity: int):
    """The families of one queue capacity as one batch (leaves [B, ...])."""
    parts = []
    for _, seed, count, params in FAMILIES[queue_capacity]:
        keys = jax.random.split(jax.random.key(seed), count)
        parts.append(_generate(keys, params))
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


@functools.lru_cache(maxsize=None)
def trajectory_fn(queue_capacity: int):
    """jit((keys [B], instances [B]) -> (rewards, dones, obs, info), each [B, T, ...])."""
    config = EnvConfig(queue_capacity=queue_capacity)
    env, params = EdgeEnv(config), EnvParams(tau=7.0, miss_penalty=2.5, time_scale=3.0)
    ls = pair_from_name("LS")
    steps = config.max_steps

    def episode(key, instance):
        _, state = env.reset_to(instance, params)

        def body(state, k):
            k_ls, k_coin, k_d, k_p = jax.random.split(k, 4)
            good = ls(k_ls, state)
            coin = jax.random.bernoulli(k_coin, 0.5, (1 + config.m_max,))
            wild = Action(dispatch=jax.random.randint(k_d, (), -1, config.m_max + 1),
                          picks=jax.random.randint(k_p, (config.m_max,), -1,
                                                   queue_capacity + 1))
            action = Action(dispatch=jnp.where(coin[0], good.dispatch, wild.dispatch),
                            picks=jnp.where(coin[1:], good.picks, wild.picks))
            obs, state, reward, done, info = env.step(k, state, action, params)
            return state, (reward, done, obs, info)

        _, out = jax.lax.scan(body, state, jax.random.split(key, steps))
        return out

    return jax.jit(jax.vmap(episode))


def digests(queue_capacity: int) -> dict[str, str]:
    """`{leaf path: sha256}` of every output leaf over the batch and all steps (float64)."""
    with jax.enable_x64(True):
        batch = instances(queue_capacity)
        keys = jax.random.split(jax.random.key(100 + queue_capacity), batch.size.shape[0])
        out = jax.device_get(trajectory_fn(queue_capacity)(keys, batch))
    names = ("reward", "done", "obs", "info")
    leaves = jax.tree_util.tree_flatten_with_path(dict(zip(names, out)))[0]
    result = {}
    for path, leaf in leaves:
        x = np.asarray(leaf)
        x = x.astype(np.float64 if np.issubdtype(x.dtype, np.floating) else np.int64)
        result[jax.tree_util.keystr(path)] = hashlib.sha256(
            np.ascontiguousarray(x).tobytes() + str(x.shape).encode()).hexdigest()
    return result


@pytest.mark.parametrize("queue_capacity", sorted(FAMILIES))
def test_outputs_are_bitwise_the_recorded_ones(queue_capacity):
    with open(PATH) as f:
        want = json.load(f)[mode()][str(queue_capacity)]
    got = digests(queue_capacity)
    assert sorted(got) == sorted(want), "the outputs' leaves changed"
    changed = [name for name in want if got[name] != want[name]]
    assert not changed, f"Q={queue_capacity}: these outputs changed: {changed}"


def _record_mode() -> dict:
    return {str(q): digests(q) for q in sorted(FAMILIES)}


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] in MODES:  # one mode, in a fresh process
        jax.config.update("jax_disable_most_optimizations", MODES[sys.argv[1]][0])
        assert mode() == sys.argv[1], (mode(), sys.argv[1])
        print(json.dumps(_record_mode()))
        sys.exit(0)
    recorded = {}
    for m, (_, flag) in MODES.items():
        env = {**os.environ, "XLA_FLAGS": xla_flags_with(flag)}
        run = subprocess.run([sys.executable, __file__, m], check=True, capture_output=True,
                             text=True, env=env)
        recorded[m] = json.loads(run.stdout.strip().splitlines()[-1])
    with open(PATH + ".tmp", "w") as f:
        json.dump(recorded, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(PATH + ".tmp", PATH)
    print(f"wrote {PATH}")
