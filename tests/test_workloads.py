"""Tests of --workload (damdjax/workloads.py and its wiring): specs, flag errors, the run
config, held-out instances and eval.compare.

Cheap by design: the fixture library (tests/data's helloworld workflow and the Alibaba
excerpt's jobs of at most 4 tasks, written to a tmp .npz) is small; the flag and config
tests compile nothing; one vmapped generator compile checks held-out instances, and one
eval.compare run plays two heuristic pairs of one dispatch rule (one play compile). The
mix tests join the fixture's parts (one tiny train.dqn chunk and one eval.compare run on
it) and generate two small WfChef recipes twice (the 'workflows' extra).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from damdjax.run_config import RunConfig, checked_workload, setting_from_json
from damdjax.evaluation import generate_held_out, held_out_keys
from damdjax.policies import dispatcher_network, init_dispatcher, save_dispatcher
from damdjax.workloads import (WorkloadError, check_workload, note_cut_jobs, parse_workload,
                               resolve_workload)
from damdjax.envs import convert
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.workload import library_from_specs, load_library, required_config, save_library
from damdjax.eval import compare
from damdjax.train import damd, dqn, mdqn

DATA = Path(__file__).resolve().parent / "data"  # tests/data/README.md
HELLO = DATA / "wfcommons" / "helloworld-forkjoin-10-chameleon.json"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "worked_example.json"
NUM_TASKS, NUM_SERVERS = 12, 3  # the fixture's longest job (helloworld) has 10 tasks


@pytest.fixture(scope="module")
def lib_file(tmp_path_factory) -> Path:
    """helloworld (10 tasks, fan-in 8) and the Alibaba excerpt's jobs of <= 4 tasks, packed."""
    d = convert.DEFAULTS
    jobs = [convert.job_spec(convert.read_wfcommons(HELLO), d.time_unit_s, d.wfcommons_data_unit)]
    ali, _ = convert.read_alibaba(DATA / "alibaba-excerpt.csv")
    jobs += [convert.job_spec(j, d.time_unit_s, d.alibaba_data_unit) for j in ali
             if len(j.tasks) <= 4]
    path = tmp_path_factory.mktemp("workload") / "jobs.npz"
    save_library(path, library_from_specs(jobs))
    return path


@pytest.fixture(scope="module")
def spec(lib_file) -> str:
    return f"library:{lib_file}"


# ---------------------------------------------------------------------------
# Specs and flag errors (nothing compiled)
# ---------------------------------------------------------------------------

def test_specs_resolve_once_per_process(tmp_path, capsys):
    """"" is the generator; wfcommons:FILE is converted once (summary printed once), and
    the cached library equals the converter's jobs packed by hand."""
    assert resolve_workload("") is None
    copy = tmp_path / "hello.json"  # a fresh path: not in the cache yet
    shutil.copy(HELLO, copy)
    a = resolve_workload(f"wfcommons:{copy}")
    b = resolve_workload(f"wfcommons:{copy}")
    assert a is b
    err = capsys.readouterr().err
    assert err.count("skipped 0 of 1 jobs") == 1
    assert a.num_jobs == 1 and a.max_length == 10 and a.max_preds == 8
    d = convert.DEFAULTS
    by_hand = library_from_specs([convert.job_spec(convert.read_wfcommons(HELLO), d.time_unit_s,
                                                   d.wfcommons_data_unit)])
    np.testing.assert_array_equal(a.preds, by_hand.preds)
    np.testing.assert_array_equal(a.work, by_hand.work)
    assert parse_workload(f"wfcommons:{DATA / 'wfcommons'}")[0] == "wfcommons"
    with pytest.raises(WorkloadError, match="must be KIND:PATH"):
        parse_workload("wfcommons")


def test_a_job_longer_than_the_episode_is_accepted_with_a_note(spec, capsys):
    """The model's rule (an episode cuts its last job at num_tasks), not a refusal: the
    fixture's 10-task job in 5 slots passes the trainers' check, and one note counts it."""
    lib = resolve_workload(spec)
    capsys.readouterr()
    checked_workload(spec, EnvParams(num_tasks=5))
    check_workload(spec, 5)
    err = capsys.readouterr().err
    assert err.count("note:") == 1, err
    assert (f"note: 1 of its {lib.num_jobs} jobs have more than num_tasks=5 tasks (the "
            f"longest 10)") in err, err
    assert note_cut_jobs(spec, 5) == int((lib.length > 5).sum()) == 1
    check_workload(spec, NUM_TASKS)
    assert note_cut_jobs(spec, NUM_TASKS) == 0 and "note:" not in capsys.readouterr().err


