"""A clairvoyant one-step lookahead over a base policy: how much better than the best
heuristic pair could a dispatcher do by deciding differently where it dispatches?

    rule = lookahead_dispatch(pair_from_name("ES"))      # a DispatchRule
    policy = pair(rule, SCHEDULE_RULES["sjf"])           # the lookahead over ES, with SJF
    python -m eval.compare --lookahead ES --methods ES   # paired against ES itself

Where a dispatch is needed, for every feasible server m the rule plays the episode to
its end from the current state with the head task sent to m (and this step's picks the
base policy's), then the base policy throughout, and sends the task where the episode's
total response time comes out smallest (ties: the lowest index). Elsewhere it returns
the base policy's dispatch (unused).

It reads the whole instance, future arrivals included (the state holds them), so it is
not a policy a dispatcher could run; it is a yardstick. The dynamics are deterministic
given the instance, so for a deterministic base policy (every pair but Random's) the
lookahead is the rollout policy of Bertsekas' rollout algorithm and, by the policy
improvement argument, its total response time is at most the base policy's on every
episode (`tests/test_lookahead.py` checks it). It is not a bound: a policy that deviates
from the base at several decisions at once may do better still. Cost: at every step,
one episode per server (M of them) played to the end.

`online_rollout_dispatch` is the same rule played on the tasks that have arrived by the
decision (`arrived_only`: the later ones removed from the copy): a policy a dispatcher
can run (eval.compare `--rollout`), of which the learned dispatcher's rollout targets
are a clairvoyant approximation. Its cost is one play-out per server of the arrived,
unfinished tasks only.

`rollout_targets` turns the costs into a dispatcher network's regression targets:
`train.dqn --targets rollout` fits the network to them (one step of approximate policy
iteration over the base pair), so its greedy rule approximates the lookahead without
knowing the future.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from damdjax.heuristics import DispatchRule, Policy
from damdjax.rollout import instance_env
from damdjax.envs.config import EnvParams
from damdjax.envs.dynamics import dispatch_feasible, dispatch_needed
from damdjax.envs.state import Action, EnvState, done_time, started
from damdjax.envs.times import never

# The env params of the play-outs, which keep only the states (their rewards are unused).
PLAY_OUT = EnvParams(tau=1.0, miss_penalty=0.0)


def _play_step(key: jax.Array, state: EnvState, action: Action) -> EnvState:
    """The state after one `env.step` under PLAY_OUT, on the env of `state`'s instance and
    queue slots (`damdjax.rollout.instance_env`; the observation and the reward are
    unused: under jit XLA removes them)."""
    env, params = instance_env(state.instance, state.queue.shape[-1], PLAY_OUT)
    return env.step(key, state, action, params)[1]


def _counted(state: EnvState, until: jax.Array | None) -> jax.Array:
    """[N] the real tasks a total counts: all, or with `until` [] those arriving by then."""
    inst = state.instance
    return inst.task_mask if until is None else inst.task_mask & (inst.arrival <= until)


def total_response_time(state: EnvState, until: jax.Array | None = None) -> jax.Array:
    """Sum over the instance's real tasks of `done - arrival` (time units) []; +inf where
    a counted task never started (so never finishes). With `until` [] (time units), only
    the tasks arriving by then."""
    counted = _counted(state, until)
    total = jnp.sum(jnp.where(counted, done_time(state) - state.instance.arrival, 0.0))
    return jnp.where(jnp.any(counted & ~started(state)), jnp.inf, total)


def _play_out(key: jax.Array, state: EnvState, base: Policy,
              until: jax.Array | None = None) -> EnvState:
    """`state` played with `base` (no reward kept) to the end of its episode, or with
    `until` [] only until every real task arriving by then has started: a task's done
    time is fixed when it starts (`EnvState.done_at`), so `total_response_time(., until)`
    of the result is the full play-out's."""
    def going(carry):
        s = carry[1]
        if until is None:
            return ~s.done
        return ~s.done & jnp.any(_counted(state, until) & ~started(s))

    def body(carry):
        k, s = carry
        k, k_act = jax.random.split(k)
        return k, _play_step(k_act, s, base(k_act, s))
    return jax.lax.while_loop(going, body, (key, state))[1]


