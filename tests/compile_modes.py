"""The suite's compiler modes: tests/conftest.py chooses one per run, and
tests/test_step_digests.py keeps a set of digests per mode (XLA may round a fused
float64 expression differently in the last bit from one mode to another).

- "unoptimized, older emitters": the suite's default, `jax_disable_most_optimizations`
  and XLA's older elemental emitters for the CPU's fused loops (FAST_COMPILE_FLAG in
  XLA_FLAGS) instead of its newer fusion emitters, which take longer to compile;
- "unoptimized": the same where XLA does not take that flag;
- "optimized": DAMDJAX_TEST_OPTIMIZED=1, the compiler as users run it.

No jax import at the top: conftest sets XLA_FLAGS before jax starts a backend.
"""
from __future__ import annotations

import os
import subprocess
import sys

FAST_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"
# mode -> (jax_disable_most_optimizations, the extra XLA flag)
MODES = {"unoptimized, older emitters": (True, FAST_COMPILE_FLAG),
         "unoptimized": (True, ""), "optimized": (False, "")}


def xla_flags_with(flag: str) -> str:
    """XLA_FLAGS with FAST_COMPILE_FLAG removed and `flag` (may be "") added."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if f != FAST_COMPILE_FLAG]
    return " ".join([*kept, flag] if flag else kept)


def xla_accepts(flag: str) -> bool:
    """Whether a fresh process with `flag` in XLA_FLAGS computes on the CPU (XLA aborts
    on a flag it does not know; a newer XLA may have dropped the older emitters)."""
    env = {**os.environ, "XLA_FLAGS": xla_flags_with(flag), "JAX_PLATFORMS": "cpu"}
    code = "import jax.numpy as j; j.ones(2).sum().block_until_ready()"
    probe = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           timeout=300)
    return probe.returncode == 0


def mode() -> str:
    """This process's compiler mode: a key of MODES."""
    import jax
    if not jax.config.read("jax_disable_most_optimizations"):
        return "optimized"
    older = FAST_COMPILE_FLAG in os.environ.get("XLA_FLAGS", "").split()
    return "unoptimized, older emitters" if older else "unoptimized"
