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
  through JAX_DISABLE_MOST_OPTIMIZATIONS): about half the compile time. On top of it,
  XLA's older elemental emitters for the CPU's fused loops (FAST_COMPILE_FLAG, in
  XLA_FLAGS, which subprocesses inherit; tests/compile_modes.py) instead of its newer
  fusion emitters: the tiny DQN chunk compiles in 4.2 s instead of 7.1 s, the suite
  runs in about two thirds of the time (402 s against 618 s on a 2-core CPU). The flag is set only where a probe
  process accepts it (XLA aborts on a flag it does not know; a newer XLA may have
  dropped the older emitters), and never with DAMDJAX_TEST_OPTIMIZED=1. The
  tests compare computations with each other (JAX against the reference, jit
  against no jit, resumed against straight, sweep members against single runs)
  and check learning on tiny runs; none times the compiled code. XLA on CPU
  does not reassociate floats at any level, so the values are the ones the
  optimizing compiler gives to float rounding (the older emitters too: they round some
  fused float64 expressions differently in the last bit, which only bitwise tests of a
  fused program against op-by-op code see; tests/test_step_digests.py keeps a set of
  digests per compiler mode). DAMDJAX_TEST_OPTIMIZED=1 runs the suite with the
  optimizing compiler, as users run the code.
- The files in SLOWEST_FIRST order: with `--dist loadfile` pytest-xdist hands out
  the files in collection order (its `--loadscope-reorder`, on by default, would
  sort them by their number of tests, which put the few-test, long end-to-end
  files last and left one worker alone with them for minutes), so the long files
  start at once and the short ones fill in at the end. Where two files build the
  same program (the same flags: tests/test_figures.py and test_train_damd.py's DAMD
  sweep, test_train_dqn.py and test_sweep.py's single runs, ...), the order also
  lets the one that compiles it finish before the other reads it from the cache.
  Only the order changes: a file's tests run in their own order in one worker.
"""
import os
import shutil
import tempfile

from compile_modes import FAST_COMPILE_FLAG, xla_accepts, xla_flags_with

# Before jax starts a backend (XLA reads XLA_FLAGS once); probed once, in the controlling
# process: pytest-xdist's workers and the CLI tests' subprocesses inherit the result.
if (os.environ.get("DAMDJAX_TEST_OPTIMIZED") != "1"
        and not os.environ.get("DAMDJAX_TEST_XLA_PROBED")):
    os.environ["DAMDJAX_TEST_XLA_PROBED"] = "1"
    if xla_accepts(FAST_COMPILE_FLAG):
        os.environ["XLA_FLAGS"] = xla_flags_with(FAST_COMPILE_FLAG)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from damdjax.checkpoint import read_state_dict  # noqa: E402

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


# Cold cost (compiles included) of each file, largest first; the files not named run after
# these, in their collection order. Measured on a 2-core CPU; only an order, not a check.
# Where files share a program, the one that compiles it early comes first: test_figures.py
# (the DAMD sweep, at its start) before test_train_damd.py (at its end), test_train_dqn.py
# (its tiny run, at its start) before test_sweep.py.
SLOWEST_FIRST = (
    "test_distributed.py", "test_figures.py", "test_train_dqn.py", "test_train_damd.py",
    "test_sweep.py", "test_examples.py", "test_lookahead.py", "test_view_schedulers.py",
    "test_finite_state.py", "test_eft_family.py",
    "test_view_joint.py", "test_views_agree.py",
    "test_differential.py", "test_compare.py", "test_eft_feature.py", "test_train_mdqn.py",
    "test_view_dispatcher.py", "test_run_inputs.py", "test_registry.py", "test_wrappers.py",
    "test_divergence.py", "test_hostile_rundir.py",
    "test_mdqn_pieces.py", "test_env_api.py", "test_step_digests.py", "test_bench_train.py", "test_bench.py",
    "test_run_integrity.py", "test_dqn_pieces.py", "test_workload.py", "test_properties.py",
    "test_workloads.py", "test_limits.py", "test_observation_parts.py", "test_convert.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):   # pytest-xdist: keep the order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    # sort is stable: a file's tests keep their order
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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