def played_out(key: jax.Array, state: EnvState, base: Policy, picks: jax.Array | None = None,
               until: jax.Array | None = None) -> EnvState:
    """The states [M] (leaves with a leading server axis) of the episode played out with
    the head task sent to each server now (this step's picks `picks` [M], by default the
    base policy's), then `base`: to the end, or with `until` [] only until every task
    arriving by then has started (`_play_out`)."""
    if picks is None:
        picks = base(key, state).picks
    servers = jnp.arange(state.instance.cpu.shape[0], dtype=jnp.int32)
    return jax.vmap(lambda m: _play_out(
        key, _play_step(key, state, Action(dispatch=m, picks=picks)), base, until))(servers)


def lookahead_costs(key: jax.Array, state: EnvState, base: Policy,
                    picks: jax.Array | None = None, horizon: float | None = None
                    ) -> jax.Array:
    """[M] the episode's total response time if the head task goes to each server now (this
    step's picks `picks` [M], by default the base policy's), then `base` to the end
    (infeasible servers included: mask them with `dispatch_feasible`). With `horizon`
    (time units, >= 0), the total counts only the tasks arriving by `state.time +
    horizon` (0: those arrived by now, the head task included), and each episode is
    played only until they have all started."""
    until = None if horizon is None else state.time + horizon
    return jax.vmap(lambda s: total_response_time(s, until))(
        played_out(key, state, base, picks, until))


def rollout_targets(costs: jax.Array, mask: jax.Array, time_scale
                    ) -> tuple[jax.Array, jax.Array]:
    """A dispatcher's regression targets from `lookahead_costs` [..., M] (time units) over
    the feasible servers `mask` [..., M]: `-(cost_m - mean over feasible of cost) /
    time_scale` (larger is better; 0 off the mask) [..., M], and [...] whether every
    feasible cost is finite (a target to keep). The greedy server of the targets is the
    lookahead's."""
    finite = jnp.all(jnp.isfinite(costs) | ~mask, axis=-1)
    c = jnp.where(mask, costs, 0.0)
    count = jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1)
    mean = jnp.sum(c, axis=-1, keepdims=True) / count
    target = jnp.where(mask & finite[..., None], -(c - mean) / time_scale, 0.0)
    return target, finite


def arrived_only(state: EnvState) -> EnvState:
    """`state` without the tasks that arrive after `state.time`: they become padding
    tasks (`task_mask` False, `arrival` and `deadline` `never`, `job` -1) and leave the
    count of unstarted tasks. Jobs arrive whole and in index order, so those tasks are a
    suffix of the task indices, none of them dispatched, and no arrived task depends on
    one: the episode that remains is the one a dispatcher knows of at `state.time`."""
    inst = state.instance
    future = inst.task_mask & (inst.arrival > state.time)
    unset = never(inst.arrival.dtype)
    inst = inst.replace(task_mask=inst.task_mask & ~future,
                        arrival=jnp.where(future, unset, inst.arrival),
                        deadline=jnp.where(future, unset, inst.deadline),
                        job=jnp.where(future, -1, inst.job))
    return state.replace(instance=inst,
                         unstarted=state.unstarted - jnp.sum(future, dtype=state.unstarted.dtype))


def _best_server(key: jax.Array, state: EnvState, base: Policy, seen: EnvState
                 ) -> jax.Array:
    """The feasible server whose play-out of `seen` (the state the rule may know of)
    has the smallest total response time (infinite ones last, ties to the lowest index);
    `base`'s dispatch where no dispatch is needed."""
    act = base(key, state)
    costs = lookahead_costs(key, seen, base, act.picks)
    finite = jnp.where(jnp.isfinite(costs), costs, jnp.finfo(costs.dtype).max)
    feasible = dispatch_feasible(state)
    choice = jnp.argmin(jnp.where(feasible, finite, jnp.inf)).astype(jnp.int32)
    return jnp.where(dispatch_needed(state), choice, act.dispatch)


def lookahead_dispatch(base: Policy) -> DispatchRule:
    """The clairvoyant one-step lookahead over `base` (module docstring) as a dispatch rule
    `(key, state) -> server [] int32`."""
    return lambda key, state: _best_server(key, state, base, state)


def online_rollout_dispatch(base: Policy) -> DispatchRule:
    """The online rollout over `base` as a dispatch rule `(key, state) -> server [] int32`:
    the one-step lookahead played on `arrived_only(state)`, the tasks that have arrived
    by now, so it reads nothing from the future and is a policy a dispatcher can run.
    For every feasible server it plays the arrived tasks to their ends with the head task
    there, then `base`, and picks the smallest total response time of those tasks."""
    return lambda key, state: _best_server(key, state, base, arrived_only(state))