def _error_line(capsys) -> str:
    """The one `error:` line on stderr (argparse's usage lines aside)."""
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("kind", ["unknown", "missing", "not npz", "wfchef size",
                                  "wfchef recipe"])
def test_trainer_flag_errors_are_one_line_naming_the_value(kind, lib_file, tmp_path, capsys):
    value, message, tasks = {
        "unknown": ("foo:bar", "must be KIND:PATH", NUM_TASKS),
        "missing": (f"wfcommons:{tmp_path / 'none'}", "no such file or directory", NUM_TASKS),
        "not npz": (f"library:{DATA / 'README.md'}", "not a readable .npz", NUM_TASKS),
        # named with the seed the run would draw its workflows with (the run's --seed)
        "wfchef size": ("wfchef:srasearch:30", "wfchef recipe srasearch at 30 tasks exceeds "
                        f"the padding's {NUM_TASKS} task slots", NUM_TASKS),
        "wfchef recipe": ("wfchef:bogus", "unknown wfchef recipe 'bogus'", NUM_TASKS),
    }[kind]
    for main in (dqn.main, mdqn.main, damd.main):
        with pytest.raises(SystemExit) as exc:
            main(["--run-dir", str(tmp_path), "--workload", value, "--num-tasks", str(tasks)])
        assert exc.value.code == 2
        line = _error_line(capsys)
        named = f"{value}:0" if kind == "wfchef size" else value
        assert f"--workload {named!r}" in line and message in line, line
    assert not list(tmp_path.iterdir())  # refused before any run directory


def test_compare_refuses_workload_with_an_instance_file(spec, capsys):
    with pytest.raises(SystemExit) as exc:
        compare.main(["--instance", str(EXAMPLE), "--workload", spec])
    assert exc.value.code == 2
    line = _error_line(capsys)
    assert spec in line and "contradicts --instance" in line


# ---------------------------------------------------------------------------
# The run config
# ---------------------------------------------------------------------------

def test_run_config_takes_the_library_padding_and_round_trips(spec, lib_file):
    lib = load_library(lib_file)
    cfg = dqn.DQNConfig.from_values(workload=spec, num_tasks=NUM_TASKS, num_servers=NUM_SERVERS,
                        num_envs=4, hidden=(8,))
    assert cfg.env_config == required_config(lib, NUM_TASKS, NUM_SERVERS, cfg.env_config.queue_capacity)
    assert (cfg.env_config.j_max, cfg.env_config.p_max) == (10, 8)
    assert cfg.job_library() is resolve_workload(spec)
    assert cfg.make_env().generator.library is cfg.job_library()
    assert setting_from_json(cfg.setting()) == (cfg.env, cfg.env_config, spec)  # train.damd's
    stored = json.loads(json.dumps(cfg.to_json()))
    assert stored["workload"] == spec
    assert dqn.DQNConfig.from_json(stored) == cfg
    # The default: the generator's padding, unchanged.
    assert RunConfig().env_config == EnvConfig(n_max=EnvParams.num_tasks, m_max=EnvParams.num_servers)
    assert RunConfig().env_config.j_max == 8 and RunConfig().env_config.p_max == 3


def test_a_config_written_before_workloads_loads_as_the_generator():
    old = mdqn.MDQNConfig.from_values(num_tasks=NUM_TASKS).to_json()
    del old["workload"]
    assert mdqn.MDQNConfig.from_json(old).workload == ""
    with pytest.raises(ValueError, match="unknown fields \\['bogus'\\]"):
        mdqn.MDQNConfig.from_json({**old, "bogus": 1})
    del old["seed"]
    with pytest.raises(ValueError, match="missing fields \\['seed'\\]"):
        mdqn.MDQNConfig.from_json(old)


