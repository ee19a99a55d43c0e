"""Train the MDQN schedulers: one DQN agent per edge server (the paper's Algorithm 2).

Training is a function of a key and `Hyper` (PureJaxRL style, as train.dqn):
`make_train(config)` gives the pure, jittable `init(key, hyper)`,
`chunk(runner, hyper)` and `train(key, hyper)`; the command below and
`python -m train.sweep --trainer mdqn` are host loops around them.

    python -m train.mdqn --dispatcher least-load --name m1        # runs/m1/
    python -m train.mdqn --dispatcher runs/dqn --name m2           # under a trained dispatcher
    python -m train.mdqn --dispatcher "eft[queued/load/r0/l0.25]"  # an EFT-family rule
    python -m train.mdqn --share-params ...                        # one network for all servers

Every server is an agent with its own Q-network (parameters stacked on an
agent axis, updated with `vmap` over agents) and its own experience pool; with
--share-params the agents share one network (each server's own features tell
them apart). An agent sees its queue's slots, its own state and the mean state
of the other servers (damdjax.schedulers). It acts epsilon-greedily where it
must pick (idle, with an eligible task) and stores a transition only for its
decision epochs: every pick (--epochs choice: only picks among >= 2 eligible
tasks); the transition's next state is the agent's next decision epoch (or the
episode's end: terminal unless the step cap truncated the episode) and its
reward the team reward (docs/model.md, "Rewards": minus the time unfinished
tasks spend in the system, over tau, minus the miss penalty), summed over the
env steps in between: the same signal for every agent. The dispatcher is frozen
(--dispatcher).

Run directory, checkpoint, --resume, Ctrl-C and progress as train.dqn;
schedulers.msgpack is the policy file (what eval.compare and train.dqn
--scheduler load); eval.json compares the greedy schedulers with FCFS, SJF and
SDF under the same dispatcher on held-out instances, paired.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from damdjax import memory, runner, runs
from damdjax.cli import add_common_flags, add_config_flags, config_from_flags
from damdjax.configs import ConfigError, Field, check_choice, option
from damdjax.run_config import RunConfig
from damdjax.run_inputs import original
from damdjax.evaluation import evaluate_paired, format_paired
from damdjax.heuristics import SCHEDULE_RULES, DispatchRule, Policy, pair
from damdjax.hyper import Hyper, program_of
from damdjax.rollout import TrainFns, make_chunk, reset_finished, train_fns
from damdjax.policies import (
    SCHEDULERS_FILE, init_schedulers, load_schedulers, mdqn_schedule_rule, resolve_dispatcher,
    save_schedulers, scheduler_network)
from damdjax.schedulers import (
    agent_axis, agents_act, agents_first, agents_q, init_agents_opt, init_pools,
    make_agents_update, pools_add, pools_complete, pools_link, pools_ready, pools_sample,
    scheduler_inputs)
from damdjax.targets import periodic_polyak, where_tree
from damdjax.envs.config import EnvParams
from damdjax.envs.env import EdgeEnv
from damdjax.envs.observation import SCHEDULER_FIELDS, observation_part
from damdjax.envs.state import Action


EPOCHS = ("all", "choice")


@dataclasses.dataclass(frozen=True)
class MDQNConfig(RunConfig):
    """MDQN schedulers' run: `RunConfig`'s fields (replay sizes per agent) and these (all
    JSON-serialisable)."""

    buffer_capacity: int = option(20_000, "replay entries per agent (>= num envs)")
    batch_size: int = option(128, "replay batch per agent")
    updates_per_step: int = option(2, "gradient updates per vmapped env step")
    dispatcher: str = option("least-load", "the frozen dispatcher: nearest, random, "
                             "least-load, eft, an EFT-family rule (heft, peft, "
                             "eft[HOLDERS/WAIT/rR/lL], not the ahead wait), or a train.dqn "
                             "run directory / dispatcher.msgpack")
    share_params: bool = option(False, "one Q-network shared by all servers (off: one "
                                "network per server)")
    epochs: str = option("all", "an agent's decision epochs (its stored transitions): "
                         "choice = picks among >= 2 eligible tasks, all = every pick")
    init_schedulers: str = option("", "start from these schedulers' parameters (a train.mdqn "
                                  "run directory or schedulers.msgpack) instead of fresh "
                                  "networks (\"\": fresh)", metavar="PATH")

    decision = "decision of an agent"
    eval_methods = 1 + len(SCHEDULE_RULES)   # `evaluate`: the MDQN and every schedule rule
    observation_fields = SCHEDULER_FIELDS   # what the runner carries (`agents_part`)

    def check(self) -> None:
        """`RunConfig.check`, then `epochs` one of EPOCHS."""
        super().check()
        check_choice("epochs", self.epochs, EPOCHS)

    def check_inputs(self) -> None:
        """ConfigError naming the field unless the files the run reads resolve: the
        `dispatcher` (a rule or a train.dqn run) and the `init_schedulers` (their widths,
        sharing and agent count those of this config)."""
        try:
            resolve_dispatcher(self.dispatcher)
        except ValueError as err:
            raise ConfigError(Field("dispatcher"), f": {err}") from None
        init = self.init_schedulers
        if not init:
            return
        try:
            meta = load_schedulers(init)[2]
        except ValueError as err:
            raise ConfigError(Field("init_schedulers"), f": {err}") from None
        want = {"hidden": list(self.hidden), "share": self.share_params,
                "num_agents": self.env.num_servers}
        have = {k: meta[k] for k in want}
        if have != want:
            raise ConfigError(Field("init_schedulers"),
                              f" {init} holds {have}, this run needs {want}")

    def runner_env_bytes(self) -> int:
        """`RunnerState`'s per-env arrays: prev_idx, prev_stamp [M] int32, team_sum [M]."""
        return 12 * self.env_config.m_max

    def replay_memory(self) -> int:
        """One pool per agent (M), each of `buffer_capacity` entries."""
        c = self.env_config
        return c.m_max * memory.replay_bytes(memory.scheduler_view_bytes(c), self.buffer_capacity)

    def network_params(self) -> int:
        """One agent's parameters."""
        return memory.scheduler_params(self.hidden)

    def network_sets(self) -> int:
        """One network per server slot (M), or one shared (`share_params`)."""
        return 1 if self.share_params else self.env_config.m_max


