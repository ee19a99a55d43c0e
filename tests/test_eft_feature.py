"""The DQN dispatcher's opt-in EFT input (train.dqn --eft-feature): the appended server
column (`damdjax.policies.eft_view`) in the runner's views and replay buffer, its policy
files, and runs and files written before the option."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from damdjax.heuristics import eft_estimate
from damdjax.networks import dispatch_inputs, greedy_action
from damdjax.policies import (DISPATCHER_KIND, dispatcher_network, init_dispatcher,
                              load_dispatcher, resolve_dispatcher, save_policy)
from damdjax.envs.observation import SERVER_FEATURES, TASK_FEATURES, observe
from damdjax.train import damd, dqn, sweep
from tests.test_train_dqn import TINY

# Short queues and dense arrivals: some servers are infeasible at some decisions.
CFG = dqn.DQNConfig.from_values(num_envs=6, num_tasks=8, num_servers=3, queue_capacity=2, density=3.0,
                    buffer_capacity=1024, hidden=(8,), seed=5, eft_feature=True)
STEPS = 40   # episodes of 8 tasks end (and reset) within them


_EFT = jax.jit(jax.vmap(eft_estimate))   # compiled once (op by op it dominated the file)


def expected_column(obs, env_state, time_scale) -> np.ndarray:
    """[E, M]: (eft_estimate - time) / time_scale on feasible servers, 0 elsewhere."""
    eft = np.asarray(_EFT(env_state), np.float64)
    t = np.asarray(env_state.time, np.float64)[:, None]
    with np.errstate(invalid="ignore"):
        return np.where(np.asarray(obs.dispatch_mask), (eft - t) / time_scale, 0.0)


@pytest.fixture(scope="module")
def stepped():
    """`(runner after STEPS steps, [(obs, env_state, buffer writes, done)] per step)` of
    CFG's env step at epsilon 0.5."""
    env, params = CFG.make_env(), CFG.env
    rs = dqn.init_runner(CFG, env, params)
    step = jax.jit(dqn.make_env_step(CFG, env, params))
    key, history = jax.random.PRNGKey(2), []
    for _ in range(STEPS):
        key, k = jax.random.split(key)
        before = (rs.obs, rs.env_state, int(rs.buffer.writes))
        rs, info, _ = step(rs, k, 0.5)
        history.append((*before, np.asarray(info["done"])))
    return rs, history


def test_the_column_is_the_eft_estimate_on_feasible_servers(stepped):
    _, history = stepped
    ts = CFG.env.time_scale
    batch_view = jax.jit(lambda o, st: dqn.batch_view(CFG, o, st, ts))
    seen_infeasible = False
    for obs, env_state, _, _ in history:
        view = batch_view(obs, env_state)
        plain = dispatch_inputs(obs)
        assert view.servers.shape == plain.servers.shape[:-1] + (len(SERVER_FEATURES) + 1,)
        np.testing.assert_array_equal(view.servers[..., :-1], plain.servers)
        for f in ("task", "mask", "server_mask"):
            np.testing.assert_array_equal(getattr(view, f), getattr(plain, f))
        col = np.asarray(view.servers[..., -1])
        assert np.isfinite(np.asarray(view.servers)).all()
        np.testing.assert_allclose(col, expected_column(obs, env_state, ts), rtol=1e-5,
                                   atol=1e-6)
        real_infeasible = np.asarray(plain.server_mask) & ~np.asarray(plain.mask)
        assert (col[~np.asarray(plain.mask)] == 0).all()
        seen_infeasible |= bool((real_infeasible & np.asarray(obs.dispatch_needed)[:, None]).any())
    assert seen_infeasible   # the zeros were exercised at real decisions


