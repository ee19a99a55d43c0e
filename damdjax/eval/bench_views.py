"""Throughput of the environment's views (`damdjax.views`) beside the raw env's.

Every view plays the same generated instances (the keys of `eval.bench`'s timed calls)
to their ends with the same policy, EFT dispatch with SJF picks, each as its API asks:

* `raw env`: `EdgeEnv.step` with the pair's joint action, one step per epoch
  (`damdjax.rollout.run_from_instance`);
* `dispatcher view`: `DispatcherView.step_env`, one step per dispatch decision (EFT's
  server), the SJF picks played inside; and the same with `max_epochs=DISPATCHER_CAP`
  (a step ends at the next decision or after that many epochs: the views' docstrings,
  "Batched speed");
* `schedulers view`: `SchedulersView.step_env`, one step per epoch with a pick decision
  (each agent SJF's slot), EFT dispatch played inside; and the same with
  `max_epochs=SCHEDULERS_CAP`;
* `joint view (Jumanji)` (where Jumanji is installed): `JointView.step`, one step per
  epoch (the pair's joint action).

Each is one jitted, vmapped function over `B` episodes (instance generation included);
its compile is timed apart, then one untimed warm-up call and `repeats` timed calls with
fresh keys. From the median wall time: epochs/s (the env epochs played: the final
`EnvState.step`, summed over the batch), decisions/s (the view's steps at which its
agents decided; with `max_epochs` some steps decide nothing), and the
ratio of the view's epochs/s to the raw env's measured in the same run. All views end
every episode in the same state (tests/test_views_agree.py), so their epochs are the
same work.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp

from damdjax.envs.config import EnvConfig, EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.generator import generate
from damdjax.eval.benchkit import compile_runner, fmt
from damdjax.heuristics import DISPATCH_RULES, SCHEDULE_RULES, pair
from damdjax.rollout import run_from_instance

RAW = "raw env"
# The capped views' max_epochs: a dispatch decision takes 2 epochs on average (its own and
# a pick), and the servers' view's steps are mostly one epoch each.
DISPATCHER_CAP, SCHEDULERS_CAP = 2, 1
DISPATCH, SCHEDULE = "eft", "sjf"


def _raw_runner(config: EnvConfig) -> Callable:
    """`(key, instance, params) -> (final state, view steps [])`: the raw env, one step per
    epoch."""
    policy = pair(DISPATCH_RULES[DISPATCH], SCHEDULE_RULES[SCHEDULE])

    def play(key, instance, params):
        state, _ = run_from_instance(key, instance, policy, config.queue_capacity, params)
        return state, state.step

    return play


def _dispatcher_runner(config: EnvConfig, max_epochs: int | None = None) -> Callable:
    """The dispatcher view: EFT's server at each decision, SJF inside; decisions counted
    from `info["decision"]` (every step, without `max_epochs`)."""
    from damdjax.views.dispatcher import DispatcherView
    view = DispatcherView(EdgeEnv(config), schedule=SCHEDULE, max_epochs=max_epochs)
    rule = DISPATCH_RULES[DISPATCH]

    def play(key, instance, params):
        k_reset, key = jax.random.split(key)
        _, state = view.reset_to(instance, params, k_reset)

        def body(carry):
            k, s, n = carry
            k, k_act, k_step = jax.random.split(k, 3)
            _, s, _, _, info = view.step_env(k_step, s, rule(k_act, s), params)
            return k, s, n + info["decision"].astype(jnp.int32)

        _, state, steps = jax.lax.while_loop(lambda c: ~c[1].done, body,
                                             (key, state, jnp.zeros((), jnp.int32)))
        return state, steps

    return play


def _schedulers_runner(config: EnvConfig, params: EnvParams, max_epochs: int | None = None
                       ) -> Callable:
    """The schedulers' view: SJF's pick for each agent with a decision (the no-op for the
    others), EFT inside; decisions: the steps where some agent decided. The view holds
    `params` (JaxMARL's API), so they are constants."""
    from damdjax.views.schedulers import SchedulersView
    view = SchedulersView(EdgeEnv(config), dispatch=DISPATCH, params=params,
                          max_epochs=max_epochs)
    rule = SCHEDULE_RULES[SCHEDULE]

    def play(key, instance, _params):
        k_reset, key = jax.random.split(key)
        _, state = view.reset_to(instance, k_reset)

        def body(carry):
            k, s, n = carry
            k, k_act, k_step = jax.random.split(k, 3)
            noop = view.avail_actions(s)[:, view.noop]
            picks = jnp.where(noop, view.noop, rule(k_act, s))
            _, s, _, _, info = view.step_env(k_step, s, picks)
            return k, s, n + jnp.any(info["decision"]).astype(jnp.int32)

        _, state, steps = jax.lax.while_loop(lambda c: ~c[1].done, body,
                                             (key, state, jnp.zeros((), jnp.int32)))
        return state, steps

    return play


def _joint_runner(config: EnvConfig, params: EnvParams) -> Callable | None:
    """The Jumanji joint view, one step per epoch with the pair's joint action; None
    without Jumanji (the extra `damdjax[jumanji]`)."""
    try:
        from damdjax.views.joint import JointState, JointView, joint_action
    except ImportError:
        return None
    view = JointView(EdgeEnv(config), params)
    policy = pair(DISPATCH_RULES[DISPATCH], SCHEDULE_RULES[SCHEDULE])

    def play(key, instance, _params):
        _, first = view.env.reset_to(instance, params)
        state = JointState(env_state=first, key=key)

        def body(carry):
            k, s, n = carry
            k, k_act = jax.random.split(k)
            s, _ = view.step(s, joint_action(policy(k_act, s.env_state)))
            return k, s, n + 1

        _, state, steps = jax.lax.while_loop(lambda c: ~c[1].env_state.done, body,
                                             (key, state, jnp.zeros((), jnp.int32)))
        return state.env_state, steps

    return play


def view_runners(config: EnvConfig, params: EnvParams) -> dict[str, Callable]:
    """`{name: (key, instance, params) -> (final EnvState, view steps [])}` for the raw env
    and every view this install has (the joint view needs Jumanji)."""
    runners = {RAW: _raw_runner(config), "dispatcher view": _dispatcher_runner(config),
               f"dispatcher view, max_epochs={DISPATCHER_CAP}":
                   _dispatcher_runner(config, DISPATCHER_CAP),
               "schedulers view": _schedulers_runner(config, params),
               f"schedulers view, max_epochs={SCHEDULERS_CAP}":
                   _schedulers_runner(config, params, SCHEDULERS_CAP)}
    joint = _joint_runner(config, params)
    if joint is not None:
        runners["joint view (Jumanji)"] = joint
    return runners


def batch_runner(config: EnvConfig, play: Callable) -> Callable:
    """A jittable `(keys [B], params) -> {"epochs", "decisions", "done"}` ([B] each):
    generate an instance from each key, play it to its end with `play`."""
    def one(key, params):
        k_gen, k_play = jax.random.split(key)
        state, steps = play(k_play, generate(k_gen, config, params), params)
        return {"epochs": state.step, "decisions": steps, "done": state.done}

    return jax.vmap(one, in_axes=(0, None))


def bench_views(config: EnvConfig, params: EnvParams, keys_of: Callable[[int], jax.Array],
                repeats: int, log: Callable[[str], None] = lambda line: None) -> list[dict]:
    """One row per view: compile seconds, median seconds, epochs/s, decisions/s, and
    `epochs_ratio` (its epochs/s over the raw env's). `keys_of(r)` gives the batch's keys
    of timed call `r` (`r == repeats`: the warm-up's)."""
    rows = []
    for name, play in view_runners(config, params).items():
        compiled, compile_s = compile_runner(batch_runner(config, play), keys_of(0), params)
        jax.block_until_ready(compiled(keys_of(repeats), params))
        seconds, counts = [], None
        for r in range(repeats):
            keys = jax.block_until_ready(keys_of(r))
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(keys, params))
            seconds.append(time.perf_counter() - t0)
            if not bool(jnp.all(out["done"])):
                raise RuntimeError(f"{name}: an episode did not end")
            counts = counts or {k: int(jnp.sum(v)) for k, v in out.items() if k != "done"}
        median = statistics.median(seconds)
        rows.append({"view": name, "batch_size": int(keys_of(0).shape[0]),
                     "compile_s": compile_s, "times_s": seconds, "median_s": median,
                     "epochs": counts["epochs"], "decisions": counts["decisions"],
                     "epochs_per_s": counts["epochs"] / median,
                     "decisions_per_s": counts["decisions"] / median})
        log(f"{name}: compile {compile_s:.2f} s, median {median:.4f} s")
    raw = rows[0]["epochs_per_s"]
    for row in rows:
        row["epochs_ratio"] = row["epochs_per_s"] / raw
    return rows


def markdown_views(rows: list[dict]) -> str:
    """The views' rows as a markdown table."""
    lines = ["| view | batch | compile s | median s | epochs/s | decisions/s | epochs/s vs raw |",
             "|---|" + "---:|" * 6]
    for row in rows:
        lines.append("| " + " | ".join([
            row["view"], str(row["batch_size"]), fmt(row["compile_s"]), fmt(row["median_s"]),
            fmt(row["epochs_per_s"]), fmt(row["decisions_per_s"]),
            f"{row['epochs_ratio']:.2f}x"]) + " |")
    return "\n".join(lines)
