"""Tests of the DQN dispatcher trainer (train.dqn): flags, a tiny run, resume, credit, masking."""
from __future__ import annotations

import json
import os

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.env import EdgeEnv
from envs.state import done_time
from train import dqn

TINY = ["--num-envs", "8", "--num-tasks", "12", "--num-servers", "3", "--steps-per-chunk", "10",
        "--buffer-capacity", "512", "--batch-size", "16", "--learning-starts", "16",
        "--eps-decay-steps", "200", "--hidden", "16,16", "--target-every", "5", "--seed", "3"]


@pytest.mark.parametrize("flags", [
    ["--num-envs", "0"], ["--lr", "-0.1"], ["--scheduler", "lifo"], ["--gamma", "1.5"],
    ["--num-chunks", "0"], ["--batch-size", "-3"], ["--hidden", "a,b"],
    ["--num-servers", "0"], ["--reward", "nope"]])
def test_bad_flags_exit_2_with_one_line(flags, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        dqn.main(["--run-dir", str(tmp_path), "--name", "x", *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m train.dqn: error:")
    assert "Traceback" not in "\n".join(err)
    assert not os.path.exists(tmp_path / "x")


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        dqn.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for action in dqn.build_parser()._actions:
        for opt in action.option_strings:
            assert opt in out
        assert action.help


def _state_dict(path):
    with open(path, "rb") as f:
        return flax.serialization.msgpack_restore(f.read())


def test_tiny_run_resume_and_refusal(tmp_path, capsys):
    rd = str(tmp_path)
    assert dqn.main(["--run-dir", rd, "--name", "a", "--num-chunks", "2", "--eval-episodes", "4",
                     *TINY]) == 0
    a = tmp_path / "a"
    for name in ("config.json", "metrics.jsonl", dqn.CHECKPOINT, "eval.json"):
        assert (a / name).exists(), name
    rows = [json.loads(line) for line in open(a / "metrics.jsonl")]
    assert [r["chunk"] for r in rows] == [1, 2]
    assert all(r["invalid_dispatch"] == 0 for r in rows)  # masking: agent never infeasible
    assert rows[-1]["updates"] > 0 and np.isfinite(rows[-1]["loss"])
    ev = json.load(open(a / "eval.json"))
    assert set(ev["methods"]) == {"dqn", "nearest", "random", "least_load"}
    assert set(ev["dqn_minus"]) == {"nearest", "random", "least_load"}

    # A second run into the same directory refuses.
    with pytest.raises(SystemExit) as exc:
        dqn.main(["--run-dir", rd, "--name", "a", "--num-chunks", "2", *TINY])
    assert exc.value.code == 2
    capsys.readouterr()

    # 1 chunk + resume for 1 more == 2 chunks, bitwise (the whole runner state).
    assert dqn.main(["--run-dir", rd, "--name", "b", "--num-chunks", "1", "--eval-episodes", "0",
                     *TINY]) == 0
    assert dqn.main(["--run-dir", rd, "--name", "b", "--resume", "--num-chunks", "2",
                     "--eval-episodes", "0"]) == 0
    sa, sb = _state_dict(a / dqn.CHECKPOINT), _state_dict(tmp_path / "b" / dqn.CHECKPOINT)
    la, ta = jax.tree_util.tree_flatten(sa)
    lb, tb = jax.tree_util.tree_flatten(sb)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    rows_b = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["chunk"] for r in rows_b] == [1, 2]


def test_reward_credit_and_masking():
    """Every rewarded buffer entry holds exp(-T_i / tau) of the task it dispatched."""
    cfg = dqn.DQNConfig(num_envs=6, num_tasks=15, num_servers=3, buffer_capacity=2048,
                        hidden=(8,), seed=5)
    env = EdgeEnv(cfg.env_config())
    params = cfg.env_params()
    rs = dqn.init_runner(cfg, env, params)
    step = jax.jit(dqn.make_env_step(cfg, env, params))
    key = jax.random.PRNGKey(11)
    slot_task = {}  # buffer slot -> (env, task)
    num_steps = 20  # shorter than any episode of 15 tasks (>= 30 steps): no reset
    for t in range(num_steps):
        key, k = jax.random.split(key)
        needed = np.asarray(rs.obs.dispatch_needed)
        writes = int(rs.buffer.writes)
        rs, info, _ = step(rs, k, 0.5)
        assert not np.any(np.asarray(info["invalid_dispatch"]))
        task = np.asarray(info["dispatched_task"])
        rank = 0
        for e in range(cfg.num_envs):
            if needed[e]:
                assert task[e] >= 0
                slot_task[(writes + rank) % cfg.buffer_capacity] = (e, int(task[e]))
                rank += 1
    assert np.all(np.asarray(rs.env_state.step) == num_steps)  # no episode ended or reset
    assert int(rs.buffer.writes) < cfg.buffer_capacity
    final = rs.env_state
    done_t = np.asarray(jax.vmap(done_time)(final))
    arrival = np.asarray(final.instance.arrival)
    has_reward = np.asarray(rs.buffer.has_reward)
    reward = np.asarray(rs.buffer.reward)
    assert has_reward.any()
    for slot in np.flatnonzero(has_reward):
        e, i = slot_task[int(slot)]
        expect = np.exp(-(done_t[e, i] - arrival[e, i]) / cfg.tau)
        np.testing.assert_allclose(reward[slot], expect, rtol=1e-6)
    # And every completed dispatched task got its reward.
    now = np.asarray(final.time)
    for slot, (e, i) in slot_task.items():
        assert has_reward[slot] == (done_t[e, i] <= now[e])