def test_replay_holds_the_column_in_obs_and_next_views(stepped):
    """Each transition's view is its decision's (column as computed separately); its next
    view is the env's next decision's view within the episode, and at an episode's end
    (the pre-reset state) finite, 0 on infeasible servers: at a terminal end all of them
    (only a truncated end, which the step cap 2 N + 2 never reaches here, has feasible
    servers there)."""
    rs, history = stepped
    ts = CFG.env.time_scale
    buf = rs.buffer
    assert buf.obs.servers.shape[-1] == buf.next_obs.servers.shape[-1] == len(SERVER_FEATURES) + 1
    episode = np.zeros(CFG.num_envs, int)
    taken = {}   # env -> [(slot, episode)] in order
    for obs, env_state, writes, done in history:
        needed = np.flatnonzero(np.asarray(obs.dispatch_needed))
        col = expected_column(obs, env_state, ts)
        for rank, e in enumerate(needed):
            slot = (writes + rank) % CFG.buffer_capacity
            np.testing.assert_allclose(buf.obs.servers[slot, :, -1], col[e], rtol=1e-5,
                                       atol=1e-6)
            taken.setdefault(e, []).append((slot, episode[e]))
        episode += done
    has_next = np.asarray(buf.has_next)
    ends = 0
    for e, seq in taken.items():
        for (s1, ep1), (s2, ep2) in zip(seq, seq[1:] + [(None, None)]):
            if ep1 == ep2:
                assert has_next[s1]
                np.testing.assert_array_equal(buf.next_obs.servers[s1], buf.obs.servers[s2])
            elif has_next[s1]:     # the episode's last dispatch: its end's view
                ends += 1
                nxt = np.asarray(buf.next_obs.servers[s1, :, -1])
                assert np.isfinite(nxt).all()
                assert (nxt[~np.asarray(buf.next_obs.mask[s1])] == 0).all()
                if buf.terminal[s1]:   # all done: no feasible server, the column all 0
                    assert not np.asarray(buf.next_obs.mask[s1]).any() and (nxt == 0).all()
    assert ends > 0


@pytest.fixture(scope="module")
def eft_run(tmp_path_factory):
    """A 1-chunk tiny --eft-feature run with a 4-episode evaluation: runs/e."""
    rd = tmp_path_factory.mktemp("runs")
    assert dqn.main(["--run-dir", str(rd), "--name", "e", "--num-chunks", "1",
                     "--eval-episodes", "4", "--eft-feature", *TINY]) == 0
    return rd


def test_a_run_with_the_option_writes_a_policy_file_that_loads_and_evaluates(eft_run, tmp_path):
    from damdjax.eval import compare
    run = eft_run / "e"
    cfg = dqn.DQNConfig.from_json(json.load(open(run / "config.json")))
    assert cfg.eft_feature is True
    assert type(cfg).from_json(cfg.to_json()) == cfg   # resumable
    net, params, meta = load_dispatcher(str(run))
    assert meta["eft_feature"] is True
    kernel = params["params"]["Dense_0"]["kernel"]
    assert kernel.shape[0] == 2 * (len(SERVER_FEATURES) + 1) + len(TASK_FEATURES)
    # eval.compare's DQN (the policy file, resolve_dispatcher) is training's evaluation.
    ev = json.load(open(run / "eval.json"))
    out = tmp_path / "cmp.json"
    compare.main(["--dispatcher-checkpoint", str(run), "--seed", "3", "--episodes", "4",
                  "--out", str(out)])
    got = json.loads(out.read_text())["methods"]["DQN"]
    for k in ("avg_response_time", "deadline_miss_rate"):
        assert got[k] == pytest.approx(ev["methods"]["dqn"][k]["mean"], rel=1e-6)


def test_init_dispatcher_with_the_other_option_is_refused_in_one_line(eft_run, tmp_path,
                                                                      capsys):
    old = tmp_path / "old.msgpack"   # a file written before the option: no eft_feature
    net = dispatcher_network((16, 16))
    save_policy(str(old), DISPATCHER_KIND, {"hidden": [16, 16], "time_scale": 10.0},
                init_dispatcher(net, jax.random.PRNGKey(0)))
    for init, flags, said in ((eft_run / "e", [], "eft_feature true, but --eft-feature is off"),
                              (old, ["--eft-feature"],
                               "eft_feature false, but --eft-feature is on")):
        with pytest.raises(SystemExit) as exc:
            dqn.main(["--run-dir", str(tmp_path), "--name", "x", "--init-dispatcher", str(init),
                      *flags, *TINY])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("python -m train.dqn: error: --init-dispatcher")
        assert said in err[-1] and str(init) in err[-1]
    p = dqn.build_parser()   # the same option: taken
    cfg = dqn.config_from_args(p, p.parse_args(["--init-dispatcher", str(old), *TINY]))
    assert cfg.init_dispatcher == str(old) and not cfg.eft_feature


