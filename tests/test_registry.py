"""damdjax.registry: every registered setting builds an env that resets and steps under
jit, its params fit its sizes, overrides replace fields and bad ones name the field."""
from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from damdjax import registry
from damdjax.envs.config import EnvConfig, EnvParams, check_params
from damdjax.envs.env import EdgeEnv
from damdjax.envs.generators import RandomDAGGenerator
from damdjax.registry import describe, make, names, register

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the checkout


@functools.partial(jax.jit, static_argnums=0)
def reset_and_step(config, key, params):
    """One compiled program per padded size: reset, then one step of the all-zeros action
    (the env replaces what is infeasible)."""
    env = EdgeEnv(config)
    obs, state = env.reset(key, params)
    return env.step(key, state, env.dummy_action(), params)


def test_names_are_unique_versioned_and_described():
    listed = names()
    assert len(set(listed)) == len(listed) == 16
    assert listed[0] == "Edge-default-v0"
    assert {"Edge-tasks50-v0", "Edge-density6-v0", "Edge-servers10-v0"} <= set(listed)
    for name in listed:
        assert registry.NAME_PATTERN.fullmatch(name)
        text = describe(name)
        assert text and "\n" not in text


def test_axes_match_the_figures():
    from damdjax.eval.figures import AXES
    ours = {axis: (field, tuple(values)) for axis, field, _, values in registry.FIGURE_AXES}
    assert ours == {a.name: (a.field, tuple(a.values)) for a in AXES.values()}


def test_default_setting():
    env, params = make("Edge-default-v0")
    assert params == EnvParams()
    assert (env.config.n_max, env.config.m_max) == (params.num_tasks, params.num_servers)
    assert env.default_params == params


@pytest.mark.parametrize("axis,field,values",
                         [(a, f, v) for a, f, _, v in registry.FIGURE_AXES])
def test_axis_points(axis, field, values):
    for value in values:
        env, params = make(f"Edge-{axis}{value:g}-v0")
        assert getattr(params, field) == value
        assert params.replace(**{field: getattr(EnvParams(), field)}) == EnvParams()
        assert (env.config.n_max, env.config.m_max) == (params.num_tasks, params.num_servers)


def test_every_name_resets_and_steps_under_jit():
    """Envs of the same padded sizes share one compiled program (every registered env is
    `EdgeEnv(config)` with the random DAG generator, checked here): 9 programs."""
    key = jax.random.PRNGKey(0)
    for name in names():
        env, params = make(name)
        assert type(env) is EdgeEnv and isinstance(env.generator, RandomDAGGenerator)
        check_params(env.config, params)
        check_params(env.config, env.default_params)
        obs, state, reward, done, info = reset_and_step(env.config, key, params)
        assert int(state.step) == 1 and np.isfinite(float(reward)), name
        assert int(np.sum(state.instance.task_mask)) == params.num_tasks, name
        assert int(np.sum(state.instance.server_mask)) == params.num_servers, name


def test_overrides_replace_fields():
    env, params = make("Edge-tasks50-v0", density=3.0, num_tasks=np.int64(20),
                       slack=np.float32(1.5), num_servers=2.0)
    assert env.config.n_max == 50
    assert (params.density, params.num_tasks, params.slack, params.num_servers) == (
        3.0, 20, 1.5, 2)
    assert type(params.num_tasks) is int and type(params.num_servers) is int
    assert type(params.slack) is float
    assert make("Edge-tasks50-v0")[1].num_tasks == 50      # the registered setting is intact


@pytest.mark.parametrize("overrides,field", [
    ({"densty": 3.0}, "densty"),
    ({"num_tasks": 101}, "num_tasks"),              # more than n_max = 100
    ({"num_servers": 6}, "num_servers"),            # more than m_max = 5
    ({"num_servers": 2.5}, "num_servers"),
    ({"density": -1.0}, "density"),
    ({"density": math.nan}, "density"),
    ({"density": 1e300}, "density"),                # overflows float32
    ({"density": "fast"}, "density"),
    ({"density": [1.0, 2.0]}, "density"),
    ({"slack": True}, "slack"),
    ({"cpu_high": 0.5}, "cpu_high"),                # below cpu_low
])
def test_bad_overrides_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        make("Edge-default-v0", **overrides)


