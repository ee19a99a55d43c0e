"""WfChef workflows as workloads (damdjax/envs/wfchef.py; the optional 'workflows' extra, the
wfcommons package): every recipe's generated workflow converts through the WfCommons
reader with exactly WfChef's DAG, the JAX env equals the reference simulator on them, the
same seed gives the same library byte for byte, and sizes and a missing extra are
one-line errors.

Cheap by design: one workflow per recipe at its smallest size (22 to 104 tasks, a few
hundredths of a second each with WfChef), converted once (module fixture), and one env
compilation for all ten recipes. The test command installs the extra: without it these
tests fail, they do not skip.
"""
from __future__ import annotations

import contextlib
import io
import sys

import pytest

from damdjax.envs import wfchef
from damdjax.envs import convert
from damdjax.envs.workload import save_library
from damdjax.workloads import WorkloadError, check_workload, parse_workload, resolve_workload
from test_convert import assert_env_matches_reference

RECIPES = ("blast", "bwa", "cycles", "epigenomics", "genome", "montage", "rnaseq",
           "seismology", "soykb", "srasearch")
SEED = 3


def convert_quietly(argv):
    """convert.main(argv) with stderr captured: (spec, stderr lines)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        spec = convert.main([str(a) for a in argv])
    return spec, err.getvalue().splitlines()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """recipe -> (WfChef's own workflow, the converted instance of the same seed)."""
    folder = tmp_path_factory.mktemp("wfchef")
    out = {}
    for recipe in RECIPES:
        tasks = wfchef.smallest_tasks(recipe)
        workflow = wfchef.build_workflows(recipe, tasks, 1, SEED)[0]
        spec, _ = convert_quietly(["wfchef", recipe, "--jobs", "1", "--seed", SEED,
                                   "--num-servers", "3", "--out", folder / f"{recipe}.json"])
        out[recipe] = workflow, spec
    return out


def test_the_recipes_are_the_ones_wfcommons_ships():
    assert wfchef.recipe_names() == RECIPES


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_generated_workflow_converts_with_wfchefs_dag(recipe, generated):
    workflow, spec = generated[recipe]
    (job,) = spec.jobs
    assert job.name == f"{workflow.name}.json" and spec.meta["source"] == "wfchef"
    assert len(job.tasks) == len(workflow.nodes) <= wfchef.smallest_tasks(recipe)
    children: dict[str, set[str]] = {t.name: set() for t in job.tasks}
    for task in job.tasks:
        for p in task.preds:
            children[job.tasks[p].name].add(task.name)
    for task in job.tasks:
        chef = workflow.nodes[task.name]["task"]
        assert {job.tasks[p].name for p in task.preds} == set(workflow.predecessors(task.name))
        assert children[task.name] == set(workflow.successors(task.name))
        assert task.meta["runtime_s"] == chef.runtime
        assert task.work == (chef.runtime or convert.DEFAULTS.min_runtime_s) / 5.0
        assert task.meta["input_bytes"] == sum(f.size for f in chef.input_files)


def test_env_equals_the_reference_on_every_recipe(generated):
    assert_env_matches_reference({recipe: spec for recipe, (_, spec) in generated.items()})


def test_the_same_seed_gives_the_same_library_byte_for_byte(tmp_path):
    argv = ["wfchef", "srasearch", "--tasks", "26", "--jobs", "3", "--num-servers", "2"]
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        convert_quietly([*argv, "--seed", seed, "--out", tmp_path / f"{name}.json"])
    a, b, c = ((tmp_path / f"{n}.json").read_bytes() for n in "abc")
    assert a == b and a != c
    files = []
    for seed in (5, 5, 6):
        resolve_workload.cache_clear()      # made again, not the cached library
        files.append(tmp_path / f"lib{len(files)}.npz")
        save_library(files[-1], resolve_workload(f"wfchef:srasearch:26:{seed}"))
    resolve_workload.cache_clear()
    x, y, z = (f.read_bytes() for f in files)
    assert x == y and x != z


def test_the_run_seed_is_written_into_the_spec():
    """The command lines record the library's seed in the spec (`seeded_workload`): the
    run's seed where the spec gives none, the spec's own where it does; a trainer's flag
    values (`from_values`) store it, so eval.compare reading the run draws the same
    library."""
    from damdjax.train.dqn import DQNConfig
    from damdjax.workloads import seeded_workload
    smallest = "wfchef:srasearch:22"
    assert seeded_workload("wfchef:srasearch", 7) == f"{smallest}:7"
    assert seeded_workload("wfchef:srasearch:26", 7) == "wfchef:srasearch:26:7"
    assert seeded_workload("wfchef:srasearch:26:3", 7) == "wfchef:srasearch:26:3"
    assert seeded_workload("alibaba:x.csv", 7) == "alibaba:x.csv"
    with pytest.raises(WorkloadError, match="SEED must be in"):
        seeded_workload("wfchef:srasearch:26:-1", 0)
    config = DQNConfig.from_values(workload="wfchef:srasearch", seed=9, num_tasks=30)
    assert config.workload == f"{smallest}:9"


def test_sizes_are_one_line_errors_naming_recipe_and_size(tmp_path, capsys):
    with pytest.raises(WorkloadError, match=r"^workload 'wfchef:montage:300': wfchef recipe "
                       r"montage at 300 tasks exceeds the padding's 100 task slots"):
        check_workload("wfchef:montage:300", 100)
    with pytest.raises(WorkloadError, match="wfchef recipe montage cannot make a workflow of "
                       "10 tasks: its smallest base workflow has 58"):
        parse_workload("wfchef:montage:10")
    with pytest.raises(WorkloadError, match="unknown wfchef recipe 'nope'"):
        parse_workload("wfchef:nope")
    with pytest.raises(SystemExit) as e:
        convert.main(["wfchef", "bwa", "--tasks", "50", "--out", str(tmp_path / "o.json")])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: wfchef recipe bwa cannot make a workflow of 50 tasks: its smallest base "
        "workflow has 104"]


def test_without_the_extra_the_error_names_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "wfcommons.wfchef", None)   # as if not installed
    hint = "wfchef workloads need the 'workflows' extra: pip install 'damdjax[workflows]'"
    with pytest.raises(WorkloadError) as e:
        parse_workload("wfchef:montage")
    assert str(e.value) == f"workload 'wfchef:montage': {hint} (the wfcommons package)"
    with pytest.raises(SystemExit) as e:
        convert.main(["wfchef", "montage", "--out", str(tmp_path / "o.json")])
    assert e.value.code == 2
    assert hint in capsys.readouterr().err
