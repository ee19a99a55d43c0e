"""Out-of-range numbers: one-line errors before anything is allocated or compiled.

Every integer flag that sizes or counts a device array is checked against int32 (and the
run's counters against int32 to the last chunk); what still fits int32 but not memory is
refused by the estimate of damdjax.memory, which is held here to the sizes `jax.eval_shape`
gives for the trainers' real `init`.
"""
import importlib

import jax
import numpy as np
import pytest

from damdjax import memory
from damdjax.hyper import Hyper
from damdjax.rollout import play_batch
from damdjax.heuristics import pair_from_name
from damdjax.envs.config import EnvConfig
from damdjax.envs.generator import generate
from damdjax.envs.config import EnvParams

HUGE = str(10**12)

# (module, flag, expected text in the one-line error)
FLAGS = [
    ("train.dqn", "--num-tasks", "--num-tasks must be <= 1073741822"),
    ("train.dqn", "--num-servers", "--num-servers must be <= 2147483647 (int32)"),
    ("train.dqn", "--queue-capacity", "--queue-capacity must be <= 2147483647 (int32)"),
    ("train.dqn", "--num-envs", "--num-envs must be <= 2147483647 (int32)"),
    ("train.dqn", "--steps-per-chunk", "--steps-per-chunk must be <= 2147483647 (int32)"),
    ("train.dqn", "--buffer-capacity", "--buffer-capacity must be <= 2147483647 (int32)"),
    ("train.dqn", "--batch-size", "--batch-size must be <= 2147483647 (int32)"),
    ("train.dqn", "--eps-decay-steps", "--eps-decay-steps must be <= 2147483647 (int32)"),
    ("train.dqn", "--target-every", "--target-every must be <= 2147483647 (int32)"),
    ("train.dqn", "--updates-per-step", "--updates-per-step must be <= 2147483647 (int32)"),
    ("train.dqn", "--learning-starts", "--learning-starts must be <= 2147483647 (int32)"),
    ("train.dqn", "--num-chunks", "--num-chunks must be <= 2147483647 (int32)"),
    ("train.dqn", "--eval-episodes", "--eval-episodes must be <= 2147483647 (int32)"),
    ("train.mdqn", "--num-servers", "--num-servers must be <= 2147483647 (int32)"),
    ("train.mdqn", "--buffer-capacity", "--buffer-capacity must be <= 2147483647 (int32)"),
    ("train.mdqn", "--learning-starts", "--learning-starts must be <= 2147483647 (int32)"),
    ("train.damd", "--rounds", "--rounds must be <= 2147483647 (int32)"),
    ("train.damd", "--dqn-num-envs", "--dqn-num-envs must be <= 2147483647 (int32)"),
    ("train.damd", "--mdqn-num-envs", "--mdqn-num-envs must be <= 2147483647 (int32)"),
    ("train.damd", "--mdqn-target-every", "--mdqn-target-every must be <= 2147483647"),
    ("train.damd", "--eval-episodes", "--eval-episodes must be <= 2147483647 (int32)"),
    ("train.sweep", "--num-envs", "--num-envs must be <= 2147483647 (int32)"),
    ("train.sweep", "--eps-decay-steps", "--eps-decay-steps must be <= 2147483647 (int32)"),
    ("eval.compare", "--num-tasks", "--num-tasks must be <= 1073741822"),
    ("eval.compare", "--num-servers", "--num-servers must be <= 2147483647 (int32)"),
    ("eval.compare", "--queue-capacity", "--queue-capacity must be <= 2147483647 (int32)"),
    ("eval.compare", "--episodes", "--episodes must be <= 2147483647 (int32)"),
    ("train.sweep", "--seeds", "--seeds must be <= 2147483647 (int32)"),
    ("eval.bench", "--batch-sizes", "argument --batch-sizes: must be <= 2147483647 (int32)"),
    ("eval.bench", "--repeats", "--repeats must be <= 2147483647 (int32)"),
    ("eval.bench", "--ref-episodes", "--ref-episodes must be <= 2147483647 (int32)"),
    ("eval.bench", "--views-batch", "--views-batch must be <= 2147483647 (int32)"),
    ("eval.bench_train", "--num-envs", "argument --num-envs: must be <= 2147483647 (int32)"),
    ("eval.bench_train", "--members", "argument --members: must be <= 2147483647 (int32)"),
    ("eval.bench_train", "--repeats", "--repeats must be <= 2147483647 (int32)"),
    ("eval.bench_train", "--steps-per-chunk", "--steps-per-chunk must be <= 2147483647 (int32)"),
    ("eval.bench_train", "--num-tasks", "--num-tasks must be <= 1073741822"),
    ("eval.bench_train", "--num-servers", "--num-servers must be <= 2147483647 (int32)"),
    ("eval.bench_train", "--batch-size", "--batch-size must be <= 2147483647 (int32)"),
    ("eval.bench_train", "--buffer-capacity", "--buffer-capacity must be <= 2147483647 (int32)"),
    ("envs.convert", "--jobs", "argument --jobs: must be <= 1073741822 (each job holds a task"),
    ("envs.convert", "--num-servers", "argument --num-servers: must be <= 2147483647 (int32)"),
]
# Every CLI's --seed: [0, 2**32 - 1] (damdjax.envs.config.SEED_MAX; PRNGKey keeps 32 bits).
SEED_CLIS = ["train.dqn", "train.mdqn", "train.damd", "train.sweep", "eval.compare",
             "eval.bench", "envs.convert"]
