"""Train the DQN dispatcher (PureJaxRL style: training is a function of a key and `Hyper`).

`make_train(config)` gives the pure, jittable pieces `init(key, hyper)`,
`chunk(runner, hyper)` and `train(key, hyper)` (damdjax.hyper.Hyper: every scalar
that can vary without recompiling); the command below and `python -m train.sweep`
(many runs, vmapped, in one program) are host loops around them.

    python -m train.dqn --name try1                         # runs/try1/
    python -m train.dqn --name try1 --resume --num-chunks 40  # continue to 40 chunks in all
    python -m train.dqn --num-envs 8 --num-tasks 20 --num-chunks 3 --name tiny --overwrite

The dispatcher acts epsilon-greedily on the Q-network's view of the head task
where a dispatch is needed; every server schedules its queue with
--scheduler: a heuristic, or trained MDQN schedulers (a train.mdqn run
directory, frozen). A transition's next state is the env's next dispatch
decision, or the episode's end: terminal, unless the step cap truncated the
episode (then it bootstraps from the capped state). Rewards (--reward):
  response  the paper's: exp(-T_i / tau) for the decision that dispatched task
            i, credited to that transition when i completes;
  sojourn   the schedulers' team reward (docs/model.md, "Rewards": minus the
            time unfinished tasks spend in the system, over tau, minus the miss
            penalty) summed over the env steps from this dispatch to the next one.

Targets (--targets): td, the DQN's temporal-difference targets from the rewards
above; or rollout, one step of approximate policy iteration over EFT with the run's
scheduler: at every dispatch decision each feasible server is tried by playing
the episode out with EFT and the scheduler (damdjax.lookahead.lookahead_costs),
and the network is fitted (squared error, every feasible server at once) to
`-(total response time - its mean over the servers) / time_scale`
(damdjax.lookahead.rollout_targets). The rollouts know the episode's future
arrivals, the network does not: its greedy rule estimates the lookahead's
expected choice from what it sees. --reward, --gamma, --target-every,
--double-dqn and --n-step do not apply to it (refused unless at their defaults).
Every env is played out at every step, a dispatch needed or not (a vmapped step
computes them all); --rollout-envs K plays out only K envs a step, drawn among
those that must dispatch (the rest act and store nothing). --rollout-tasks arrived
sums only the response times of the tasks arrived by the decision (the head task
and earlier ones; each rollout stops once they have all started) instead of the
whole episode's: on long episodes most of the full total's spread over the
servers comes from tasks that have not arrived yet, which the network cannot see.

Writes runs/<name>/config.json, metrics.jsonl (one line per chunk),
checkpoint.msgpack (online and target params, optimizer state, counters, RNG
key and the replay buffer; flax msgpack, atomic replace; --resume continues it
exactly), dispatcher.msgpack (the online network alone: what eval.compare
--dispatcher-checkpoint and train.mdqn --dispatcher load) and eval.json (the
greedy dispatcher vs nearest, random and least_load on held-out instances,
paired, with the same scheduler). Ctrl-C stops between chunks' writes: the
checkpoint always holds a complete chunk.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from damdjax import memory, replay, rundir, runner, runs
from damdjax.cli import add_common_flags, add_config_flags, config_from_flags
from damdjax.configs import ConfigError, Field, check_choice, option
from damdjax.run_config import RunConfig
from damdjax.run_inputs import original
from damdjax.evaluation import evaluate_paired, format_paired
from damdjax.family import dispatch_rule
from damdjax.heuristics import DISPATCH_RULES, Policy, ScheduleRule, pair
from damdjax.lookahead import lookahead_costs, rollout_targets
from damdjax.hyper import Hyper, program_of
from damdjax.rollout import TrainFns, make_chunk, reset_finished, train_fns
from damdjax.networks import DispatchQNetwork, DispatchView, epsilon_greedy
from damdjax.policies import (
    DISPATCHER_FILE, check_eft_rule, dispatcher_network, dispatcher_view, dqn_dispatch_rule,
    init_dispatcher, load_dispatcher, resolve_scheduler, save_dispatcher)
from damdjax.targets import online_q_if, periodic_polyak, td_loss, td_targets, where_tree
from damdjax.envs.config import EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.observation import DISPATCHER_FIELDS, observation_part
from damdjax.envs.state import Action

CHECKPOINT = rundir.CHECKPOINT
REWARDS = ("response", "sojourn")
TARGETS = ("td", "rollout")
# --rollout-tasks: the tasks a rollout total sums, as lookahead_costs' horizon (time units
# after the decision; None: the whole episode).
ROLLOUT_TASKS = {"all": None, "arrived": 0.0}
# What targets "rollout" leaves unused, refused unless at the default.
TD_ONLY = ("reward", "gamma", "target_every", "double_dqn", "n_step")


@dataclasses.dataclass(frozen=True)
class DQNConfig(RunConfig):
    """A DQN dispatcher run: `RunConfig`'s fields and these (all JSON-serialisable)."""

    scheduler: str = option("fcfs", "how servers schedule their queues: fcfs, sjf, sdf, cp, "
                            "llf, or a train.mdqn run directory (its trained schedulers, "
                            "frozen)")
    reward: str = option("response", "dispatcher reward: response = exp(-T_i/tau) of the "
                         "dispatched task (the paper's), or sojourn = the schedulers' team "
                         "reward between this dispatch and the next")
    init_dispatcher: str = option("", "start from the parameters of this dispatcher (a "
                                  "train.dqn run directory or dispatcher.msgpack) instead of a "
                                  "fresh network (\"\": fresh)", metavar="PATH")
    eft_feature: bool = option(False, "append the EFT rule's estimate of when the head "
                               "task's result would be back (from now, over time_scale) to "
                               "every feasible server's features")
    targets: str = option("td", "td: the DQN's TD targets from --reward; rollout: fitted to "
                          "EFT-with-the-scheduler rollouts from every server at each dispatch "
                          "(approximate policy iteration over EFT)")
    rollout_envs: int = option(0, "--targets rollout: per step, play rollouts out for at most "
                               "K of the envs that must dispatch (drawn at random; the others "
                               "act but store nothing): about K/num_envs of the rollout cost "
                               "(0: all of them)", metavar="K")
    rollout_tasks: str = option("all", "--targets rollout: the tasks whose response times a "
                                "rollout total sums: all (the episode's) or arrived (those "
                                "arrived by the decision: the head task and earlier ones; the "
                                "rollouts stop once they have all started)")
    eft_rule: str = option("eft", "the EFT-family dispatch rule that --targets rollout plays "
                           "out and --eft-feature reads: eft, heft, peft or "
                           "eft[HOLDERS/WAIT/rRELAY/lLOOKAHEAD] (docs/model.md, \"The EFT "
                           "family\"; not the ahead wait)", metavar="RULE")

    decision = "dispatch decision"
    eval_methods = 1 + len(DISPATCH_RULES)   # `evaluate`: the DQN and every dispatch rule
    observation_fields = DISPATCHER_FIELDS   # what the runner carries (`agents_part`)
    added_fields = {**RunConfig.added_fields, "eft_feature": False,   # no EFT column,
                    "targets": "td", "rollout_envs": 0,               # DQN targets
                    "rollout_tasks": "all", "eft_rule": "eft"}

    def check(self) -> None:
        """`RunConfig.check`, then this trainer's fields: `reward` one of REWARDS and the
        targets' fields together (`check_targets`)."""
        super().check()
        check_choice("reward", self.reward, REWARDS)
        self.check_targets()

    def check_targets(self) -> None:
        """ConfigError naming the field of an unknown `targets`, of a TD-only value away
        from its default with `targets` rollout, of `rollout_envs` outside [0, num_envs]
        or set with `targets` td, or of an unknown `rollout_tasks` or one other than
        "all" with `targets` td."""
        check_choice("targets", self.targets, TARGETS)
        if not 0 <= self.rollout_envs <= self.num_envs:
            raise ConfigError(Field("rollout_envs"), " must be in [0, ", Field("num_envs"),
                              f" {self.num_envs}], got {self.rollout_envs}")
        if self.rollout_envs and self.targets != "rollout":
            raise ConfigError(Field("rollout_envs"), f" {self.rollout_envs} applies only to ",
                              Field("targets"), " rollout")
        check_choice("rollout_tasks", self.rollout_tasks, ROLLOUT_TASKS)
        try:
            check_eft_rule(self.eft_rule)
        except ValueError as err:
            raise ConfigError(Field("eft_rule"), f": {err}") from None
        if self.eft_rule != "eft" and self.targets != "rollout" and not self.eft_feature:
            raise ConfigError(Field("eft_rule"), f" {self.eft_rule} applies only to ",
                              Field("targets"), " rollout or ", Field("eft_feature"))
        if self.rollout_tasks != "all" and self.targets != "rollout":
            raise ConfigError(Field("rollout_tasks"), f" {self.rollout_tasks} applies only to ",
                              Field("targets"), " rollout")
        if self.targets == "rollout":
            for field in TD_ONLY:
                value, default = getattr(self, field), getattr(DQNConfig, field)
                if value != default:
                    raise ConfigError(Field(field), f" {value} does not apply to ",
                                      Field("targets"), f" rollout (leave it at {default})")

    def check_inputs(self) -> None:
        """ConfigError naming the field unless the files the run reads resolve: the
        `scheduler` (a rule or a train.mdqn run) and the `init_dispatcher` (its widths
        and EFT feature those of this config)."""
        try:
            resolve_scheduler(self.scheduler)
        except ValueError as err:
            raise ConfigError(Field("scheduler"), f": {err}") from None
        init = self.init_dispatcher
        if not init:
            return
        try:
            meta = load_dispatcher(init)[2]
        except ValueError as err:
            raise ConfigError(Field("init_dispatcher"), f": {err}") from None
        if tuple(meta["hidden"]) != self.hidden:
            raise ConfigError(Field("init_dispatcher"), f" {init} has hidden widths "
                              f"{','.join(map(str, meta['hidden']))}: pass the same ",
                              Field("hidden"))
        if meta["eft_rule"] != self.eft_rule:
            raise ConfigError(Field("init_dispatcher"), f" {init} reads eft_rule "
                              f"{meta['eft_rule']}, but ", Field("eft_rule"),
                              f" is {self.eft_rule}: pass the same rule")
        if meta["eft_feature"] != self.eft_feature:
            raise ConfigError(Field("init_dispatcher"), f" {init} has eft_feature "
                              f"{str(meta['eft_feature']).lower()}, but ", Field("eft_feature"),
                              f" is {'on' if self.eft_feature else 'off'}: pass the same "
                              "option")

    def runner_env_bytes(self) -> int:
        """`RunnerState`'s per-env arrays: table_idx, table_stamp [N] int32; prev_idx,
        prev_stamp [] int32; sojourn [] float32."""
        return 8 * self.env_config.n_max + 12

    def replay_memory(self) -> int:
        """The buffer of `DispatchView`s (and next ones); where `targets` is rollout,
        `RolloutSample`s (a view and its targets [M] float32) without next ones."""
        c = self.env_config
        view = memory.dispatch_view_bytes(c, int(self.eft_feature))
        if self.targets == "rollout":
            return memory.replay_bytes(view + 4 * c.m_max, self.buffer_capacity, 0)
        return memory.replay_bytes(view, self.buffer_capacity)

    def network_params(self) -> int:
        """The dispatcher's parameters (with the EFT column where `eft_feature`)."""
        return memory.dispatcher_params(self.hidden, int(self.eft_feature))


