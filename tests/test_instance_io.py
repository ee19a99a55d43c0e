"""Tests of the instance files: parsing and every validation error
(envs/instance_format.py), file round trips (envs/instance_io.py), environment order and
the padded arrays (envs/instance_padding.py)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from damdjax.envs.instance_format import (
    InstanceError,
    InstanceSpec,
    JobSpec,
    ServerSpec,
    TaskSpec,
    parse_instance,
)
from damdjax.envs.instance_io import instance_to_json, load_instance, save_instance
from damdjax.envs.instance_padding import (
    flat_tasks,
    global_index,
    job_order,
    max_in_degree,
    max_job_size,
    max_out_degree,
    padded_arrays,
    servers_list,
    spec_from_arrays,
)
from damdjax.envs.reference import simulate

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "worked_example.json"


def base() -> dict:
    """A valid instance object (the worked example, with explicit work on B)."""
    return {
        "servers": [
            {"cpu": 1, "bw": 10, "mem": 100, "k": 0.5},
            {"cpu": 2, "bw": 5, "mem": 100, "k": 1.0},
        ],
        "jobs": [
            {"arrival": 0, "tasks": [
                {"size": 2, "deadline": 10, "preds": []},
                {"size": 4, "work": 4, "deadline": 12, "preds": [0]},
                {"size": 2, "deadline": 8, "preds": [0]},
            ]},
            {"arrival": 1, "tasks": [{"size": 1, "deadline": 5, "preds": []}]},
        ],
    }


# ---------------------------------------------------------------------------
# The worked example and round trips
# ---------------------------------------------------------------------------


def test_worked_example_file():
    spec = load_instance(EXAMPLE)
    assert spec == parse_instance(base())
    assert spec.servers == (ServerSpec(1.0, 10.0, 100.0, 0.5), ServerSpec(2.0, 5.0, 100.0, 1.0))
    assert [len(j.tasks) for j in spec.jobs] == [3, 1]
    assert spec.jobs[0].tasks[1] == TaskSpec(size=4.0, work=4.0, deadline=12.0, preds=(0,))
    assert spec.jobs[1].tasks[0].work == 1.0  # work defaults to size
    assert (spec.num_tasks, spec.num_servers, max_job_size(spec), max_in_degree(spec)) == (4, 2, 3, 1)
    assert max_out_degree(spec) == 2  # task A: B and C


def test_successor_slots_are_the_files_own_widest_fan_out():
    """`spec_config` and `instance_from_spec` agree on the successor slots: the file's
    widest fan-out (2 in the worked example), and the list holds every successor."""
    from damdjax.envs.instance import instance_from_spec, spec_config

    spec = load_instance(EXAMPLE)
    config = spec_config(spec)
    assert (config.fan_out, config.succ_slots, config.succ_window) == (2, 2, 2)
    inst, _ = instance_from_spec(spec)
    assert inst.succ.shape == (4, 2)
    np.testing.assert_array_equal(inst.succ, [[1, 2], [0, 0], [0, 0], [0, 0]])
    np.testing.assert_array_equal(inst.num_succ, [2, 0, 0, 0])


def test_worked_example_runs_in_reference_simulator():
    spec = load_instance(EXAMPLE)
    tasks = flat_tasks(spec)
    assert [(t["job"], t["pos"], t["preds"], t["arrival"]) for t in tasks] == [
        (0, 0, [], 0.0), (0, 1, [0], 0.0), (0, 2, [0], 0.0), (1, 0, [], 1.0)]
    assert servers_list(spec)[1] == {"cpu": 2.0, "bw": 5.0, "mem": 100.0, "k": 1.0}
    r = simulate(servers_list(spec), tasks, queue_capacity=10, dispatch="nearest", schedule="fcfs")
    assert r.done == pytest.approx([3.2, 9.2, 5.2, 10.2])


def test_save_load_parse_round_trip(tmp_path):
    spec = parse_instance(base())
    path = tmp_path / "inst.json"
    save_instance(spec, path)
    assert load_instance(path) == spec
    assert load_instance(str(path)) == spec
    assert parse_instance(json.loads(path.read_text())) == spec
    assert parse_instance(instance_to_json(spec)) == spec
    assert [p.name for p in tmp_path.iterdir()] == ["inst.json"]  # no temp file left
    save_instance(spec, path)  # overwrite in place
    assert load_instance(path) == spec


def test_save_refuses_invalid_spec(tmp_path):
    bad = InstanceSpec(servers=(ServerSpec(1.0, -1.0, 10.0, 1.0),),
                       jobs=(JobSpec(0.0, (TaskSpec(1.0, 1.0, 5.0, ()),)),))
    with pytest.raises(InstanceError, match="server 0: bw must be > 0"):
        save_instance(bad, tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


def test_parse_does_not_mutate_input():
    obj = base()
    before = copy.deepcopy(obj)
    parse_instance(obj)
    assert obj == before


# ---------------------------------------------------------------------------
# Hand-written files: optional preds, name and meta
# ---------------------------------------------------------------------------


def unlabelled(spec: InstanceSpec) -> InstanceSpec:
    """`spec` with every `name` and `meta` set to None."""
    clear = {"name": None, "meta": None}
    return dataclasses.replace(
        spec, **clear,
        servers=tuple(dataclasses.replace(s, **clear) for s in spec.servers),
        jobs=tuple(dataclasses.replace(j, **clear, tasks=tuple(
            dataclasses.replace(t, **clear) for t in j.tasks)) for j in spec.jobs))


def assert_same_arrays(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


META = {"source": "trace-x", "rows": [1, 2.5, None, True, "s"],
        "nested": {"a": {"b": [[], {}, [0, {"c": None}]]}, "n": -3}, "none": None}


def labelled() -> dict:
    """base() with a name and a meta on every level (nested JSON in meta)."""
    obj = base()
    obj.update(name="worked example", meta=copy.deepcopy(META))
    obj["servers"][0].update(name="edge-0", meta={"site": "A", "rack": 3})
    obj["servers"][1]["meta"] = ["gpu", 2, None]
    obj["jobs"][0].update(name="job A", meta={"user": "u1", "ids": [17, 18]})
    obj["jobs"][1]["meta"] = "single"
    task(obj, 0, 0).update(name="A", meta=None)  # meta null is the same as no meta
    task(obj, 0, 1).update(name="B", meta=4.25)
    task(obj, 0, 2)["meta"] = [[1, [2, [3]]], {"k": False}]
    task(obj, 1, 0)["name"] = ""
    return obj


def test_roots_may_omit_preds(tmp_path):
    obj = base()
    for job in obj["jobs"]:
        for t in job["tasks"]:
            if t["preds"] == []:
                del t["preds"]
    assert "preds" not in task(obj, 0, 0) and task(obj, 0, 1)["preds"] == [0]
    explicit, implicit = tmp_path / "explicit.json", tmp_path / "implicit.json"
    explicit.write_text(json.dumps(base()))
    implicit.write_text(json.dumps(obj))
    spec = load_instance(implicit)
    assert spec == load_instance(explicit)
    assert spec.jobs[0].tasks[0].preds == () and spec.jobs[1].tasks[0].preds == ()
    assert_same_arrays(padded_arrays(spec), padded_arrays(load_instance(explicit)))
    assert_same_arrays(padded_arrays(spec, n_max=7, m_max=3, p_max=2),
                       padded_arrays(load_instance(explicit), n_max=7, m_max=3, p_max=2))
    assert flat_tasks(spec) == flat_tasks(load_instance(explicit))
    # save writes "preds": [] for the roots; load -> save -> load is equal
    save_instance(spec, tmp_path / "saved.json")
    saved = json.loads((tmp_path / "saved.json").read_text())
    assert saved["jobs"][0]["tasks"][0]["preds"] == [] and saved["jobs"][1]["tasks"][0]["preds"] == []
    assert load_instance(tmp_path / "saved.json") == spec


def test_omitting_preds_of_a_later_task_makes_it_a_root():
    obj = base()
    del task(obj, 0, 2)["preds"]
    spec = parse_instance(obj)
    assert spec.jobs[0].tasks[2].preds == ()
    assert [t["preds"] for t in flat_tasks(spec)] == [[], [0], [], []]


def test_name_and_meta_round_trip(tmp_path):
    obj = labelled()
    before = copy.deepcopy(obj)
    spec = parse_instance(obj)
    assert obj == before  # the input is not touched
    assert (spec.name, spec.meta) == ("worked example", META)
    assert (spec.servers[0].name, spec.servers[0].meta) == ("edge-0", {"site": "A", "rack": 3})
    assert (spec.servers[1].name, spec.servers[1].meta) == (None, ["gpu", 2, None])
    assert (spec.jobs[0].name, spec.jobs[1].name, spec.jobs[1].meta) == ("job A", None, "single")
    assert [(t.name, t.meta) for t in spec.jobs[0].tasks] == [
        ("A", None), ("B", 4.25), (None, [[1, [2, [3]]], {"k": False}])]
    assert (spec.jobs[1].tasks[0].name, spec.jobs[1].tasks[0].meta) == ("", None)
    # the spec owns its meta: changing the input afterwards does not reach it
    obj["meta"]["nested"]["a"]["b"].append("late")
    assert spec.meta == META
    # load -> save -> load, twice, and through instance_to_json
    path = tmp_path / "labelled.json"
    path.write_text(json.dumps(before))
    loaded = load_instance(path)
    assert loaded == spec
    save_instance(loaded, tmp_path / "again.json")
    again = load_instance(tmp_path / "again.json")
    assert again == spec
    assert again.meta == META and again.jobs[0].tasks[2].meta == [[1, [2, [3]]], {"k": False}]
    save_instance(again, tmp_path / "third.json")
    assert (tmp_path / "third.json").read_text() == (tmp_path / "again.json").read_text()
    assert parse_instance(instance_to_json(spec)) == spec
    # written back where set, omitted where None
    out = instance_to_json(spec)
    assert (out["name"], out["meta"]) == ("worked example", META)
    assert out["servers"][1] == {"cpu": 2.0, "bw": 5.0, "mem": 100.0, "k": 1.0, "meta": ["gpu", 2, None]}
    assert "name" not in out["jobs"][1] and "meta" not in out["jobs"][0]["tasks"][0]
    assert out["jobs"][1]["tasks"][0]["name"] == ""
    out["meta"]["source"] = "changed"  # instance_to_json hands out copies
    assert spec.meta == META
    # the names and meta change nothing the simulators see
    plain = parse_instance(base())
    assert spec != plain and unlabelled(spec) == plain
    assert_same_arrays(padded_arrays(spec), padded_arrays(plain))
    assert_same_arrays(padded_arrays(spec, n_max=6, m_max=4, p_max=3, dtype=np.float32),
                       padded_arrays(plain, n_max=6, m_max=4, p_max=3, dtype=np.float32))
    assert flat_tasks(spec) == flat_tasks(plain) and servers_list(spec) == servers_list(plain)
    assert global_index(spec) == global_index(plain)
    # the arrays cannot carry them back
    assert spec_from_arrays(padded_arrays(spec)) == plain
    # specs with meta lists and objects still hash (meta takes no part in the hash)
    assert hash(spec) == hash(again)


def test_saved_labelled_file_is_readable(tmp_path):
    spec = parse_instance(labelled())
    path = tmp_path / "inst.json"
    save_instance(spec, path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith('{"name": "worked example", "meta": {"source": "trace-x"')
    assert lines[0].endswith('"servers": [')
    assert lines[1] == '  {"name": "edge-0", "cpu": 1.0, "bw": 10.0, "mem": 100.0, "k": 0.5, "meta": {"site": "A", "rack": 3}},'
    assert lines[4] == '  {"name": "job A", "arrival": 0.0, "meta": {"user": "u1", "ids": [17, 18]}, "tasks": ['
    assert lines[5] == '    {"name": "A", "size": 2.0, "work": 2.0, "deadline": 10.0, "preds": []},'
    assert len(lines) == 13  # still one server or task per line


def test_existing_constructors_and_equality_unchanged():
    t = TaskSpec(1.0, 1.0, 5.0, ())
    assert (t.name, t.meta) == (None, None) and t == TaskSpec(1.0, 1.0, 5.0, (), None, None)
    assert t != TaskSpec(1.0, 1.0, 5.0, (), name="x") and t != TaskSpec(1.0, 1.0, 5.0, (), meta=[])
    s = ServerSpec(1.0, 10.0, 100.0, 0.5)
    assert (s.name, s.meta) == (None, None) and hash(s) == hash(ServerSpec(1.0, 10.0, 100.0, 0.5))
    spec = InstanceSpec(servers=(s,), jobs=(JobSpec(0.0, (t,)),))
    assert spec.name is None and spec.meta is None and spec.jobs[0].name is None
    assert parse_instance(instance_to_json(spec)) == spec
    assert set(instance_to_json(spec)) == {"servers", "jobs"}
    assert set(instance_to_json(spec)["jobs"][0]["tasks"][0]) == {"size", "work", "deadline", "preds"}


def test_invalid_label_in_file_and_spec(tmp_path):
    path = tmp_path / "bad.json"
    obj = base()
    obj["servers"][1]["name"] = {"id": 1}
    path.write_text(json.dumps(obj))
    with pytest.raises(InstanceError, match=re.escape(f"{path}: server 1: name must be a string, got {{'id': 1}}")) as info:
        load_instance(path)
    assert "\n" not in str(info.value)
    # Python's json reads NaN inside meta; it is refused, as everywhere else
    path.write_text(json.dumps(labelled()).replace('"rack": 3', '"rack": NaN'))
    with pytest.raises(InstanceError, match=re.escape("server 0: meta must be plain JSON, got nan at meta['rack']")):
        load_instance(path)
    # save never writes a file that would not load
    spec = parse_instance(base())
    bad = dataclasses.replace(spec, jobs=(dataclasses.replace(spec.jobs[0], name=5),) + spec.jobs[1:])
    with pytest.raises(InstanceError, match="job 0: name must be a string, got 5"):
        save_instance(bad, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------------------
# Topological renumbering
# ---------------------------------------------------------------------------


def renumbered() -> dict:
    obj = base()
    # job 1 in file order: X (pred Z), Y, Z (pred Y), W (preds X, Y)
    obj["jobs"][1]["tasks"] = [
        {"size": 1, "deadline": 5, "preds": [2]},
        {"size": 2, "deadline": 6, "preds": []},
        {"size": 3, "deadline": 7, "preds": [1]},
        {"size": 4, "deadline": 8, "preds": [0, 1]},
    ]
    return obj


def test_topological_renumbering():
    spec = parse_instance(renumbered())
    assert spec.jobs[1].tasks[0].preds == (2,)  # the spec keeps the file order
    assert job_order(spec.jobs[0]) == [0, 1, 2]  # already topological: unchanged
    assert job_order(spec.jobs[1]) == [1, 2, 0, 3]  # stable: Y, Z, X, W
    assert global_index(spec) == [[0, 1, 2], [5, 3, 4, 6]]
    tasks = flat_tasks(spec)
    assert [(t["job"], t["pos"], t["size"]) for t in tasks[3:]] == [
        (1, 1, 2.0), (1, 2, 3.0), (1, 0, 1.0), (1, 3, 4.0)]
    assert [t["preds"] for t in tasks] == [[], [0], [0], [], [3], [4], [5, 3]]
    for i, t in enumerate(tasks):
        assert all(p < i for p in t["preds"])
    arrays = padded_arrays(spec, n_max=10)
    assert arrays["pos"][:7].tolist() == [0, 1, 2, 1, 2, 0, 3]
    assert spec_from_arrays(arrays) == spec  # pos restores the file order
    # without pos, the arrays' (topological) order becomes the file order
    no_pos = {k: v for k, v in arrays.items() if k != "pos"}
    topo = spec_from_arrays(no_pos)
    assert [t.size for t in topo.jobs[1].tasks] == [2.0, 3.0, 1.0, 4.0]
    assert [t.preds for t in topo.jobs[1].tasks] == [(), (0,), (1,), (2, 0)]
    r = simulate(servers_list(spec), tasks, queue_capacity=2, dispatch="least_load", schedule="sdf")
    assert len(r.done) == 7


# ---------------------------------------------------------------------------
# padded_arrays / spec_from_arrays
# ---------------------------------------------------------------------------


def test_padded_arrays_shapes_and_padding():
    spec = parse_instance(base())
    a = padded_arrays(spec, n_max=6, m_max=4, p_max=3)
    for key in ("cpu", "bw", "mem", "k", "server_mask"):
        assert a[key].shape == (4,)
    for key in ("size", "work", "deadline", "arrival", "task_mask", "job", "pos"):
        assert a[key].shape == (6,)
    assert a["preds"].shape == (6, 3) and a["preds"].dtype == np.int32
    assert a["job"].dtype == np.int32 and a["cpu"].dtype == np.float64
    assert a["server_mask"].tolist() == [True, True, False, False]
    for key in ("cpu", "bw", "mem", "k"):
        assert a[key][2:].tolist() == [1.0, 1.0]
    assert a["cpu"][:2].tolist() == [1.0, 2.0] and a["k"][:2].tolist() == [0.5, 1.0]
    assert a["task_mask"].tolist() == [True] * 4 + [False] * 2
    assert a["size"].tolist() == [2, 4, 2, 1, 0, 0]
    assert a["work"].tolist() == [2, 4, 2, 1, 0, 0]
    assert a["deadline"].tolist() == [10, 12, 8, 5, math.inf, math.inf]
    assert a["arrival"].tolist() == [0, 0, 0, 1, math.inf, math.inf]
    assert a["preds"].tolist() == [[-1] * 3, [0, -1, -1], [0, -1, -1]] + [[-1] * 3] * 3
    assert a["job"].tolist() == [0, 0, 0, 1, -1, -1]
    assert a["pos"].tolist() == [0, 1, 2, 0, -1, -1]


def test_padded_arrays_defaults_and_dtype():
    spec = parse_instance(base())
    a = padded_arrays(spec, dtype=np.float32)
    assert a["cpu"].shape == (2,) and a["size"].shape == (4,) and a["preds"].shape == (4, 1)
    assert a["size"].dtype == np.float32 and a["preds"].dtype == np.int32
    # an instance without edges still gets one predecessor slot
    obj = base()
    for job in obj["jobs"]:
        for t in job["tasks"]:
            t["preds"] = []
    assert padded_arrays(parse_instance(obj))["preds"].shape == (4, 1)


def test_spec_from_padded_arrays_round_trip():
    spec = parse_instance(base())
    assert spec_from_arrays(padded_arrays(spec)) == spec
    assert spec_from_arrays(padded_arrays(spec, n_max=9, m_max=5, p_max=4)) == spec


def test_spec_from_arrays_without_masks():
    spec = parse_instance(base())
    a = padded_arrays(spec)
    del a["task_mask"], a["server_mask"], a["pos"]
    assert spec_from_arrays(a) == spec


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.update(job=np.array([0, 1, 0, 1, -1], np.int32)), "job 0 are not contiguous"),
    (lambda a: a["arrival"].__setitem__(1, 0.5), "job 0: its tasks have different arrivals"),
    (lambda a: a["preds"].__setitem__((3, 0), 0), "job 1, task 0: predecessor slot 0"),
    (lambda a: a["preds"].__setitem__((3, 0), 4), "predecessor slot 4 is not a real task"),
    (lambda a: a["pos"].__setitem__(2, 1), "job 0: pos [0, 1, 1] is not a permutation"),
    (lambda a: a.pop("size"), "arrays: missing key 'size'"),
    (lambda a: a["mem"].__setitem__(0, 0.0), "server 0: mem must be > 0"),
])
def test_spec_from_arrays_errors(mutate, message):
    a = padded_arrays(parse_instance(base()), n_max=5)
    mutate(a)
    with pytest.raises(InstanceError, match=message.replace("[", r"\[").replace("]", r"\]")):
        spec_from_arrays(a)


@pytest.mark.parametrize("limits, message", [
    ({"n_max": 3}, "4 tasks exceed n_max=3"),
    ({"m_max": 1}, "2 servers exceed m_max=1"),
    ({"j_max": 2}, "job 0: 3 tasks exceed j_max=2"),
    ({"n_max": 0}, "n_max must be an integer >= 1, got 0"),
    ({"m_max": 2.5}, "m_max must be an integer >= 1, got 2.5"),
])
def test_padded_arrays_over_limits(limits, message):
    with pytest.raises(InstanceError, match=message):
        padded_arrays(parse_instance(base()), **limits)


def test_padded_arrays_over_p_max():
    obj = base()
    obj["jobs"].append({"arrival": 2, "tasks": [{"size": 1, "deadline": 9, "preds": []}] * 3
                        + [{"size": 1, "deadline": 9, "preds": [0, 1, 2]}]})
    with pytest.raises(InstanceError, match="job 2, task 3: 3 predecessors exceed p_max=2"):
        padded_arrays(parse_instance(obj), p_max=2)
    assert padded_arrays(parse_instance(obj))["preds"].shape == (8, 3)


# ---------------------------------------------------------------------------
# Every validation error of parse_instance, one case each
# ---------------------------------------------------------------------------


def server0(obj):
    return obj["servers"][0]


def task(obj, j=0, t=1):
    return obj["jobs"][j]["tasks"][t]


def setk(d, key, value):
    d[key] = value


ERRORS = [
    # top level
    ("missing servers", lambda o: o.pop("servers"), "instance: missing required key 'servers'"),
    ("missing jobs", lambda o: o.pop("jobs"), "instance: missing required key 'jobs'"),
    ("unknown top key", lambda o: setk(o, "nmae", "x"), "instance: unknown key 'nmae' (allowed: servers, jobs, name, meta)"),
    ("servers not list", lambda o: setk(o, "servers", {}), "instance: 'servers' must be a list, got an object"),
    ("no servers", lambda o: setk(o, "servers", []), "instance: 'servers' is empty"),
    ("jobs not list", lambda o: setk(o, "jobs", 3), "instance: 'jobs' must be a list, got int"),
    ("no jobs", lambda o: setk(o, "jobs", []), "instance: 'jobs' is empty (at least one task is needed)"),
    # servers
    ("server not object", lambda o: o["servers"].__setitem__(1, 5), "server 1: must be an object with keys cpu, bw, mem, k, got int"),
    ("server missing key", lambda o: o["servers"][1].pop("bw"), "server 1: missing required key 'bw'"),
    ("server unknown keys", lambda o: o["servers"][1].update(gpu=1, ram=2), "server 1: unknown keys 'gpu', 'ram'"),
    ("server string", lambda o: setk(server0(o), "cpu", "fast"), "server 0: cpu must be a finite number, got 'fast'"),
    ("server bool", lambda o: setk(server0(o), "mem", True), "server 0: mem must be a finite number, got True"),
    ("server null", lambda o: setk(server0(o), "k", None), "server 0: k must be a finite number, got None"),
    ("server nan", lambda o: setk(server0(o), "bw", math.nan), "server 0: bw must be a finite number, got nan"),
    ("server inf", lambda o: setk(server0(o), "cpu", math.inf), "server 0: cpu must be a finite number, got inf"),
    ("server huge int", lambda o: setk(server0(o), "cpu", 10 ** 400), "server 0: cpu must be a finite number, got 1000"),
    ("cpu zero", lambda o: setk(server0(o), "cpu", 0), "server 0: cpu must be > 0, got 0.0"),
    ("bw negative", lambda o: setk(o["servers"][1], "bw", -2.0), "server 1: bw must be > 0, got -2.0"),
    ("mem zero", lambda o: setk(server0(o), "mem", 0), "server 0: mem must be > 0, got 0.0"),
    ("k negative", lambda o: setk(server0(o), "k", -0.5), "server 0: k must be > 0, got -0.5"),
    ("k zero", lambda o: setk(server0(o), "k", 0.0), "server 0: k must be > 0, got 0.0"),
    # jobs
    ("job not object", lambda o: o["jobs"].__setitem__(1, [1]), "job 1: must be an object with keys arrival, tasks, got a list"),
    ("job missing arrival", lambda o: o["jobs"][1].pop("arrival"), "job 1: missing required key 'arrival'"),
    ("job missing tasks", lambda o: o["jobs"][0].pop("tasks"), "job 0: missing required key 'tasks'"),
    ("job unknown key", lambda o: setk(o["jobs"][1], "id", 7), "job 1: unknown key 'id' (allowed: arrival, tasks, name, meta)"),
    ("arrival string", lambda o: setk(o["jobs"][1], "arrival", "1"), "job 1: arrival must be a finite number, got '1'"),
    ("arrival inf", lambda o: setk(o["jobs"][1], "arrival", math.inf), "job 1: arrival must be a finite number, got inf"),
    ("arrival negative", lambda o: setk(o["jobs"][0], "arrival", -1), "job 0: arrival must be >= 0, got -1.0"),
    ("tasks not list", lambda o: setk(o["jobs"][1], "tasks", {}), "job 1: tasks must be a list, got an object"),
    ("job without tasks", lambda o: setk(o["jobs"][1], "tasks", []), "job 1: has no tasks"),
    ("jobs out of order", lambda o: setk(o["jobs"][0], "arrival", 3), "job 1: arrives at 1.0, before job 0 (arrives at 3.0)"),
    # tasks
    ("task not object", lambda o: o["jobs"][0]["tasks"].__setitem__(2, "C"), "job 0, task 2: must be an object with keys size, work, deadline, preds, got a string"),
    ("task missing size", lambda o: task(o).pop("size"), "job 0, task 1: missing required key 'size'"),
    ("task missing deadline", lambda o: task(o).pop("deadline"), "job 0, task 1: missing required key 'deadline'"),
    ("task unknown key", lambda o: setk(task(o), "sze", 1), "job 0, task 1: unknown key 'sze' (allowed: size, work, deadline, preds, name, meta)"),
    ("size string", lambda o: setk(task(o), "size", "4"), "job 0, task 1: size must be a finite number, got '4'"),
    ("size zero", lambda o: setk(task(o), "size", 0), "job 0, task 1: size must be > 0, got 0.0"),
    ("size negative", lambda o: setk(task(o), "size", -3), "job 0, task 1: size must be > 0, got -3.0"),
    ("work zero", lambda o: setk(task(o), "work", 0), "job 0, task 1: work must be > 0, got 0.0"),
    ("work bool", lambda o: setk(task(o), "work", False), "job 0, task 1: work must be a finite number, got False"),
    ("deadline inf", lambda o: setk(task(o), "deadline", math.inf), "job 0, task 1: deadline must be a finite number, got inf"),
    ("deadline nan", lambda o: setk(task(o), "deadline", math.nan), "job 0, task 1: deadline must be a finite number, got nan"),
    ("deadline missing value", lambda o: setk(task(o), "deadline", None), "job 0, task 1: deadline must be a finite number, got None"),
    ("too large for memory", lambda o: setk(task(o, 1, 0), "size", 150), "job 1, task 0: size 150.0 exceeds every server's memory (largest is 100.0)"),
    ("preds not list", lambda o: setk(task(o), "preds", 0), "job 0, task 1: preds must be a list, got int"),
    ("preds null", lambda o: setk(task(o, 0, 0), "preds", None), "job 0, task 0: preds must be a list, got null"),
    ("pred float", lambda o: setk(task(o), "preds", [0.0]), "job 0, task 1: predecessor 0.0 is not an integer position"),
    ("pred string", lambda o: setk(task(o), "preds", ["A"]), "job 0, task 1: predecessor 'A' is not an integer position"),
    ("pred bool", lambda o: setk(task(o), "preds", [True]), "job 0, task 1: predecessor True is not an integer position"),
    ("pred too large", lambda o: setk(task(o), "preds", [5]), "job 0, task 1: predecessor 5 does not exist (the job has 3 tasks)"),
    ("pred negative", lambda o: setk(task(o), "preds", [-1]), "job 0, task 1: predecessor -1 does not exist (the job has 3 tasks)"),
    ("pred in one-task job", lambda o: setk(task(o, 1, 0), "preds", [1]), "job 1, task 0: predecessor 1 does not exist (the job has 1 task)"),
    ("self loop", lambda o: setk(task(o), "preds", [0, 1]), "job 0, task 1: lists itself as a predecessor"),
    ("duplicate pred", lambda o: setk(task(o), "preds", [0, 0]), "job 0, task 1: predecessor 0 is listed twice"),
    ("two-cycle", lambda o: setk(task(o, 0, 0), "preds", [2]), "job 0: predecessors form a cycle: task 0 -> task 2 -> task 0"),
    ("three-cycle", lambda o: (setk(task(o, 0, 0), "preds", [2]), setk(task(o, 0, 2), "preds", [1])),
     "job 0: predecessors form a cycle: task 0 -> task 1 -> task 2 -> task 0"),
    # optional name / meta labels
    ("top name int", lambda o: setk(o, "name", 7), "instance: name must be a string, got 7"),
    ("server name null", lambda o: setk(o["servers"][1], "name", None), "server 1: name must be a string, got None"),
    ("job name list", lambda o: setk(o["jobs"][1], "name", ["etl"]), "job 1: name must be a string, got ['etl']"),
    ("task name number", lambda o: setk(task(o, 0, 2), "name", 3.5), "job 0, task 2: name must be a string, got 3.5"),
    ("task name bool", lambda o: setk(task(o), "name", True), "job 0, task 1: name must be a string, got True"),
    ("misspelt key next to name", lambda o: task(o).update(name="B", nmae="b"),
     "job 0, task 1: unknown key 'nmae' (allowed: size, work, deadline, preds, name, meta)"),
    ("misspelt meta on server", lambda o: o["servers"][0].update(name="edge-0", metadata={}),
     "server 0: unknown key 'metadata' (allowed: cpu, bw, mem, k, name, meta)"),
    ("misspelt key next to job name", lambda o: o["jobs"][0].update(name="j", arival=0),
     "job 0: unknown key 'arival' (allowed: arrival, tasks, name, meta)"),
    ("meta nan", lambda o: setk(task(o), "meta", {"a": [1, math.nan]}),
     "job 0, task 1: meta must be plain JSON, got nan at meta['a'][1]"),
    ("meta inf", lambda o: setk(o, "meta", math.inf), "instance: meta must be plain JSON, got inf at meta"),
    ("meta int key", lambda o: setk(server0(o), "meta", {"ok": {1: "x"}}),
     "server 0: meta must be plain JSON, got the non-string key 1 at meta['ok']"),
    ("meta set", lambda o: setk(o["jobs"][1], "meta", [{1, 2}]), "job 1: meta must be plain JSON, got set {1, 2} at meta[0]"),
]


@pytest.mark.parametrize("mutate, message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_validation_error(mutate, message):
    obj = base()
    mutate(obj)
    with pytest.raises(InstanceError, match=re.escape(message)) as info:
        parse_instance(obj)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_instance_not_an_object():
    with pytest.raises(InstanceError, match="instance: must be an object with keys servers, jobs, got a list"):
        parse_instance([1, 2])


def test_cycle_behind_an_acyclic_prefix():
    obj = base()
    obj["jobs"][1]["tasks"] = [
        {"size": 1, "deadline": 5, "preds": []},
        {"size": 1, "deadline": 5, "preds": [0, 3]},
        {"size": 1, "deadline": 5, "preds": [1]},
        {"size": 1, "deadline": 5, "preds": [2]},
    ]
    with pytest.raises(InstanceError, match="job 1: predecessors form a cycle: task 1 -> task 2 -> task 3 -> task 1"):
        parse_instance(obj)


def test_equal_arrivals_and_past_deadlines_are_valid():
    obj = base()
    obj["jobs"][1]["arrival"] = 0
    task(obj)["deadline"] = -1.5  # before arrival: allowed, the task simply misses
    task(obj)["size"] = 100  # equal to the largest memory: allowed
    spec = parse_instance(obj)
    assert spec.jobs[1].arrival == 0.0 and spec.jobs[0].tasks[1].deadline == -1.5


# ---------------------------------------------------------------------------
# Files: missing, bad JSON, invalid content
# ---------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(InstanceError, match=f"{path}: no such instance file"):
        load_instance(path)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(InstanceError, match=f"{tmp_path}: cannot read instance file"):
        load_instance(tmp_path)


def test_bad_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"servers": [\n  {"cpu": 1,, "bw": 2}\n]}')
    with pytest.raises(InstanceError, match=f"{path}: invalid JSON at line 2 column 13"):
        load_instance(path)


def test_duplicate_json_key(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"servers": [], "servers": []}')
    with pytest.raises(InstanceError, match=f"{path}: duplicate key 'servers'"):
        load_instance(path)


def test_invalid_instance_in_file_names_path(tmp_path):
    path = tmp_path / "inv.json"
    obj = base()
    obj["servers"][1]["bw"] = -2.0
    path.write_text(json.dumps(obj))
    with pytest.raises(InstanceError, match=f"{path}: server 1: bw must be > 0, got -2.0"):
        load_instance(path)


def test_nan_in_file_rejected(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(base()).replace('"deadline": 8', '"deadline": NaN'))
    with pytest.raises(InstanceError, match="job 0, task 2: deadline must be a finite number, got nan"):
        load_instance(path)


# ---------------------------------------------------------------------------
# Random instances
# ---------------------------------------------------------------------------

num = st.floats(min_value=0.125, max_value=64.0, allow_nan=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 20, 10 ** 20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)


def labels(draw, d: dict) -> dict:
    """Maybe give the object `d` a `name` and / or a `meta` (in place; returns `d`)."""
    if draw(st.booleans()):
        d["name"] = draw(st.text(max_size=10))
    if draw(st.booleans()):
        d["meta"] = draw(json_values)
    return d


@st.composite
def instances(draw) -> dict:
    servers = [labels(draw, {"cpu": draw(num), "bw": draw(num), "mem": 64.0, "k": draw(num)})
               for _ in range(draw(st.integers(1, 4)))]
    jobs, arrival = [], 0.0
    for _ in range(draw(st.integers(1, 4))):
        arrival += draw(st.sampled_from([0.0, 0.5, 2.0]))
        size = draw(st.integers(1, 6))
        # a random DAG on a random permutation of the positions
        perm = draw(st.permutations(range(size)))
        tasks = []
        for pos in range(size):
            rank = perm.index(pos)
            earlier = [perm[r] for r in range(rank)]
            preds = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
            task_ = {"size": draw(num), "deadline": draw(st.floats(-5, 100)), "preds": preds}
            if draw(st.booleans()):
                task_["work"] = draw(num)
            if not preds and draw(st.booleans()):
                del task_["preds"]  # a root may omit preds
            tasks.append(labels(draw, task_))
        jobs.append(labels(draw, {"arrival": arrival, "tasks": tasks}))
    return labels(draw, {"servers": servers, "jobs": jobs})


@settings(max_examples=60, deadline=None)
@given(instances())
def test_random_round_trips(obj):
    spec = parse_instance(obj)
    assert parse_instance(instance_to_json(spec)) == spec
    assert parse_instance(json.loads(json.dumps(instance_to_json(spec)))) == spec
    bare = unlabelled(spec)
    tasks = flat_tasks(spec)
    assert len(tasks) == spec.num_tasks
    gidx = global_index(spec)
    for i, t in enumerate(tasks):
        assert all(p < i for p in t["preds"])
        assert gidx[t["job"]][t["pos"]] == i
        src = spec.jobs[t["job"]].tasks[t["pos"]]
        assert t["preds"] == [gidx[t["job"]][p] for p in src.preds]
    assert [t["job"] for t in tasks] == sorted(t["job"] for t in tasks)
    a = padded_arrays(spec, n_max=spec.num_tasks + 2, m_max=6, p_max=3)
    assert spec_from_arrays(a) == bare  # the arrays hold no names or meta
    b = padded_arrays(spec, p_max=3)
    assert spec_from_arrays(b) == bare
    assert_same_arrays(b, padded_arrays(bare, p_max=3))
    r = simulate(servers_list(spec), tasks, queue_capacity=2, dispatch="nearest", schedule="sjf")
    assert len(r.done) == spec.num_tasks


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    spec = parse_instance(base())
    path = tmp_path / "inst.json"
    save_instance(spec, path)
    before = path.read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    other = parse_instance(renumbered())
    with pytest.raises(OSError, match="disk full"):
        save_instance(other, path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["inst.json"]