HUGE_SEED = str(10**30)
# Values within int32 that overflow a counter over the run or exceed memory.
RUNS = [
    ("train.dqn", ["--num-chunks", "1000000"], "= 12800000000 overflow the int32 counters"),
    ("train.dqn", ["--num-envs", "100000000", "--buffer-capacity", "100000000"],
     "--num-envs 100000000 env steps = 200000000000 overflow the int32 counters"),
    ("train.dqn", ["--steps-per-chunk", "1000", "--updates-per-step", "100000"],
     "--updates-per-step 100000 gradient updates = 4000000000 overflow"),
    ("train.dqn", ["--buffer-capacity", "2000000000"],
     "the replay buffer (--buffer-capacity 2000000000"),
    ("train.mdqn", ["--num-tasks", "1000000000"], "at --num-tasks 1000000000"),
    ("train.damd", ["--rounds", "100000"], "--rounds 100000 x (--dqn-num-chunks 40"),
    ("train.damd", ["--mdqn-buffer-capacity", "2000000000"],
     "the replay buffer (--mdqn-buffer-capacity 2000000000"),
    ("train.sweep", ["--seeds", "100000", "--num-envs", "20000"],
     "100000 members (--seeds 100000 x 1 --grid points) x the vmapped env states"),
    ("eval.compare", ["--episodes", "2000000000"], "the evaluation batches (--episodes 2000000000"),
    ("train.sweep", ["--seed", "4294967295", "--seeds", "2"],
     "--seed 4294967295 + --seeds 2 - 1 = 4294967296, the last member's seed, must be <= "
     "4294967295 (PRNGKey keeps 32 bits)"),
    ("train.dqn", ["--seed", "-1"], "--seed must be >= 0, got -1"),
    ("eval.bench", ["--batch-sizes", "8,2000000000"],
     "the batch of --batch-sizes 2000000000 (instances and final states) needs an estimated"),
    ("eval.bench", ["--views-batch", "2000000000"],
     "the views' batch, --views-batch 2000000000 (instances and final states) needs an "
     "estimated"),
    ("eval.bench", ["--ref-episodes", "2000000000"],
     "the reference's instances (--ref-episodes 2000000000) needs an estimated"),
    ("eval.bench_train", ["--num-envs", "100000000"],
     "(--repeats 3 + 1 warm-up) chunks x --steps-per-chunk 50 x --num-envs 100000000 env steps "
     "= 20000000000 overflow the int32 counters"),
    ("eval.bench_train", ["--repeats", "1000000", "--steps-per-chunk", "1000", "--num-envs", "1"],
     "x 4 gradient updates per step = 4000004000 overflow the int32 counters"),
    ("eval.bench_train", ["--buffer-capacity", "2000000000"],
     "the replay buffer (--buffer-capacity 2000000000"),
    ("eval.bench_train", ["--sweep", "--members", "100000"],
     "100000 members (--members 100000) x the replay buffer (--buffer-capacity 100000"),
]
# Float values beyond float32 (the device's type): refused, named, in one line.
FLOATS = [
    ("train.dqn", ["--lr", "1e308"], "--lr must be at most 3.40282e+38 in magnitude (float32), "
                                     "got 1e+308"),
    ("train.dqn", ["--density", "1e308"], "--density must be at most 3.40282e+38 in magnitude"),
    ("train.mdqn", ["--slack", "1e308"], "--slack must be at most 3.40282e+38 in magnitude"),
    ("train.dqn", ["--tau", "1e-300"], "--tau must be 0 or at least 1.17549e-38 in magnitude "
                                       "(float32), got 1e-300"),
    ("train.damd", ["--dqn-lr", "1e308"], "--dqn-lr must be at most 3.40282e+38 in magnitude"),
    ("train.sweep", ["--grid", "lr=1e-4,1e308"], "--grid lr=1e+308: lr must be at most "
                                                 "3.40282e+38 in magnitude (float32)"),
    ("eval.compare", ["--density", "1e308"], "--density must be at most 3.40282e+38 in magnitude"),
    ("eval.compare", ["--slack", "1e-300"], "--slack must be 0 or at least 1.17549e-38"),
]