class RolloutSample(NamedTuple):
    """One `--targets rollout` replay entry: the dispatcher's `view` (DispatchView) and
    its `target` [M] (`damdjax.lookahead.rollout_targets`)."""

    view: DispatchView
    target: jax.Array


@struct.dataclass
class RunnerState:
    params: Any
    target_params: Any
    opt_state: Any
    buffer: replay.ReplayBuffer
    env_state: Any
    obs: Any                  # [E] the dispatcher's part (`agents_part`)
    table_idx: jax.Array      # [E, N] buffer slot of the transition that dispatched task i
    table_stamp: jax.Array    # [E, N]
    prev_idx: jax.Array       # [E] the env's previous dispatch (awaiting its next state)
    prev_stamp: jax.Array     # [E]
    sojourn: jax.Array        # [E] team reward summed since the env's previous dispatch
    key: jax.Array            # raw uint32 key
    env_steps: jax.Array      # [] total env steps taken
    updates: jax.Array        # [] gradient updates done
    chunk: jax.Array          # [] chunks done


def agents_part(obs):
    """The part of an observation the dispatcher reads (`damdjax.envs.observation.observation_part`):
    all that the runner carries, so the compiled step never computes the rest."""
    return observation_part(obs, DQNConfig.observation_fields)


def _network(config: DQNConfig) -> DispatchQNetwork:
    return dispatcher_network(config.hidden)


