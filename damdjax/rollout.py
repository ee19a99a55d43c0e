"""Whole episodes under one policy, compiled (`run_from_instance`, `play_batch`; host loops
of compiled chunks of steps for long episodes: `play_in_chunks`), and the training loops'
vmapped rollout pieces (auto-reset, chunk metrics, the compiled chunk)."""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from damdjax.heuristics import DISPATCH_RULES, SCHEDULE_RULES, Policy, pair_names
from damdjax.metrics import episode_metrics
from damdjax.envs.config import EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.instance import Instance, instance_config
from damdjax.envs.state import Action, EnvState, started


def run_from_instance(key: jax.Array, instance: Instance, policy: Policy, queue_capacity: int,
                      params: EnvParams = EnvParams()) -> tuple[EnvState, jax.Array]:
    """Play one episode of `instance` to the end with `policy`: `env.step` of the env of
    its padded sizes (`instance_env`) with `params`' reward constants (`tau`,
    `miss_penalty`).

    Returns `(final state, total team reward [])`. Jittable; vmap it over
    keys and instances for a batch (the batched loop runs until every episode
    is done; finished ones stand still).
    """
    env, params = instance_env(instance, queue_capacity, params)
    _, state, total = jax.lax.while_loop(lambda c: ~c[1].done, _step(policy, env, params),
                                         _start(key, instance, env, params))
    return state, total


def instance_env(instance: Instance, queue_capacity: int, params: EnvParams
                 ) -> tuple[EdgeEnv, EnvParams]:
    """The env that steps a given `instance` and its params: the env of the instance's
    padded sizes and `queue_capacity` queue slots (`damdjax.envs.instance.instance_config`),
    and `params` with their task and server counts set to that padding. An episode of a
    given instance reads only the rewards' constants (`tau`, `miss_penalty`) and the
    observation's (`time_scale`); the counts are the generator's knobs, which the env
    checks against its padding (`damdjax.envs.config.check_fits`)."""
    env = EdgeEnv(instance_config(instance, queue_capacity))
    return env, params.replace(num_tasks=env.config.n_max, num_servers=env.config.m_max)


def _start(key, instance: Instance, env: EdgeEnv, params: EnvParams):
    """An episode's carry `(key, state, total team reward)` before its first step (the
    observation is unused: under jit XLA removes it)."""
    state = env.reset_to(instance, params)[1]
    return key, state, jnp.zeros((), state.time.dtype)


def _step(policy: Policy, env: EdgeEnv, params: EnvParams):
    """One step of an episode's carry (`run_from_instance` and `play_in_chunks` share it):
    `env.step`, whose observation is unused (under jit XLA removes it)."""
    def body(carry):
        key, state, total = carry
        key, k_act = jax.random.split(key)
        _, state, reward, _, _ = env.step(k_act, state, policy(k_act, state), params)
        return key, state, total + reward
    return body


CHUNK_STEPS = 512     # env steps per compiled call of `play_in_chunks`
PROGRESS_SECONDS = 5.0


def play_in_chunks(policy: Callable, keys: jax.Array, instances: Instance, queue_capacity: int,
                   params: EnvParams = EnvParams(), *, which: jax.Array | None = None,
                   chunk_steps: int | None = None,
                   progress: Callable[[int, int, int, int], None] | None = None,
                   every: float | None = None) -> EnvState:
    """`play_batch` (or, with `which` [B], `play_selected`'s batch: `policy(key, state,
    which)`) as a host loop of compiled calls of `chunk_steps` steps each: the same final
    states (each episode takes the same steps with the same keys; finished ones stand
    still), but a long episode returns to Python between chunks, so Ctrl-C
    (KeyboardInterrupt) takes effect within one chunk and `progress(steps, episodes done,
    tasks done, tasks)` is called about every `every` seconds (and at the end, where it
    was called before). Not
    jittable (it is the loop around the compiled pieces). Defaults: CHUNK_STEPS,
    PROGRESS_SECONDS."""
    chunk_steps = CHUNK_STEPS if chunk_steps is None else chunk_steps
    every = PROGRESS_SECONDS if every is None else every
    if which is None:
        which = jnp.zeros((keys.shape[0],), jnp.int32)
        play = lambda k, st, w: policy(k, st)
    else:
        play = policy

    def advance(carry, w, limit):
        body = _step(lambda k, st: play(k, st, w),
                     *instance_env(carry[1].instance, queue_capacity, params))
        _, carry = jax.lax.while_loop(lambda c: (~c[1][1].done) & (c[0] < limit),
                                      lambda c: (c[0] + 1, body(c[1])), (0, carry))
        return carry

    def with_status(carry):   # (carry, (all done, episodes done, tasks finished, tasks))
        st = carry[1]
        finished = jnp.sum(st.instance.task_mask & started(st))
        return carry, (jnp.all(st.done), jnp.sum(st.done), finished,
                       jnp.sum(st.instance.task_mask))

    # The chunk length is traced: one program for any `chunk_steps`.
    start = jax.jit(lambda k, i: with_status(jax.vmap(
        lambda kk, ii: _start(kk, ii, *instance_env(ii, queue_capacity, params)))(k, i)))
    step = jax.jit(lambda c, w, n: with_status(jax.vmap(advance, in_axes=(0, 0, None))(c, w, n)))
    carry, status = start(keys, instances)
    limit = jnp.asarray(chunk_steps, jnp.int32)
    steps, last, shown = 0, time.perf_counter(), False
    while True:
        all_done, episodes, finished, tasks = (np.asarray(x) for x in status)
        now = time.perf_counter()
        if progress is not None and ((all_done and shown) or now - last >= every):
            progress(steps, int(episodes), int(finished), int(tasks))
            last, shown = now, True
        if all_done:
            return carry[1]
        carry, status = step(carry, which, limit)
        steps += chunk_steps


