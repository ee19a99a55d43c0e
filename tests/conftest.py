"""Fixtures shared by the trainer tests, and how the suite compiles.

Most of the suite's time is XLA compiling small programs, so:
- One compilation cache for the session: the suite compiles the same programs
  many times (in separate test functions, as fresh closures of the same
  program, and in the subprocesses of the CLI tests); JAX's persistent cache
  makes every compilation after the first a file read. The directory is
  DAMDJAX_TEST_JAX_CACHE where set, else a fresh temporary directory (so a run
  never depends on an earlier one) shared by pytest-xdist's workers (the suite
  runs as two, `-n 2 --dist loadfile`: a test file stays in one worker, so its
  module fixtures are made once); subprocesses inherit it through
  JAX_COMPILATION_CACHE_DIR. The cache key is the program and the compiler's
  flags, so results do not change.
- XLA's cheapest compiles (`jax_disable_most_optimizations`; subprocesses get it
  through JAX_DISABLE_MOST_OPTIMIZATIONS): about half the compile time. The
  tests compare computations with each other (JAX against the reference, jit
  against no jit, resumed against straight, sweep members against single runs)
  and check learning on tiny runs; none times the compiled code. XLA on CPU
  does not reassociate floats at any level, so the values are the ones the
  optimizing compiler gives to float rounding. DAMDJAX_TEST_OPTIMIZED=1 runs the
  suite with the optimizing compiler, as users run the code.
"""
import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

from damdjax.checkpoint import read_state_dict

_OWNED = not os.environ.get("DAMDJAX_TEST_JAX_CACHE")  # made here: removed at the end
if _OWNED:  # pytest-xdist's workers inherit it from the controlling process
    os.environ["DAMDJAX_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="damdjax-jax-cache-")
_CACHE = os.environ["DAMDJAX_TEST_JAX_CACHE"]
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
if os.environ.get("DAMDJAX_TEST_OPTIMIZED") != "1":
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    jax.config.update("jax_disable_most_optimizations", True)


def pytest_sessionfinish(session, exitstatus):
    if _OWNED and not os.environ.get("PYTEST_XDIST_WORKER"):
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