def batch_view(config: DQNConfig, obs, env_state, time_scale) -> DispatchView:
    """The dispatcher's inputs of a batch of envs (`obs`, `env_state` leaves [E, ...]):
    `damdjax.policies.dispatcher_view` of each, with the EFT column where
    `config.eft_feature`."""
    return jax.vmap(lambda o, s: dispatcher_view(o, s, time_scale, config.eft_feature,
                                                 config.eft_rule))(obs, env_state)


def _env_step_fn(config: DQNConfig, env: EdgeEnv, axis_name: str | None = None,
                 schedule: ScheduleRule | None = None):
    """(runner, key, epsilon, env params) -> (runner, info, stats): one vmapped step with
    buffer writes (`axis_name`, `schedule`: see `make_train`)."""
    net = _network(config)
    if schedule is None:
        schedule = resolve_scheduler(config.scheduler)
    e = config.num_envs
    sojourn = config.reward == "sojourn"
    if config.targets == "rollout":
        return _rollout_env_step(config, env, net, schedule, axis_name)

    def env_step(rs: RunnerState, key, epsilon, params: EnvParams):
        k_act, k_sched, k_reset = jax.random.split(key, 3)
        view = batch_view(config, rs.obs, rs.env_state, params.time_scale)
        needed = rs.obs.dispatch_needed
        q = net.apply(rs.params, view.task, view.servers, view.server_mask)
        dispatch = epsilon_greedy(k_act, q, view.mask, epsilon)
        picks = jax.vmap(schedule)(jax.random.split(k_sched, e), rs.env_state)
        action = Action(dispatch=dispatch, picks=picks)

        buf = rs.buffer
        # The previous dispatch's next state is this decision.
        closing = needed & (rs.prev_idx >= 0)
        buf = replay.set_next(buf, rs.prev_idx, rs.prev_stamp, view, jnp.zeros((e,), bool),
                              closing)
        if sojourn:  # its reward: the team reward since it was taken
            buf = replay.set_reward(buf, rs.prev_idx, rs.prev_stamp, rs.sojourn, closing)
        acc = jnp.where(needed, 0.0, rs.sojourn)
        buf, idx, stamp = replay.add_batch(buf, view, dispatch, needed)
        buf = replay.set_successor(buf, rs.prev_idx, rs.prev_stamp, idx, stamp, closing)
        prev_idx = jnp.where(needed, idx, rs.prev_idx)
        prev_stamp = jnp.where(needed, stamp, rs.prev_stamp)

        obs, env_state, team_reward, done, info = jax.vmap(env.step, in_axes=(None, 0, 0, None))(
            k_act, rs.env_state, action, params)
        acc = acc + team_reward.astype(acc.dtype)

        # Credit table: the dispatched task id -> this transition.
        task = info["dispatched_task"]
        rows = jnp.arange(e)
        ok = needed & (task >= 0)
        col = jnp.where(ok, task, env.config.n_max)  # out of range: dropped
        table_idx = rs.table_idx.at[rows, col].set(idx, mode="drop")
        table_stamp = rs.table_stamp.at[rows, col].set(stamp, mode="drop")
        if not sojourn:  # rewards of tasks that completed in this step
            reward = jnp.exp(-info["response_time"] / params.tau)
            buf = replay.set_reward(buf, table_idx.ravel(), table_stamp.ravel(), reward.ravel(),
                                    info["newly_done"].ravel())
        # Episode end: the last dispatch's transition ends here. Terminated: terminal.
        # Truncated by the step cap: it bootstraps from the state the cap stopped
        # (docs/model.md, "Termination and truncation"); `obs` is that state's, pre-reset.
        last = done & (prev_idx >= 0)
        buf = replay.set_next(buf, prev_idx, prev_stamp,
                              batch_view(config, obs, env_state, params.time_scale),
                              ~info["truncated"], last)
        if sojourn:
            buf = replay.set_reward(buf, prev_idx, prev_stamp, acc, last)
        acc = jnp.where(done, 0.0, acc)

        obs, env_state, stats = reset_finished(env, params, k_reset, done, agents_part(obs),
                                               env_state, axis_name, agents_part)
        table_idx = jnp.where(done[:, None], -1, table_idx)
        table_stamp = jnp.where(done[:, None], -1, table_stamp)
        prev_idx = jnp.where(done, -1, prev_idx)
        prev_stamp = jnp.where(done, -1, prev_stamp)
        rs = rs.replace(buffer=buf, env_state=env_state, obs=obs, table_idx=table_idx,
                        table_stamp=table_stamp, prev_idx=prev_idx, prev_stamp=prev_stamp,
                        sojourn=acc, env_steps=rs.env_steps + e)
        info = {**info, "team_reward": team_reward, "done": done}
        return rs, info, stats

    return env_step