def play_batch(policy: Policy, keys: jax.Array, instances: Instance, queue_capacity: int,
               params: EnvParams = EnvParams()) -> EnvState:
    """Final states of `instances` (leaves [B, ...]) played with `policy`, keys [B].

    The vmap of `run_from_instance`; jit it (or call it inside a jitted function).
    """
    return jax.vmap(lambda k, inst: run_from_instance(
        k, inst, policy, queue_capacity, params)[0])(keys, instances)


def play_selected(policy: Callable, reps: int, keys: jax.Array, instances: Instance,
                  queue_capacity: int, params: EnvParams = EnvParams()) -> list[EnvState]:
    """`reps` variants of one policy on the same episodes, as one vmapped batch.

    `policy(key, state, which)` acts as variant `which` ([] int32, traced). Returns the
    final states [B] of `instances` (leaves [B, ...]) under each variant, in order;
    every variant sees the same keys [B] as `play_batch` would give it alone. Jittable.
    """
    count = keys.shape[0]
    tile = lambda x: jnp.concatenate([x] * reps)
    which = jnp.repeat(jnp.arange(reps, dtype=jnp.int32), count)
    states = jax.vmap(lambda k, inst, w: run_from_instance(
        k, inst, lambda kk, st: policy(kk, st, w), queue_capacity, params)[0])(
        tile(keys), jax.tree.map(tile, instances), which)
    return [jax.tree.map(lambda x: x[j * count:(j + 1) * count], states) for j in range(reps)]


def play_policies(policies, keys: jax.Array, instances: Instance, queue_capacity: int,
                  params: EnvParams = EnvParams()) -> list[EnvState]:
    """Final states [B] of `instances` under each of `policies` (a sequence), compiled as
    one program: the same as `play_batch` per policy (the same keys, so the same
    decisions; times agree to float rounding, as XLA may fuse the programs differently).
    Each step computes every policy's action and each episode takes its own policy's: one
    compilation instead of one per policy, for P times the policy work. Jittable."""
    policies = list(policies)

    def policy(key, state, which):
        actions = [p(key, state) for p in policies]
        return jax.tree.map(lambda *xs: jnp.stack(xs)[which], *actions)

    return play_selected(policy, len(policies), keys, instances, queue_capacity, params)


