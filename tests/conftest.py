"""Fixtures shared by the trainer tests, and one compilation cache for the session.

The suite compiles the same XLA programs many times: in separate test functions
(fresh closures of the same program) and in the subprocesses of the CLI tests.
JAX's persistent compilation cache makes every compilation after the first a
file read. The cache directory is DAMDJAX_TEST_JAX_CACHE where set, else a
fresh temporary directory for this session (so a run never depends on an
earlier one); subprocesses inherit it through JAX_COMPILATION_CACHE_DIR.
Results do not change: the cache key is the program and the compiler's flags.
"""
import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

from damdjax.checkpoint import read_state_dict

_CACHE = os.environ.get("DAMDJAX_TEST_JAX_CACHE") or tempfile.mkdtemp(prefix="damdjax-jax-cache-")
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_sessionfinish(session, exitstatus):
    if not os.environ.get("DAMDJAX_TEST_JAX_CACHE"):
        shutil.rmtree(_CACHE, ignore_errors=True)


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
