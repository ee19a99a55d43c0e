"""Out-of-range numbers: one-line errors before anything is allocated or compiled (issue 14).

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
from envs.config import EnvConfig
from envs.generator import generate
from envs.config import EnvParams

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
]
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
]


def _fail_main(module, argv, capsys, monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise AssertionError("compiled despite a bad flag")

    monkeypatch.setattr(jax, "jit", boom)
    mod = importlib.import_module(module)
    if module != "eval.compare":
        argv = [*argv, "--run-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        mod.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2, err
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"python -m {module}: error: ")
    assert not any(tmp_path.iterdir()), "a run directory was made before the error"
    return err[-1]


@pytest.mark.parametrize("module,flag,message", FLAGS, ids=[f"{m}{f}" for m, f, _ in FLAGS])
def test_huge_integer_flag_is_a_one_line_error(module, flag, message, capsys, monkeypatch,
                                              tmp_path):
    line = _fail_main(module, [flag, HUGE], capsys, monkeypatch, tmp_path)
    assert message in line and HUGE in line


@pytest.mark.parametrize("module,argv,message", RUNS, ids=[f"{m}:{a[0]}" for m, a, _ in RUNS])
def test_counters_and_memory_are_checked_before_allocation(module, argv, message, capsys,
                                                           monkeypatch, tmp_path):
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


@pytest.mark.parametrize("trainer", ["dqn", "mdqn"])
def test_estimate_matches_the_runner_init_allocates(trainer):
    """The env-state and replay estimates against `jax.eval_shape` of the trainer's own
    `init` on a small config: equal to the byte (the runner's scalars, key and network
    aside, which the estimate leaves out)."""
    mod = importlib.import_module(f"train.{trainer}")
    cls = mod.DQNConfig if trainer == "dqn" else mod.MDQNConfig
    cfg = cls(num_envs=3, num_tasks=7, num_servers=2, queue_capacity=5, buffer_capacity=11,
              batch_size=4, hidden=(8,))
    out = jax.eval_shape(mod.make_train(cfg).init, jax.random.PRNGKey(0), Hyper.from_config(cfg))
    buffer = out.buffer if trainer == "dqn" else out.pools
    rest = out.replace(params=None, target_params=None, opt_state=None, key=None,
                       env_steps=None, updates=None, chunk=None,
                       **({"buffer": None} if trainer == "dqn" else {"pools": None}))
    (env_what, env_b), (buf_what, buf_b), _ = cfg.memory_parts()
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