def play_pairs(names, keys: jax.Array, instances: Instance, queue_capacity: int,
               params: EnvParams = EnvParams(), chunked: dict | None = None
               ) -> dict[str, EnvState]:
    """Final states [B] of `instances` played by every heuristic pair in `names`.

    The same as `play_batch(pair_from_name(name), ...)` for each name (the same keys
    and key splits, so the same decisions; times agree to float rounding, as XLA may
    fuse the two programs differently), with one compilation per dispatch rule: the
    pairs that share it run as one vmapped batch (`play_selected`), the dispatch rule
    computed once per step and the scheduling rule chosen per episode. `chunked`, where
    given, are `play_in_chunks`'s keyword arguments (`chunk_steps`, `progress`, `every`):
    each group then runs in compiled chunks of steps (the same states).
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        d, s = pair_names(name)
        groups.setdefault(d, []).append((name, s))
    out = {}
    for d, members in groups.items():
        rules = [SCHEDULE_RULES[s] for _, s in members]

        def policy(key, state, which, dispatch=DISPATCH_RULES[d], rules=rules):
            k_d, k_s = jax.random.split(key)  # as heuristics.pair
            picks = jnp.stack([rule(k_s, state) for rule in rules])[which]
            return Action(dispatch=dispatch(k_d, state), picks=picks)

        reps = len(rules)
        if chunked is None:
            run = jax.jit(lambda k, inst, policy=policy, reps=reps: play_selected(
                policy, reps, k, inst, queue_capacity, params))
            states = run(keys, instances)
        else:   # play_selected's batch, in chunks
            count = keys.shape[0]
            tile = lambda x, reps=reps: jnp.concatenate([x] * reps)
            which = jnp.repeat(jnp.arange(reps, dtype=jnp.int32), count)
            both = play_in_chunks(policy, tile(keys), jax.tree.map(tile, instances),
                                  queue_capacity, params, which=which, **chunked)
            states = [jax.tree.map(lambda x, j=j: x[j * count:(j + 1) * count], both)
                      for j in range(reps)]
        out.update(zip([name for name, _ in members], states))
    return {name: out[name] for name in names}


RESET_BLOCKS = 16  # the auto-reset draws fresh episodes in blocks of ceil(E / 16) envs


def reset_block(num_envs: int) -> int:
    """Envs per block of the auto-reset (`reset_finished`): ceil(E / RESET_BLOCKS)."""
    return -(-num_envs // RESET_BLOCKS)


def reset_envs(env, params, keys: jax.Array, done: jax.Array, obs, state,
               view: Callable | None = None):
    """`(obs, state)` [E] with a fresh episode `env.reset(keys[i], params)` in every env `i`
    where `done` [E], the rest untouched: the same as resetting all E envs and selecting,
    but only the finished envs' episodes are drawn. They are drawn in blocks of
    `reset_block(E)` envs (a `fori_loop` over ceil(count / block) blocks), so a step where
    a few episodes end costs one block, not E instances. `view`, where given, maps a
    fresh observation to the form `obs` is carried in (e.g. `damdjax.envs.observation.
    observation_part`: a trainer's agents' part)."""
    num = done.shape[0]
    block = reset_block(num)
    blocks = -(-num // block)
    order = jnp.nonzero(done, size=blocks * block, fill_value=num)[0]  # done envs first

    def fill(b, carry):
        idx = jax.lax.dynamic_slice(order, (b * block,), (block,))  # [block], num = none
        fresh = jax.vmap(env.reset, in_axes=(0, None))(keys[jnp.minimum(idx, num - 1)], params)
        if view is not None:
            fresh = (view(fresh[0]), fresh[1])
        return jax.tree.map(lambda full, new: full.at[idx].set(new, mode="drop"), carry, fresh)

    count = jnp.sum(done.astype(jnp.int32))
    return jax.lax.fori_loop(0, (count + block - 1) // block, fill, (obs, state))


def reset_finished(env, params, key: jax.Array, done: jax.Array, obs, state,
                   axis_name: str | None = None, view: Callable | None = None):
    """Training loops' auto-reset: fresh episodes where `done` [E], metrics of the ended ones.

    Env `i` restarts from `env.reset(jax.random.split(key, E)[i], params)` (`reset_envs`:
    only the finished envs' episodes are drawn). Returns `(obs, state, stats)` with
    `stats` = `episodes`, `response_sum`, `miss_sum` (sums over the ended episodes).
    Skipped by `lax.cond` when no episode ended (the common case): same result, less
    work. Under `jax.vmap(..., axis_name=axis_name)` (a sweep's members) the skip is
    decided over the whole axis (no episode ended in any member): a predicate that
    differs between members would turn the `cond` into a `select` that resets every env
    at every step. `view`: as `reset_envs`'.
    """
    def finish(operand):
        obs, state = operand
        met = jax.vmap(episode_metrics)(state)
        w = done.astype(jnp.float32)
        stats = {"episodes": jnp.sum(w), "response_sum": jnp.sum(w * met["avg_response_time"]),
                 "miss_sum": jnp.sum(w * met["deadline_miss_rate"])}
        keys = jax.random.split(key, done.shape[0])
        return (*reset_envs(env, params, keys, done, obs, state, view), stats)

    def keep(operand):
        zero = jnp.zeros((), jnp.float32)
        return (*operand, {"episodes": zero, "response_sum": zero, "miss_sum": zero})

    any_done = jnp.any(done)
    if axis_name is not None:
        any_done = jax.lax.psum(any_done.astype(jnp.int32), axis_name) > 0
    return jax.lax.cond(any_done, finish, keep, (obs, state))


def chunk_episode_metrics(stats) -> dict:
    """Mean response time and miss rate over the episodes that ended in a chunk, from the
    per-step `reset_finished` stats stacked by `lax.scan` (0 where none ended)."""
    n = jnp.sum(stats["episodes"])
    return {"episodes": n,
            "avg_response_time": jnp.sum(stats["response_sum"]) / jnp.maximum(n, 1),
            "deadline_miss_rate": jnp.sum(stats["miss_sum"]) / jnp.maximum(n, 1)}


def make_chunk(env_step: Callable, update: Callable, epsilon_fn: Callable, *,
               steps_per_chunk: int, updates_per_step: int, invalid_key: str,
               final_metrics: Callable[[Any], dict]) -> Callable:
    """The trainers' chunk: a pure, jittable `(runner, hyper) -> (runner, metrics)`.

    One `lax.scan` of `steps_per_chunk` iterations; each takes one vmapped env step,
    `env_step(runner, key, epsilon, hyper) -> (runner, info, stats)` at
    `epsilon = epsilon_fn(runner.env_steps, hyper)`, then `updates_per_step` gradient
    steps, `update(runner, key, hyper) -> (runner, (loss [], active []))` (active 0/1: it
    had data). `runner` is a pytree with fields `key`, `env_steps` and `chunk`; `hyper`
    any pytree (the run's traced scalars, `damdjax.hyper.Hyper`). Metrics (scalars): the
    ended episodes' means (`chunk_episode_metrics`), mean loss over active updates, the
    sum of `info[invalid_key]`, the last epsilon, and `final_metrics(runner)`.
    """

    def chunk(rs, hyper):
        def iteration(rs, _):
            key, k_step, k_upd = jax.random.split(rs.key, 3)
            rs = rs.replace(key=key)
            epsilon = epsilon_fn(rs.env_steps, hyper)
            rs, info, stats = env_step(rs, k_step, epsilon, hyper)
            rs, (losses, active) = jax.lax.scan(lambda r, k: update(r, k, hyper), rs,
                                                jax.random.split(k_upd, updates_per_step))
            stats = {**stats, "loss_sum": jnp.sum(losses), "loss_n": jnp.sum(active),
                     invalid_key: jnp.sum(info[invalid_key]), "epsilon": epsilon}
            return rs, stats

        rs, st = jax.lax.scan(iteration, rs, None, length=steps_per_chunk)
        metrics = {
            **chunk_episode_metrics(st),
            "loss": jnp.sum(st["loss_sum"]) / jnp.maximum(jnp.sum(st["loss_n"]), 1),
            invalid_key: jnp.sum(st[invalid_key]),
            "epsilon": st["epsilon"][-1],
            **final_metrics(rs),
        }
        return rs.replace(chunk=rs.chunk + 1), metrics

    return chunk


class Stage(NamedTuple):
    """One stage of a trainer's run (a single-stage trainer has one; train.damd one per
    dispatcher or schedulers stage): `chunk(runner, hyper) -> (runner, metrics)`, and
    `begin(runner, hyper) -> runner` (None: nothing) applied before its first chunk."""

    chunk: Callable
    begin: Callable | None = None


class TrainFns(NamedTuple):
    """A trainer's training program (`train.<trainer>.make_train(config)`): pure, jittable,
    vmappable over members (keys and a stacked `damdjax.hyper.Hyper`).

    init(key, hyper) -> runner: a fresh runner state (key: a raw uint32 PRNG key [2];
        the networks, the first episodes and the rest of the run derive from it; no
        file is read).
    chunk(runner, hyper) -> (runner, metrics): one chunk (`make_chunk`) of the first
        stage; metrics are scalars.
    train(key, hyper) -> (runner, metrics): `init`, then every stage's chunks
        (`lax.scan`); metrics leaves [num_chunks] (train.damd: a list, one per stage).
    stages: every `Stage` in order; the config says how many chunks each runs
        (`stage_plan()`).
    """

    init: Callable
    chunk: Callable
    train: Callable
    stages: tuple = ()


def train_fns(init: Callable, chunk: Callable, num_chunks: int) -> TrainFns:
    """`TrainFns` of a single-stage trainer's `init` and `chunk`, `train` being
    `num_chunks` chunks."""
    def train(key, hyper):
        rs = init(key, hyper)
        return jax.lax.scan(lambda r, _: chunk(r, hyper), rs, None, length=num_chunks)

    return TrainFns(init=init, chunk=chunk, train=train, stages=(Stage(chunk),))


def with_params(rs, params):
    """Runner `rs` (fields `params`, `target_params`) starting from `params`, online and
    target (a loaded policy's, for --init-dispatcher / --init-schedulers). Only valid
    before the first update: Adam's fresh state is zeros whatever the parameters."""
    return rs.replace(params=params, target_params=params)
