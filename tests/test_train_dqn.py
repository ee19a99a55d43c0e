"""Tests of the DQN dispatcher trainer (train.dqn): flags, a tiny run, resume, credit, masking."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from damdjax.checkpoint import read_state_dict
from damdjax.envs.env import EdgeEnv
from damdjax.envs.state import done_time
from damdjax.train import dqn

TINY = ["--num-envs", "8", "--num-tasks", "12", "--num-servers", "3", "--steps-per-chunk", "10",
        "--buffer-capacity", "512", "--batch-size", "16", "--learning-starts", "16",
        "--eps-decay-steps", "200", "--hidden", "16,16", "--target-every", "5", "--seed", "3",
        "--slack", "1.5"]


@pytest.mark.parametrize("flags", [
    ["--num-envs", "0"], ["--lr", "-0.1"], ["--scheduler", "lifo"], ["--gamma", "1.5"],
    ["--num-chunks", "0"], ["--batch-size", "-3"], ["--hidden", "a,b"],
    ["--num-servers", "0"], ["--reward", "nope"], ["--slack", "0"]])
def test_bad_flags_exit_2_with_one_line(flags, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        dqn.main(["--run-dir", str(tmp_path), "--name", "x", *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m train.dqn: error:")
    assert "Traceback" not in "\n".join(err)
    assert not os.path.exists(tmp_path / "x")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-chunk tiny run with a 4-episode evaluation: runs/a."""
    rd = tmp_path_factory.mktemp("runs")
    assert dqn.main(["--run-dir", str(rd), "--name", "a", "--num-chunks", "2",
                     "--eval-episodes", "4", *TINY]) == 0
    return rd


def test_tiny_run_resume_and_refusal(tiny_run, tmp_path, capsys, assert_same_checkpoint):
    rd = str(tmp_path)
    a = tiny_run / "a"
    for name in ("config.json", "metrics.jsonl", dqn.CHECKPOINT, "eval.json"):
        assert (a / name).exists(), name
    rows = [json.loads(line) for line in open(a / "metrics.jsonl")]
    assert [r["chunk"] for r in rows] == [1, 2]
    assert all(r["invalid_dispatch"] == 0 for r in rows)  # masking: agent never infeasible
    assert rows[-1]["updates"] > 0 and np.isfinite(rows[-1]["loss"])
    ev = json.load(open(a / "eval.json"))
    assert set(ev["methods"]) == {"dqn", "nearest", "random", "least_load", "eft", "bound"}
    assert set(ev["differences"]) == {"nearest", "random", "least_load", "eft", "bound"}

    # A second run into the same directory refuses.
    with pytest.raises(SystemExit) as exc:
        dqn.main(["--run-dir", str(tiny_run), "--name", "a", "--num-chunks", "2", *TINY])
    assert exc.value.code == 2
    # --resume takes the stored config: other flags are refused, not ignored.
    with pytest.raises(SystemExit) as exc:
        dqn.main(["--run-dir", str(tiny_run), "--name", "a", "--resume", "--lr", "0.1"])
    assert exc.value.code == 2
    assert "--lr" in capsys.readouterr().err
    # A stored config lacking a field (another version's run) is refused, not defaulted.
    shutil.copytree(a, tmp_path / "old")
    cfg = json.load(open(tmp_path / "old" / "config.json"))
    del cfg["env"]["slack"]
    json.dump(cfg, open(tmp_path / "old" / "config.json", "w"))
    with pytest.raises(SystemExit) as exc:
        dqn.main(["--run-dir", rd, "--name", "old", "--resume"])
    assert exc.value.code == 2
    assert "env has missing fields ['slack']" in capsys.readouterr().err

    # 1 chunk + resume for 1 more == 2 chunks, bitwise (the whole runner state).
    assert dqn.main(["--run-dir", rd, "--name", "b", "--num-chunks", "1", "--eval-episodes", "0",
                     *TINY]) == 0
    assert dqn.main(["--run-dir", rd, "--name", "b", "--resume", "--num-chunks", "2",
                     "--eval-episodes", "0"]) == 0
    assert_same_checkpoint(a / dqn.CHECKPOINT, tmp_path / "b" / dqn.CHECKPOINT)
    rows_b = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["chunk"] for r in rows_b] == [1, 2]


