"""EFT's finish estimates (damdjax.heuristics.slot_finish_estimates, one pass over the
slot holders in task order) are bitwise the fixed point of relaxing every estimate
together (the rule as docs/model.md states it, "EFT dispatch"; the implementation before
the one-pass version), on the states of overloaded episodes with long queues."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from damdjax.heuristics import pair_from_name, slot_finish_estimates
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.dynamics import reset_to_instance, take, transition
from damdjax.envs.generator import generate

CONFIG = EnvConfig(n_max=40, m_max=4, p_max=3, queue_capacity=8, j_max=6)


def relaxed_finish_estimates(state):
    """`(finish [N], rounds [])`: every slot holder's estimate relaxed together from
    `state.finish` until nothing changes (Jacobi rounds)."""
    inst = state.instance
    q = state.queue                                                       # [M, Q]
    n = state.server.shape[0]
    holder = q >= 0
    below = holder[:, None, :] & (q[:, None, :] < q[:, :, None])          # [M, Q, Q]
    prev = jnp.max(jnp.where(below, q[:, None, :], -1), axis=2)           # [M, Q]
    free = take(state.finish, state.running, state.time)                  # [M]
    rows = jnp.arange(q.shape[0])[:, None]
    arrive = take(state.arrive, q, jnp.inf)
    run_time = take(inst.work, q, 0.0) / inst.cpu[:, None]
    preds = inst.preds[jnp.clip(q, 0)]                                    # [M, Q, P]
    pred_srv = take(state.server, preds, 0)
    k_pred = inst.k[jnp.clip(pred_srv, 0)]
    at = jnp.where(holder, q, n)

    def relax(carry):
        finish, _, it = carry
        fp = take(finish, preds, -jnp.inf)
        avail = jnp.where(pred_srv == rows[..., None], fp, (fp + k_pred) + inst.k[rows][..., None])
        ready = jnp.max(jnp.where(preds >= 0, avail, -jnp.inf), axis=2)
        after = jnp.where(prev >= 0, finish[jnp.clip(prev, 0)], free[:, None])
        est = jnp.maximum(jnp.maximum(arrive, ready), after) + run_time
        new = finish.at[at].set(est, mode="drop")
        return new, jnp.any(new != finish), it + 1

    finish, _, rounds = jax.lax.while_loop(lambda c: c[1] & (c[2] <= q.size), relax,
                                           (state.finish, jnp.ones((), bool), 0))
    return finish, rounds


def test_one_pass_equals_the_relaxation_bitwise():
    """Every state of 6 overloaded episodes per pair (EFT and LeastLoad dispatch, so that
    queues fill), in float32 (users' precision, where rounding differences show first):
    the two computations agree bit for bit, and the relaxation needed several rounds on
    some states (chains of dependent holders)."""
    params = EnvParams(num_tasks=40, num_servers=3, density=8.0)
    keys = jax.random.split(jax.random.PRNGKey(7), 6)
    instances = jax.jit(jax.vmap(lambda k: generate(k, CONFIG, params)))(keys)

    @functools.partial(jax.jit, static_argnums=0)
    def compare(name, instances, keys):
        policy = pair_from_name(name)

        def episode(inst, key):
            def body(s, k):
                got = slot_finish_estimates(s)
                want, rounds = relaxed_finish_estimates(s)
                same = jnp.all((got == want) | (jnp.isnan(got) & jnp.isnan(want)))
                return transition(s, policy(k, s), 1.0, 0.0)[0], (same, rounds)
            return jax.lax.scan(body, reset_to_instance(inst, CONFIG.queue_capacity),
                                jax.random.split(key, 2 * CONFIG.n_max))[1]
        return jax.vmap(episode)(instances, keys)

    for name in ("ES", "LF"):
        same, rounds = map(np.asarray, compare(name, instances, keys))
        assert same.all(), (name, np.argwhere(~same)[:5])
        assert rounds.max() >= 5, rounds.max()


def test_random_pick_is_uniform_over_eligible_slots():
    """`random_pick` (the spreads' yardstick) picks only eligible slots, each about as
    often as the others: on a burst's queue with several eligible slots, 4,000 keys give
    every eligible slot between half and twice its uniform share, and a server with none
    gets slot 0."""
    from damdjax.envs.dynamics import eligible_slots
    from damdjax.heuristics import random_pick
    config = EnvConfig(n_max=30, m_max=2, queue_capacity=8)
    params = EnvParams(num_tasks=30, num_servers=2, density=1000.0)
    env = EdgeEnv(config)
    _, state = jax.jit(env.reset)(jax.random.PRNGKey(3), params)
    policy = pair_from_name("ES")
    step = jax.jit(lambda s, k: env.step(None, s, policy(k, s), params)[1])
    for i in range(60):   # until a queue holds several eligible tasks (the burst's)
        eligible = np.asarray(jax.jit(eligible_slots)(state))
        if eligible.sum(axis=1).max() >= 3:
            break
        state = step(state, jax.random.PRNGKey(i))
    assert eligible.sum(axis=1).max() >= 3, eligible
    picks = np.asarray(jax.jit(jax.vmap(random_pick, in_axes=(0, None)))(
        jax.random.split(jax.random.PRNGKey(0), 4000), state))      # [K, M]
    for m in range(config.m_max):
        row = eligible[m]
        if not row.any():
            assert (picks[:, m] == 0).all()
            continue
        assert row[picks[:, m]].all()
        counts = np.bincount(picks[:, m], minlength=config.queue_capacity)[row]
        share = 4000 / row.sum()
        assert (counts > share / 2).all() and (counts < 2 * share).all(), counts
