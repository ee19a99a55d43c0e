"""The pieces of the observation's traffic work (issue 13): the derived successor counts
and the grouped, masked stack (the observation's values are pinned by
tests/test_step_digests.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.config import EnvConfig, EnvParams
from envs.generator import generate
from envs.instance import (instance_from_arrays, instance_to_arrays, successor_counts,
                           successor_list)
from envs.observation import masked_stack


@pytest.mark.parametrize("window, dtype", [(1, np.uint8), (255, np.uint8), (256, np.uint16),
                                           (70000, np.uint32)])
def test_successor_counts_are_the_filled_slots_in_a_type_that_holds_the_window(window, dtype):
    succ = np.zeros((3, window), bool)
    succ[0] = True
    succ[2, ::2] = True
    listed = successor_list(jnp.asarray(succ), window)
    assert listed.dtype == dtype
    assert int(listed[0, -1]) == window  # the window's last offset fits the type
    counts = successor_counts(listed)
    assert counts.dtype == dtype
    np.testing.assert_array_equal(counts, succ.sum(axis=1))


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
