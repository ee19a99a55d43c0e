"""The clairvoyant one-step lookahead (damdjax.lookahead): the rollout policy over a
deterministic base policy is at least as good as the base on every episode."""
from __future__ import annotations

import jax
import numpy as np

from damdjax.evaluation import generate_held_out, held_out_keys
from damdjax.heuristics import SCHEDULE_RULES, pair, pair_from_name, pair_names
from damdjax.lookahead import (
    lookahead_costs, lookahead_dispatch, rollout_targets, total_response_time)
from damdjax.rollout import play_batch
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.dynamics import dispatch_feasible


def _play(names, num_servers, episodes=12):
    config = EnvConfig(n_max=10, m_max=num_servers, queue_capacity=6)
    params = EnvParams(num_tasks=10, num_servers=num_servers, density=4.0)
    inst_keys, play_keys = held_out_keys(3, episodes)
    instances = generate_held_out(config, params, inst_keys)
    out = {}
    for name in names:
        base = pair_from_name(name)
        policies = {name: base, "lookahead": pair(lookahead_dispatch(base),
                                                  SCHEDULE_RULES[pair_names(name)[1]])}
        for label, policy in policies.items():
            final = jax.jit(lambda k, i: play_batch(policy, k, i, config.queue_capacity))(
                play_keys, instances)
            assert bool(final.done.all()) and not bool(final.truncated.any())
            out[(name, label)] = np.asarray(jax.vmap(total_response_time)(final))
    return out


def test_lookahead_never_worse_than_its_base_and_sometimes_better():
    """Per episode (deterministic bases), the lookahead's total response time is at most
    the base's (float32 rounding aside), and strictly smaller on some episodes."""
    out = _play(["ES"], num_servers=3)
    for name in ("ES",):   # the best pair
        base, look = out[(name, name)], out[(name, "lookahead")]
        assert np.all(look <= base + 1e-4 * base), (name, look - base)
        assert np.any(look < base - 1e-3), name


def test_costs_are_the_episodes_played_out():
    """`lookahead_costs` at the first dispatch equals playing the episode with that first
    server forced, then the base policy (a separate host loop of single steps)."""
    from damdjax.envs.dynamics import dispatch_needed, reset_to_instance, transition
    from damdjax.envs.state import Action
    config = EnvConfig(n_max=8, m_max=3, queue_capacity=6)
    params = EnvParams(num_tasks=8, num_servers=3, density=4.0)
    inst = jax.tree.map(lambda x: x[0], generate_held_out(
        config, params, held_out_keys(5, 1)[0]))
    base = pair_from_name("ES")
    state = reset_to_instance(inst, config.queue_capacity)
    assert bool(dispatch_needed(state))
    key = jax.random.PRNGKey(0)
    costs = np.asarray(jax.jit(lambda s: lookahead_costs(key, s, base))(state))
    step = jax.jit(lambda s, a: transition(s, a, 1.0, 0.0)[0])
    act = jax.jit(base)
    for m in range(3):
        s = step(state, Action(dispatch=np.int32(m), picks=act(key, state).picks))
        while not bool(s.done):
            s = step(s, act(key, s))
        np.testing.assert_allclose(costs[m], float(total_response_time(s)), rtol=1e-6)


def test_costs_over_the_arrived_tasks_are_the_full_play_outs_restricted():
    """`lookahead_costs` with a horizon (its play-outs stop once every counted task has
    started) equals the full play-outs' totals over the tasks arriving by `time +
    horizon`, at states along an episode; a horizon past every arrival is the plain
    costs, bitwise."""
    import jax.numpy as jnp
    from damdjax.lookahead import _play_out
    from damdjax.envs.dynamics import reset_to_instance, transition
    from damdjax.envs.state import Action
    config = EnvConfig(n_max=12, m_max=3, queue_capacity=6)
    params = EnvParams(num_tasks=12, num_servers=3, density=4.0)
    inst = jax.tree.map(lambda x: x[0], generate_held_out(config, params, held_out_keys(6, 1)[0]))
    base = pair_from_name("ES")
    key = jax.random.PRNGKey(0)

    @jax.jit
    def both(s, horizon):
        picks = base(key, s).picks
        full = jax.vmap(lambda m: total_response_time(_play_out(key, transition(
            s, Action(dispatch=m, picks=picks), 1.0, 0.0)[0], base), s.time + horizon))(
            jnp.arange(3, dtype=jnp.int32))
        return lookahead_costs(key, s, base, None, horizon), full, lookahead_costs(key, s, base)
    step = jax.jit(lambda s: transition(s, base(key, s), 1.0, 0.0)[0])
    s, checked = reset_to_instance(inst, config.queue_capacity), 0
    while not bool(s.done):
        for horizon in (0.0, 1.0, 1e9):
            cut, full, plain = map(np.asarray, both(s, horizon))
            np.testing.assert_array_equal(cut, full)
            if horizon == 1e9:
                np.testing.assert_array_equal(cut, plain)
            checked += 1
        s = step(s)
    assert checked >= 30