def test_a_policy_file_without_the_option_loads_and_acts_as_before(stepped, tmp_path):
    """A file whose meta lacks `eft_feature` (written before it): plain views, the greedy
    action of the network on `dispatch_inputs(observe(state))`."""
    _, history = stepped
    net = dispatcher_network((8,))
    params = init_dispatcher(net, jax.random.PRNGKey(7))
    file = tmp_path / "dispatcher.msgpack"
    save_policy(str(file), DISPATCHER_KIND, {"hidden": [8], "time_scale": 10.0}, params)
    assert load_dispatcher(str(file))[2]["eft_feature"] is False
    rule = jax.jit(jax.vmap(resolve_dispatcher(str(file)), in_axes=(None, 0)))

    def before(state):   # the rule as it was before the option
        view = dispatch_inputs(observe(state, 10.0))
        return greedy_action(net.apply(params, view.task, view.servers, view.server_mask),
                             view.mask)
    for _, env_state, _, _ in history[::5]:
        np.testing.assert_array_equal(rule(jax.random.PRNGKey(0), env_state),
                                      jax.jit(jax.vmap(before))(env_state))


def test_configs_and_flags_without_and_with_the_option():
    p = dqn.build_parser()
    made = dqn.config_from_args(p, p.parse_args([]))
    assert made.eft_feature is False
    old = made.to_json()
    del old["eft_feature"]                      # as written before the field existed
    cfg = dqn.DQNConfig.from_json(old)
    assert cfg == made
    assert type(cfg).from_json(cfg.to_json()) == cfg
    assert cfg.replay_memory() < dqn.DQNConfig(eft_feature=True).replay_memory()
    # train.damd: --dqn-eft-feature, stored and rechecked; an old config without it: off.
    p = damd.build_parser()
    on = damd.config_from_args(p, p.parse_args(["--dqn-eft-feature"]))
    assert on.dispatcher.eft_feature
    assert type(on).from_json(on.to_json()) == on
    old = damd.config_from_args(p, p.parse_args([])).to_json()
    del old["dispatcher"]["eft_feature"]
    assert damd.DAMDConfig.from_json(old).dispatcher.eft_feature is False
    # train.sweep takes train.dqn's and train.damd's flags.
    for trainer, flag, of in (("dqn", "--eft-feature", lambda c: c),
                              ("damd", "--dqn-eft-feature", lambda c: c.dispatcher)):
        p = sweep.build_parser(trainer)
        scfg = sweep.config_from_args(p, p.parse_args(["--trainer", trainer, flag]))
        assert of(scfg.config).eft_feature is True


