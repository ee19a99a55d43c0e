"""The EFT family (damdjax.eft, damdjax.family) against the plain-Python reference.

Every design choice (holders queued or alone; wait chain, load, ahead under each
scheduling rule, insert; relay and lookahead weights) and PEFT's `oct` scheduling rule
run in JAX, as one compiled program over traced parameters (`play_members`), and in the
reference simulator (`simulate(..., dispatch="eft", eft=...)`), in float64: the same
server for every task, the same times to 1e-9, the same number of steps. The optimistic
cost table and its rank equal the reference's. A member with Python parameters (its
unused alternatives never computed) decides as the traced program does, and the default
member is the classic `eft` rule.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from damdjax.eft import HOLDER_CHOICES, WAIT_CHOICES, EftParams, optimistic_cost_table, oct_rank
from damdjax.family import Member, member_policy, parse_member, play_members
from damdjax.heuristics import pair_from_name
from damdjax.rollout import play_batch
from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.generator import generate
from damdjax.envs.instance import instance_to_arrays
from damdjax.envs import reference as ref
from damdjax.envs.instance import to_reference_input as reference_inputs

CONFIG = EnvConfig(n_max=40, m_max=4, p_max=3, queue_capacity=6, j_max=6)
TOL = 1e-9
HOLDERS = {v: k for k, v in HOLDER_CHOICES.items()}
WAITS = {v: k for k, v in WAIT_CHOICES.items()}
SCHEDULES = ("fcfs", "sjf", "sdf", "cp", "llf", "oct")
# Every choice at least once, the weights off their classic values, every scheduling
# rule under the `ahead` wait (whose order it follows), and the named rules.
MEMBERS = tuple(
    [Member(EftParams(holders=h, wait=w, relay=(1.0, 0.0, 0.5)[(2 * h + w) % 3],
                      lookahead=(0.0, 1.0, 0.25)[(h + w) % 3]), SCHEDULES[(4 * h + w) % 6])
     for h in HOLDERS for w in WAITS]
    + [Member(EftParams(wait=WAIT_CHOICES["ahead"], relay=0.0), s) for s in SCHEDULES]
    + [parse_member(n) for n in ("heft+sjf", "peft+oct", "eft+oct")])


@pytest.fixture(scope="module", autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def instances(seed: int, count: int, params: EnvParams):
    keys = jax.random.split(jax.random.PRNGKey(seed), count)
    return jax.jit(jax.vmap(lambda k: generate(k, CONFIG, params)))(keys)


# Crowded servers (long queues, so that the holders' schedule matters), tight memory
# (tasks wait at the AP) and a calm setting.
SETTINGS = {
    "crowded": EnvParams(num_tasks=40, num_servers=3, density=8.0),
    "tight memory": EnvParams(num_tasks=30, num_servers=4, density=4.0, mem_low=4.0,
                              mem_high=5.0),
    "calm": EnvParams(num_tasks=24, num_servers=4, density=1.0),
}


@pytest.fixture(scope="module")
def batch():
    parts = [instances(i, 3, p) for i, p in enumerate(SETTINGS.values())]
    return jax.tree.map(lambda *x: jnp.concatenate(x), *parts)


def reference_kwargs(member: Member) -> dict:
    p = member.params
    return {"dispatch": "eft", "schedule": member.schedule,
            "eft": {"holders": HOLDERS[int(p.holders)], "wait": WAITS[int(p.wait)],
                    "relay": float(p.relay), "lookahead": float(p.lookahead)}}


def test_every_member_equals_the_reference(batch):
    count = batch.size.shape[0]
    keys = jax.random.split(jax.random.PRNGKey(3), count)
    states = play_members(MEMBERS, keys, batch, CONFIG.queue_capacity, chunk=len(MEMBERS))
    arrays = instance_to_arrays(batch)
    for member in MEMBERS:
        st = states[member.name]
        for b in range(count):
            servers, tasks = reference_inputs(arrays, b)
            n = len(tasks)
            r = ref.simulate(servers, tasks, queue_capacity=CONFIG.queue_capacity,
                             **reference_kwargs(member))
            where = f"{member.name} episode {b}"
            server = np.asarray(st.server[b])[:n]
            if not np.array_equal(server, r.server):
                i = int(np.flatnonzero(server != np.asarray(r.server))[0])
                pytest.fail(f"{where}: task {i} on server {server[i]} in JAX, {r.server[i]} "
                            "in the reference")
            for name in ("arrive", "start", "finish"):
                np.testing.assert_allclose(np.asarray(getattr(st, name)[b])[:n],
                                           getattr(r, name), rtol=0, atol=TOL,
                                           err_msg=f"{where}: {name}")
            assert int(st.step[b]) == r.num_steps, where


def test_the_members_make_different_choices(batch):
    """The differential test above is only worth something if the choices matter: on
    these instances the members do not all dispatch alike."""
    count = batch.size.shape[0]
    keys = jax.random.split(jax.random.PRNGKey(3), count)
    chosen = [parse_member(n) for n in ("eft+sjf", "eft[queued/load/r1/l0]+sjf",
                                        "eft[alone/chain/r1/l0]+sjf", "heft+sjf",
                                        "eft[queued/chain/r0/l0]+sjf",
                                        "eft[queued/chain/r1/l1]+sjf",
                                        "eft[queued/ahead/r1/l0]+sjf")]
    states = play_members(chosen, keys, batch, CONFIG.queue_capacity)
    base = np.asarray(states["eft+sjf"].server)
    for m in chosen[1:]:
        assert not np.array_equal(np.asarray(states[m.name].server), base), m.name


def test_optimistic_cost_table_and_rank_equal_the_reference(batch):
    tables = np.asarray(jax.vmap(optimistic_cost_table)(batch))
    ranks = np.asarray(jax.vmap(oct_rank)(batch))
    arrays = instance_to_arrays(batch)
    nonzero = 0
    for b in range(batch.size.shape[0]):
        servers, tasks = reference_inputs(arrays, b)
        n, m = len(tasks), len(servers)
        want = np.array(ref.optimistic_cost_table(servers, tasks))
        np.testing.assert_allclose(tables[b, :n, :m], want, rtol=0, atol=TOL)
        np.testing.assert_allclose(ranks[b, :n], ref.oct_rank(servers, tasks), rtol=0, atol=TOL)
        nonzero += int((want > 0).sum())
    assert nonzero > 0


def test_python_parameters_decide_as_the_traced_program():
    """A member's own policy (Python parameters: one alternative computed) against the
    traced grid program, and the default member against the classic `eft` pair: the
    same servers, in float32."""
    with jax.enable_x64(False):
        batch = instances(9, 4, SETTINGS["crowded"])
        keys = jax.random.split(jax.random.PRNGKey(4), 4)
        q = CONFIG.queue_capacity
        chosen = [parse_member(n) for n in ("eft+sjf", "eft[alone/insert/r0.5/l0.25]+oct",
                                            "eft[queued/ahead/r0/l0]+llf")]
        grid = play_members(chosen, keys, batch, q)
        for m in chosen:
            own = jax.jit(lambda k, i, m=m: play_batch(member_policy(m), k, i, q))(keys, batch)
            assert np.array_equal(np.asarray(own.server), np.asarray(grid[m.name].server)), m.name
        classic = jax.jit(lambda k, i: play_batch(pair_from_name("ES"), k, i, q))(keys, batch)
        assert np.array_equal(np.asarray(classic.server), np.asarray(grid["eft+sjf"].server))


@pytest.mark.parametrize("bad, message", [
    ("eft[queued/later/r0/l0]+sjf", "WAIT 'later'"),
    ("eft[queued/load/r0/l0]+lifo", "unknown scheduling rule 'lifo'"),
    ("heft", "DISPATCH+SCHEDULE"),
    ("qeft+sjf", "unknown EFT-family dispatch 'qeft'"),
])
def test_bad_names_are_refused_naming_the_part(bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("+", r"\+")):
        parse_member(bad)


def test_names_round_trip():
    for m in MEMBERS:
        assert parse_member(m.name) == m
    with pytest.raises(ValueError, match="relay"):
        EftParams(relay=-1.0)
    with pytest.raises(ValueError, match="wait"):
        EftParams(wait=7)