def test_rollout_targets_by_hand():
    costs = np.array([[10.0, 12.0, 20.0], [5.0, np.inf, 7.0], [1.0, np.inf, 3.0]])
    mask = np.array([[True, True, False], [True, False, True], [True, True, True]])
    target, finite = jax.jit(rollout_targets)(costs, mask, 2.0)
    np.testing.assert_allclose(target, [[0.5, -0.5, 0.0], [0.5, 0.0, -0.5], [0, 0, 0]])
    np.testing.assert_array_equal(finite, [True, True, False])


def test_rollout_trainer_writes_the_lookahead_targets():
    """train.dqn --targets rollout: each step writes, for every env that must dispatch (at
    most --rollout-envs of them where set), a complete buffer entry holding its view and
    `rollout_targets` of EFT-with-the-scheduler played out from every server (computed
    here from the state separately; with --rollout-tasks arrived, over the arrived tasks;
    with --eft-rule, that EFT-family rule played out and read by the feature); over all
    tasks, the targets' best server is `lookahead_dispatch`'s choice."""
    from damdjax import replay
    from damdjax.family import dispatch_rule
    from damdjax.envs.env import EdgeEnv
    from damdjax.train import dqn
    for rollout_envs, tasks, rule in ((0, "all", "eft"),
                                      (2, "arrived", "eft[queued/load/r0/l0.25]")):
        base = pair(dispatch_rule(rule), SCHEDULE_RULES["sjf"])
        cfg = dqn.DQNConfig.from_values(num_envs=4, num_tasks=8, num_servers=3, buffer_capacity=512,
                            hidden=(8,), seed=2, scheduler="sjf", targets="rollout",
                            eft_feature=True, rollout_envs=rollout_envs, rollout_tasks=tasks,
                            eft_rule=rule)
        env = EdgeEnv(cfg.env_config)
        params = cfg.env
        horizon = {"all": None, "arrived": 0.0}[tasks]
        one = jax.jit(lambda s: (
            rollout_targets(lookahead_costs(jax.random.PRNGKey(0), s, base, None, horizon),
                            dispatch_feasible(s), params.time_scale),
            lookahead_dispatch(base)(jax.random.PRNGKey(0), s),
            rollout_targets(lookahead_costs(jax.random.PRNGKey(0), s, base),
                            dispatch_feasible(s), params.time_scale)[0]))
        view = jax.jit(lambda o, s, cfg=cfg: dqn.batch_view(cfg, o, s, params.time_scale))
        rs = dqn.init_runner(cfg, env, params)
        step = jax.jit(dqn.make_env_step(cfg, env, params))
        key, written, capped, other = jax.random.PRNGKey(3), 0, False, 0
        for _ in range(12):
            needed = np.flatnonzero(np.asarray(rs.obs.dispatch_needed))
            writes, states = int(rs.buffer.writes), rs.env_state
            views = view(rs.obs, rs.env_state)
            key, k = jax.random.split(key)
            rs, _, _ = step(rs, k, 0.5)
            n = int(rs.buffer.writes) - writes
            assert n == (min(len(needed), rollout_envs) if rollout_envs else len(needed))
            capped |= n < len(needed)
            for slot in range(writes, writes + n):
                # the env whose view this entry holds: in order, unless capped (random order)
                same = [e for e in needed if all(np.array_equal(a[e], b[slot]) for a, b in zip(
                    jax.tree.leaves(views), jax.tree.leaves(rs.buffer.obs.view)))]
                e = needed[slot - writes] if not rollout_envs else same[0]
                assert e in same
                (target, finite), choice, over_all = one(jax.tree.map(lambda x: x[e], states))
                other += not np.allclose(target, over_all)
                assert bool(finite) and bool(replay.ready(rs.buffer)[slot])
                np.testing.assert_allclose(rs.buffer.obs.target[slot], target, rtol=1e-5,
                                           atol=1e-6)
                mask = np.asarray(rs.buffer.obs.view.mask[slot])
                best = np.where(mask, np.asarray(rs.buffer.obs.target[slot]), -np.inf)
                assert tasks == "arrived" or best[int(choice)] == best.max()
                written += 1
        assert written >= 8 and capped == bool(rollout_envs), rollout_envs
        assert (other > 0) == (tasks == "arrived"), other   # the two totals differ