def _rollout_env_step(config: DQNConfig, env: EdgeEnv, net: DispatchQNetwork,
                      schedule: ScheduleRule, axis_name: str | None):
    """`_env_step_fn`'s step for `--targets rollout`: where a dispatch is needed the view
    and its `rollout_targets` (EFT with `schedule` played out from every server) go to
    the buffer as a complete entry (`RolloutSample`; reward 0, terminal, no next
    observation, no successor). With `config.rollout_envs` K in (0, num_envs) only K
    envs are played out per step: those that must dispatch, K of them at random where
    there are more."""
    e = config.num_envs
    k = config.rollout_envs if 0 < config.rollout_envs < e else e
    base = pair(dispatch_rule(config.eft_rule), schedule)
    horizon = ROLLOUT_TASKS[config.rollout_tasks]

    def env_step(rs: RunnerState, key, epsilon, params: EnvParams):
        k_act, k_sched, k_reset = jax.random.split(key, 3)
        view = batch_view(config, rs.obs, rs.env_state, params.time_scale)
        q = net.apply(rs.params, view.task, view.servers, view.server_mask)
        dispatch = epsilon_greedy(k_act, q, view.mask, epsilon)
        keys = jax.random.split(k_sched, e)
        picks = jax.vmap(schedule)(keys, rs.env_state)
        # The rollouts start from this step's picks (the scheduler is deterministic).
        needed, played, states, views, actions, played_picks = (
            rs.obs.dispatch_needed, keys, rs.env_state, view, dispatch, picks)
        if k < e:   # the envs that must dispatch first, in random order: K rows [K]
            draw = jax.random.uniform(jax.random.fold_in(k_sched, 1), (e,))
            rows = jax.lax.top_k(needed + 0.5 * draw, k)[1]
            needed, played, states, views, actions, played_picks = jax.tree.map(
                lambda x: x[rows], (needed, keys, states, views, actions, played_picks))
        costs = jax.vmap(lambda kk, s, p: lookahead_costs(kk, s, base, p, horizon))(
            played, states, played_picks)
        target, finite = rollout_targets(costs, views.mask, params.time_scale)
        write = needed & finite
        entry = RolloutSample(view=views, target=target)
        buf, idx, stamp = replay.add_batch(rs.buffer, entry, actions, write)
        buf = replay.set_reward(buf, idx, stamp, jnp.zeros((k,)), write)
        buf = replay.set_next(buf, idx, stamp, (), jnp.ones((k,), bool), write)
        obs, env_state, team_reward, done, info = jax.vmap(env.step, in_axes=(None, 0, 0, None))(
            k_act, rs.env_state, Action(dispatch=dispatch, picks=picks), params)
        obs, env_state, stats = reset_finished(env, params, k_reset, done, agents_part(obs),
                                               env_state, axis_name, agents_part)
        rs = rs.replace(buffer=buf, env_state=env_state, obs=obs, env_steps=rs.env_steps + e)
        return rs, {**info, "team_reward": team_reward, "done": done}, stats

    return env_step


