"""Fixtures shared by the trainer tests."""
import jax
import numpy as np
import pytest

from damdjax.checkpoint import read_state_dict


@pytest.fixture
def assert_same_checkpoint():
    """`check(path_a, path_b)`: the two msgpack checkpoints hold the same tree, bitwise."""
    def check(path_a, path_b):
        la, ta = jax.tree_util.tree_flatten(read_state_dict(path_a))
        lb, tb = jax.tree_util.tree_flatten(read_state_dict(path_b))
        assert ta == tb
        for x, y in zip(la, lb):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    return check
