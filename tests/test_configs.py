"""Configs check themselves: every trainer config refuses each field's bad values in
Python (a ValueError naming the field, no argparse involved), and the command line
prints the same message with the field written as its flag."""
from __future__ import annotations

import dataclasses

import jax
import pytest

from damdjax.cli import FLAG_FIELDS
from damdjax.configs import ConfigError, Field, flag, flag_message
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.run_config import SETTING_OPTIONS
from damdjax.train import damd, dqn, mdqn, sweep

# field -> a bad value (each breaks one rule of RunConfig.check and its subclasses')
RUN_BAD = {
    "env": "nope", "env_config": 3, "workload": "nosuch:thing", "setting_range": "density",
    "num_envs": 0, "num_chunks": 0, "steps_per_chunk": 0, "buffer_capacity": 0,
    "batch_size": 0, "lr": -1.0, "max_grad_norm": 0.0, "gamma": 2.0, "eps_start": 1.5,
    "eps_end": -0.5, "eps_decay_steps": 0, "target_every": 0, "updates_per_step": 0,
    "learning_starts": -1, "double_dqn": 0.5, "n_step": 0, "hidden": (0,), "seed": -1,
    "eval_episodes": -1,
}
DQN_BAD = {**RUN_BAD, "reward": "nope", "eft_feature": "yes", "targets": "nope",
           "rollout_envs": -1, "rollout_tasks": "nope", "scheduler": 3,
           "init_dispatcher": None, "eft_rule": "qeft"}
MDQN_BAD = {**RUN_BAD, "share_params": 1, "epochs": "nope", "dispatcher": 3,
            "init_schedulers": None}
# setting flag (an EnvParams field or a padded size, SETTING_OPTIONS) -> a bad value
SETTING_BAD = {"num_tasks": 0, "num_servers": 0, "density": -1.0, "slack": 0.0, "tau": 0.0,
               "miss_penalty": -1.0, "n_max": 0, "m_max": 0, "queue_capacity": 0}
CASES = ([(cls, f, v) for cls in (dqn.DQNConfig, mdqn.MDQNConfig) for f, v in SETTING_BAD.items()]
         + [(dqn.DQNConfig, f, v) for f, v in DQN_BAD.items()]
         + [(mdqn.MDQNConfig, f, v) for f, v in MDQN_BAD.items()])
MODULES = {dqn.DQNConfig: dqn, mdqn.MDQNConfig: mdqn}
# fields without a flag of their own, or whose flag cannot carry the bad value (a switch)
NO_FLAG = {"env", "env_config", "setting_range", "eft_feature", "share_params", "scheduler",
           "dispatcher", "init_dispatcher", "init_schedulers"}


def _build(cls, field, value):
    """The config with one bad value, in Python: a setting flag's value within `env` (an
    `EnvParams` field) or as a padded size (`from_values`, as the flags give it)."""
    if field in SETTING_BAD:
        if SETTING_OPTIONS[field][0] == "env":
            return cls(env=EnvParams(**{field: value}))
        return cls.from_values(**{field: value})
    return cls(**{field: value})


def test_every_field_has_a_bad_value():
    """The tables cover every field of both trainer configs (a field added without a check
    here fails this test)."""
    for cls, bad in ((dqn.DQNConfig, DQN_BAD), (mdqn.MDQNConfig, MDQN_BAD)):
        assert {f.name for f in dataclasses.fields(cls)} == set(bad)
    assert set(SETTING_BAD) == set(SETTING_OPTIONS)


@pytest.mark.parametrize("cls,field,value", CASES,
                         ids=[f"{c.__name__}-{f}" for c, f, _ in CASES])
def test_a_bad_value_is_refused_in_python(cls, field, value):
    with pytest.raises(ValueError) as exc:
        _build(cls, field, value)
    message = str(exc.value)
    assert "\n" not in message
    words = message.replace("'", " ").replace(":", " ").split()
    assert field in words or field.replace("_", " ") in message, message