def test_targets_flag_checks_and_runs_written_before_it(capsys):
    """--targets: an unknown value and TD-only flags away from their defaults are refused
    in one line naming the flag (train.dqn, train.damd), as is --rollout-envs out of range
    or without rollout targets; a config.json without the fields loads as td, all envs."""
    import pytest
    from damdjax.train import damd, dqn
    p = dqn.build_parser()
    for argv, message in ((["--targets", "mc"], "--targets must be one of td, rollout"),
                          (["--targets", "rollout", "--n-step", "3"],
                           "--n-step 3 does not apply to --targets rollout"),
                          (["--targets", "rollout", "--reward", "sojourn"],
                           "--reward sojourn does not apply to --targets rollout"),
                          (["--rollout-envs", "2"],
                           "--rollout-envs 2 applies only to --targets rollout"),
                          (["--targets", "rollout", "--num-envs", "8", "--rollout-envs", "9"],
                           "--rollout-envs must be in [0, --num-envs 8], got 9"),
                          (["--rollout-tasks", "arrived"],
                           "--rollout-tasks arrived applies only to --targets rollout")):
        with pytest.raises(SystemExit):
            dqn.config_from_args(p, p.parse_args(argv))
        assert message in capsys.readouterr().err
    q = damd.build_parser()
    with pytest.raises(SystemExit):
        damd.config_from_args(q, q.parse_args(["--dqn-targets", "rollout", "--dqn-gamma", "0.5"]))
    assert "--dqn-gamma 0.5 does not apply to --dqn-targets rollout" in capsys.readouterr().err
    cfg = dqn.config_from_args(p, p.parse_args(["--targets", "rollout", "--rollout-envs", "3"]))
    assert (cfg.targets, cfg.rollout_envs) == ("rollout", 3)
    assert type(cfg).from_json(cfg.to_json()) == cfg
    made = damd.config_from_args(q, q.parse_args(["--dqn-targets", "rollout",
                                                  "--dqn-rollout-envs", "5",
                                                  "--dqn-rollout-tasks", "arrived"]))
    assert (made.dispatcher.rollout_envs, made.dispatcher.rollout_tasks) == (5, "arrived")
    assert type(made).from_json(made.to_json()) == made
    old = dqn.config_from_args(p, p.parse_args([])).to_json()
    del old["targets"], old["rollout_envs"], old["rollout_tasks"]
    loaded = dqn.DQNConfig.from_json(old)
    assert (loaded.targets, loaded.rollout_envs, loaded.rollout_tasks) == ("td", 0, "all")
    from damdjax.train import sweep
    for argv, message in ((["--trainer", "dqn", "--targets", "rollout", "--grid", "gamma=0.5,0.9"],
                           "--grid gamma does not apply to --targets rollout"),
                          (["--trainer", "damd", "--dqn-targets", "rollout", "--grid",
                            "dqn_polyak=0.5,1"],
                           "--grid dqn_polyak does not apply to --dqn-targets rollout")):
        sp = sweep.build_parser(argv[1])
        with pytest.raises(SystemExit):
            sweep.config_from_args(sp, sp.parse_args(argv))
        assert message in capsys.readouterr().err
    d = damd.config_from_args(q, q.parse_args(["--dqn-targets", "rollout"]))
    assert d.dispatcher.targets == "rollout"
    assert type(d).from_json(d.to_json()) == d