@struct.dataclass
class RunnerState:
    params: Any               # leaves [M, ...] (or one set with share_params)
    target_params: Any
    opt_state: Any
    pools: Any                # replay.ReplayBuffer, leaves [M, C, ...]
    env_state: Any            # [E]
    obs: Any                  # [E] the schedulers' part (`agents_part`)
    prev_idx: jax.Array       # [E, M] pool slot of each agent's open transition (-1: none)
    prev_stamp: jax.Array     # [E, M]
    team_sum: jax.Array       # [E, M] team reward summed since each agent's last decision
    key: jax.Array
    env_steps: jax.Array
    updates: jax.Array
    chunk: jax.Array


def decision_epochs(view, epochs: str) -> jax.Array:
    """[E, M] bool: the agents whose pick now is a stored decision epoch.

    "all": every pick (`view.needed`); "choice": picks among >= 2 eligible tasks only
    (a forced pick is part of the dynamics between the agent's epochs).
    """
    if epochs == "all":
        return view.needed
    if epochs == "choice":
        return view.needed & (jnp.sum(view.mask, axis=-1) >= 2)
    raise ValueError(f"epochs must be one of {EPOCHS}, got {epochs!r}")


def agents_part(obs):
    """The part of an observation the schedulers read (`damdjax.envs.observation.observation_part`):
    all that the runner carries, so the compiled step never computes the rest."""
    return observation_part(obs, MDQNConfig.observation_fields)


def _network(config: MDQNConfig):
    return scheduler_network(config.hidden)