def _flag_error(module, argv, capsys, monkeypatch, tmp_path) -> str:
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled despite a bad flag"))
    with pytest.raises(SystemExit) as exc:
        module.main([*argv, "--run-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2, err
    prefix = f"python -m train.{module.__name__.rsplit('.', 1)[1]}: error: "
    assert err[-1].startswith(prefix), err
    return err[-1][len(prefix):]


FLAG_CASES = [(c, f, v) for c, f, v in CASES if f not in NO_FLAG]


@pytest.mark.parametrize("cls,field,value", FLAG_CASES,
                         ids=[f"{c.__name__}-{f}" for c, f, _ in FLAG_CASES])
def test_the_flag_gives_the_same_message(cls, field, value, capsys, monkeypatch, tmp_path):
    with pytest.raises(ValueError) as exc:
        _build(cls, field, value)
    text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    line = _flag_error(MODULES[cls], [flag(field), text], capsys, monkeypatch, tmp_path)
    assert line == flag_message(exc.value, FLAG_FIELDS)
    assert flag(field) in line


@pytest.mark.parametrize("kw,python,flags", [
    ({"lr": -1.0}, "lr must be > 0, got -1", "--lr must be > 0, got -1"),
    ({"num_envs": 8, "buffer_capacity": 4},
     "buffer_capacity (4) must be >= num_envs (8)",
     "--buffer-capacity (4) must be >= --num-envs (8)"),
    ({"targets": "rollout", "gamma": 0.5},
     "gamma 0.5 does not apply to targets rollout (leave it at 0.9)",
     "--gamma 0.5 does not apply to --targets rollout (leave it at 0.9)"),
    ({"seed": 2**32}, "seed must be <= 4294967295 (PRNGKey keeps 32 bits), got 4294967296",
     "--seed must be <= 4294967295 (PRNGKey keeps 32 bits), got 4294967296"),
])
def test_messages_by_hand(kw, python, flags):
    """A few messages written out: the field in Python, its flag on the command line."""
    with pytest.raises(ValueError) as exc:
        dqn.DQNConfig(**kw)
    assert str(exc.value) == python
    assert flag_message(exc.value, FLAG_FIELDS) == flags


def test_flag_message_names_only_the_fields():
    """Only the parts marked as fields become flags: a value or a path that spells a field
    name stays as it is."""
    err = ConfigError(Field("dispatcher"), ": dispatcher 'x/dispatcher' is not a run")
    assert flag_message(err) == "--dispatcher: dispatcher 'x/dispatcher' is not a run"
    assert str(err) == "dispatcher: dispatcher 'x/dispatcher' is not a run"
    prefixed = flag_message(ConfigError(Field("lr"), " must be > 0, got -1"),
                            prefix_of=damd.stage_prefix("mdqn"))
    assert prefixed == "--mdqn-lr must be > 0, got -1"


def test_damd_stage_errors_name_the_stage_flags(capsys, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="^lr must be > 0"):
        damd.DAMDConfig(dispatcher=dqn.DQNConfig(lr=-1.0), schedulers=mdqn.MDQNConfig())
    line = _flag_error(damd, ["--mdqn-lr", "-1"], capsys, monkeypatch, tmp_path)
    assert line == "--mdqn-lr must be > 0, got -1"
    line = _flag_error(damd, ["--density", "-1"], capsys, monkeypatch, tmp_path)
    assert line.startswith("--density must be > 0")
    with pytest.raises(ValueError, match="^rounds must be >= 1, got 0"):
        damd.DAMDConfig(dispatcher=dqn.DQNConfig(), schedulers=mdqn.MDQNConfig(), rounds=0)
    with pytest.raises(ValueError, match="dispatcher must be a DQNConfig"):
        damd.DAMDConfig(dispatcher=mdqn.MDQNConfig(), schedulers=mdqn.MDQNConfig())


def test_sweep_config_checks_itself():
    base = dqn.DQNConfig()
    with pytest.raises(ValueError, match="^trainer must be one of dqn, mdqn, damd, got 'x'"):
        sweep.SweepConfig(trainer="x", seeds=1, grid=(), config=base)
    with pytest.raises(ValueError, match="^seeds must be >= 1, got 0"):
        sweep.SweepConfig(trainer="dqn", seeds=0, grid=(), config=base)
    with pytest.raises(ValueError, match="config must be a DQNConfig"):
        sweep.SweepConfig(trainer="dqn", seeds=1, grid=(), config=mdqn.MDQNConfig())
    with pytest.raises(ValueError, match="lr"):
        sweep.SweepConfig(trainer="dqn", seeds=1, grid=(("lr", (1e-3, -1.0)),), config=base)


def test_a_stored_config_is_checked_by_the_same_code():
    """`from_json` of a stored config with a bad value raises the config's own error (no
    argparse)."""
    stored = dqn.DQNConfig().to_json()
    assert dqn.DQNConfig.from_json(stored) == dqn.DQNConfig()
    with pytest.raises(ValueError, match="^lr must be > 0, got -1"):
        dqn.DQNConfig.from_json({**stored, "lr": -1})
    with pytest.raises(ValueError, match="^num_envs must be an integer, got '8'"):
        dqn.DQNConfig.from_json({**stored, "num_envs": "8"})


def _damd(**changes):
    kw = {"dispatcher": dqn.DQNConfig(), "schedulers": mdqn.MDQNConfig(dispatcher=""),
          **changes}
    return damd.DAMDConfig(**kw)


def _sweep(**changes):
    return sweep.SweepConfig(**{"trainer": "dqn", "seeds": 1, "grid": (),
                                "config": dqn.DQNConfig(), **changes})


# The composite configs: field -> (a bad value, a word its message holds).
COMPOSITE_BAD = {
    damd.DAMDConfig: (_damd, {"dispatcher": (mdqn.MDQNConfig(), "dispatcher"),
                              "schedulers": (dqn.DQNConfig(), "schedulers"),
                              "rounds": (0, "rounds"), "eval_episodes": (-1, "eval_episodes")}),
    sweep.SweepConfig: (_sweep, {"trainer": ("x", "trainer"), "seeds": (0, "seeds"),
                                 "grid": ((("lr", (-1.0,)),), "lr"),
                                 "config": (mdqn.MDQNConfig(), "config")}),
}
COMPOSITE_CASES = [(cls, f, *bad) for cls, (_, table) in COMPOSITE_BAD.items()
                   for f, bad in table.items()]


def test_the_composite_tables_cover_every_field():
    for cls, (_, table) in COMPOSITE_BAD.items():
        assert {f.name for f in dataclasses.fields(cls)} == set(table)


@pytest.mark.parametrize("cls,field,value,word", COMPOSITE_CASES,
                         ids=[f"{c.__name__}-{f}" for c, f, _, _ in COMPOSITE_CASES])
def test_a_composite_config_refuses_a_bad_value(cls, field, value, word):
    build = COMPOSITE_BAD[cls][0]
    build()   # the defaults are valid
    with pytest.raises(ValueError, match=word):
        build(**{field: value})