def test_unknown_name():
    with pytest.raises(ValueError, match="Edge-nope-v0"):
        make("Edge-nope-v0")


def test_register(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def tiny():
        """Twelve tasks on three servers."""
        return EdgeEnv(EnvConfig(n_max=12, m_max=3)), EnvParams(num_tasks=12, num_servers=3)

    register("Edge-tiny-v0", tiny)
    assert describe("Edge-tiny-v0") == "Twelve tasks on three servers."
    assert names()[-1] == "Edge-tiny-v0"
    env, params = make("Edge-tiny-v0", density=4.0)
    assert env.config.n_max == 12 and params.density == 4.0
    with pytest.raises(ValueError, match="already registered"):
        register("Edge-tiny-v0", tiny)
    register("Edge-tiny-v0", tiny, "replaced", replace=True)
    assert describe("Edge-tiny-v0") == "replaced"
    for bad in ("Edge-tiny", "edge tiny-v0", "Edge-tiny-v", ""):
        with pytest.raises(ValueError, match="must look like"):
            register(bad, tiny)
    with pytest.raises(ValueError, match="one-line description"):
        register("Edge-undescribed-v0", lambda: tiny())
    with pytest.raises(TypeError):
        register("Edge-nofactory-v0", None, "none")
    register("Edge-broken-v0", lambda: (None, None), "returns nothing")
    with pytest.raises(TypeError, match="must return"):
        make("Edge-broken-v0")
    register("Edge-toobig-v0", lambda: (EdgeEnv(EnvConfig(n_max=12)), EnvParams()), "bad")
    with pytest.raises(ValueError, match="num_tasks"):
        make("Edge-toobig-v0")


def test_top_level_make_is_the_registry():
    import damdjax
    assert damdjax.make is make and damdjax.register is register


def _fake_data(folder: Path) -> None:
    """A data folder with every file of WORKLOAD_FILES, each holding its own name (so every
    SHA-256 differs from the real file's)."""
    for rel in registry.WORKLOAD_FILES:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(rel)


def test_workload_files_are_checked(tmp_path, monkeypatch):
    """register_workloads refuses a folder whose files are not the ones the names are
    defined on, naming the file; with the digests set to the fake files' (as if they were
    the real ones), a stray .json in wfcommons/ is refused too, and then nothing is
    registered by a refused call."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="no file"):
        registry.register_workloads(str(tmp_path))
    _fake_data(tmp_path)
    with pytest.raises(ValueError, match="alibaba-v2018-dags.csv.*not the file"):
        registry.register_workloads(str(tmp_path))
    fake = {rel: hashlib.sha256(rel.encode()).hexdigest() for rel in registry.WORKLOAD_FILES}
    monkeypatch.setattr(registry, "WORKLOAD_FILES", fake)
    registry.check_workload_files(str(tmp_path))            # now they are "the" files
    (tmp_path / "wfcommons" / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="other.json"):
        registry.register_workloads(str(tmp_path))
    assert not any("wfcommons" in n or "alibaba" in n for n in names())


@pytest.mark.skipif(not SHARED.is_dir(), reason="the optional external data (../shared/data) is absent")
def test_real_workload_names(monkeypatch):
    """On the shipped data: the four names register, build an env that draws its jobs from
    the workload at the matched density, and reset and step under jit."""
    from damdjax.envs.generators import JobLibraryGenerator
    from damdjax.envs.workload import matched_density
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    added = registry.register_workloads(str(SHARED))
    assert added == ("Edge-wfcommons-v0", "Edge-wfcommons-servers3-v0", "Edge-alibaba-v0",
                     "Edge-alibaba-tasks200-servers3-v0")
    for name in added:
        env, params = make(name)
        assert isinstance(env.generator, JobLibraryGenerator)
        assert params.density == matched_density(env.generator.library, EnvParams())
        assert params.num_servers == (3 if "servers3" in name else 5)
        assert params.num_tasks == env.config.n_max == (200 if "tasks200" in name else
                                                        120 if "wfcommons" in name else 100)
        obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0), params)
        assert int(np.sum(state.instance.task_mask)) == params.num_tasks
