"""What the benchmarks share: their flag types and checks, the machine's description,
number formatting, and writing a benchmark's JSON payload."""
from __future__ import annotations

import argparse
import math
import os
import platform
import time
from typing import Callable

import jax
import jax.numpy as jnp

from damdjax.envs.config import INT32_MAX, EnvConfig, EnvParams
from damdjax.heuristics import pair_names
from damdjax.io import write_json_atomic


def int_list(text: str) -> tuple[int, ...]:
    """'1,64,256' -> (1, 64, 256) (argparse type: each a count that reaches an int32 array,
    at most INT32_MAX, else argparse's one-line error naming the flag; positivity is
    checked later)."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    big = [v for v in values if v > INT32_MAX]
    if big:
        raise argparse.ArgumentTypeError(f"must be <= {INT32_MAX} (int32), got {big[0]}")
    return values


def check_n_max_flag(parser: argparse.ArgumentParser, flag: str, values) -> None:
    """`parser.error` (one line naming the flag and the value) unless every `n_max` of
    `values` makes a valid `EnvConfig` (>= 1, within the int32 limit)."""
    for n in values:
        try:
            EnvConfig(n_max=n)
        except ValueError as err:
            parser.error(f"{flag}: {err}")


def check_method_flag(parser: argparse.ArgumentParser, method: str) -> None:
    """`parser.error` (one line naming the value) unless `method` names a heuristic pair."""
    try:
        pair_names(method)
    except ValueError as err:
        parser.error(str(err))


def compile_runner(runner: Callable, keys: jax.Array, params: EnvParams):
    """`(compiled, seconds)`: ahead-of-time `jit(runner).lower(keys, params).compile()`,
    timed."""
    t0 = time.perf_counter()
    compiled = jax.jit(runner).lower(keys, params).compile()
    return compiled, time.perf_counter() - t0


def machine_info() -> dict:
    """Platform, devices, CPU count, versions and the load average (other processes) at the end."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "float_dtype": str(jnp.zeros(()).dtype),
        "load_average_1_5_15min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def fmt(x: float) -> str:
    """A number with about three significant figures and thousands separators."""
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def print_machine_and_write(payload: dict, out: str | None) -> None:
    """Print `payload["machine"]` line by line; write `payload` as JSON to `out` if given."""
    for key, value in payload["machine"].items():
        print(f"{key}: {value}")
    if out:
        write_json_atomic(payload, out)
        print(f"wrote {out}")