def test_damd_stages_must_share_the_workload(spec):
    with pytest.raises(ValueError, match="must share the setting"):
        damd.DAMDConfig(dispatcher=dqn.DQNConfig(workload=spec), schedulers=mdqn.MDQNConfig())
    p = damd.build_parser()
    args = p.parse_args(["--workload", spec, "--num-tasks", str(NUM_TASKS)])
    cfg = damd.config_from_args(p, args)
    assert cfg.dispatcher.workload == cfg.schedulers.workload == spec
    assert cfg.job_library() is resolve_workload(spec)


# ---------------------------------------------------------------------------
# Evaluation draws from the workload (one generator compile)
# ---------------------------------------------------------------------------

def test_held_out_instances_draw_library_jobs(spec, lib_file):
    """Every job of a held-out instance is a library job (its DAG, sizes and works), the
    last one possibly cut at num_tasks."""
    lib = load_library(lib_file)
    cfg = RunConfig.from_values(workload=spec, num_tasks=NUM_TASKS, num_servers=NUM_SERVERS)
    inst_keys, _ = held_out_keys(0, 2)
    inst = jax.tree.map(lambda x: np.asarray(x[0]), generate_held_out(
        cfg.env_config, cfg.env, inst_keys, cfg.job_library()))
    real = inst.task_mask
    assert real.sum() == NUM_TASKS
    jobs = np.unique(inst.job[real])
    for j in jobs:
        tasks = np.flatnonzero(real & (inst.job == j))
        first, count = tasks[0], len(tasks)
        np.testing.assert_array_equal(tasks, first + np.arange(count))  # contiguous
        local = np.where(inst.preds[tasks] >= 0, inst.preds[tasks] - first, -1)
        local = local[:, :lib.max_preds]
        assert np.all(inst.preds[tasks, lib.max_preds:] == -1)
        cut = j == jobs[-1]
        matches = [
            l for l in range(lib.num_jobs)
            if (lib.length[l] == count or (cut and lib.length[l] > count))
            and np.allclose(inst.size[tasks], lib.size[l, :count], rtol=1e-6)
            and np.allclose(inst.work[tasks], lib.work[l, :count], rtol=1e-6)
            and np.array_equal(local, lib.preds[l, :count])]
        assert matches, f"job {j} ({count} tasks) is no library job"


# ---------------------------------------------------------------------------
# eval.compare
# ---------------------------------------------------------------------------

