"""The time that stands for "not yet" / "never" (so the state holds no inf), and the test
for a time that is set. Its own module because both the instance (`damdjax.envs.instance`)
and the state (`damdjax.envs.state`, which holds an instance) use it."""
from __future__ import annotations

import jax
import numpy as np


def never(dtype) -> float:
    """The time that stands for "not yet" / "never" in float type `dtype` (time units):
    `2 ** (3/4 of the largest exponent)`, 2**96 in float32, 2**768 in float64, exact.

    Far above every time an episode reaches (an accepted instance file's are at most the
    square root of the largest finite value, `damdjax.envs.instance_format.check_times`;
    the generators' are of the order of `num_tasks / density`) and 2**32 (2**256) below
    the largest finite value, so sums and differences with it (a delay added, a time
    subtracted) and its quotients by a time scale stay finite (docs/model.md, "Times not
    set yet").
    """
    return float(2.0 ** (np.finfo(dtype).maxexp * 3 // 4))


def is_set(times: jax.Array) -> jax.Array:
    """Bool, `times`' shape: which entries hold a time, not `never` (`times < never`)."""
    return times < never(times.dtype)