def test_reward_credit_and_masking():
    """Every rewarded buffer entry holds exp(-T_i / tau) of the task it dispatched."""
    cfg = dqn.DQNConfig.from_values(num_envs=6, num_tasks=15, num_servers=3, buffer_capacity=2048,
                        hidden=(8,), seed=5)
    env = EdgeEnv(cfg.env_config)
    params = cfg.env
    rs = dqn.init_runner(cfg, env, params)
    step = jax.jit(dqn.make_env_step(cfg, env, params))
    part_of = jax.jit(lambda st: dqn.agents_part(jax.vmap(env.observe, (0, None))(st, params)))
    key = jax.random.PRNGKey(11)
    slot_task = {}  # buffer slot -> (env, task)
    num_steps = 20  # shorter than any episode of 15 tasks (>= 30 steps): no reset
    for t in range(num_steps):
        key, k = jax.random.split(key)
        needed = np.asarray(rs.obs.dispatch_needed)
        writes = int(rs.buffer.writes)
        rs, info, _ = step(rs, k, 0.5)
        assert not np.any(np.asarray(info["invalid_dispatch"]))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                     rs.obs, part_of(rs.env_state))  # the dispatcher's part, carried
        assert rs.obs.slots is None and rs.obs.own is None
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
        expect = np.exp(-(done_t[e, i] - arrival[e, i]) / cfg.env.tau)
        np.testing.assert_allclose(reward[slot], expect, rtol=1e-6)
    # And every completed dispatched task got its reward.
    now = np.asarray(final.time)
    for slot, (e, i) in slot_task.items():
        assert has_reward[slot] == (done_t[e, i] <= now[e])
    # Each entry is linked to its env's next decision (n-step returns), the last one to none.
    succ = np.asarray(rs.buffer.succ)
    for slot, (e, _) in slot_task.items():
        later = [s for s, (e2, _) in slot_task.items() if e2 == e and s > slot]
        assert succ[slot] == (min(later) if later else -1)
        if later:
            assert rs.buffer.succ_stamp[slot] == min(later)    # no wrap: stamp == slot


def test_compare_evaluates_the_checkpoint_like_training_did(tiny_run, tmp_path):
    """eval.compare --dispatcher-checkpoint (policy file, the run's setting) reproduces the
    run's own end-of-training evaluation: same held-out instances, same greedy dispatcher."""
    from damdjax.eval import compare
    ev = json.load(open(tiny_run / "a" / "eval.json"))
    out = tmp_path / "cmp.json"
    res = compare.main(["--dispatcher-checkpoint", str(tiny_run / "a"), "--seed", "3",
                        "--episodes", "4", "--out", str(out)])
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"DQN", "NF", "RF", "LF", "EF", "bound"}
    assert data["setting"]["num_tasks"] == 12 and data["setting"]["num_servers"] == 3
    assert data["setting"]["slack"] == 1.5          # the run's, not the default
    for mine, theirs in (("DQN", "dqn"), ("NF", "nearest"), ("RF", "random"),
                         ("LF", "least_load"), ("EF", "eft"), ("bound", "bound")):
        for k in ("avg_response_time", "deadline_miss_rate"):
            assert data["methods"][mine][k] == pytest.approx(
                ev["methods"][theirs][k]["mean"], rel=1e-6), (mine, k)
    assert set(res["paired"]["DQN"]["differences"]) == {"NF", "RF", "LF", "EF", "bound"}
    # A damaged policy file is a one-line error naming it.
    bad = tmp_path / "dispatcher.msgpack"
    bad.write_bytes(b"not msgpack at all")
    with pytest.raises(SystemExit) as exc:
        compare.main(["--dispatcher-checkpoint", str(bad)])
    assert exc.value.code == 2


def _cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "train.dqn", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_ctrl_c_leaves_a_checkpoint_that_resumes_exactly_in_a_new_process(
        tmp_path, assert_same_checkpoint):
    """SIGINT mid-run: exit 130, a usable checkpoint; a second process resumes it and ends
    bitwise where a straight run in this process ends."""
    rd = str(tmp_path)
    proc = _cli(["--run-dir", rd, "--name", "c", "--num-chunks", "100000",
                 "--eval-episodes", "0", *TINY])
    log = tmp_path / "c" / "metrics.jsonl"
    deadline = time.time() + 240
    while not (log.exists() and log.read_text().strip()):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    done = int(read_state_dict(tmp_path / "c" / dqn.CHECKPOINT)["chunk"])
    assert done >= 1
    target = done + 1
    resumed = _cli(["--run-dir", rd, "--name", "c", "--resume", "--num-chunks", str(target)])
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, out
    rows = [json.loads(line) for line in open(log)]
    assert [r["chunk"] for r in rows] == list(range(1, target + 1))

    assert dqn.main(["--run-dir", rd, "--name", "s", "--num-chunks", str(target),
                     "--eval-episodes", "0", *TINY]) == 0
    assert_same_checkpoint(tmp_path / "c" / dqn.CHECKPOINT, tmp_path / "s" / dqn.CHECKPOINT)


