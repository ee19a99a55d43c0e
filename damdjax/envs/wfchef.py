"""Synthetic WfCommons workflows as jobs: WfChef's recipes (the optional `wfcommons` package).

    pip install 'damdjax[workflows]'      # the wfcommons package (WfChef, WfFormat 1.6)

`write_workflows(recipe, tasks, count, seed, folder)` asks WfChef for `count` workflows of
at most `tasks` tasks each and writes each as WfFormat JSON into `folder`;
`damdjax.envs.convert.read_wfchef` reads them back with the converter's WfCommons reader
(`read_wfcommons`): one code path from WfFormat to jobs, the same units, floors and skip
rules as for real files.

Recipes are the ones wfcommons ships (`recipe_names()`: blast, bwa, cycles, epigenomics,
genome (1000Genome), montage, rnaseq, seismology, soykb, srasearch), named in lower case.
WfChef builds a workflow by replicating the microstructures of a real base workflow, so a
recipe has a smallest size (`smallest_tasks`: its smallest base workflow) and a size may
need a larger base than asked for; either is a one-line WfChefError naming recipe and size.

Determinism: WfChef draws from Python's `random`, numpy's global RandomState (scipy.stats)
and `uuid.uuid4` (file ids and replicated node names). Generation seeds the first two from
`seed` and gives wfcommons ids drawn from a `random.Random(seed)` stream, then restores
all three, so the same (recipe, tasks, count, seed) gives the same jobs, byte for byte,
in any process; nothing is read from the network.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import types
import uuid
from typing import Iterator

import numpy as np


EXTRA = "workflows"
INSTALL_HINT = f"pip install 'damdjax[{EXTRA}]' (the wfcommons package)"
# WfChef's graphs hold a source and a sink node besides the tasks: its `num_tasks` is the
# task count plus these two.
_GRAPH_EXTRA_NODES = 2


class WfChefError(ValueError):
    """A WfChef request that cannot be served (one line naming the recipe and size)."""


def _recipes() -> dict[str, type]:
    """Lower-case recipe name -> wfcommons recipe class; WfChefError without the extra."""
    try:
        from wfcommons.wfchef import recipes
    except ImportError:
        raise WfChefError(f"wfchef workloads need the '{EXTRA}' extra: {INSTALL_HINT}") from None
    return {name[:-len("Recipe")].lower(): cls for name, cls in sorted(vars(recipes).items())
            if name.endswith("Recipe") and isinstance(cls, type)}


def recipe_names() -> tuple[str, ...]:
    """The recipes wfcommons ships, lower case, sorted."""
    return tuple(_recipes())


def _recipe(recipe: str) -> type:
    classes = _recipes()
    if recipe not in classes:
        raise WfChefError(f"unknown wfchef recipe {recipe!r} (one of {', '.join(classes)})")
    return classes[recipe]


def smallest_tasks(recipe: str) -> int:
    """The fewest tasks a workflow of `recipe` can have: its smallest base workflow's."""
    folder = sys.modules[_recipe(recipe).__module__].this_dir  # the recipe's data folder
    with open(os.path.join(folder, "microstructures", "summary.json")) as f:
        summary = json.load(f)
    return min(g["order"] for g in summary["base_graphs"].values()) - _GRAPH_EXTRA_NODES


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Python's `random`, numpy's global RandomState and `uuid.uuid4` drawn from `seed`
    inside the block; all three restored after it."""
    from wfcommons.wfchef import duplicate
    from wfcommons.wfgen import abstract_recipe

    ids = random.Random(seed)
    def uuid4() -> uuid.UUID:
        return uuid.UUID(int=ids.getrandbits(128), version=4)

    # wfcommons' two uses: `duplicate.uuid4()` and `abstract_recipe.uuid.uuid4()`
    patches = [(duplicate, "uuid4", uuid4),
               (abstract_recipe, "uuid", types.SimpleNamespace(uuid4=uuid4))]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    for module, name, value in patches:
        setattr(module, name, value)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        for module, name, value in saved:
            setattr(module, name, value)


def check_size(recipe: str, tasks: int, limit: int) -> None:
    """WfChefError unless `tasks` is in [smallest_tasks(recipe), limit] (`limit`: the
    padding's task slots)."""
    low = smallest_tasks(recipe)
    if tasks < low:
        raise WfChefError(f"wfchef recipe {recipe} cannot make a workflow of {tasks} tasks: "
                          f"its smallest base workflow has {low}")
    if tasks > limit:
        raise WfChefError(f"wfchef recipe {recipe} at {tasks} tasks exceeds the padding's "
                          f"{limit} task slots")


def build_workflows(recipe: str, tasks: int, count: int, seed: int) -> list:
    """`count` WfChef workflows (wfcommons `Workflow`s, named `wfchef-RECIPE-TASKS-sSEED-NNN`)
    of `recipe`, at most `tasks` tasks each; deterministic in (recipe, tasks, count, seed)
    (module docstring). WfChefError where WfChef's base workflow for `tasks` is larger."""
    from wfcommons.wfgen import WorkflowGenerator

    cls = _recipe(recipe)
    workflows = []
    with _seeded(seed):
        for n in range(count):
            try:
                generator = WorkflowGenerator(cls.from_num_tasks(tasks + _GRAPH_EXTRA_NODES))
                workflows.append(generator.build_workflow(
                    workflow_name=f"wfchef-{recipe}-{tasks}-s{seed}-{n:03d}"))
            except ValueError as e:   # WfChef: the base workflow it picked is too large
                raise WfChefError(f"wfchef recipe {recipe} cannot make a workflow of at most "
                                  f"{tasks} tasks: {e}") from None
    return workflows


def write_workflows(recipe: str, tasks: int, count: int, seed: int, folder: str) -> list[str]:
    """`build_workflows`' workflows written as WfFormat JSON files `NAME.json` into
    `folder`; their paths, in generation order."""
    paths = []
    for workflow in build_workflows(recipe, tasks, count, seed):
        paths.append(os.path.join(folder, workflow.name + ".json"))
        workflow.write_json(paths[-1])
    return paths
