"""The clairvoyant one-step lookahead (damdjax.lookahead): the rollout policy over a
deterministic base policy is at least as good as the base on every episode."""
from __future__ import annotations

import jax
import numpy as np

from damdjax.evaluation import generate_held_out, held_out_keys
from damdjax.heuristics import SCHEDULE_RULES, pair, pair_from_name, pair_names
from damdjax.lookahead import lookahead_costs, lookahead_dispatch, total_response_time
from damdjax.rollout import play_batch
from envs.config import EnvConfig, EnvParams


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
    out = _play(["ES", "LS"], num_servers=3)
    for name in ("ES", "LS"):   # the best pair, and the paper's LeastLoad + SDF
        base, look = out[(name, name)], out[(name, "lookahead")]
        assert np.all(look <= base + 1e-4 * base), (name, look - base)
        assert np.any(look < base - 1e-3), name


def test_costs_are_the_episodes_played_out():
    """`lookahead_costs` at the first dispatch equals playing the episode with that first
    server forced, then the base policy (a separate host loop of single steps)."""
    from envs.dynamics import dispatch_needed, reset_to_instance, transition
    from envs.state import Action
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