def make_env_step(config: DQNConfig, env: EdgeEnv, params: EnvParams):
    """(runner, key, epsilon) -> (runner, info, stats): one vmapped env step at `params`
    with its buffer writes (the step `make_train`'s chunk takes; for step-level tests)."""
    step = _env_step_fn(config, env)
    return lambda rs, key, epsilon: step(rs, key, epsilon, params)


def dispatcher_loss(net: DispatchQNetwork, params, target_params, batch: replay.Transition,
                    valid, gamma, double) -> jax.Array:
    """The dispatcher's TD loss []: `td_loss` (Huber) of `net`'s Q at `params` of
    `batch.obs` (leaves [B, ...], `valid` [B]) against `td_targets` of its Q at
    `target_params` of `batch.next_obs`, discounted by `batch.bootstrap_discount(gamma)`
    (n-step returns where sampled so); where `double` [] is on (`Hyper.double_dqn`,
    traced) the next action is the greedy one of the Q at `params` there (double DQN)."""
    o, n = batch.obs, batch.next_obs
    q = net.apply(params, o.task, o.servers, o.server_mask)
    q_next = net.apply(target_params, n.task, n.servers, n.server_mask)
    q_online = online_q_if(double, lambda: net.apply(params, n.task, n.servers, n.server_mask),
                           q_next)
    target = td_targets(q_next, n.mask, batch.reward, batch.terminal,
                        batch.bootstrap_discount(gamma), q_online, double)
    return td_loss(q, batch.action, target, valid)