def test_compare_runs_on_the_workload(spec, tmp_path):
    out = tmp_path / "cmp.json"
    res = compare.main(["--workload", spec, "--episodes", "2", "--methods", "LF,LS",
                        "--num-tasks", str(NUM_TASKS), "--num-servers", str(NUM_SERVERS),
                        "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["setting"]["workload"] == spec
    assert set(data["methods"]) == {"LF", "LS", "bound"}
    bound = res["methods"]["bound"]["_per_episode"]["avg_response_time"]
    for name in ("LF", "LS"):
        r = data["methods"][name]
        assert r["episodes"] == 2 and r["truncated"] == 0 and r["avg_response_time"] > 0
        assert np.all(res["methods"][name]["_per_episode"]["avg_response_time"] >= bound - 1e-6)


def test_compare_defaults_to_the_runs_recorded_workload(spec, tmp_path):
    """--dispatcher-checkpoint RUN takes RUN's workload (as its other setting fields) unless
    --workload is given."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = dqn.DQNConfig.from_values(workload=spec, num_tasks=NUM_TASKS, num_servers=NUM_SERVERS, hidden=(4,))
    (run / "config.json").write_text(json.dumps(cfg.to_json()))
    net = dispatcher_network(cfg.hidden)
    save_dispatcher(str(run / "dispatcher.msgpack"), cfg.hidden, EnvParams().time_scale,
                    init_dispatcher(net, jax.random.PRNGKey(0)))
    args = compare.parse_args(["--dispatcher-checkpoint", str(run)])
    assert (args.workload, args.num_tasks) == (spec, NUM_TASKS)
    args = compare.parse_args(["--dispatcher-checkpoint", str(run), "--workload", ""])
    assert args.workload == ""


# ---------------------------------------------------------------------------
# eval.compare --instance: per-task times on the instance file's own clock
# ---------------------------------------------------------------------------

def test_compare_reports_task_times_on_the_files_clock(tmp_path):
    """The worked example shifted by 1.7e15 time units (a timestamp-like clock): the
    per-task start, finish and done of the output are the unshifted run's plus the shift,
    added exactly and rounded once to float64, and the setting says so."""
    from decimal import Decimal

    offset = 1_700_000_000_000_000
    doc = json.loads(EXAMPLE.read_text())
    for job in doc["jobs"]:
        job["arrival"] += offset
        for task in job["tasks"]:
            task["deadline"] += offset
    shifted = tmp_path / "shifted.json"
    shifted.write_text(json.dumps(doc))
    runs = {}
    for name, path in (("plain", EXAMPLE), ("shifted", shifted)):
        compare.main(["--instance", str(path), "--methods", "NF,LS",
                      "--out", str(tmp_path / f"{name}-out.json")])
        runs[name] = json.loads((tmp_path / f"{name}-out.json").read_text())
    setting = runs["shifted"]["setting"]
    assert setting["time_offset"] == 1.7e15 and runs["plain"]["setting"]["time_offset"] == 0
    assert "instance file's clock" in setting["task_times"]
    for method in ("NF", "LS"):
        plain, moved = runs["plain"]["methods"][method], runs["shifted"]["methods"][method]
        assert moved["server"] == plain["server"]
        for key in ("start", "finish", "done"):
            assert moved[key] == [float(Decimal(x) + Decimal(offset)) for x in plain[key]]
            assert all(m > offset for m in moved[key])


# ---------------------------------------------------------------------------
# mix:SPEC+SPEC: several specs' jobs joined in one library
# ---------------------------------------------------------------------------

def _mix_parts(lib_file, folder: Path) -> list[str]:
    """Two part specs on fresh paths (not in resolve_workload's cache): the fixture
    library and the helloworld workflow."""
    shutil.copy(lib_file, folder / "lib.npz")
    shutil.copy(HELLO, folder / "hello.json")
    return [f"library:{folder / 'lib.npz'}", f"wfcommons:{folder / 'hello.json'}"]


def test_a_mix_joins_exactly_its_parts_jobs(lib_file, tmp_path, capsys):
    parts = _mix_parts(lib_file, tmp_path)
    mixed = resolve_workload("mix:" + "+".join(parts))
    libs = [resolve_workload(p) for p in parts]
    assert mixed.num_jobs == sum(lib.num_jobs for lib in libs) == libs[0].num_jobs + 1
    assert mixed.names == libs[0].names + libs[1].names
    assert (mixed.max_length, mixed.max_preds) == (10, 8)
    j = 0
    for lib in libs:
        for k in range(lib.num_jobs):
            n, p = int(lib.length[k]), lib.max_preds
            assert mixed.length[j] == n
            np.testing.assert_array_equal(mixed.size[j, :n], lib.size[k, :n])
            np.testing.assert_array_equal(mixed.work[j, :n], lib.work[k, :n])
            np.testing.assert_array_equal(mixed.preds[j, :n, :p], lib.preds[k, :n])
            assert np.all(mixed.preds[j, :, p:] == -1) and np.all(mixed.size[j, n:] == 0)
            j += 1
    assert f"jobs drawn uniformly over {mixed.num_jobs}: {parts[0]} {libs[0].num_jobs}, " \
           f"{parts[1]} 1" in capsys.readouterr().err
    # a part listed twice is drawn twice as often: its jobs listed twice
    twice = resolve_workload(f"mix:{parts[1]}+{parts[0]}+{parts[1]}")
    assert twice.num_jobs == mixed.num_jobs + 1
    assert twice.names == libs[1].names + libs[0].names + libs[1].names


def test_a_mix_takes_the_run_seed_in_each_wfchef_part():
    """The run's seed fills every wfchef part that gives none (an explicit one is kept), and
    the same seeded spec gives the same library byte for byte, another seed another."""
    from damdjax.workloads import seeded_workload

    spec = seeded_workload("mix:wfchef:genome:52:7+wfchef:epigenomics:50", 3)
    assert spec == "mix:wfchef:genome:52:7+wfchef:epigenomics:50:3"
    assert seeded_workload(spec, 9) == spec

    def packed(spec: str) -> bytes:
        resolve_workload.cache_clear()   # made again, not the cached one
        arrays = _lib_arrays(resolve_workload(spec))
        return b"|".join(f"{k}{a.dtype.str}{a.shape}".encode() + a.tobytes()
                         for k, a in arrays.items())

    first = packed(spec)
    assert packed(spec) == first
    assert packed(seeded_workload("mix:wfchef:genome:52:7+wfchef:epigenomics:50", 4)) != first


def _lib_arrays(lib) -> dict:
    return {"length": lib.length, "size": lib.size, "work": lib.work, "preds": lib.preds,
            "names": np.array(lib.names)}


@pytest.mark.parametrize("kind", ["one part", "empty part", "nested", "bad part", "bad recipe",
                                  "part too long"])
def test_bad_mixes_are_one_line_errors_naming_the_part(kind, lib_file, tmp_path, capsys):
    ok = f"library:{lib_file}"
    value, named, message, tasks = {
        "one part": (f"mix:{ok}", None, "a mix joins two or more specs with '+', got one",
                     NUM_TASKS),
        "empty part": (f"mix:{ok}++{ok}", None, "part 2 is empty", NUM_TASKS),
        "nested": (f"mix:{ok}+mix:{ok}+{ok}", f"mix:{ok}", "is a mix", NUM_TASKS),
        "bad part": (f"mix:{ok}+foo:bar", "foo:bar", "must be KIND:PATH", NUM_TASKS),
        "bad recipe": (f"mix:{ok}+wfchef:bogus", "wfchef:bogus",
                       "unknown wfchef recipe 'bogus'", NUM_TASKS),
        "part too long": (f"mix:wfchef:srasearch:30+{ok}", "wfchef:srasearch:30:0",
                          "exceeds the padding's 12 task slots", NUM_TASKS),
    }[kind]
    with pytest.raises(SystemExit) as exc:
        dqn.main(["--run-dir", str(tmp_path), "--workload", value, "--num-tasks", str(tasks)])
    assert exc.value.code == 2
    line = _error_line(capsys)
    seeded = value.replace("srasearch:30", "srasearch:30:0")
    assert f"--workload {seeded!r}" in line and message in line, line
    if named is not None:
        assert f"part {named!r}" in line, line
    assert not list(tmp_path.iterdir())


def test_compare_protects_a_mix_parts_files(lib_file, tmp_path, capsys):
    """--out naming a mix part's file is refused (eval.compare's input_files reads the parts)."""
    parts = _mix_parts(lib_file, tmp_path)
    with pytest.raises(SystemExit) as exc:
        compare.main(["--workload", "mix:" + "+".join(parts), "--num-tasks", str(NUM_TASKS),
                      "--out", str(tmp_path / "hello.json")])
    assert exc.value.code == 2
    assert "hello.json" in _error_line(capsys)


def test_a_run_on_a_mix_keeps_its_library_and_compare_reads_it_back(lib_file, tmp_path):
    """train.dqn on a mix (one tiny chunk) keeps the joined library in RUN/inputs/; with
    the parts' files gone, eval.compare --dispatcher-checkpoint RUN plays on the copy."""
    parts = _mix_parts(lib_file, tmp_path)
    spec = "mix:" + "+".join(parts)
    joined = resolve_workload(spec)
    runs = tmp_path / "runs"
    assert dqn.main(["--run-dir", str(runs), "--name", "m", "--workload", spec,
                     "--num-tasks", str(NUM_TASKS), "--num-servers", str(NUM_SERVERS),
                     "--num-envs", "4", "--num-chunks", "1", "--steps-per-chunk", "4",
                     "--buffer-capacity", "16", "--batch-size", "4", "--learning-starts", "4",
                     "--hidden", "8", "--eval-episodes", "0"]) == 0
    run = runs / "m"
    (entry,) = json.loads((run / "inputs" / "index.json").read_text())["inputs"]
    assert entry["kind"] == "workload" and entry["original"] == spec
    kept = load_library(run / "inputs" / entry["copy"])
    for key, arr in _lib_arrays(joined).items():
        np.testing.assert_array_equal(_lib_arrays(kept)[key], arr)
    assert json.loads((run / "config.json").read_text())["workload"] == spec
    for name in ("lib.npz", "hello.json"):
        (tmp_path / name).unlink()
    out = tmp_path / "cmp.json"
    compare.main(["--dispatcher-checkpoint", str(run), "--episodes", "2", "--methods", "LF",
                  "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["setting"]["workload"] == f"library:{run / 'inputs' / entry['copy']}"
    assert data["methods"]["DQN"]["episodes"] == 2
