"""train.mdqn: flags, per-agent pools, team reward, masks, resume (and the --help of all
three trainers)."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from damdjax.envs.env import EdgeEnv
from damdjax.train import damd, dqn, mdqn

# Under the EFT dispatcher: test_sweep's MDQN_TINY is this program (compiled once for the
# suite, through the compilation cache, tests/conftest.py).
TINY = ["--num-envs", "8", "--num-tasks", "12", "--num-servers", "3", "--steps-per-chunk", "10",
        "--buffer-capacity", "512", "--batch-size", "16", "--learning-starts", "16",
        "--eps-decay-steps", "200", "--hidden", "16,16", "--target-every", "5",
        "--dispatcher", "eft", "--seed", "3"]


@pytest.mark.parametrize("flags", [
    ["--num-envs", "0"], ["--lr", "-0.1"], ["--dispatcher", "fastest"], ["--gamma", "1.5"],
    ["--num-chunks", "0"], ["--hidden", "a"], ["--init-schedulers", "/no/such/run"],
    ["--epochs", "some"], ["--slack", "-2"]])
def test_bad_flags_exit_2_with_one_line(flags, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        mdqn.main(["--run-dir", str(tmp_path), "--name", "x", *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m train.mdqn: error:")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("module", [dqn, mdqn, damd])
def test_help_documents_every_flag(module, capsys):
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for action in module.build_parser()._actions:
        for opt in action.option_strings:
            assert opt in out
        assert action.help


def test_tiny_run_masks_and_resume(tmp_path, assert_same_checkpoint):
    rd = str(tmp_path)
    assert mdqn.main(["--run-dir", rd, "--name", "a", "--num-chunks", "2",
                      "--eval-episodes", "4", *TINY]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
    assert [r["chunk"] for r in rows] == [1, 2]
    assert all(r["invalid_picks"] == 0 for r in rows)  # masks: never an ineligible slot
    assert rows[-1]["updates"] > 0 and np.isfinite(rows[-1]["loss"])
    ev = json.load(open(tmp_path / "a" / "eval.json"))
    assert set(ev["methods"]) == {"mdqn", "fcfs", "sjf", "sdf", "cp", "llf", "bound"}
    # 1 chunk + resume for 1 more == 2 chunks, bitwise.
    assert mdqn.main(["--run-dir", rd, "--name", "b", "--num-chunks", "1",
                      "--eval-episodes", "0", *TINY]) == 0
    assert mdqn.main(["--run-dir", rd, "--name", "b", "--resume", "--num-chunks", "2",
                      "--eval-episodes", "0"]) == 0
    assert_same_checkpoint(tmp_path / "a" / "checkpoint.msgpack",
                           tmp_path / "b" / "checkpoint.msgpack")


@pytest.mark.parametrize("share,epochs", [(False, "choice"), (True, "all")])
def test_pools_hold_each_agents_own_decisions_with_the_team_reward(share, epochs):
    """Agent n's pool holds exactly its decision epochs (the steps where server n picked:
    all of them, or those with >= 2 eligible tasks), in order, with its own view and
    pick; a closed entry's reward is the team reward summed from that epoch to the
    agent's next decision epoch (or through the episode's end: terminal, except where
    the step cap truncated the episode, forced here from step 20 on an env with an open
    transition)."""
    cfg = mdqn.MDQNConfig.from_values(num_envs=3, num_tasks=8, num_servers=3, buffer_capacity=4096,
                          hidden=(8,), seed=1, share_params=share, dispatcher="nearest",
                          epochs=epochs)
    env = EdgeEnv(cfg.env_config)
    params = cfg.env
    rs = mdqn.init_runner(cfg, env, params)
    step = jax.jit(mdqn.make_env_step(cfg, env, params))
    # The runner carries the schedulers' part of the observation of its state, resets too.
    part_of = jax.jit(lambda st: mdqn.agents_part(jax.vmap(env.observe, (0, None))(st, params)))
    key = jax.random.PRNGKey(7)
    m, e = cfg.env.num_servers, cfg.num_envs
    decisions = {n: [] for n in range(m)}       # (env, step, slots view, pick) in write order
    team = np.zeros((0, e))
    dones = np.zeros((0, e), bool)
    truncs = np.zeros((0, e), bool)
    cap = 2 * cfg.env_config.n_max + 2
    capped_at = capped_env = None
    for t in range(50):
        key, k = jax.random.split(key)
        open_envs = np.flatnonzero(np.asarray(rs.prev_idx >= 0).any(axis=1))
        if capped_at is None and t >= 20 and open_envs.size:
            # the last env with an open transition: its next step reaches the step cap
            capped_at, capped_env = t, int(open_envs[-1])
            st = rs.env_state
            rs = rs.replace(env_state=st.replace(step=st.step.at[capped_env].set(cap - 1)))
        slots = np.asarray(rs.obs.slots)
        needed = np.asarray(rs.obs.pick_needed & rs.obs.server_mask)  # [E, M]
        if epochs == "choice":
            needed = needed & (np.asarray(rs.obs.pick_mask).sum(axis=-1) >= 2)
        rs, info, _ = step(rs, k, 0.3)
        assert not np.any(np.asarray(info["invalid_picks"]))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                     rs.obs, part_of(rs.env_state))
        assert rs.obs.servers is None and rs.obs.task is None
        picks = np.asarray(info["picks"])
        for n in range(m):
            for env_i in range(e):
                if needed[env_i, n]:
                    decisions[n].append((env_i, t, slots[env_i, n], picks[env_i, n]))
        team = np.vstack([team, np.asarray(info["team_reward"])[None]])
        dones = np.vstack([dones, np.asarray(info["done"])[None]])
        truncs = np.vstack([truncs, np.asarray(info["truncated"])[None]])
    assert dones.any() and truncs[capped_at, capped_env] and truncs.sum() == 1
    pools = rs.pools
    checked = capped = 0
    for n in range(m):
        mine = decisions[n]
        assert int(pools.writes[n]) == len(mine) > 0
        for j, (env_i, t0, slots, pick) in enumerate(mine):
            np.testing.assert_array_equal(np.asarray(pools.obs.slots[n, j]), slots)
            assert int(pools.action[n, j]) == pick
            nxt = [t for (ei, t, _, _) in mine[j + 1:] if ei == env_i]
            ends = [t for t in np.flatnonzero(dones[:, env_i]) if t >= t0]
            end = ends[0] if ends else None
            nxt_t = nxt[0] if nxt else None
            ready = bool(pools.has_reward[n, j]) and bool(pools.has_next[n, j])
            if end is not None and (nxt_t is None or nxt_t > end):
                stop, terminal, linked = end + 1, not truncs[end, env_i], False
                capped += bool(truncs[end, env_i])
            elif nxt_t is not None:
                stop, terminal, linked = nxt_t, False, True
            else:
                assert not ready
                continue
            assert ready and bool(pools.terminal[n, j]) == terminal
            # n-step returns: linked to the agent's next decision in the env, if it came first
            later = [k for k, (ei, t, _, _) in enumerate(mine) if k > j and ei == env_i]
            succ = later[0] if linked else -1
            assert int(pools.succ[n, j]) == succ
            assert int(pools.succ_stamp[n, j]) == succ         # no wrap: stamp == slot
            np.testing.assert_allclose(float(pools.reward[n, j]), team[t0:stop, env_i].sum(),
                                       rtol=1e-5, atol=1e-5)
            checked += 1
    assert checked > (10 if epochs == "all" else 3) and capped >= 1