def test_target_spread_parts_add_up(tmp_path, capsys):
    """eval.target_spread: the full targets are the arrived tasks' plus the later tasks'
    (so the mean squares add up with the cross term), at most every drawn state counts,
    the table and JSON agree; the arrived part, from the full play-outs, is the early-
    stopped `lookahead_costs(..., horizon=0)`'s targets; bad flags are one-line errors
    naming the flag."""
    import json
    import pytest
    from damdjax.eval import target_spread
    out = tmp_path / "spread.json"
    assert target_spread.main(["--num-tasks", "8", "--states", "16", "--out", str(out)]) == 0
    rows, table = json.loads(out.read_text())["rows"], capsys.readouterr().out
    assert [r["num_tasks"] for r in rows] == [8]
    for r in rows:
        assert 0 < r["states"] <= r["drawn"] == 16
        assert r["mean_square"] == pytest.approx(r["arrived"] + r["later"] + r["cross"],
                                                 rel=1e-4, abs=1e-6)
        assert 0 <= r["agree"] <= 1 and 0 < r["arrived_fraction"] <= 1
        assert f"| {r['num_tasks']} | {r['states']} | {r['mean_square']:.3f} |" in table
    # the arrived part (from the full play-outs) is the early-stopped rollouts' targets
    from damdjax.envs.env import EdgeEnv
    config, params, base = EnvConfig(n_max=8), EnvParams(num_tasks=8), pair_from_name("ES")
    key = jax.random.PRNGKey(4)
    state = jax.jit(EdgeEnv(config).reset)(key, params)[1]   # the first decision: tasks to come

    @jax.jit   # one program, not hundreds of eager ops
    def parts_and_early_stopped(s):
        parts = target_spread.spread_parts(key, s, base, params.time_scale)
        return parts, rollout_targets(lookahead_costs(key, s, base, None, 0.0), parts["mask"],
                                      params.time_scale)[0]
    parts, want = parts_and_early_stopped(state)
    assert bool(parts["counts"]) and not np.allclose(parts["arrived"], parts["all"])
    np.testing.assert_allclose(parts["arrived"], want, rtol=1e-6, atol=1e-6)
    for argv, message in ((["--states", "0"], "--states must be >= 1, got 0"),
                          (["--num-tasks", "0"], "--num-tasks"),
                          (["--method", "XX"], "XX"),
                          (["--out", str(tmp_path)], "is a folder")):
        with pytest.raises(SystemExit):
            target_spread.main(argv)
        assert message in capsys.readouterr().err


def test_online_rollout_reads_nothing_from_the_future():
    """At every state of an episode, the online rollout's choice is the same when every
    task arriving later is changed (its work and size redrawn), while the clairvoyant
    lookahead's changes at some states: the online rule sees only the arrived tasks."""
    import jax.numpy as jnp
    from damdjax.lookahead import arrived_only, online_rollout_dispatch
    from damdjax.envs.dynamics import dispatch_needed, reset_to_instance, transition
    config = EnvConfig(n_max=16, m_max=3, queue_capacity=6)
    params = EnvParams(num_tasks=16, num_servers=3, density=3.0)
    inst = jax.tree.map(lambda x: x[0], generate_held_out(config, params, held_out_keys(8, 1)[0]))
    base = pair_from_name("ES")
    key = jax.random.PRNGKey(0)
    online, clairvoyant = online_rollout_dispatch(base), lookahead_dispatch(base)

    def with_new_future(s, k):
        i = s.instance
        later = i.task_mask & (i.arrival > s.time)
        scale = jax.random.uniform(k, i.work.shape, minval=0.2, maxval=3.0)
        i = i.replace(work=jnp.where(later, i.work * scale, i.work),
                      size=jnp.where(later, i.size * scale, i.size))
        return s.replace(instance=i)

    @jax.jit
    def choices(s, k):
        other = with_new_future(s, k)
        return (online(key, s), online(key, other), clairvoyant(key, s), clairvoyant(key, other),
                jnp.sum(arrived_only(s).instance.task_mask), dispatch_needed(s))
    step = jax.jit(lambda s: transition(s, base(key, s), 1.0, 0.0)[0])
    s, decisions, moved, k = reset_to_instance(inst, config.queue_capacity), 0, 0, key
    while not bool(s.done):
        k, sub = jax.random.split(k)
        on, on_other, cl, cl_other, arrived, needed = choices(s, sub)
        if bool(needed):
            assert int(on) == int(on_other)
            assert int(arrived) <= int(inst.task_mask.sum())
            decisions += 1
            moved += int(cl) != int(cl_other)
        s = step(s)
    assert decisions == int(inst.task_mask.sum()) and moved > 0, (decisions, moved)


def test_online_rollout_is_the_lookahead_when_nothing_more_arrives():
    """When every job arrives at once (nothing arrives after the first decision), the
    online rollout is the clairvoyant lookahead: the same servers."""
    import jax.numpy as jnp
    from damdjax.lookahead import online_rollout_dispatch
    config = EnvConfig(n_max=10, m_max=3, queue_capacity=6)
    params = EnvParams(num_tasks=10, num_servers=3, density=3.0)
    inst_keys, play_keys = held_out_keys(4, 6)
    instances = generate_held_out(config, params, inst_keys)
    instances = instances.replace(arrival=jnp.where(
        instances.task_mask, instances.arrival[:, :1], instances.arrival))
    base = pair_from_name("ES")
    out = []
    for rule in (online_rollout_dispatch(base), lookahead_dispatch(base)):
        policy = pair(rule, SCHEDULE_RULES["sjf"])
        out.append(jax.jit(lambda k, i: play_batch(policy, k, i, config.queue_capacity))(
            play_keys, instances))
    np.testing.assert_array_equal(np.asarray(out[0].server), np.asarray(out[1].server))