def test_sojourn_reward_is_the_team_reward_between_dispatches():
    """--reward sojourn: each entry's reward is the sum of the env's team rewards from its
    dispatch step up to (not including) the env's next dispatch step, or to the episode end
    (terminal, except where the step cap truncated the episode: forced on env 0 at step
    20, that entry bootstraps)."""
    cfg = dqn.DQNConfig.from_values(num_envs=4, num_tasks=6, num_servers=2, buffer_capacity=4096,
                        hidden=(8,), seed=2, reward="sojourn")
    env = EdgeEnv(cfg.env_config)
    params = cfg.env
    rs = dqn.init_runner(cfg, env, params)
    step = jax.jit(dqn.make_env_step(cfg, env, params))
    key = jax.random.PRNGKey(4)
    dispatches = {e: [] for e in range(cfg.num_envs)}   # (slot, step) per env, in order
    team = {e: [] for e in range(cfg.num_envs)}         # (step, reward, done)
    truncated = set()                                   # (env, step) the cap ended
    cap = 2 * cfg.env_config.n_max + 2
    for t in range(60):
        key, k = jax.random.split(key)
        if t == 20:  # env 0's next step reaches the step cap
            st = rs.env_state
            rs = rs.replace(env_state=st.replace(step=st.step.at[0].set(cap - 1)))
        needed = np.asarray(rs.obs.dispatch_needed)
        writes = int(rs.buffer.writes)
        rs, info, _ = step(rs, k, 0.5)
        rank = 0
        for e in range(cfg.num_envs):
            if needed[e]:
                dispatches[e].append(((writes + rank) % cfg.buffer_capacity, t))
                rank += 1
            team[e].append((t, float(info["team_reward"][e]), bool(info["done"][e])))
            if bool(info["truncated"][e]):
                truncated.add((e, t))
    reward = np.asarray(rs.buffer.reward)
    has = np.asarray(rs.buffer.has_reward) & np.asarray(rs.buffer.has_next)
    terminal = np.asarray(rs.buffer.terminal)
    assert truncated == {(0, 20)}
    checked = capped_checked = 0
    for e in range(cfg.num_envs):
        ends = [t for t, _, d in team[e] if d]
        for j, (slot, t0) in enumerate(dispatches[e]):
            end_ep = min([t for t in ends if t >= t0], default=None)
            nxt = dispatches[e][j + 1][1] if j + 1 < len(dispatches[e]) else None
            if end_ep is not None and (nxt is None or nxt > end_ep):
                stop = end_ep + 1        # through the episode's last step
                assert bool(terminal[slot]) == ((e, end_ep) not in truncated)
                capped_checked += (e, end_ep) in truncated
            elif nxt is not None:
                stop = nxt
                assert not terminal[slot]
            else:
                assert not has[slot]     # still open
                continue
            expect = sum(r for t, r, _ in team[e] if t0 <= t < stop)
            assert has[slot]
            np.testing.assert_allclose(reward[slot], expect, rtol=1e-5, atol=1e-5)
            checked += 1
    assert checked > 20 and capped_checked == 1 and any(d for e in team for _, _, d in team[e])


def test_tiny_training_beats_random_dispatch(tmp_path):
    """A small run (well under a minute on a 2-core CPU) learns a dispatcher that beats
    Random dispatch on held-out instances: paired, with a 95% CI of the difference below 0."""
    t0 = time.perf_counter()
    assert dqn.main(["--run-dir", str(tmp_path), "--name", "learn", "--num-envs", "64",
                     "--num-tasks", "20", "--num-servers", "3", "--steps-per-chunk", "50",
                     "--num-chunks", "6", "--buffer-capacity", "20000", "--batch-size", "64",
                     "--learning-starts", "500", "--eps-decay-steps", "5000", "--hidden", "32,32",
                     "--eval-episodes", "100", "--seed", "0"]) == 0
    ev = json.load(open(tmp_path / "learn" / "eval.json"))
    diff = ev["differences"]["random"]["avg_response_time"]
    print(f"dqn - random: {diff}, {time.perf_counter() - t0:.1f} s")
    assert diff["mean"] < 0 and diff["excludes_zero"], diff