def _env_step_fn(config: MDQNConfig, env: EdgeEnv, axis_name: str | None = None,
                 dispatch: DispatchRule | None = None):
    """(runner, key, epsilon, env params) -> (runner, info, stats): one vmapped step with
    pool writes (`axis_name`, `dispatch`: see `make_train`). The dispatcher's file, if
    `config.dispatcher` names one and `dispatch` is None, is read here, once."""
    net = _network(config)
    if dispatch is None:
        dispatch = resolve_dispatcher(config.dispatcher)
    e, m = config.num_envs, env.config.m_max
    share = config.share_params

    def env_step(rs: RunnerState, key, epsilon, params: EnvParams):
        k_act, k_disp, k_reset = jax.random.split(key, 3)
        view = scheduler_inputs(rs.obs)                      # leaves [E, M, ...]
        agent_obs = agents_first(agent_axis(view))           # leaves [M, E, ...]
        needed = view.needed                                 # [E, M]
        q = agents_q(net, rs.params, agent_obs, share)       # [M, E, Q]
        picks = agents_act(k_act, jnp.swapaxes(q, 0, 1), view.mask, needed, epsilon)  # [E, M]
        servers = jax.vmap(dispatch)(jax.random.split(k_disp, e), rs.env_state)
        action = Action(dispatch=servers, picks=picks)
        deciding = decision_epochs(view, config.epochs)     # [E, M]: stored transitions

        # Each agent deciding now closes its previous transition: next state = now.
        closing = deciding & (rs.prev_idx >= 0)
        pools = pools_complete(rs.pools, rs.prev_idx.T, rs.prev_stamp.T, agent_obs,
                               rs.team_sum.T, jnp.zeros((m, e), bool), closing.T)
        team_sum = jnp.where(deciding, 0.0, rs.team_sum)
        pools, idx, stamp = pools_add(pools, agent_obs, picks.T, deciding.T)
        pools = pools_link(pools, rs.prev_idx.T, rs.prev_stamp.T, idx, stamp, closing.T)
        prev_idx = jnp.where(deciding, idx.T, rs.prev_idx)
        prev_stamp = jnp.where(deciding, stamp.T, rs.prev_stamp)

        obs, env_state, team, done, info = jax.vmap(env.step, in_axes=(None, 0, 0, None))(
            k_act, rs.env_state, action, params)
        team_sum = team_sum + team[:, None].astype(team_sum.dtype)
        # Episode end: every open transition ends here. Terminated: terminal. Truncated
        # by the step cap: they bootstrap from the state the cap stopped (docs/model.md,
        # "Termination and truncation"); `obs` is that state's, pre-reset.
        last = done[:, None] & (prev_idx >= 0)
        end_obs = agents_first(agent_axis(scheduler_inputs(obs)))
        terminal = jnp.broadcast_to(~info["truncated"], (m, e))
        pools = pools_complete(pools, prev_idx.T, prev_stamp.T, end_obs, team_sum.T,
                               terminal, last.T)

        obs, env_state, stats = reset_finished(env, params, k_reset, done, agents_part(obs),
                                               env_state, axis_name, agents_part)
        reset = done[:, None]
        rs = rs.replace(pools=pools, env_state=env_state, obs=obs,
                        prev_idx=jnp.where(reset, -1, prev_idx),
                        prev_stamp=jnp.where(reset, -1, prev_stamp),
                        team_sum=jnp.where(reset, 0.0, team_sum), env_steps=rs.env_steps + e)
        info = {**info, "team_reward": team, "done": done, "picks": picks, "needed": needed,
                "deciding": deciding}
        return rs, info, stats

    return env_step


def make_env_step(config: MDQNConfig, env: EdgeEnv, params: EnvParams):
    """(runner, key, epsilon) -> (runner, info, stats): one vmapped env step at `params`
    with its pool writes (the step `make_train`'s chunk takes; for step-level tests)."""
    step = _env_step_fn(config, env)
    return lambda rs, key, epsilon: step(rs, key, epsilon, params)


