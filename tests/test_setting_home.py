"""The setting has one home: `EnvParams` holds the generator's and the rewards' knobs,
`EnvConfig` the padded sizes, and no other dataclass of the package declares a field of
either name (a trainer config nests them as `env` and `env_config`, `Hyper` as `env`).
Stored configs of damdjax 0.2 (the flat setting) read into that form once."""
from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil

import pytest

import damdjax
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.hyper import Hyper
from damdjax.run_config import FLAT_SETTING_FIELDS, MIGRATION_NOTE, say_once, setting_from_json
from damdjax.train import damd, dqn, mdqn


def package_dataclasses():
    """Every dataclass (flax structs too) defined in a module of the package."""
    for info in pkgutil.walk_packages(damdjax.__path__, "damdjax."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (isinstance(value, type) and dataclasses.is_dataclass(value)
                    and value.__module__ == module.__name__):
                yield value


@pytest.mark.parametrize("home", [EnvParams, EnvConfig], ids=lambda c: c.__name__)
def test_no_dataclass_copies_a_setting_field(home):
    names = {f.name for f in dataclasses.fields(home)}
    found = {c.__qualname__: sorted(names & {f.name for f in dataclasses.fields(c)})
             for c in package_dataclasses() if c is not home}
    assert len(found) > 20   # the scan sees the package's configs and states
    assert {c: f for c, f in found.items() if f} == {}


def test_the_scan_sees_a_copy():
    """The scan above can fail: a dataclass with a `density` field is found."""
    @dataclasses.dataclass
    class Copy:
        density: float = 2.0
    names = {f.name for f in dataclasses.fields(EnvParams)}
    assert names & {f.name for f in dataclasses.fields(Copy)} == {"density"}


def test_hyper_traces_the_setting_fields_and_holds_the_others_as_constants():
    import jax
    h = Hyper(env=EnvParams(density=3.0, cpu_low=1.5))
    leaves, tree = jax.tree.flatten(h)
    assert len(leaves) == len(Hyper.field_names())
    assert jax.tree.unflatten(tree, leaves) == h
    assert jax.tree.structure(h.with_values(density=4.0)) == tree           # same program
    assert jax.tree.structure(h.replace(env=h.env.replace(cpu_low=2.0))) != tree
    with pytest.raises(TypeError, match="cpu_low is a program constant"):
        Hyper(env=EnvParams(cpu_low=jax.numpy.asarray(1.0)))


def _flat(stored: dict) -> dict:
    """A stored trainer config as damdjax 0.2 wrote it: the flat setting fields."""
    env = stored.pop("env")
    stored.pop("env_config")
    return {**stored, **{f: env[f] for f in FLAT_SETTING_FIELDS if f != "queue_capacity"},
            "queue_capacity": 5}


@pytest.mark.parametrize("cls", [dqn.DQNConfig, mdqn.MDQNConfig])
def test_a_flat_stored_config_reads_once_into_env_and_env_config(cls, capsys):
    new = cls.from_values(num_tasks=30, num_servers=3, density=3.0, tau=8.0, queue_capacity=5)
    old = _flat(json.loads(json.dumps(new.to_json())))
    say_once.cache_clear()
    read = cls.from_json(old)
    assert cls.from_json(old) == read == new
    assert capsys.readouterr().err == MIGRATION_NOTE + "\n"     # once per process
    # what it read is written back in today's form, which reads without a note
    say_once.cache_clear()
    assert cls.from_json(json.loads(json.dumps(read.to_json()))) == new
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match=r"missing fields \['slack'\]"):
        setting_from_json({k: v for k, v in old.items() if k != "slack"})


def test_a_flat_damd_config_and_setting_read():
    new = damd.DAMDConfig(dispatcher=dqn.DQNConfig.from_values(num_tasks=20, queue_capacity=5),
                          schedulers=mdqn.MDQNConfig.from_values(num_tasks=20, queue_capacity=5,
                                                                 dispatcher=""))
    stored = json.loads(json.dumps(new.to_json()))
    old = {**stored, "dispatcher": _flat(stored["dispatcher"]),
           "schedulers": _flat(stored["schedulers"])}
    assert damd.DAMDConfig.from_json(old) == new
    env, env_config, workload = setting_from_json(
        {f: old["dispatcher"][f] for f in FLAT_SETTING_FIELDS})
    assert (env, env_config, workload) == (new.env, new.env_config, "")


def test_sizes_and_setting_in_python_and_flags():
    """`n_max` pads beyond the real count; a count beyond the padding is an error naming
    both values, in Python and as the flags give it."""
    from damdjax.cli import FLAG_FIELDS
    from damdjax.configs import flag_message
    cfg = dqn.DQNConfig.from_values(num_tasks=40, n_max=60)
    assert (cfg.env.num_tasks, cfg.env_config.n_max, cfg.env_config.m_max) == (40, 60, 5)
    assert cfg == dqn.DQNConfig(env=EnvParams(num_tasks=40), env_config=EnvConfig(n_max=60, m_max=5))
    with pytest.raises(ValueError) as exc:
        dqn.DQNConfig(env=EnvParams(num_tasks=100), env_config=EnvConfig(n_max=50))
    assert str(exc.value) == "num_tasks must be an integer in [1, n_max=50], got 100"
    assert flag_message(exc.value, FLAG_FIELDS) == (
        "--num-tasks must be an integer in [1, n_max=50], got 100")
    assert dqn.DQNConfig(env=EnvParams(density=3)).env.density == 3.0   # a float, as traced
    assert type(dqn.DQNConfig(env=EnvParams(density=3)).env.density) is float
