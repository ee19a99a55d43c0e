"""The instance generators (damdjax.envs.generators) and the env's fit of params to config.

Each generator draws, key for key, the arrays of the functions it wraps (the random DAG
model, the job library, a setting range drawn as the env drew it); the env built with a
generator equals calling the generator by hand; bad setting ranges are refused naming the
field and the value. The env's default params fit its config, and concrete params that do
not fit are an error at every host-side entry, while traced params are not checked.
"""
from __future__ import annotations

import re

import jax
import numpy as np
import pytest

from damdjax.envs.config import EnvConfig, EnvParams, check_fits, check_params
from damdjax.envs.env import EdgeEnv
from damdjax.envs.generator import generate
from damdjax.envs.generators import (Generator, JobLibraryGenerator, RandomDAGGenerator,
                                     SettingRangeGenerator, workload_generator)
from damdjax.envs.instance_format import JobSpec, TaskSpec
from damdjax.envs.workload import LibraryError, generate_from_library, library_from_specs, \
    required_config

CONFIG = EnvConfig(n_max=24, m_max=4, p_max=3, queue_capacity=4, j_max=5)
PARAMS = EnvParams(num_tasks=20, num_servers=3, density=2.5)
KEYS = jax.random.split(jax.random.PRNGKey(11), 3)


def task(size, preds=()):
    return TaskSpec(size=size, work=2 * size, deadline=0.0, preds=tuple(preds))


# A fork-join, a chain and a single task.
LIBRARY = library_from_specs([
    JobSpec(0.0, (task(1.0), task(0.5, [0]), task(0.75, [0]), task(2.0, [1, 2]))),
    JobSpec(0.0, (task(1.5), task(1.0, [0]), task(0.25, [1]))),
    JobSpec(0.0, (task(3.0),)),
])
LIB_CONFIG = required_config(LIBRARY, n_max=24, m_max=4, queue_capacity=4)


def reference_draw_setting(key, params, setting_range):
    """The per-episode setting draw, written out here independently of the generators: each
    field from `fold_in(key, i)`, integers by `randint`, the rest by `uniform`."""
    values = {}
    for i, (field, low, high) in enumerate(setting_range):
        k = jax.random.fold_in(key, i)
        if field in ("num_tasks", "num_servers"):
            values[field] = jax.random.randint(k, (), int(low), int(high) + 1)
        else:
            values[field] = jax.random.uniform(k, (), minval=low, maxval=high)
    return params.replace(**values)


def reference_range_generate(key, config, params, setting_range, lib=None):
    """The reference instance of a setting range: split the key, draw the setting, then the
    random model or the library at that setting."""
    if setting_range:
        key, k_draw = jax.random.split(key)
        params = reference_draw_setting(k_draw, params, setting_range)
    if lib is not None:
        return generate_from_library(key, config, params, lib)
    return generate(key, config, params)


def assert_same_tree(got, want):
    """The same leaves, array for array (dtype, shape, values bitwise)."""
    lg, tg = jax.tree_util.tree_flatten_with_path(got)
    lw, tw = jax.tree_util.tree_flatten_with_path(want)
    assert tg == tw
    for (path, a), (_, b) in zip(lg, lw):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


RANGES = (("num_servers", 2, 4), ("density", 1.0, 6.0), ("num_tasks", 5, 20), ("slack", 1.5, 3.0))
# (name, config, generator, the old call of one key)
CASES = [
    ("random", CONFIG, RandomDAGGenerator(),
     lambda k: generate(k, CONFIG, PARAMS)),
    ("library", LIB_CONFIG, JobLibraryGenerator(LIBRARY),
     lambda k: generate_from_library(k, LIB_CONFIG, PARAMS, LIBRARY)),
    ("range of random", CONFIG, SettingRangeGenerator(RandomDAGGenerator(), RANGES),
     lambda k: reference_range_generate(k, CONFIG, PARAMS, RANGES)),
    ("range of library", LIB_CONFIG, SettingRangeGenerator(JobLibraryGenerator(LIBRARY), RANGES),
     lambda k: reference_range_generate(k, LIB_CONFIG, PARAMS, RANGES, LIBRARY)),
    ("empty range", CONFIG, SettingRangeGenerator(RandomDAGGenerator(), ()),
     lambda k: generate(k, CONFIG, PARAMS)),
]


@pytest.mark.parametrize("name, config, generator, old", CASES, ids=[c[0] for c in CASES])
def test_generator_draws_the_reference_instances(name, config, generator, old):
    assert isinstance(generator, Generator)
    generator.check(config)
    run = jax.jit(jax.vmap(lambda k: generator(k, config, PARAMS)))
    want = jax.jit(jax.vmap(old))
    assert_same_tree(run(KEYS), want(KEYS))
    assert_same_tree(generator(KEYS[0], config, PARAMS), old(KEYS[0]))   # eager


@pytest.mark.parametrize("name, config, generator, old", CASES, ids=[c[0] for c in CASES])
def test_env_with_a_generator_equals_the_hand_built_call(name, config, generator, old):
    env = EdgeEnv(config, generator)
    assert env.generator is generator and env.config is config
    key = KEYS[1]
    instance = generator(key, config, PARAMS)
    assert_same_tree(env.generate(key, PARAMS), instance)
    assert_same_tree(env.reset(key, PARAMS), env.reset_to(instance, PARAMS))
    assert_same_tree(jax.jit(env.reset)(key, PARAMS),   # compiled alike
                     jax.jit(lambda k, p: env.reset_to(generator(k, config, p), p))(key, PARAMS))