def rollout_loss(net: DispatchQNetwork, params, entry: RolloutSample, valid) -> jax.Array:
    """`--targets rollout`'s loss []: the squared error of `net`'s Q at `params` of
    `entry.view` (leaves [B, ...]) against `entry.target` [B, M], averaged over each
    entry's feasible servers, then over `valid` [B] (0 if none)."""
    v = entry.view
    q = net.apply(params, v.task, v.servers, v.server_mask)
    m = v.mask.astype(q.dtype)
    per = jnp.sum(m * 0.5 * (q - entry.target) ** 2, axis=-1) / jnp.maximum(jnp.sum(m, -1), 1)
    w = jnp.asarray(valid, per.dtype)
    return jnp.sum(w * per) / jnp.maximum(jnp.sum(w), 1.0)


def make_train(config: DQNConfig, axis_name: str | None = None,
               schedule: ScheduleRule | None = None) -> TrainFns:
    """The DQN dispatcher's training program (PureJaxRL style).

    `config` fixes the program's shape: padded sizes (`env_config`), `env`'s constant
    fields, `hidden`, `buffer_capacity`, `batch_size`, `num_envs`,
    `steps_per_chunk`, `updates_per_step`, `num_chunks` (for `train`), `reward`,
    `eft_feature` and `scheduler` (a trained scheduler's file is read here, once). Every
    scalar that may vary between runs comes in `hyper` (`damdjax.hyper.Hyper`, traced):
    `jax.vmap` the functions over a stacked `Hyper` and keys to train many runs in one
    program. Nothing here reads `config.seed`, `config.init_dispatcher` or the config's
    hyperparameter values (`Hyper.from_config(config)` gives those). `axis_name`: the name
    of the `jax.vmap` axis the caller maps the pieces over (a sweep's members), where one
    is; it lets the auto-reset skip steps where no episode ended in any member
    (`damdjax.rollout.reset_finished`). The results are the same with or without it.
    `schedule`, where given, replaces `config.scheduler` as the servers' rule; it may
    close over traced values (train.damd's schedulers, trained in the same program), so
    call `make_train` inside the traced function then.

    `chunk`: `steps_per_chunk` vmapped env steps of `num_envs` envs, each followed by
    `updates_per_step` gradient updates; its metrics: `episodes`, `avg_response_time`,
    `deadline_miss_rate`, `loss`, `invalid_dispatch`, `epsilon`, `buffer_ready`.
    """
    env = config.make_env()
    net = _network(config)
    env_step = _env_step_fn(config, env, axis_name, schedule)

    def init(key, hyper: Hyper) -> RunnerState:
        key, k_net, k_env = jax.random.split(key, 3)
        e, n = config.num_envs, env.config.n_max
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(k_env, e), hyper.env)
        view0 = jax.tree.map(lambda x: x[0], batch_view(config, obs, env_state,
                                                         hyper.env.time_scale))
        if config.targets == "rollout":
            view0 = RolloutSample(view=view0, target=jnp.zeros((env.config.m_max,)))
        q_params = init_dispatcher(net, k_net, config.eft_feature)
        minus = lambda shape: jnp.full(shape, -1, jnp.int32)
        return RunnerState(
            params=q_params, target_params=q_params,
            opt_state=hyper.optimizer().init(q_params),
            buffer=replay.init(view0, config.buffer_capacity,
                               example_next_obs=() if config.targets == "rollout" else None),
            env_state=env_state,
            obs=agents_part(obs),
            table_idx=minus((e, n)), table_stamp=minus((e, n)), prev_idx=minus((e,)),
            prev_stamp=minus((e,)), sojourn=jnp.zeros((e,), jnp.float32), key=key,
            env_steps=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32),
            chunk=jnp.zeros((), jnp.int32))

    def update(rs: RunnerState, key, hyper: Hyper):
        if config.targets == "rollout":
            batch, valid = replay.sample(rs.buffer, key, config.batch_size)
            loss, grads = jax.value_and_grad(rollout_loss, argnums=1)(
                net, rs.params, batch.obs, valid)
        else:
            batch, valid = replay.sample(rs.buffer, key, config.batch_size, hyper.n_step,
                                         hyper.gamma)
            loss, grads = jax.value_and_grad(dispatcher_loss, argnums=1)(
                net, rs.params, rs.target_params, batch, valid, hyper.gamma, hyper.double_dqn)
        upd, opt_state = hyper.optimizer().update(grads, rs.opt_state, rs.params)
        new_params = optax.apply_updates(rs.params, upd)
        active = (rs.env_steps >= hyper.learning_starts) & jnp.any(valid)
        params_ = where_tree(active, new_params, rs.params)
        opt_state = where_tree(active, opt_state, rs.opt_state)
        updates = rs.updates + active.astype(jnp.int32)
        target = periodic_polyak(params_, rs.target_params, updates, hyper.target_every,
                                 hyper.polyak)
        target = where_tree(active, target, rs.target_params)
        rs = rs.replace(params=params_, opt_state=opt_state, target_params=target,
                        updates=updates)
        return rs, (loss * active, active.astype(jnp.float32))

    chunk = make_chunk(
        lambda rs, key, eps, hyper: env_step(rs, key, eps, hyper.env), update,
        lambda t, hyper: hyper.epsilon(t),
        steps_per_chunk=config.steps_per_chunk, updates_per_step=config.updates_per_step,
        invalid_key="invalid_dispatch",
        final_metrics=lambda rs: {"buffer_ready": replay.num_ready(rs.buffer)})

    return train_fns(init, chunk, config.num_chunks)