def _fail_main(module, argv, capsys, monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise AssertionError("compiled despite a bad flag")

    mod = importlib.import_module(module if module.startswith("damdjax.") else f"damdjax.{module}")
    monkeypatch.setattr(jax, "jit", boom)
    if module.startswith("train."):
        argv = [*argv, "--run-dir", str(tmp_path)]
    if module == "envs.convert":
        argv = ["wfcommons", "tests/data/wfcommons/helloworld-forkjoin-10-chameleon.json",
                "--out", str(tmp_path / "o.json"), *argv]
    with pytest.raises(SystemExit) as exc:
        mod.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2, err
    assert "Traceback" not in "\n".join(err)
    prog = f"python -m {module}" + (" wfcommons" if module == "envs.convert" else "")
    assert err[-1].startswith(f"{prog}: error: ")
    assert not any(tmp_path.iterdir()), "a run directory was made before the error"
    return err[-1]


@pytest.mark.parametrize("module,flag,message", FLAGS, ids=[f"{m}{f}" for m, f, _ in FLAGS])
def test_huge_integer_flag_is_a_one_line_error(module, flag, message, capsys, monkeypatch,
                                              tmp_path):
    line = _fail_main(module, [flag, HUGE], capsys, monkeypatch, tmp_path)
    assert message in line and HUGE in line


@pytest.mark.parametrize("module", SEED_CLIS)
def test_huge_seed_is_a_one_line_error(module, capsys, monkeypatch, tmp_path):
    line = _fail_main(module, ["--seed", HUGE_SEED], capsys, monkeypatch, tmp_path)
    assert "--seed" in line and "must be <= 4294967295" in line and HUGE_SEED in line


@pytest.mark.parametrize("module,argv,message", RUNS, ids=[f"{m}:{a[0]}" for m, a, _ in RUNS])
def test_counters_and_memory_are_checked_before_allocation(module, argv, message, capsys,
                                                           monkeypatch, tmp_path):
    line = _fail_main(module, argv, capsys, monkeypatch, tmp_path)
    assert message in line


@pytest.mark.parametrize("module,argv,message", FLOATS,
                         ids=[f"{m}{' '.join(a)}" for m, a, _ in FLOATS])
def test_float_beyond_float32_is_a_one_line_error(module, argv, message, capsys, monkeypatch,
                                                  tmp_path):
    line = _fail_main(module, argv, capsys, monkeypatch, tmp_path)
    assert message in line


def test_memory_check_names_the_largest_part():
    with pytest.raises(ValueError, match=r"^b \(--x\) needs an estimated 2\.0 KiB \(the run "
                                         r"2\.0 KiB in all\), more than the 1\.0 KiB of test$"):
        memory.check_memory([("a", 10), ("b (--x)", 2038)], limit=(1024, "test"))
    memory.check_memory([("a", 10), ("b", 1014)], limit=(1024, "test"))


def _bytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("trainer,extra", [("dqn", {}), ("mdqn", {}),
                                           ("dqn", {"targets": "rollout", "eft_feature": True})])
def test_estimate_matches_the_runner_init_allocates(trainer, extra):
    """The env-state and replay estimates against `jax.eval_shape` of the trainer's own
    `init` on a small config: equal to the byte (the runner's scalars and key aside, which
    the estimate leaves out; the networks are a part of their own)."""
    mod = importlib.import_module(f"damdjax.train.{trainer}")
    cls = mod.DQNConfig if trainer == "dqn" else mod.MDQNConfig
    cfg = cls.from_values(num_envs=3, num_tasks=7, num_servers=2, queue_capacity=5, buffer_capacity=11,
              batch_size=4, hidden=(8,), **extra)
    out = jax.eval_shape(mod.make_train(cfg).init, jax.random.PRNGKey(0), Hyper.from_config(cfg))
    buffer = out.buffer if trainer == "dqn" else out.pools
    rest = out.replace(params=None, target_params=None, opt_state=None, key=None,
                       env_steps=None, updates=None, chunk=None,
                       **({"buffer": None} if trainer == "dqn" else {"pools": None}))
    (env_what, env_b), (buf_what, buf_b), *_ = cfg.memory_parts()
    assert buf_b == _bytes(buffer)
    assert env_b == _bytes(rest)
    assert "--num-envs 3" in env_what and "--buffer-capacity 11" in buf_what


def test_evaluation_estimate_matches_a_played_batch():
    """`evaluation_bytes` of one method: the instances and the final states of `play_batch`
    (eval_shape), to the byte."""
    config = EnvConfig(n_max=9, m_max=3, p_max=2, queue_capacity=4, j_max=5)
    episodes = 6
    keys = jax.random.split(jax.random.PRNGKey(0), episodes)
    insts = jax.eval_shape(jax.vmap(lambda k: generate(k, config, EnvParams(
        num_tasks=9, num_servers=3))), keys)
    states = jax.eval_shape(lambda k, i: play_batch(pair_from_name("LS"), k, i, 4), keys, insts)
    assert memory.evaluation_bytes(config, episodes, 1) == _bytes(insts) + _bytes(states)


# ---------------------------------------------------------------------------
# Instance files: extreme values, the shift to a first arrival of 0, precision
# ---------------------------------------------------------------------------

import copy  # noqa: E402
import decimal  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

from damdjax.envs.instance import instance_from_spec  # noqa: E402
from damdjax.envs.instance_format import InstanceError, parse_instance  # noqa: E402
from damdjax.envs.instance_io import load_instance  # noqa: E402

EXAMPLE = "examples/worked_example.json"
# (path in the file, value, the message's start or None where the value is valid)
FIELDS = [
    (("servers", 0, "cpu"), 1e308, "job 0, task 0: processing time work / cpu = 2.0 / 1e+308"),
    (("servers", 0, "cpu"), 1e-308, "job 0, task 0: processing time work / cpu = 2.0 / 1e-308"),
    (("servers", 0, "bw"), 1e308, "job 0, task 0: upload time size / bw = 2.0 / 1e+308"),
    (("servers", 0, "bw"), 1e-308, "job 0, task 0: upload time size / bw = 2.0 / 1e-308"),
    (("servers", 0, "mem"), 1e308, None),
    (("servers", 0, "mem"), 1e-308, None),            # server 1 holds every task
    (("servers", 0, "k"), 1e308, "server 0: k 1e+308 puts the instance's serial horizon"),
    (("servers", 0, "k"), 1e-308, "server 0: k 1e-308 is outside float64's range"),
    (("jobs", 0, "arrival"), 1e308, "job 1: arrives at 1.0, before job 0"),
    (("jobs", 0, "arrival"), 1e-308, None),
    (("jobs", 1, "arrival"), 1e308, "job 1: arrival 1e+308 puts the instance's serial horizon"),
    (("jobs", 1, "arrival"), 1e-308, None),
    (("jobs", 0, "tasks", 1, "size"), 1e308, "job 0, task 1: size 1e+308 exceeds every server"),
    (("jobs", 0, "tasks", 1, "size"), 1e-308, "job 0, task 1: upload time size / bw = 1e-308"),
    (("jobs", 0, "tasks", 1, "work"), 1e308, "job 0, task 1: longest processing time 1e+308"),
    (("jobs", 0, "tasks", 1, "work"), 1e-308, "job 0, task 1: processing time work / cpu = 1e-308"),
    (("jobs", 0, "tasks", 1, "deadline"), 1e308, "job 0, task 1's deadline 1e+308 spans too much"),
    (("jobs", 0, "tasks", 1, "deadline"), 1e-308, None),
]


def _with(obj, path, value):
    obj = copy.deepcopy(obj)
    node = obj
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return obj


@pytest.mark.parametrize("path,value,message", FIELDS,
                         ids=[f"{'.'.join(map(str, p))}={v:g}" for p, v, _ in FIELDS])
def test_extreme_instance_value_is_refused_in_one_line_or_stays_finite(path, value, message):
    obj = _with(json.load(open(EXAMPLE)), path, value)
    if message is None:
        spec = parse_instance(obj)
        assert spec.jobs[0].arrival == 0.0
        return
    with pytest.raises(InstanceError) as exc:
        parse_instance(obj)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def _offset_file(tmp_path, offset: str) -> str:
    """The worked example with `offset` added to every arrival and deadline, written
    exactly (decimal text)."""
    d = json.load(open(EXAMPLE), parse_float=decimal.Decimal)
    o = decimal.Decimal(offset)
    for job in d["jobs"]:
        job["arrival"] = decimal.Decimal(job["arrival"]) + o
        for task in job["tasks"]:
            task["deadline"] = decimal.Decimal(task["deadline"]) + o
    text = re.sub(r'"(-?[0-9.E+-]+)"', r"\1", json.dumps(d, default=str))  # decimals bare
    path = tmp_path / f"offset-{offset}.json"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("offset", ["1.7E15", "1E17"])
def test_a_large_common_offset_is_shifted_away_exactly(offset, tmp_path):
    """The worked example offset by 1.7e15 or 1e17 is the same instance (so every
    method's result is the same), its offset kept for reporting."""
    base = load_instance(EXAMPLE)
    spec = load_instance(_offset_file(tmp_path, offset))
    assert spec == base and spec.jobs[1].arrival == 1.0
    assert spec.time_offset == float(offset)


def test_a_span_that_loses_precision_is_refused(tmp_path):
    obj = _with(json.load(open(EXAMPLE)), ("jobs", 1, "arrival"), 1e14)
    for task in obj["jobs"][1]["tasks"]:
        task["deadline"] = 1e14 + 4
    with pytest.raises(InstanceError, match=r"^job 1, task 0's deadline 1e\+14 spans too much "
                                            r"for float64: its spacing there"):
        parse_instance(obj)
    # float32 (the JAX env's default) refuses far smaller spans; float64 keeps them
    obj = _with(json.load(open(EXAMPLE)), ("jobs", 1, "arrival"), 1e5)
    obj["jobs"][1]["tasks"][0]["deadline"] = 1e5 + 4
    spec = parse_instance(obj)
    with pytest.raises(InstanceError, match=r"spans too much for float32"):
        instance_from_spec(spec, np.float32)


def test_compare_output_has_no_inf_or_nan_on_extreme_valid_values(tmp_path, capsys):
    """The values an instance may take at 1e308 / 1e-308 (a memory, a first arrival, a
    deadline) give finite numbers in eval.compare's table and JSON."""
    from damdjax.eval import compare
    obj = json.load(open(EXAMPLE))
    for path, value in ((("servers", 0, "mem"), 1e308), (("jobs", 0, "arrival"), 1e-308),
                        (("jobs", 0, "tasks", 1, "deadline"), 1e-308)):
        obj = _with(obj, path, value)
    src, out = tmp_path / "extreme.json", tmp_path / "out.json"
    src.write_text(json.dumps(obj))
    compare.main(["--instance", str(src), "--methods", "LS", "--out", str(out)])
    text = (capsys.readouterr().out + out.read_text()).replace(str(tmp_path), "").lower()
    assert "nan" not in text and "inf" not in text


def test_convert_refuses_jobs_whose_tasks_exceed_the_task_slots(tmp_path, capsys):
    """--jobs within its own limit, but --jobs x the fewest tasks of a job is more than an
    instance may hold: one line before any job is drawn."""
    from damdjax.envs import convert
    with pytest.raises(SystemExit) as exc:
        convert.main(["wfcommons", "tests/data/wfcommons/helloworld-forkjoin-10-chameleon.json",
                      "--out", str(tmp_path / "o.json"), "--jobs", "200000000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert err[-1] == ("error: --jobs 200000000 x at least 10 tasks per job = 2000000000 tasks, "
                       "more than 1073741822 (the step cap 2 N + 2 must fit int32)")
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("field,value,message", [
    ("density", 1e308, "density must be at most 3.40282e+38 in magnitude (float32), got 1e+308"),
    ("cpu_high", 1e39, "cpu_high must be at most 3.40282e+38 in magnitude (float32), got 1e+39"),
    ("tau", 1e-300, "tau must be 0 or at least 1.17549e-38 in magnitude (float32), got 1e-300"),
])
def test_check_params_refuses_floats_beyond_float32(field, value, message):
    """`check_params` (eval.bench, eval.bench_train, check_hyper): a knob that would be inf
    or flush to 0 in the device's float type is refused, named, with the limit."""
    from damdjax.envs.config import check_params
    with pytest.raises(ValueError) as exc:
        check_params(EnvConfig(), EnvParams(**{field: value}))
    assert str(exc.value) == message