def test_default_generator_is_the_random_model():
    assert EdgeEnv(CONFIG).generator == RandomDAGGenerator()
    assert EdgeEnv(CONFIG, None).generator == RandomDAGGenerator()
    assert workload_generator(None) == RandomDAGGenerator()
    lib_gen = workload_generator(LIBRARY)
    assert isinstance(lib_gen, JobLibraryGenerator) and lib_gen.library is LIBRARY
    hash(lib_gen), hash(SettingRangeGenerator(lib_gen, RANGES))   # constants of an env


def test_env_refuses_a_non_generator():
    with pytest.raises(TypeError, match="JobLibraryGenerator"):
        EdgeEnv(LIB_CONFIG, LIBRARY)


def test_generators_check_the_padding():
    narrow = EnvConfig(n_max=24, m_max=4, j_max=5, fan_out=2)
    with pytest.raises(ValueError, match="fan_out=2 is below the successor window"):
        EdgeEnv(narrow)
    with pytest.raises(LibraryError, match="j_max=3 is below the library's longest"):
        EdgeEnv(EnvConfig(j_max=3, p_max=2), JobLibraryGenerator(LIBRARY))
    with pytest.raises(LibraryError, match="j_max=3 is below the library's longest"):
        SettingRangeGenerator(JobLibraryGenerator(LIBRARY), RANGES).check(
            EnvConfig(j_max=3, p_max=2))


@pytest.mark.parametrize("ranges, message", [
    ((("tau", 1.0, 2.0),), "setting range tau=1.0:2.0: the field must be one of"),
    ((("density", 3.0, 1.0),), "setting range density=3.0:1.0: the field must be one of"),
    ((("slack", 0.0, 1.0),), "setting range slack=0.0:1.0: the field must be one of"),
    ((("density", 1.0),), "setting range ('density', 1.0): must be (field, low, high)"),
])
def test_bad_setting_range_is_refused_when_built(ranges, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SettingRangeGenerator(RandomDAGGenerator(), ranges)


@pytest.mark.parametrize("ranges, message", [
    ((("num_servers", 2, 5),), "setting range num_servers=2:5: integers up to 4"),
    ((("num_tasks", 1, 25),), "setting range num_tasks=1:25: integers up to 24"),
    ((("num_tasks", 1.5, 20),), "setting range num_tasks=1.5:20: integers up to 24"),
])
def test_setting_range_beyond_the_padding_is_refused(ranges, message):
    generator = SettingRangeGenerator(RandomDAGGenerator(), ranges)
    with pytest.raises(ValueError, match=re.escape(message)):
        generator.check(CONFIG)
    with pytest.raises(ValueError, match=re.escape(message)):
        EdgeEnv(CONFIG, generator)


# ---------------------------------------------------------------------------
# Params must fit the config
# ---------------------------------------------------------------------------

SMALL = EnvConfig(n_max=50, m_max=3)


def test_default_params_fit_the_config():
    params = EdgeEnv(SMALL).default_params
    check_params(SMALL, params)
    assert (params.num_tasks, params.num_servers) == (50, 3)
    assert params.replace(num_tasks=100, num_servers=5) == EnvParams()
    assert EdgeEnv(EnvConfig()).default_params == EnvParams()   # the defaults where they fit


def test_params_beyond_the_padding_are_an_error_at_every_entry():
    env = EdgeEnv(SMALL)
    key = jax.random.PRNGKey(0)
    obs, state = env.reset(key, env.default_params)
    too_many = re.escape("EnvParams.num_tasks=100 exceeds EnvConfig.n_max=50")
    for call in (lambda p: env.reset(key, p), lambda p: env.generate(key, p),
                 lambda p: env.reset_to(state.instance, p),
                 lambda p: env.step(key, state, env.dummy_action(), p)):
        with pytest.raises(ValueError, match=too_many):
            call(EnvParams(num_tasks=100, num_servers=3))
    with pytest.raises(ValueError, match=too_many):   # num_servers=5 beyond m_max too
        env.reset(key, EnvParams(num_tasks=100))
    with pytest.raises(ValueError, match=re.escape("EnvParams.num_servers=5 exceeds "
                                                   "EnvConfig.m_max=3")):
        env.reset(key, EnvParams(num_tasks=50))
    with pytest.raises(ValueError, match="num_tasks=100 exceeds"):   # a concrete array
        env.reset(key, EnvParams(num_tasks=jax.numpy.asarray(100), num_servers=3))


def test_traced_params_are_not_checked():
    """Under jit or vmap the params are tracers: nothing is checked (callers check concrete
    params once before compiling), and the program runs as before (the padding holds the
    first n_max tasks)."""
    env = EdgeEnv(SMALL)
    key = jax.random.PRNGKey(0)
    _, state = jax.jit(env.reset)(key, EnvParams(num_tasks=100))
    assert int(state.instance.task_mask.sum()) == 50
    assert int(state.instance.server_mask.sum()) == 3
    big = EnvParams(num_tasks=100, num_servers=3)
    batched = jax.tree.map(lambda x: jax.numpy.stack([x, x]), big)
    jax.vmap(env.reset, in_axes=(None, 0))(key, batched)
    jax.jit(env.step)(key, state, env.dummy_action(), big)


def test_check_fits():
    check_fits(SMALL, EnvParams(num_tasks=50, num_servers=3))
    with pytest.raises(ValueError, match=re.escape("EnvParams.num_tasks=51 exceeds "
                                                   "EnvConfig.n_max=50")):
        check_fits(SMALL, EnvParams(num_tasks=51, num_servers=3))
    with pytest.raises(ValueError, match="num_tasks must be an integer in \\[1, n_max=50\\], "
                                         "got 100"):
        check_params(SMALL, EnvParams(num_tasks=100, num_servers=3))   # its own message