def program_config(config: DQNConfig) -> DQNConfig:
    """`config` with every field that leaves `make_train(config).init` and `.chunk`
    unchanged set to a fixed value (`damdjax.hyper.program_of`): equal for two configs
    exactly when their init and chunk programs are the same (a cache key)."""
    return program_of(config, seed=0, eval_episodes=0, init_dispatcher="", num_chunks=1)


def jitted_pieces(config: DQNConfig) -> tuple[Callable, Callable]:
    """`(jit(init), jit(chunk))` of `make_train(config)`, shared within a process by every
    config of the same program (`damdjax.runner.jitted_train`)."""
    return runner.jitted_train(make_train, program_config(config))


def init_runner(config: DQNConfig, env: EdgeEnv | None = None,
                params: EnvParams | None = None) -> RunnerState:
    """The runner a run of `config` starts from: `init(PRNGKey(config.seed), hyper)`
    (`params`, where given, replaces the setting fields of `Hyper.from_config(config)`),
    then the parameters of `config.init_dispatcher` where set (a file read). `env` is
    unused (kept for callers of the step-level API)."""
    del env
    start = load_dispatcher(config.init_dispatcher)[1] if config.init_dispatcher else None
    return runner.first_runner(jitted_pieces(config)[0], config, params, start)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------

def greedy_policy(config: DQNConfig, q_params, time_scale: float) -> Policy:
    """The greedy DQN dispatcher with the config's scheduler (`q_params` may be traced)."""
    return pair(dqn_dispatch_rule(_network(config), q_params, time_scale,
                                  eft_feature=config.eft_feature, eft_rule=config.eft_rule),
                resolve_scheduler(config.scheduler))