def make_train(config: MDQNConfig, axis_name: str | None = None,
               dispatch: DispatchRule | None = None) -> TrainFns:
    """The MDQN schedulers' training program (PureJaxRL style, as `train.dqn.make_train`).

    `config` fixes the program's shape: padded sizes (`env_config`; `m_max` = the number
    of agents), `env`'s constant fields, `hidden`, `share_params`,
    `epochs`, `buffer_capacity` and `batch_size` (per agent), `num_envs`,
    `steps_per_chunk`, `updates_per_step`, `num_chunks` (for `train`) and `dispatcher`
    (a trained dispatcher's file is read here, once; it stays frozen). Every scalar that
    may vary between runs comes in `hyper` (`damdjax.hyper.Hyper`, traced), and every
    field of `Hyper` applies: `lr` and `max_grad_norm` (each agent's own Adam and
    clipping, or the shared network's: `damdjax.schedulers.make_agents_update`), `gamma`
    (per decision of an agent), the epsilon schedule (in env steps), `learning_starts`
    (env steps), `target_every` (gradient steps in which some agent learned), `polyak`
    (all agents' targets at once), `double_dqn` and `n_step` (every agent's TD targets,
    its returns over its own successive decisions), and the
    setting's traced fields (`hyper.env`: `tau` and `miss_penalty` of the team reward,
    `density`, `slack`, `num_tasks`, `num_servers` <= the padding). Nothing here
    reads `config.seed`, `config.init_schedulers` or the config's hyperparameter values
    (`Hyper.from_config(config)` gives those). `axis_name`: as in `train.dqn.make_train`.
    `dispatch`, where given, replaces `config.dispatcher` as the frozen dispatcher; it may
    close over traced values (train.damd's dispatcher, trained in the same program), so
    call `make_train` inside the traced function then.

    `chunk`: `steps_per_chunk` vmapped env steps of `num_envs` envs, each followed by
    `updates_per_step` gradient steps of every agent; its metrics: `episodes`,
    `avg_response_time`, `deadline_miss_rate`, `loss` (mean over the agents that
    learned), `invalid_picks`, `epsilon`, `pool_ready_min` (the emptiest pool's ready
    entries).
    """
    env = config.make_env()
    net = _network(config)
    env_step = _env_step_fn(config, env, axis_name, dispatch)
    share = config.share_params

    def init(key, hyper: Hyper) -> RunnerState:
        key, k_net, k_env = jax.random.split(key, 3)
        e, m = config.num_envs, env.config.m_max
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(k_env, e), hyper.env)
        one = jax.tree.map(lambda x: x[0, 0], agent_axis(scheduler_inputs(obs)))  # one agent
        q_params = init_schedulers(net, k_net, m, share)
        minus = jnp.full((e, m), -1, jnp.int32)
        return RunnerState(
            params=q_params, target_params=q_params,
            opt_state=init_agents_opt(hyper.optimizer(), q_params, share),
            pools=init_pools(one, config.buffer_capacity, m), env_state=env_state,
            obs=agents_part(obs),
            prev_idx=minus, prev_stamp=minus, team_sum=jnp.zeros((e, m), jnp.float32),
            key=key, env_steps=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32),
            chunk=jnp.zeros((), jnp.int32))

    def update(rs: RunnerState, key, hyper: Hyper):
        # Built here, from the traced values (the optimizer's state does not depend on them).
        agents_update = make_agents_update(net, hyper.optimizer(), hyper.gamma, share,
                                           hyper.double_dqn)
        batch, valid = pools_sample(rs.pools, key, config.batch_size, hyper.n_step,
                                    hyper.gamma)
        valid = valid & (rs.env_steps >= hyper.learning_starts)
        params_, opt_state, loss = agents_update(rs.params, rs.target_params, rs.opt_state,
                                                 batch, valid)
        active = jnp.any(valid)
        updates = rs.updates + active.astype(jnp.int32)
        target = periodic_polyak(params_, rs.target_params, updates, hyper.target_every,
                                 hyper.polyak)
        target = where_tree(active, target, rs.target_params)
        has = jnp.any(valid, axis=-1)
        mean_loss = jnp.sum(jnp.where(has, loss, 0.0)) / jnp.maximum(jnp.sum(has), 1)
        rs = rs.replace(params=params_, opt_state=opt_state, target_params=target,
                        updates=updates)
        return rs, (mean_loss * active, active.astype(jnp.float32))

    chunk = make_chunk(
        lambda rs, key, eps, hyper: env_step(rs, key, eps, hyper.env), update,
        lambda t, hyper: hyper.epsilon(t),
        steps_per_chunk=config.steps_per_chunk, updates_per_step=config.updates_per_step,
        invalid_key="invalid_picks",
        final_metrics=lambda rs: {"pool_ready_min": jnp.min(pools_ready(rs.pools))})

    return train_fns(init, chunk, config.num_chunks)


def program_config(config: MDQNConfig) -> MDQNConfig:
    """`config` with every field that leaves `make_train(config).init` and `.chunk`
    unchanged set to a fixed value (`damdjax.hyper.program_of`): equal for two configs
    exactly when their init and chunk programs are the same (a cache key)."""
    return program_of(config, seed=0, eval_episodes=0, init_schedulers="", num_chunks=1)


def jitted_pieces(config: MDQNConfig) -> tuple[Callable, Callable]:
    """`(jit(init), jit(chunk))` of `make_train(config)`, shared within a process by every
    config of the same program (`damdjax.runner.jitted_train`): one compile for any seed
    and values (traced)."""
    return runner.jitted_train(make_train, program_config(config))


def init_runner(config: MDQNConfig, env: EdgeEnv | None = None,
                params: EnvParams | None = None) -> RunnerState:
    """The runner a run of `config` starts from: `init(PRNGKey(config.seed), hyper)` at
    `hyper = Hyper.from_config(config, params)` (`params`, where given, replaces the
    setting fields), then the parameters of `config.init_schedulers` where set (a file
    read). `env` is unused (kept for callers of the step-level API)."""
    del env
    start = load_schedulers(config.init_schedulers)[1] if config.init_schedulers else None
    return runner.first_runner(jitted_pieces(config)[0], config, params, start)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------