def test_the_feature_reads_the_configured_eft_rule(tmp_path):
    """--eft-rule: the feature column is that rule's estimate (the classic rule's by
    default), a dispatcher file keeps the rule and reads it back, a bad or scheduler-bound
    rule is refused naming the field, and a rule with nothing to read it is refused."""
    import pytest
    from damdjax.eft import dispatch_params, eft_estimate
    from damdjax.policies import (check_meta, dispatcher_view, init_dispatcher,
                                  load_dispatcher, save_dispatcher)
    from damdjax.configs import ConfigError
    from damdjax.envs.env import EdgeEnv
    from damdjax.train import dqn
    small = dict(num_envs=8, num_tasks=12, num_servers=3, hidden=(16,), seed=3)
    cfg = dqn.DQNConfig.from_values(**small, eft_feature=True,
                                    eft_rule="eft[queued/load/r0/l0.25]")
    env = EdgeEnv(cfg.env_config)
    obs, state = jax.jit(env.reset)(jax.random.PRNGKey(1), cfg.env)
    col = jax.jit(lambda o, s: dispatcher_view(o, s, cfg.env.time_scale, True, cfg.eft_rule)
                  .servers[:, -1])(obs, state)
    mask = np.asarray(jax.jit(lambda o, s: dispatcher_view(o, s, 1.0, False).mask)(obs, state))
    for rule in ("eft", cfg.eft_rule):
        want = (eft_estimate(state, dispatch_params(rule)) - state.time) / cfg.env.time_scale
        got = col if rule == cfg.eft_rule else jax.jit(lambda o, s: dispatcher_view(
            o, s, cfg.env.time_scale, True).servers[:, -1])(obs, state)
        np.testing.assert_allclose(np.asarray(got)[mask], np.asarray(want)[mask], rtol=1e-6)
    assert not np.allclose(np.asarray(col)[mask], np.asarray(
        (eft_estimate(state) - state.time) / cfg.env.time_scale)[mask])
    net = dqn._network(cfg)
    params = init_dispatcher(net, jax.random.PRNGKey(0), True)
    path = str(tmp_path / "d.msgpack")
    save_dispatcher(path, cfg.hidden, cfg.env.time_scale, params, True, cfg.eft_rule)
    assert load_dispatcher(path)[2]["eft_rule"] == cfg.eft_rule
    with pytest.raises(ValueError, match="meta field 'eft_rule'"):
        check_meta({"hidden": [8], "time_scale": 10.0, "eft_rule": "eft[queued/later/r0/l0]"},
                   "f.msgpack")
    for values, message in (({"eft_rule": "eft[queued/ahead/r0/l0]", "eft_feature": True},
                              "ahead wait depends on the scheduling rule"),
                             ({"eft_rule": "qeft"}, "unknown EFT-family dispatch 'qeft'"),
                             ({"eft_rule": "heft"}, "applies only to")):
        with pytest.raises(ConfigError, match=message):
            dqn.DQNConfig.from_values(**small, **values)


def test_mdqn_takes_a_family_rule_as_its_frozen_dispatcher(stepped, tmp_path):
    """`train.mdqn --dispatcher eft[...]`: a rule, not a path (no input file kept), acting
    as the argmin of that member's estimate over the feasible servers; a bad member and
    the `ahead` wait are refused naming the field."""
    from damdjax import run_inputs
    from damdjax.configs import ConfigError
    from damdjax.eft import dispatch_params
    from damdjax.policies import resolve_dispatcher
    from damdjax.train import mdqn

    spec = "eft[alone/load/r0.5/l0.25]"
    cfg = mdqn.MDQNConfig.from_values(num_tasks=8, num_servers=3, dispatcher=spec)
    cfg.check_inputs()
    assert run_inputs.keep(cfg, str(tmp_path)) is cfg and not any(tmp_path.iterdir())
    rule = jax.jit(jax.vmap(resolve_dispatcher(spec)))
    estimate = jax.jit(jax.vmap(lambda s: eft_estimate(s, dispatch_params(spec))))
    for obs, env_state, _, _ in stepped[1]:
        keys = jax.random.split(jax.random.PRNGKey(0), env_state.time.shape[0])
        mask = np.asarray(obs.dispatch_mask)
        want = np.argmin(np.where(mask, np.asarray(estimate(env_state)), np.inf), axis=1)
        got = np.asarray(rule(keys, env_state))
        rows = mask.any(axis=1)
        np.testing.assert_array_equal(got[rows], want[rows])
    for bad, words in (("eft[queued/ahead/r0/l0]", "ahead"), ("eft[nosuch/load/r0/l0]", "HOLDERS")):
        with pytest.raises(ConfigError, match=words) as err:
            mdqn.MDQNConfig.from_values(dispatcher=bad).check_inputs()
        assert "dispatcher" in str(err.value)