def evaluate(config: DQNConfig, q_params, episodes: int,
             scheduler: tuple[str, ScheduleRule] | None = None) -> dict:
    """Greedy DQN dispatcher vs nearest / random / least_load / eft, paired on held-out
    instances, with the contention-free bound.

    All with the run's scheduler (`scheduler`, where given: `(name, rule)` in its place,
    train.damd's schedulers from its runner); returns
    `damdjax.evaluation.paired_summary` (reference "dqn") plus the scheduler's name.
    """
    env_config, params = config.env_config, config.env
    name, schedule = scheduler or (original(config.scheduler),
                                   resolve_scheduler(config.scheduler))
    greedy = dqn_dispatch_rule(_network(config), q_params, params.time_scale,
                               eft_feature=config.eft_feature, eft_rule=config.eft_rule)
    policies = {"dqn": pair(greedy, schedule),
                **{rule_name: pair(rule, schedule) for rule_name, rule in DISPATCH_RULES.items()}}
    if config.eft_rule != "eft":   # the rule the run's rollouts or feature read, too
        policies[config.eft_rule] = pair(dispatch_rule(config.eft_rule), schedule)
    return {"scheduler": name,
            **evaluate_paired(policies, env_config, params, config.seed, episodes, "dqn",
                              workload=config.job_library())}


def format_eval(ev: dict) -> str:
    return format_paired(ev, f"evaluation: {ev['episodes']} held-out episodes, "
                             f"scheduler {ev['scheduler']}")


# ---------------------------------------------------------------------------
# Flags and the host loop
# ---------------------------------------------------------------------------

# train.dqn's own flags (beyond RunConfig's); --init-dispatcher where offered.
OWN_FIELDS = ("scheduler", "reward", "targets", "rollout_envs", "rollout_tasks", "eft_feature",
              "eft_rule")


def add_flags(p: argparse.ArgumentParser, name: str = "dqn", init: bool = True) -> None:
    """Every train.dqn flag but --help on `p` (`name`: the default run name; `init`:
    whether --init-dispatcher is offered), generated from `DQNConfig`'s fields."""
    add_common_flags(p, DQNConfig, name)
    add_config_flags(p, DQNConfig, OWN_FIELDS + (("init_dispatcher",) if init else ()))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.dqn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p)
    return p


def config_from_args(p: argparse.ArgumentParser, args) -> DQNConfig:
    """The run's config from the flags (one-line errors, exit 2, before any compile): the
    config checks its values, then the files it names (`DQNConfig.check_inputs`)."""
    return config_from_flags(p, args, DQNConfig, OWN_FIELDS, "init_dispatcher")


def save_policy_file(run_dir: str, cfg: DQNConfig, q_params) -> None:
    """The run's policy file `run_dir/dispatcher.msgpack` (what eval.compare
    --dispatcher-checkpoint and train.mdqn --dispatcher load), atomically."""
    save_dispatcher(f"{run_dir}/{DISPATCHER_FILE}", cfg.hidden, cfg.env.time_scale,
                    q_params, cfg.eft_feature, cfg.eft_rule)


def train(cfg: DQNConfig, run_dir: str, resume: bool) -> tuple[Any, bool]:
    """Run (or continue) the chunks of `cfg` in `run_dir`; returns `(runner, interrupted)`.

    The host side of `make_train(cfg)`: `init_runner` (key `PRNGKey(cfg.seed)`, the
    --init-dispatcher file), the checkpoint where resuming, then the jitted `chunk` at
    `Hyper.from_config(cfg)` until `cfg.num_chunks` (`damdjax.runs.train_single`: checkpoint,
    policy file and metrics row after each chunk, Ctrl-C between them).
    """
    chunk, hyper = jitted_pieces(cfg)[1], Hyper.from_config(cfg)
    return runs.train_single(cfg, run_dir, resume, runner=init_runner(cfg),
                             chunk=lambda r: chunk(r, hyper), save_policy_file=save_policy_file)


def main(argv=None) -> int:
    return runs.trainer_main(argv, build_parser=build_parser, config_from_args=config_from_args,
                             config_from_json=DQNConfig.from_json, train=train, evaluate=evaluate,
                             format_eval=format_eval)


if __name__ == "__main__":
    sys.exit(main())