def greedy_policy(config: MDQNConfig, q_params, time_scale: float) -> Policy:
    """The greedy MDQN schedulers under the config's (frozen) dispatcher (`q_params` may
    be traced; per-agent parameters [M, ...] for the padded `num_servers`)."""
    return pair(resolve_dispatcher(config.dispatcher),
                mdqn_schedule_rule(_network(config), q_params, config.share_params, time_scale))


def evaluate(config: MDQNConfig, q_params, episodes: int,
             dispatcher: tuple[str, DispatchRule] | None = None) -> dict:
    """Greedy MDQN schedulers vs FCFS / SJF / SDF / CP / LLF under the run's dispatcher
    (`dispatcher`, where given: `(name, rule)` in its place, train.damd's dispatcher from
    its runner), paired on held-out instances, with the contention-free bound;
    `damdjax.evaluation.paired_summary` (reference "mdqn") plus the dispatcher's name."""
    env_config, params = config.env_config, config.env
    name, dispatch = dispatcher or (original(config.dispatcher),
                                    resolve_dispatcher(config.dispatcher))
    greedy = mdqn_schedule_rule(_network(config), q_params, config.share_params,
                                params.time_scale)
    policies = {"mdqn": pair(dispatch, greedy),
                **{rule_name: pair(dispatch, rule) for rule_name, rule in SCHEDULE_RULES.items()}}
    return {"dispatcher": name,
            **evaluate_paired(policies, env_config, params, config.seed, episodes, "mdqn",
                              workload=config.job_library())}


def format_eval(ev: dict) -> str:
    return format_paired(ev, f"evaluation: {ev['episodes']} held-out episodes, "
                             f"dispatcher {ev['dispatcher']}")


# ---------------------------------------------------------------------------
# Flags and the host loop
# ---------------------------------------------------------------------------

# train.mdqn's own flags (beyond RunConfig's); --init-schedulers where offered.
OWN_FIELDS = ("dispatcher", "share_params", "epochs")


def add_flags(p: argparse.ArgumentParser, name: str = "mdqn", init: bool = True) -> None:
    """Every train.mdqn flag but --help on `p` (`name`: the default run name; `init`:
    whether --init-schedulers is offered), generated from `MDQNConfig`'s fields."""
    add_common_flags(p, MDQNConfig, name)
    add_config_flags(p, MDQNConfig, OWN_FIELDS + (("init_schedulers",) if init else ()))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.mdqn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p)
    return p


def config_from_args(p: argparse.ArgumentParser, args) -> MDQNConfig:
    """The run's config from the flags (one-line errors, exit 2, before any compile): the
    config checks its values, then the files it names (`MDQNConfig.check_inputs`)."""
    return config_from_flags(p, args, MDQNConfig, OWN_FIELDS, "init_schedulers")


def save_policy_file(run_dir: str, cfg: MDQNConfig, q_params) -> None:
    """The run's policy file `run_dir/schedulers.msgpack` (what eval.compare --scheduler and
    train.dqn --scheduler load), atomically. Its agent count is that of `q_params` (the
    padded `m_max`; a sweep member's config may hold a smaller real count); shared
    parameters record `cfg.env.num_servers`."""
    agents = cfg.env.num_servers if cfg.share_params else jax.tree.leaves(q_params)[0].shape[0]
    save_schedulers(f"{run_dir}/{SCHEDULERS_FILE}", cfg.hidden, cfg.share_params, agents,
                    cfg.env.time_scale, q_params)


def train(cfg: MDQNConfig, run_dir: str, resume: bool) -> tuple[Any, bool]:
    """Run (or continue) the chunks of `cfg` in `run_dir`; returns `(runner, interrupted)`.

    The host side of `make_train(cfg)` (`damdjax.runs.train_single`): `init_runner` (key
    `PRNGKey(cfg.seed)`, the --init-schedulers file), the checkpoint where resuming, then
    the jitted `chunk` at `Hyper.from_config(cfg)` until `cfg.num_chunks`.
    """
    chunk, hyper = jitted_pieces(cfg)[1], Hyper.from_config(cfg)
    return runs.train_single(cfg, run_dir, resume, runner=init_runner(cfg),
                             chunk=lambda r: chunk(r, hyper), save_policy_file=save_policy_file)


def main(argv=None) -> int:
    return runs.trainer_main(argv, build_parser=build_parser, config_from_args=config_from_args,
                             config_from_json=MDQNConfig.from_json, train=train, evaluate=evaluate,
                             format_eval=format_eval)


if __name__ == "__main__":
    sys.exit(main())
