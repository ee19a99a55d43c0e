"""Configuration of the edge environment.

Two kinds of configuration, as in gymnax:

* `EnvConfig` is static (hashable, frozen): the padded array sizes.
  Changing it recompiles.
* `EnvParams` is dynamic (a pytree of scalars): the generator's knobs,
  the reward's constants. It can be traced, so one compiled program can sweep
  over densities, task counts or server counts (within the static sizes).

Units: time in abstract time units, work in work units (cpu is work units per
time unit), data in data units (bw is data units per time unit, memory is held
in data units).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

INT32_MAX = 2**31 - 1   # every count and index reaches an int32 array
# The largest padded sizes: each fits int32, and n_max leaves the step cap 2 n_max + 2 there.
SIZE_LIMITS = {"n_max": (INT32_MAX - 2) // 2, "m_max": INT32_MAX, "p_max": INT32_MAX,
               "queue_capacity": INT32_MAX, "j_max": INT32_MAX}
# The largest seed: `jax.random.PRNGKey` keeps a seed's low 32 bits (without x64), so a larger
# seed would repeat a smaller one's draws; numpy's SeedSequence takes the same range.
SEED_MAX = 2**32 - 1


def check_float(name: str, value, dtype=None) -> None:
    """Raise ValueError (one line: the name, the value, the limit) unless the concrete
    `value` is finite and keeps its magnitude in `dtype` (default: JAX's default float
    type, float32, or float64 under `jax_enable_x64`): at most its largest finite value (a
    larger one becomes inf on the device) and, where nonzero, at least its smallest normal
    number (a smaller one flushes to 0)."""
    dtype = np.dtype(jnp.asarray(0.0).dtype if dtype is None else dtype)
    info = np.finfo(dtype)
    biggest, tiny = float(info.max), float(info.tiny)
    v = float(np.asarray(value, np.float64))
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if abs(v) > biggest:
        raise ValueError(f"{name} must be at most {biggest:g} in magnitude ({dtype.name}), "
                         f"got {v:g}")
    if v != 0 and abs(v) < tiny:
        raise ValueError(f"{name} must be 0 or at least {tiny:g} in magnitude "
                         f"({dtype.name}), got {v:g}")


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Static sizes of the padded arrays.

    Attributes:
      n_max: task slots per episode `N_max`.
      m_max: server slots `M_max`.
      p_max: predecessor slots per task `P_max`.
      queue_capacity: wait-queue slots per server `Q`.
      j_max: most tasks in one generated job; also the successor window `W =
        j_max - 1` (every successor of a task lies in the next `W` indices).
      fan_out: successor slots per task `D` (`Instance.succ` [N, D]), at most `W`; None
        (the default): `W`, which holds any DAG the window allows (the random generator's
        fan-out is bounded only by `W`). A job library's `required_config` sets its widest
        fan-out (66 for the Alibaba jobs against `W` = 202), and every instance is
        checked against it where it is built (`damdjax.envs.workload.check_library`,
        `damdjax.envs.instance.instance_from_arrays`).
    """

    n_max: int = 100
    m_max: int = 10
    p_max: int = 3
    queue_capacity: int = 16
    j_max: int = 8
    fan_out: int | None = None

    def __post_init__(self):
        for name in ("n_max", "m_max", "p_max", "queue_capacity", "j_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"EnvConfig.{name} must be an integer >= 1, got {value!r}")
            if value > SIZE_LIMITS[name]:
                raise ValueError(f"EnvConfig.{name} must be <= {SIZE_LIMITS[name]} (int32 "
                                 f"indices), got {value!r}")
        d = self.fan_out
        if d is not None:
            if not isinstance(d, int) or isinstance(d, bool) or d < 1:
                raise ValueError(f"EnvConfig.fan_out must be None or an integer >= 1, got {d!r}")
            if d > self.succ_window:
                raise ValueError(f"EnvConfig.fan_out={d} exceeds the successor window "
                                 f"j_max - 1 = {self.succ_window} (no task can have more "
                                 f"successors)")

    @property
    def succ_window(self) -> int:
        """`W`: successors of task i lie in `i+1 .. i+W`."""
        return max(self.j_max - 1, 1)

    @property
    def succ_slots(self) -> int:
        """`D`: successor slots per task, `fan_out` (default: the window `W`)."""
        return self.succ_window if self.fan_out is None else self.fan_out

    @property
    def max_steps(self) -> int:
        """Step cap: every step dispatches or starts a task, so `2 N_max` suffice."""
        return 2 * self.n_max + 2


@struct.dataclass
class EnvParams:
    """Dynamic knobs of the generator and the rewards (all scalars).

    The paper's three axes are `num_tasks`, `density` and `num_servers`.
    Defaults are calibrated in docs/calibration.md.
    """

    num_tasks: int = 100  # real tasks per episode, <= n_max
    num_servers: int = 5  # real servers, 1 <= num_servers <= m_max
    density: float = 2.0  # task arrival density: tasks per time unit (Poisson jobs)
    slack: float = 2.5  # deadline = arrival + slack * (critical-path time on an average server)
    cpu_low: float = 1.0  # cpu ~ U[cpu_low, cpu_high] work / time
    cpu_high: float = 3.0
    bw_low: float = 5.0  # bw ~ U[bw_low, bw_high] data / time
    bw_high: float = 20.0
    mem_low: float = 20.0  # memory ~ U[mem_low, mem_high] data
    mem_high: float = 40.0
    k_low: float = 0.1  # propagation delay at the AP's position
    k_high: float = 1.0  # ... and at the edge of the unit disk
    size_low: float = 0.5  # task size ~ U[size_low, size_high] data, work = size
    size_high: float = 4.0
    tau: float = 10.0  # reward time constant (time units)
    miss_penalty: float = 1.0  # team-reward penalty per missed deadline
    time_scale: float = 10.0  # observation times are divided by this


def generated_mean_work(params: EnvParams) -> float:
    """The random generator's expected work units per task, `(size_low + size_high) / 2`
    (work = size; host side, concrete params)."""
    return (float(jnp.asarray(params.size_low)) + float(jnp.asarray(params.size_high))) / 2


def offered_load(params: EnvParams, mean_work: float | None = None) -> float:
    """Expected work arriving per unit of expected capacity (host side, concrete params):
    `density * mean_work / (num_servers * (cpu_low + cpu_high) / 2)`. `mean_work`: work
    units per task (default: the random generator's, `generated_mean_work`; a job library's
    `damdjax.envs.workload.mean_task_work`). Above 1 the servers cannot keep up on
    average; the default setting offers 0.45 (docs/model.md, "Load of real workloads")."""
    f = lambda name: float(jnp.asarray(getattr(params, name)))
    work = generated_mean_work(params) if mean_work is None else mean_work
    return f("density") * work / (f("num_servers") * (f("cpu_low") + f("cpu_high")) / 2)


def check_params(config: EnvConfig, params: EnvParams) -> None:
    """Raise ValueError naming the first nonsensical value (Python boundary only).

    Call on concrete (not traced) params before compiling. Every float knob must keep its
    value in JAX's default float type (`check_float`). Includes `check_fits` (the
    params fit the padding), with this function's own messages.
    """
    def val(name):  # the value as given (float64), before any cast to the device's type
        return float(np.asarray(getattr(params, name), np.float64))

    n, m = val("num_tasks"), val("num_servers")
    if n != int(n) or not 1 <= n <= config.n_max:
        raise ValueError(f"num_tasks must be an integer in [1, n_max={config.n_max}], got {n:g}")
    if m != int(m) or not 1 <= m <= config.m_max:
        raise ValueError(f"num_servers must be an integer in [1, m_max={config.m_max}], got {m:g}")
    for name in ("density", "slack", "cpu_low", "bw_low", "mem_low", "k_low", "size_low",
                 "tau", "time_scale"):
        if not val(name) > 0:
            raise ValueError(f"{name} must be > 0, got {val(name):g}")
    if val("miss_penalty") < 0:
        raise ValueError(f"miss_penalty must be >= 0, got {val('miss_penalty'):g}")
    for f in dataclasses.fields(params):  # after the signs: a NaN is "> 0"'s to name
        if f.name not in ("num_tasks", "num_servers"):
            check_float(f.name, getattr(params, f.name))
    for low, high in (("cpu_low", "cpu_high"), ("bw_low", "bw_high"), ("mem_low", "mem_high"),
                      ("k_low", "k_high"), ("size_low", "size_high")):
        if val(high) < val(low):
            raise ValueError(f"{high} must be >= {low}, got {val(high):g} < {val(low):g}")
    if val("size_high") > val("mem_low"):
        raise ValueError(
            f"size_high={val('size_high'):g} exceeds mem_low={val('mem_low'):g}: "
            "a generated task could fit no server")


# (EnvParams field, the EnvConfig size that bounds it)
FITTED_FIELDS = (("num_tasks", "n_max"), ("num_servers", "m_max"))


def check_fits(config: EnvConfig, params: EnvParams) -> None:
    """Raise ValueError if `params` ask for more tasks or servers than `config` pads
    (`EnvParams.num_tasks=100 exceeds EnvConfig.n_max=50`): the env would hold only the
    first `n_max` tasks (`m_max` servers). A value traced under `jit`/`vmap` is not
    checked (check concrete params once with `check_params` before compiling); a
    concrete array is checked by its largest element. Costs nothing in compiled code."""
    for field, size in FITTED_FIELDS:
        value = getattr(params, field)
        if isinstance(value, jax.core.Tracer):
            continue
        largest = float(np.max(np.asarray(value, np.float64), initial=-np.inf))
        cap = getattr(config, size)
        if largest > cap:
            raise ValueError(f"EnvParams.{field}={largest:g} exceeds EnvConfig.{size}={cap}")
