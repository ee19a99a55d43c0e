"""Train the DQN dispatcher (PureJaxRL style: one jitted chunk of `lax.scan` steps).

    python -m train.dqn --name try1                         # runs/try1/
    python -m train.dqn --name try1 --resume --num-chunks 40  # continue to 40 chunks in all
    python -m train.dqn --num-envs 8 --num-tasks 20 --num-chunks 3 --name tiny --overwrite

The dispatcher acts epsilon-greedily on the Q-network's view of the head task
where a dispatch is needed; every server schedules its queue with a heuristic
(--scheduler). The dispatcher's reward of task i is exp(-T_i / tau), credited
to the transition that dispatched i when i completes; that transition's next
state is the env's next dispatch decision (terminal at the episode's end).

Writes runs/<name>/config.json, metrics.jsonl (one line per chunk),
checkpoint.msgpack (online and target params, optimizer state, counters, RNG
key and the replay buffer; flax msgpack, atomic replace) and eval.json (the
greedy dispatcher vs nearest, random and least_load on held-out instances,
paired, with the same scheduler).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from damdjax import replay
from damdjax.heuristics import DISPATCH_RULES, SCHEDULE_RULES, pair
from damdjax.io import json_number, write_bytes_atomic, write_json_atomic
from damdjax.metrics import episode_metrics, mean_ci95
from damdjax.networks import DispatchQNetwork, dispatch_inputs, epsilon_greedy, greedy_action
from damdjax.rollout import run_from_instance
from damdjax.targets import periodic_copy, td_loss, td_targets
from envs.config import EnvConfig, EnvParams, check_params
from envs.env import EdgeEnv
from envs.observation import observe
from envs.state import Action

CHECKPOINT = "checkpoint.msgpack"
EVAL_FOLD = 7_777_777  # held-out instances: fold_in(PRNGKey(seed), EVAL_FOLD); training uses others


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    """Hyperparameters of a run (all JSON-serialisable)."""

    # environment
    num_tasks: int = 100
    num_servers: int = 5
    density: float = 2.0
    queue_capacity: int = 16
    tau: float = 10.0                  # reward time constant (EnvParams.tau)
    scheduler: str = "fcfs"            # fcfs | sjf | sdf
    reward: str = "response"           # exp(-T_i / tau); 'sojourn' is not implemented
    # rollout
    num_envs: int = 256
    num_chunks: int = 40
    steps_per_chunk: int = 50          # vmapped env steps per chunk (each = num_envs env steps)
    # learning
    buffer_capacity: int = 100_000
    batch_size: int = 256
    lr: float = 5e-4
    max_grad_norm: float = 10.0
    gamma: float = 0.9
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay_steps: int = 100_000     # env steps
    target_every: int = 100            # gradient updates between target copies
    updates_per_step: int = 4          # gradient updates per vmapped env step
    learning_starts: int = 5_000       # env steps before the first update
    hidden: tuple = (64, 64)
    seed: int = 0
    eval_episodes: int = 200

    @property
    def total_env_steps(self) -> int:
        return self.num_chunks * self.steps_per_chunk * self.num_envs

    def env_config(self) -> EnvConfig:
        return EnvConfig(n_max=self.num_tasks, m_max=self.num_servers,
                         queue_capacity=self.queue_capacity)

    def env_params(self) -> EnvParams:
        return EnvParams(num_tasks=self.num_tasks, num_servers=self.num_servers,
                         density=self.density, tau=self.tau)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "DQNConfig":
        d = dict(d)
        d["hidden"] = tuple(d["hidden"])
        return cls(**d)


@struct.dataclass
class RunnerState:
    params: Any
    target_params: Any
    opt_state: Any
    buffer: replay.ReplayBuffer
    env_state: Any
    obs: Any
    table_idx: jax.Array      # [E, N] buffer slot of the transition that dispatched task i
    table_stamp: jax.Array    # [E, N]
    prev_idx: jax.Array       # [E] the env's previous dispatch (awaiting its next state)
    prev_stamp: jax.Array     # [E]
    key: jax.Array            # raw uint32 key
    env_steps: jax.Array      # [] total env steps taken
    updates: jax.Array        # [] gradient updates done
    chunk: jax.Array          # [] chunks done


def _network(config: DQNConfig) -> DispatchQNetwork:
    return DispatchQNetwork(hidden=tuple(config.hidden))


def _optimizer(config: DQNConfig):
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr))


def _epsilon(config: DQNConfig):
    return optax.linear_schedule(config.eps_start, config.eps_end, max(config.eps_decay_steps, 1))


def init_runner(config: DQNConfig, env: EdgeEnv, params: EnvParams) -> RunnerState:
    key = jax.random.PRNGKey(config.seed)
    key, k_net, k_env = jax.random.split(key, 3)
    e, n = config.num_envs, env.config.n_max
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_env, e), params)
    view0 = jax.tree.map(lambda x: x[0], dispatch_inputs(obs))
    net = _network(config)
    q_params = net.init(k_net, view0.task, view0.servers, view0.server_mask)
    opt_state = _optimizer(config).init(q_params)
    buffer = replay.init(view0, config.buffer_capacity)
    minus = lambda shape: jnp.full(shape, -1, jnp.int32)
    return RunnerState(
        params=q_params, target_params=q_params, opt_state=opt_state, buffer=buffer,
        env_state=env_state, obs=obs, table_idx=minus((e, n)), table_stamp=minus((e, n)),
        prev_idx=minus((e,)), prev_stamp=minus((e,)), key=key,
        env_steps=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32),
        chunk=jnp.zeros((), jnp.int32))


def _select(done, new, old):
    """Per env (leading axis), `new` where `done` else `old`, over a pytree."""
    def pick(a, b):
        d = done.reshape(done.shape + (1,) * (a.ndim - 1))
        return jnp.where(d, a, b)
    return jax.tree.map(pick, new, old)


def make_env_step(config: DQNConfig, env: EdgeEnv, params: EnvParams):
    """(runner, key, epsilon) -> (runner, info, stats): one vmapped step with buffer writes."""
    net = _network(config)
    schedule = SCHEDULE_RULES[config.scheduler]
    e = config.num_envs

    def env_step(rs: RunnerState, key, epsilon):
        k_act, k_sched, k_reset = jax.random.split(key, 3)
        view = dispatch_inputs(rs.obs)
        needed = rs.obs.dispatch_needed
        q = net.apply(rs.params, view.task, view.servers, view.server_mask)
        dispatch = epsilon_greedy(k_act, q, view.mask, epsilon)
        picks = jax.vmap(schedule)(jax.random.split(k_sched, e), rs.env_state)
        action = Action(dispatch=dispatch, picks=picks)

        buf = rs.buffer
        # The previous dispatch's next state is this decision.
        buf = replay.set_next(buf, rs.prev_idx, rs.prev_stamp, view, jnp.zeros((e,), bool),
                              needed & (rs.prev_idx >= 0))
        buf, idx, stamp = replay.add_batch(buf, view, dispatch, needed)
        prev_idx = jnp.where(needed, idx, rs.prev_idx)
        prev_stamp = jnp.where(needed, stamp, rs.prev_stamp)

        obs, env_state, _, done, info = jax.vmap(env.step, in_axes=(None, 0, 0, None))(
            k_act, rs.env_state, action, params)

        # Credit table: the dispatched task id -> this transition.
        task = info["dispatched_task"]
        rows = jnp.arange(e)
        ok = needed & (task >= 0)
        col = jnp.where(ok, task, env.config.n_max)  # out of range: dropped
        table_idx = rs.table_idx.at[rows, col].set(idx, mode="drop")
        table_stamp = rs.table_stamp.at[rows, col].set(stamp, mode="drop")
        # Rewards of tasks that completed in this step.
        reward = jnp.exp(-info["response_time"] / params.tau)
        buf = replay.set_reward(buf, table_idx.ravel(), table_stamp.ravel(), reward.ravel(),
                                info["newly_done"].ravel())
        # Episode end: the last dispatch is terminal.
        buf = replay.set_next(buf, prev_idx, prev_stamp, view, jnp.ones((e,), bool),
                              done & (prev_idx >= 0))

        def finish(operand):
            # Metrics of finished episodes, then a fresh reset selected where done.
            obs, env_state = operand
            met = jax.vmap(episode_metrics)(env_state)
            w = done.astype(jnp.float32)
            stats = {"episodes": jnp.sum(w),
                     "response_sum": jnp.sum(w * met["avg_response_time"]),
                     "miss_sum": jnp.sum(w * met["deadline_miss_rate"])}
            obs_r, state_r = jax.vmap(env.reset, in_axes=(0, None))(
                jax.random.split(k_reset, e), params)
            return _select(done, obs_r, obs), _select(done, state_r, env_state), stats

        def keep(operand):
            zero = jnp.zeros((), jnp.float32)
            return (*operand, {"episodes": zero, "response_sum": zero, "miss_sum": zero})

        # Skipped when no episode ended (the common case): same result, less work.
        obs, env_state, stats = jax.lax.cond(jnp.any(done), finish, keep, (obs, env_state))
        table_idx = jnp.where(done[:, None], -1, table_idx)
        table_stamp = jnp.where(done[:, None], -1, table_stamp)
        prev_idx = jnp.where(done, -1, prev_idx)
        prev_stamp = jnp.where(done, -1, prev_stamp)
        rs = rs.replace(buffer=buf, env_state=env_state, obs=obs, table_idx=table_idx,
                        table_stamp=table_stamp, prev_idx=prev_idx, prev_stamp=prev_stamp,
                        env_steps=rs.env_steps + e)
        return rs, info, stats

    return env_step


def make_train_chunk(config: DQNConfig, env: EdgeEnv, params: EnvParams):
    """A jitted `(runner_state) -> (runner_state, metrics)` of `steps_per_chunk` scan steps."""
    net = _network(config)
    opt = _optimizer(config)
    eps_fn = _epsilon(config)
    env_step = make_env_step(config, env, params)

    def loss_fn(p, target_p, batch, valid):
        o, n = batch.obs, batch.next_obs
        q = net.apply(p, o.task, o.servers, o.server_mask)
        q_next = net.apply(target_p, n.task, n.servers, n.server_mask)
        target = td_targets(q_next, n.mask, batch.reward, batch.terminal, config.gamma)
        return td_loss(q, batch.action, target, valid)

    def update(carry, key):
        rs = carry
        batch, valid = replay.sample(rs.buffer, key, config.batch_size)
        loss, grads = jax.value_and_grad(loss_fn)(rs.params, rs.target_params, batch, valid)
        upd, opt_state = opt.update(grads, rs.opt_state, rs.params)
        new_params = optax.apply_updates(rs.params, upd)
        active = (rs.env_steps >= config.learning_starts) & jnp.any(valid)
        params_ = jax.tree.map(lambda a, b: jnp.where(active, a, b), new_params, rs.params)
        opt_state = jax.tree.map(lambda a, b: jnp.where(active, a, b), opt_state, rs.opt_state)
        updates = rs.updates + active.astype(jnp.int32)
        target = periodic_copy(params_, rs.target_params, updates, config.target_every)
        target = jax.tree.map(lambda a, b: jnp.where(active, a, b), target, rs.target_params)
        rs = rs.replace(params=params_, opt_state=opt_state, target_params=target,
                        updates=updates)
        return rs, (loss * active, active.astype(jnp.float32))

    def iteration(rs: RunnerState, _):
        key, k_step, k_upd = jax.random.split(rs.key, 3)
        rs = rs.replace(key=key)
        epsilon = eps_fn(rs.env_steps)
        rs, info, stats = env_step(rs, k_step, epsilon)
        rs, (losses, active) = jax.lax.scan(
            update, rs, jax.random.split(k_upd, config.updates_per_step))
        stats = {**stats, "loss_sum": jnp.sum(losses), "loss_n": jnp.sum(active),
                 "invalid_dispatch": jnp.sum(info["invalid_dispatch"]),
                 "epsilon": epsilon}
        return rs, stats

    @jax.jit
    def train_chunk(rs: RunnerState):
        rs, st = jax.lax.scan(iteration, rs, None, length=config.steps_per_chunk)
        eps_done = jnp.sum(st["episodes"])
        metrics = {
            "episodes": eps_done,
            "avg_response_time": jnp.sum(st["response_sum"]) / jnp.maximum(eps_done, 1),
            "deadline_miss_rate": jnp.sum(st["miss_sum"]) / jnp.maximum(eps_done, 1),
            "loss": jnp.sum(st["loss_sum"]) / jnp.maximum(jnp.sum(st["loss_n"]), 1),
            "invalid_dispatch": jnp.sum(st["invalid_dispatch"]),
            "epsilon": st["epsilon"][-1],
            "buffer_ready": replay.num_ready(rs.buffer),
        }
        rs = rs.replace(chunk=rs.chunk + 1)
        return rs, metrics

    return train_chunk


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------

def evaluate(config: DQNConfig, q_params, episodes: int) -> dict:
    """Greedy DQN dispatcher vs nearest / random / least_load, paired on held-out instances."""
    env = EdgeEnv(config.env_config())
    params = config.env_params()
    net = _network(config)
    schedule = SCHEDULE_RULES[config.scheduler]

    def dqn_dispatch(key, state):
        del key
        view = dispatch_inputs(observe(state, params.time_scale))
        q = net.apply(q_params, view.task, view.servers, view.server_mask)
        return greedy_action(q, view.mask)

    methods = {"dqn": dqn_dispatch, **{name: DISPATCH_RULES[name]
                                       for name in ("nearest", "random", "least_load")}}
    base = jax.random.fold_in(jax.random.PRNGKey(config.seed), EVAL_FOLD)
    k_inst, k_play = jax.random.split(base)
    inst_keys = jax.random.split(k_inst, episodes)
    play_keys = jax.random.split(k_play, episodes)
    per = {}
    for name, rule in methods.items():
        policy = pair(rule, schedule)

        @jax.jit
        def run(ik, pk, policy=policy):
            def one(ik1, pk1):
                inst = env.generate(ik1, params)
                state, _ = run_from_instance(pk1, inst, policy, env.config.queue_capacity,
                                             params.tau, params.miss_penalty)
                m = episode_metrics(state)
                return m["avg_response_time"], m["deadline_miss_rate"]
            return jax.vmap(one)(ik, pk)

        rt, miss = run(inst_keys, play_keys)
        per[name] = {"avg_response_time": np.asarray(rt, np.float64),
                     "deadline_miss_rate": np.asarray(miss, np.float64)}
    out = {"episodes": episodes, "scheduler": config.scheduler, "methods": {}, "dqn_minus": {}}
    for name, vals in per.items():
        out["methods"][name] = {k: dict(zip(("mean", "ci95"), map(json_number, mean_ci95(v))))
                                for k, v in vals.items()}
    for name in methods:
        if name == "dqn":
            continue
        out["dqn_minus"][name] = {
            k: dict(zip(("mean", "ci95"), map(json_number, mean_ci95(per["dqn"][k] - per[name][k]))))
            for k in per["dqn"]}
    return out


def format_eval(ev: dict) -> str:
    lines = [f"evaluation: {ev['episodes']} held-out episodes, scheduler {ev['scheduler']}",
             f"{'method':<12}{'avg response time':>24}{'deadline-miss rate':>24}"]
    fmt = lambda d: f"{d['mean']:.3f} ± {d['ci95'] if d['ci95'] is not None else float('nan'):.3f}"
    for name, m in ev["methods"].items():
        lines.append(f"{name:<12}{fmt(m['avg_response_time']):>24}"
                     f"{fmt(m['deadline_miss_rate']):>24}")
    for name, m in ev["dqn_minus"].items():
        lines.append(f"{'dqn-' + name:<12}{fmt(m['avg_response_time']):>24}"
                     f"{fmt(m['deadline_miss_rate']):>24}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Checkpoints and the host loop
# ---------------------------------------------------------------------------

def save_checkpoint(rs: RunnerState, path: str) -> None:
    data = flax.serialization.to_bytes(jax.device_get(rs))
    write_bytes_atomic(data, path)


def load_checkpoint(template: RunnerState, path: str) -> RunnerState:
    with open(path, "rb") as f:
        return flax.serialization.from_bytes(template, f.read())


def build_parser() -> argparse.ArgumentParser:
    d = DQNConfig()
    p = argparse.ArgumentParser(prog="python -m train.dqn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--name", default="dqn", help="run name: the run directory is RUN_DIR/NAME (default %(default)s)")
    a("--run-dir", default="runs", help="parent folder of run directories (default %(default)s)")
    a("--overwrite", action="store_true", help="replace an existing run directory")
    a("--resume", action="store_true",
      help="continue from the run directory's checkpoint (its config.json; only --num-chunks "
           "and --eval-episodes may change)")
    a("--num-tasks", type=int, default=d.num_tasks, help="tasks per episode (default %(default)s)")
    a("--num-servers", type=int, default=d.num_servers, help="edge servers (default %(default)s)")
    a("--density", type=float, default=d.density,
      help="task arrival density, tasks per time unit (default %(default)s)")
    a("--queue-capacity", type=int, default=d.queue_capacity,
      help="queue slots per server (default %(default)s)")
    a("--tau", type=float, default=d.tau, help="reward time constant: exp(-T/tau) (default %(default)s)")
    a("--scheduler", default=d.scheduler, help="server scheduling heuristic: fcfs, sjf or sdf "
      "(default %(default)s)")
    a("--reward", default=d.reward, help="dispatcher reward: response = exp(-T_i/tau) "
      "(only one implemented; default %(default)s)")
    a("--num-envs", type=int, default=d.num_envs, help="parallel envs (default %(default)s)")
    a("--num-chunks", type=int, default=None,
      help=f"chunks in all (default {d.num_chunks}; with --resume: the stored value)")
    a("--steps-per-chunk", type=int, default=d.steps_per_chunk,
      help="vmapped env steps per chunk (default %(default)s)")
    a("--buffer-capacity", type=int, default=d.buffer_capacity,
      help="replay buffer entries (>= num envs; default %(default)s)")
    a("--batch-size", type=int, default=d.batch_size, help="replay batch (default %(default)s)")
    a("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    a("--max-grad-norm", type=float, default=d.max_grad_norm,
      help="global gradient-norm clip (default %(default)s)")
    a("--gamma", type=float, default=d.gamma,
      help="discount per dispatch decision, in [0, 1] (default %(default)s)")
    a("--eps-start", type=float, default=d.eps_start, help="initial epsilon (default %(default)s)")
    a("--eps-end", type=float, default=d.eps_end, help="final epsilon (default %(default)s)")
    a("--eps-decay-steps", type=int, default=d.eps_decay_steps,
      help="env steps of the linear epsilon decay (default %(default)s)")
    a("--target-every", type=int, default=d.target_every,
      help="gradient updates between target-network copies (default %(default)s)")
    a("--updates-per-step", type=int, default=d.updates_per_step,
      help="gradient updates per vmapped env step (default %(default)s)")
    a("--learning-starts", type=int, default=d.learning_starts,
      help="env steps before the first update (default %(default)s)")
    a("--hidden", default=",".join(map(str, d.hidden)),
      help="hidden layer widths, comma-separated (default %(default)s)")
    a("--seed", type=int, default=d.seed, help="seed of everything (default %(default)s)")
    a("--eval-episodes", type=int, default=None,
      help=f"held-out evaluation episodes at the end, 0 to skip (default {d.eval_episodes})")
    return p


def config_from_args(p: argparse.ArgumentParser, args) -> DQNConfig:
    if args.scheduler not in SCHEDULE_RULES:
        p.error(f"--scheduler must be one of {', '.join(SCHEDULE_RULES)}, got {args.scheduler!r}")
    if args.reward != "response":
        p.error(f"--reward must be 'response' (the only one implemented), got {args.reward!r}")
    try:
        hidden = tuple(int(x) for x in args.hidden.split(","))
    except ValueError:
        p.error(f"--hidden must be comma-separated integers, got {args.hidden!r}")
    if not hidden or min(hidden) < 1:
        p.error(f"--hidden widths must be >= 1, got {args.hidden!r}")
    positive = ["num_tasks", "num_servers", "queue_capacity", "num_envs", "steps_per_chunk",
                "buffer_capacity", "batch_size", "eps_decay_steps", "target_every",
                "updates_per_step"]
    for name in positive:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("density", "tau", "lr", "max_grad_norm"):
        v = getattr(args, name)
        if not (np.isfinite(v) and v > 0):
            p.error(f"--{name.replace('_', '-')} must be > 0, got {v}")
    for name in ("gamma", "eps_start", "eps_end"):
        v = getattr(args, name)
        if not 0 <= v <= 1:
            p.error(f"--{name.replace('_', '-')} must be in [0, 1], got {v}")
    if args.learning_starts < 0:
        p.error(f"--learning-starts must be >= 0, got {args.learning_starts}")
    if args.buffer_capacity < args.num_envs:
        p.error(f"--buffer-capacity ({args.buffer_capacity}) must be >= --num-envs "
                f"({args.num_envs})")
    d = DQNConfig()
    cfg = DQNConfig(
        num_tasks=args.num_tasks, num_servers=args.num_servers, density=args.density,
        queue_capacity=args.queue_capacity, tau=args.tau, scheduler=args.scheduler,
        reward=args.reward, num_envs=args.num_envs,
        num_chunks=d.num_chunks if args.num_chunks is None else args.num_chunks,
        steps_per_chunk=args.steps_per_chunk, buffer_capacity=args.buffer_capacity,
        batch_size=args.batch_size, lr=args.lr, max_grad_norm=args.max_grad_norm,
        gamma=args.gamma, eps_start=args.eps_start, eps_end=args.eps_end,
        eps_decay_steps=args.eps_decay_steps, target_every=args.target_every,
        updates_per_step=args.updates_per_step, learning_starts=args.learning_starts,
        hidden=hidden, seed=args.seed,
        eval_episodes=d.eval_episodes if args.eval_episodes is None else args.eval_episodes)
    try:
        check_params(cfg.env_config(), cfg.env_params())
    except ValueError as err:
        p.error(str(err))
    return cfg


_CHUNK_CACHE: dict = {}


def _cached_train_chunk(cfg: DQNConfig):
    """`make_train_chunk` for `cfg`, reused within a process (a resumed run in the same
    process, e.g. in tests, then compiles once); run length and evaluation size do not matter."""
    key = dataclasses.replace(cfg, num_chunks=1, eval_episodes=0)
    if key not in _CHUNK_CACHE:
        _CHUNK_CACHE[key] = make_train_chunk(cfg, EdgeEnv(cfg.env_config()), cfg.env_params())
    return _CHUNK_CACHE[key]


def _fmt(value, width: int, digits: int) -> str:
    """A number, or '-' (right-aligned) where there is none."""
    return f"{value:{width}.{digits}f}" if value is not None else "-".rjust(width)


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("num_chunks", "eval_episodes"):
        v = getattr(args, name)
        if v is not None and v < (1 if name == "num_chunks" else 0):
            p.error(f"--{name.replace('_', '-')} must be >= {1 if name == 'num_chunks' else 0}, "
                    f"got {v}")
    if not args.name or os.sep in args.name or args.name in (".", ".."):
        p.error(f"--name must be a plain folder name, got {args.name!r}")
    run_dir = os.path.join(args.run_dir, args.name)
    cfg_path = os.path.join(run_dir, "config.json")
    ckpt_path = os.path.join(run_dir, CHECKPOINT)
    if args.resume:
        if args.overwrite:
            p.error("--resume and --overwrite exclude each other")
        if not os.path.exists(ckpt_path) or not os.path.exists(cfg_path):
            p.error(f"--resume: no checkpoint in {run_dir}")
        with open(cfg_path) as f:
            cfg = DQNConfig.from_json(json.load(f))
        changes = {}
        if args.num_chunks is not None:
            changes["num_chunks"] = args.num_chunks
        if args.eval_episodes is not None:
            changes["eval_episodes"] = args.eval_episodes
        cfg = dataclasses.replace(cfg, **changes)
    else:
        cfg = config_from_args(p, args)
        if os.path.exists(run_dir):
            if not args.overwrite:
                p.error(f"run directory {run_dir} exists: pass --overwrite or --resume")
            shutil.rmtree(run_dir)
        os.makedirs(run_dir)
    write_json_atomic(cfg.to_json(), cfg_path)

    env = EdgeEnv(cfg.env_config())
    params = cfg.env_params()
    rs = init_runner(cfg, env, params)
    if args.resume:
        rs = load_checkpoint(rs, ckpt_path)
    train_chunk = _cached_train_chunk(cfg)
    per_chunk = cfg.steps_per_chunk * cfg.num_envs
    print(f"run {run_dir}: {cfg.num_chunks} chunks x {per_chunk} env steps "
          f"({cfg.total_env_steps} in all), from chunk {int(rs.chunk)}", flush=True)
    mode = "a" if args.resume else "w"
    with open(os.path.join(run_dir, "metrics.jsonl"), mode) as log:
        while int(rs.chunk) < cfg.num_chunks:
            t0 = time.perf_counter()
            rs, m = train_chunk(rs)
            m = jax.device_get(m)
            dt = time.perf_counter() - t0
            row = {"chunk": int(rs.chunk), "env_steps": int(rs.env_steps),
                   "updates": int(rs.updates), "seconds": dt,
                   "env_steps_per_s": per_chunk / dt,
                   **{k: float(v) for k, v in m.items()}}
            if row["episodes"] == 0:  # no episode ended in this chunk: nothing to average
                row["avg_response_time"] = row["deadline_miss_rate"] = None
            log.write(json.dumps(row) + "\n")
            log.flush()
            save_checkpoint(rs, ckpt_path)
            print(f"chunk {row['chunk']:>4}  env steps {row['env_steps']:>10}  "
                  f"{row['env_steps_per_s']:>9.0f}/s  updates {row['updates']:>7}  "
                  f"episodes {int(row['episodes']):>5}  resp {_fmt(row['avg_response_time'], 7, 3)}  "
                  f"miss {_fmt(row['deadline_miss_rate'], 5, 3)}  loss {row['loss']:.4f}  "
                  f"eps {row['epsilon']:.3f}", flush=True)
    if cfg.eval_episodes > 0:
        ev = evaluate(cfg, rs.params, cfg.eval_episodes)
        write_json_atomic(ev, os.path.join(run_dir, "eval.json"))
        print(format_eval(ev), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
