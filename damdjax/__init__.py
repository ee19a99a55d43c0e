"""damdjax: dispatching and scheduling DAG tasks on edge servers, in JAX.

The public API, importable from the top level:

    from damdjax import EdgeEnv, EnvConfig, EnvParams, make_train, DQNConfig

    env = EdgeEnv(EnvConfig())
    obs, state = env.reset(key, env.default_params)

Layers, from the bottom: `damdjax.io` (atomic files, standard library only),
`damdjax.envs` (the model: instances, pure `reset`/`step`, the reference
simulator), the algorithms in `damdjax` itself (heuristics, networks, replay,
rollouts, evaluation, run directories), `damdjax.train` (the trainers, each a
`make_train(config)`), `damdjax.eval` (comparisons, figures, benchmarks). Each
imports only from the layers below it (tests/test_layers.py checks).

The names below are imported on first use, so that importing a plain-Python part
(`damdjax.envs.reference`, the instance files' `damdjax.envs.instance_format`,
`instance_io` and `instance_padding`) does not import JAX.
"""
from __future__ import annotations

import importlib

__version__ = "0.3.0"

# public name -> the module that defines it
_EXPORTS = {
    "EdgeEnv": "damdjax.envs.env",
    "EnvConfig": "damdjax.envs.config",
    "EnvParams": "damdjax.envs.config",
    "EnvState": "damdjax.envs.state",
    "Action": "damdjax.envs.state",
    "Observation": "damdjax.envs.observation",
    "Instance": "damdjax.envs.instance",
    "JobLibrary": "damdjax.envs.workload",
    "Generator": "damdjax.envs.generators",
    "RandomDAGGenerator": "damdjax.envs.generators",
    "JobLibraryGenerator": "damdjax.envs.generators",
    "SettingRangeGenerator": "damdjax.envs.generators",
    "Policy": "damdjax.heuristics",
    "pair": "damdjax.heuristics",
    "pair_from_name": "damdjax.heuristics",
    "episode_metrics": "damdjax.metrics",
    "evaluate_paired": "damdjax.evaluation",
    "Hyper": "damdjax.hyper",
    "TrainFns": "damdjax.rollout",
    "DQNConfig": "damdjax.train.dqn",
    "MDQNConfig": "damdjax.train.mdqn",
    "DAMDConfig": "damdjax.train.damd",
    "make_train": "damdjax.train.trainers",
    "make": "damdjax.registry",
    "register": "damdjax.registry",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'damdjax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
