"""The pieces of the observation's traffic work: the derived successor counts
and the grouped, masked stack (the observation's values are pinned by
tests/test_step_digests.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.generator import generate
from damdjax.envs.instance import (instance_from_arrays, instance_to_arrays, successor_counts,
                           successor_list)
from damdjax.envs.observation import masked_stack


@pytest.mark.parametrize("window, dtype", [(1, np.uint8), (255, np.uint8), (256, np.uint16),
                                           (70000, np.uint32)])
def test_successor_counts_are_the_filled_slots_in_a_type_that_holds_the_window(window, dtype):
    preds = np.array([[-1, -1], [0, -1], [0, 1], [1, -1], [0, 2]], np.int32)
    listed = successor_list(jnp.asarray(preds), window, 4)
    assert listed.dtype == dtype and np.iinfo(dtype).max >= window
    if window >= 4:
        np.testing.assert_array_equal(listed, [[1, 2, 4, 0], [1, 2, 0, 0], [2, 0, 0, 0],
                                               [0, 0, 0, 0], [0, 0, 0, 0]])
    counts = successor_counts(listed)
    assert counts.dtype == dtype
    np.testing.assert_array_equal(counts, (np.asarray(listed) > 0).sum(axis=1))


def test_successor_list_by_hand_and_its_two_sorts(monkeypatch):
    """Edges beyond the window and successors beyond the slots are left out; the wide
    configs' two-key sort gives the one-key sort's list."""
    import damdjax.envs.instance as instance

    rng = np.random.default_rng(0)
    n, p, window = 40, 3, 6
    preds = np.full((n, p), -1, np.int32)
    for i in range(1, n):  # up to p distinct predecessors among the 8 before (some gaps > W)
        count = rng.integers(0, min(p, i) + 1)
        preds[i, :count] = rng.choice(np.arange(max(0, i - 8), i), size=count, replace=False)
    offsets = [[t - q for t in range(n) if q in preds[t] and t - q <= window] for q in range(n)]
    assert max(map(len, offsets)) > 2  # some lists are cut
    assert ((preds >= 0) & (np.arange(n)[:, None] - preds > window)).any()  # gaps beyond W
    want = np.zeros((n, 2), np.uint8)
    for q, g in enumerate(offsets):
        want[q, :len(g[:2])] = g[:2]
    np.testing.assert_array_equal(successor_list(jnp.asarray(preds), window, 2), want)
    monkeypatch.setattr(instance, "_KEY_LIMIT", 0)
    np.testing.assert_array_equal(successor_list(jnp.asarray(preds), window, 2), want)


def test_every_instance_carries_its_successor_counts():
    inst = generate(jax.random.key(3), EnvConfig(), EnvParams())
    np.testing.assert_array_equal(inst.num_succ, (np.asarray(inst.succ) > 0).sum(axis=1))
    again = instance_from_arrays(instance_to_arrays(inst), window=EnvConfig().succ_window)
    np.testing.assert_array_equal(again.num_succ, inst.num_succ)


@pytest.mark.parametrize("count", [1, 7, 10, 14])
def test_masked_stack_is_the_masked_stack(count):
    keys = jax.random.split(jax.random.key(count), count + 1)
    mask = jax.random.bernoulli(keys[0], 0.5, (4, 5))
    features = [jnp.where(jax.random.bernoulli(k, 0.1, (4, 5)), jnp.nan,
                          jax.random.normal(k, (4, 5))) for k in keys[1:]]
    want = jnp.where(mask[..., None], jnp.stack(features, axis=-1), 0.0)
    got = masked_stack(features, mask)
    assert got.shape == (4, 5, count)
    assert got.dtype == want.dtype and np.asarray(got).tobytes() == np.asarray(want).tobytes()
