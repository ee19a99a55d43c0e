"""The DAMD pipeline: a DQN dispatcher, then MDQN schedulers under it, alternating.

    python -m train.damd --name damd                  # runs/damd/
    python -m train.damd --name damd --rounds 2       # dispatcher retrained against the schedulers
    python -m eval.compare --damd-run runs/damd       # DAMD against NF, RS, LS, EC, best again

Round 1: stage `r1-dispatcher` trains the DQN dispatcher with FCFS servers
(train.dqn's chunk; --dqn-scheduler names another rule), then stage
`r1-schedulers` trains the MDQN schedulers (train.mdqn's chunk) with that
dispatcher frozen. Round k > 1 continues both: the dispatcher from round k-1's
parameters against round k-1's schedulers (frozen), then the schedulers from
their round k-1 parameters under the new dispatcher. The scheduler stages
discount per agent decision by --mdqn-gamma (0.5, not train.mdqn's 0.9: under a
trained dispatcher an agent's decisions are far apart; docs/model.md, "The
schedulers' discount").

Each stage kind takes its trainer's learning flags with its prefix (--dqn-lr,
--mdqn-learning-starts, ...; train.dqn's and train.mdqn's defaults, but
--mdqn-gamma). `make_train(config)` is the pipeline as one program: a `Stage`
per stage, each given its partner's current parameters as a greedy rule (traced,
never read from a file). This command runs that program as a sweep of one
member on one device (damdjax.members, train.sweep's host loop): `python -m
train.sweep --trainer damd` trains many pipelines at once, and a sweep of
--seeds 1 with no --grid on one device is the same program, bitwise.

Writes runs/<name>/: config.json (the pipeline's config), metrics.jsonl (one row
per chunk, the chunks counted over every stage, each row naming its stage; env
steps and updates summed over the stages so far), checkpoint.msgpack (the whole
pipeline's runner state after each chunk, atomic: --resume continues it exactly,
also after a kill; Ctrl-C stops between chunks, exit 130), with
--stage-eval-episodes N eval-<stage>.json at the end of each stage (from the
runner: a dispatcher stage's greedy dispatcher against the dispatch rules under
the schedulers it trained with, a schedulers stage's greedy schedulers against
the scheduling rules under its dispatcher; held-out, paired), and at the end
dispatcher.msgpack and schedulers.msgpack (the last stages' networks: what
eval.compare --dispatcher-checkpoint and --scheduler, train.mdqn --dispatcher and
train.dqn --scheduler take), damd.json naming them with the setting and the
training times (what eval.compare --damd-run takes) and eval.json: DAMD (both, greedy) against NF, RS,
LS, EC (EFT + critical path) and the best of all 20 heuristic pairs at the
setting (its name in `best_heuristic`, every pair's means in `heuristics`), with
the contention-free bound, on held-out instances, paired, with 95% confidence
intervals.

A run directory of the earlier layout (a folder per stage, r1-dispatcher/,
r1-schedulers/, ..., damd.json naming the last two) still loads in eval.compare
--damd-run; --resume refuses it (this version cannot continue it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from damdjax.chunks import RunStopped
from damdjax.cli import (add_config_flags, add_run_flags, check_int_flag, config_or_exit,
                         config_values)
from damdjax.configs import ConfigError, Field, check_int, option
from damdjax.run_config import SETTING_OPTIONS, setting_from_json
from damdjax.workloads import resolve_workload
from damdjax.evaluation import evaluate_paired, format_paired
from damdjax.heuristics import ALL_PAIRS, SCHEDULE_RULES, Policy, pair
from damdjax.hyper import PipelineHyper
from damdjax.io import write_json_atomic
from damdjax.members import Member, stage_ends
from damdjax.policies import (DAMD_FILE, DISPATCHER_FILE, SCHEDULERS_FILE, dispatcher_network,
                              dqn_dispatch_rule, load_damd, mdqn_schedule_rule,
                              scheduler_network)
from damdjax.rollout import Stage, TrainFns, with_params
from damdjax.sharding import to_host
from damdjax import members, memory, run_inputs, rundir, runs
from damdjax.train import dqn, mdqn

BASELINES = ("NF", "RS", "LS", "EC")  # and the best pair at the setting
MDQN_GAMMA = 0.5   # the scheduler stages' discount (docs/model.md, "The schedulers' discount")
# Each stage kind's own flags (--dqn-lr, --mdqn-lr, ...; train.dqn's and train.mdqn's fields).
STAGE_FIELDS = ("lr", "gamma", "eps_start", "eps_end", "eps_decay_steps", "target_every",
                "learning_starts", "max_grad_norm", "double_dqn", "n_step", "updates_per_step",
                "steps_per_chunk", "buffer_capacity", "batch_size", "num_envs", "num_chunks",
                "hidden")
# The shared flags: the setting and the seed (one value for every stage).
SHARED_FIELDS = (*SETTING_OPTIONS, "workload", "seed")
# The dispatcher stages' own flags beyond STAGE_FIELDS (--dqn-scheduler: a rule).
DISPATCHER_FIELDS = ("scheduler", "eft_feature", "targets", "rollout_envs", "rollout_tasks",
                     "eft_rule")
# The stage configs' defaults where train.damd's differ from train.dqn's and train.mdqn's.
STAGE_DEFAULTS = {"dqn": dqn.DQNConfig(num_envs=4096),
                  "mdqn": mdqn.MDQNConfig(num_envs=1024, gamma=MDQN_GAMMA)}
PARTS = (("dispatcher", "dqn"), ("schedulers", "mdqn"))
STAGE_EVAL = "eval-{}.json"    # --stage-eval-episodes: a stage's evaluation, by stage name


def stage_names(rounds: int) -> list[tuple[str, str]]:
    """`[(stage name, "dqn" | "mdqn")]` in training order."""
    return [(f"r{r}-{part}", kind) for r in range(1, rounds + 1) for part, kind in PARTS]


@dataclasses.dataclass(frozen=True)
class DAMDConfig:
    """A DAMD pipeline: `rounds` of a dispatcher stage then a schedulers stage.

    `dispatcher` is every dispatcher stage's train.dqn config (round 1 under its
    `scheduler`, a rule: --dqn-scheduler, FCFS by default; round k > 1 under round k-1's
    schedulers) and `schedulers` every schedulers stage's train.mdqn config (under the
    dispatcher just trained). A stage's partner and starting parameters are the
    pipeline's own (`make_train`), never files: the stage configs' `init_dispatcher`,
    `init_schedulers` and `dispatcher` fields are "". Both hold the same setting and seed.
    `eval_episodes`: the final held-out evaluation (the stage configs' own
    `eval_episodes` are train.damd's --stage-eval-episodes). The setting includes the
    `workload` (--workload sets both stages'; they must agree).
    """

    dispatcher: dqn.DQNConfig
    schedulers: mdqn.MDQNConfig
    rounds: int = option(1, "dispatcher/schedulers rounds")
    eval_episodes: int = option(200, "held-out episodes of the final DAMD vs NF/RS/LS/EC/best "
                                "evaluation", resumable=True)

    def __post_init__(self):
        """ValueError naming the field: `rounds` >= 1 and `eval_episodes` >= 0 (int32), the
        stages of the declared classes (each checked itself), sharing setting and seed,
        round 1's scheduler a rule and no file named for a partner or starting point."""
        check_int("rounds", self.rounds, 1)
        check_int("eval_episodes", self.eval_episodes, 0)
        for field, cls in (("dispatcher", dqn.DQNConfig), ("schedulers", mdqn.MDQNConfig)):
            if not isinstance(getattr(self, field), cls):
                raise ConfigError(Field(field), f" must be a {cls.__name__}, got "
                                  f"{type(getattr(self, field)).__name__}")
        d, s = self.dispatcher, self.schedulers
        if d.setting() != s.setting() or d.seed != s.seed:
            raise ValueError("a DAMD pipeline's stages must share the setting and seed; got "
                             f"{d.setting()} seed {d.seed} and {s.setting()} seed {s.seed}")
        if d.scheduler not in SCHEDULE_RULES:
            raise ValueError(f"dispatcher.scheduler must be one of {', '.join(SCHEDULE_RULES)} "
                             "(round 1's servers; later rounds schedule with the pipeline's "
                             f"own schedulers), got {d.scheduler!r}")
        for field, value in (("dispatcher.init_dispatcher", d.init_dispatcher),
                             ("schedulers.init_schedulers", s.init_schedulers),
                             ("schedulers.dispatcher", s.dispatcher)):
            if value:
                raise ValueError(f'{field} must be "" in a DAMD pipeline (its stages start '
                                 f"from and train against its own), got {value!r}")

    @property
    def seed(self) -> int:
        return self.dispatcher.seed

    @property
    def num_chunks(self) -> int:
        return sum(n for _, n, _ in self.stage_plan())

    def stage_plan(self) -> list[tuple[str, int, int]]:
        """`[(stage name, chunks, env steps per chunk)]` in training order."""
        cfg = {"dqn": self.dispatcher, "mdqn": self.schedulers}
        return [(name, cfg[kind].num_chunks, cfg[kind].steps_per_chunk * cfg[kind].num_envs)
                for name, kind in stage_names(self.rounds)]

    def setting(self) -> dict:
        return self.dispatcher.setting()

    @property
    def env_config(self):
        """The padded sizes (both stages hold them)."""
        return self.dispatcher.env_config

    @property
    def env(self):
        """The setting (both stages hold it)."""
        return self.dispatcher.env

    def job_library(self):
        """The workload's job library (None: the random generator)."""
        return self.dispatcher.job_library()

    def hyper(self) -> PipelineHyper:
        return PipelineHyper(dispatcher=self.dispatcher.hyper(),
                             schedulers=self.schedulers.hyper())

    def with_hyper(self, hyper: PipelineHyper, seed: int) -> "DAMDConfig":
        return dataclasses.replace(self, dispatcher=self.dispatcher.with_hyper(hyper.dispatcher, seed),
                                   schedulers=self.schedulers.with_hyper(hyper.schedulers, seed))

    def counter_totals(self) -> list[tuple[str, int]]:
        """The pipeline's int32 counters (env steps and updates, summed over its stages)
        after the last stage, and each stage kind's own (`RunConfig.counter_totals`)."""
        d, s = self.dispatcher.counter_totals("dqn-"), self.schedulers.counter_totals("mdqn-")
        whole = [(f"--rounds {self.rounds} x ({a} + {b})", self.rounds * (x + y))
                 for (a, x), (b, y) in zip(d, s)]
        return whole + d + s

    def memory_parts(self) -> list[tuple[str, int]]:
        """Both stage kinds' runners (`RunConfig.memory_parts`) and the final evaluation
        (DAMD and every heuristic pair)."""
        f = memory.float_bytes()
        methods = 1 + len(ALL_PAIRS)
        return (self.dispatcher.memory_parts("dqn-", "--stage-eval-episodes")
                + self.schedulers.memory_parts("mdqn-", "--stage-eval-episodes")
                + [(f"the final evaluation (--eval-episodes {self.eval_episodes} x "
                    f"{methods + 1} batches)",
                    memory.evaluation_bytes(self.env_config, self.eval_episodes, methods, f))])

    def check_inputs(self) -> None:
        """Nothing to read: a pipeline's stages take their partners from its own runner
        (`make_train`)."""

    def to_json(self) -> dict:
        return {"rounds": self.rounds, "eval_episodes": self.eval_episodes,
                "dispatcher": self.dispatcher.to_json(), "schedulers": self.schedulers.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "DAMDConfig":
        """ValueError/KeyError/TypeError where `d` is not a stored DAMD config."""
        if sorted(d) != ["dispatcher", "eval_episodes", "rounds", "schedulers"]:
            raise ValueError(f"not a DAMD config (keys {sorted(d)})")
        return cls(dispatcher=dqn.DQNConfig.from_json(d["dispatcher"]),
                   schedulers=mdqn.MDQNConfig.from_json(d["schedulers"]),
                   rounds=d["rounds"], eval_episodes=d["eval_episodes"])


# ---------------------------------------------------------------------------
# The pipeline as one program (train.damd; train.sweep --trainer damd)
# ---------------------------------------------------------------------------

@struct.dataclass
class PipelineRunner:
    """Both stage kinds' runner states and the pipeline's counters."""

    dispatcher: Any           # train.dqn.RunnerState
    schedulers: Any           # train.mdqn.RunnerState
    key: jax.Array            # the run's key: each stage's fresh runner is made from it
    env_steps: jax.Array      # [] env steps of every stage so far
    updates: jax.Array        # [] gradient updates of every stage so far
    chunk: jax.Array          # [] chunks done, all stages

    @property
    def params(self) -> dict:
        return {"dispatcher": self.dispatcher.params, "schedulers": self.schedulers.params}


def make_train(config: DAMDConfig, axis_name: str | None = None) -> TrainFns:
    """The DAMD pipeline's training program: `init(key, hyper)`, one `Stage` per stage
    (`config.stage_plan()`), and `train(key, hyper)` running them all; `hyper` a
    `damdjax.hyper.PipelineHyper` (traced).

    Each stage is train.dqn's or train.mdqn's own chunk (`make_train(...).chunk`) with its
    partner's current parameters as a greedy rule (traced, not a file): the schedulers
    stages dispatch with the dispatcher just trained, the dispatcher stages of rounds > 1
    schedule with the schedulers before them. Every stage starts from a fresh runner made
    from the run's key (`Stage.begin`, from the kind's last parameters where a round
    before trained them; round 1's come from `init`). `python -m train.damd` runs this
    program as a sweep of one member (`run`).
    """
    dcfg, scfg = config.dispatcher, config.schedulers
    d_net, s_net = dispatcher_network(dcfg.hidden), scheduler_network(scfg.hidden)
    first_dispatcher = dqn.make_train(dcfg, axis_name)     # round 1: servers use dcfg.scheduler

    def dispatcher_under(prs: PipelineRunner, hyper: PipelineHyper) -> TrainFns:
        rule = mdqn_schedule_rule(s_net, prs.schedulers.params, scfg.share_params,
                                  hyper.schedulers.env.time_scale)
        return dqn.make_train(dcfg, axis_name, schedule=rule)

    def schedulers_under(dispatcher_params, hyper: PipelineHyper) -> TrainFns:
        rule = dqn_dispatch_rule(d_net, dispatcher_params,
                                 hyper.dispatcher.env.time_scale,
                                 eft_feature=dcfg.eft_feature, eft_rule=dcfg.eft_rule)
        return mdqn.make_train(scfg, axis_name, dispatch=rule)

    def init(key, hyper: PipelineHyper) -> PipelineRunner:
        d = first_dispatcher.init(key, hyper.dispatcher)
        s = schedulers_under(d.params, hyper).init(key, hyper.schedulers)
        zero = jnp.zeros((), jnp.int32)
        return PipelineRunner(dispatcher=d, schedulers=s, key=key, env_steps=zero,
                              updates=zero, chunk=zero)

    def counted(prs: PipelineRunner, old, new) -> PipelineRunner:
        return prs.replace(env_steps=prs.env_steps + new.env_steps - old.env_steps,
                           updates=prs.updates + new.updates - old.updates,
                           chunk=prs.chunk + 1)

    def dispatcher_chunk(fns_of):
        def chunk(prs, hyper):
            rs, m = fns_of(prs, hyper).chunk(prs.dispatcher, hyper.dispatcher)
            return counted(prs, prs.dispatcher, rs).replace(dispatcher=rs), m
        return chunk

    def schedulers_chunk(prs, hyper):
        rs, m = schedulers_under(prs.dispatcher.params, hyper).chunk(prs.schedulers,
                                                                     hyper.schedulers)
        return counted(prs, prs.schedulers, rs).replace(schedulers=rs), m

    def begin_dispatcher(prs, hyper):     # rounds > 1: fresh runner, last parameters
        fresh = dispatcher_under(prs, hyper).init(prs.key, hyper.dispatcher)
        return prs.replace(dispatcher=with_params(fresh, prs.dispatcher.params))

    def begin_schedulers(prs, hyper):
        fresh = schedulers_under(prs.dispatcher.params, hyper).init(prs.key, hyper.schedulers)
        return prs.replace(schedulers=with_params(fresh, prs.schedulers.params))

    # One function object per distinct program, shared by the rounds (one compile each).
    first = Stage(dispatcher_chunk(lambda prs, hyper: first_dispatcher))
    later = Stage(dispatcher_chunk(dispatcher_under), begin_dispatcher)
    sched_first, sched_later = Stage(schedulers_chunk), Stage(schedulers_chunk, begin_schedulers)
    stages = tuple(st for r in range(config.rounds)
                   for st in ((first, sched_first) if r == 0 else (later, sched_later)))

    def train(key, hyper):
        prs, out = init(key, hyper), []
        for st, (_, n, _) in zip(stages, config.stage_plan()):
            if st.begin is not None:
                prs = st.begin(prs, hyper)
            prs, m = jax.lax.scan(lambda r, _, st=st: st.chunk(r, hyper), prs, None, length=n)
            out.append(m)
        return prs, out

    return TrainFns(init=init, chunk=first.chunk, train=train, stages=stages)


def program_config(config: DAMDConfig) -> DAMDConfig:
    """`config` with what leaves its init and stage programs unchanged fixed (a cache
    key): each stage kind's `program_config`, `eval_episodes`."""
    return dataclasses.replace(config, dispatcher=dqn.program_config(config.dispatcher),
                               schedulers=mdqn.program_config(config.schedulers),
                               eval_episodes=0)


def greedy_policy(config: DAMDConfig, params: dict, time_scale: float) -> Policy:
    """DAMD greedy: the dispatcher and the schedulers of `params` (may be traced;
    `{"dispatcher": ..., "schedulers": ...}`)."""
    return pair(dqn_dispatch_rule(dispatcher_network(config.dispatcher.hidden),
                                  params["dispatcher"], time_scale,
                                  eft_feature=config.dispatcher.eft_feature,
                                  eft_rule=config.dispatcher.eft_rule),
                mdqn_schedule_rule(scheduler_network(config.schedulers.hidden),
                                   params["schedulers"], config.schedulers.share_params,
                                   time_scale))


def save_policy_file(run_dir: str, config: DAMDConfig, params: dict, **extra) -> None:
    """`run_dir/dispatcher.msgpack`, `schedulers.msgpack` and `damd.json` naming them with
    the setting (what eval.compare --damd-run, --dispatcher-checkpoint and --scheduler
    take), and `extra`'s keys (train.damd's training times)."""
    dqn.save_policy_file(run_dir, config.dispatcher, params["dispatcher"])
    mdqn.save_policy_file(run_dir, config.schedulers, params["schedulers"])
    setting = config.setting()   # the workload as the user gave it, not the run's copy
    setting["workload"] = run_inputs.original(setting["workload"])
    write_json_atomic({"rounds": config.rounds, "dispatcher": DISPATCHER_FILE,
                       "schedulers": SCHEDULERS_FILE, "setting": setting, **extra},
                      os.path.join(run_dir, DAMD_FILE))


def evaluate(run_dir: str, episodes: int, seed: int) -> dict:
    """DAMD vs NF, RS, LS, EC and the best of every heuristic pair on held-out instances of
    `seed`, paired (reference "DAMD"), with the contention-free bound."""
    policy, setting = load_damd(run_dir)
    env, env_config, workload = setting_from_json(setting)
    return evaluate_paired({"DAMD": policy}, env_config, env, seed, episodes, "DAMD",
                           heuristics=ALL_PAIRS, keep=BASELINES,
                           workload=resolve_workload(workload))


def evaluate_stage(config: DAMDConfig, index: int, params: dict) -> dict:
    """Stage `index` of `stage_names(config.rounds)` at its end (`params`: one pipeline's
    `{"dispatcher", "schedulers"}` then), held-out and paired on its kind's config's
    `eval_episodes` (train.dqn's and train.mdqn's `evaluate`, the partner named by its
    stage): a dispatcher stage's greedy dispatcher against the dispatch rules under the
    schedulers it trained with (round 1: its rule; later: the round before's schedulers),
    a schedulers stage's greedy schedulers against the scheduling rules under the
    dispatcher just trained."""
    _, kind = stage_names(config.rounds)[index]
    r = index // len(PARTS) + 1
    d, s = config.dispatcher, config.schedulers
    time_scale = config.env.time_scale
    if kind == "dqn":
        partner = ((d.scheduler, SCHEDULE_RULES[d.scheduler]) if r == 1 else
                   (f"r{r - 1}-schedulers",
                    mdqn_schedule_rule(scheduler_network(s.hidden), params["schedulers"],
                                       s.share_params, time_scale)))
        return dqn.evaluate(d, params["dispatcher"], d.eval_episodes, scheduler=partner)
    partner = (f"r{r}-dispatcher", dqn_dispatch_rule(dispatcher_network(d.hidden),
                                                     params["dispatcher"], time_scale,
                                                     eft_feature=d.eft_feature,
                                                     eft_rule=d.eft_rule))
    return mdqn.evaluate(s, params["schedulers"], s.eval_episodes, dispatcher=partner)


def first_member(tree):
    """Member 0 of a runner's pytree [K', ...] (a run of one member), on the host."""
    return jax.tree.map(lambda x: np.asarray(x)[0], to_host(tree))


def stage_evaluations(config: DAMDConfig, root: str):
    """`on_commit(runner, chunks done)` for `damdjax.members.train`: where the committed
    chunk ends a stage whose kind has `eval_episodes` > 0 (--stage-eval-episodes) and its
    `root/eval-<stage>.json` is not there yet, the stage evaluated from the runner
    (`evaluate_stage`), written and printed. (A resume from a stage's last chunk thus
    writes an evaluation a kill prevented.)"""
    ends, names = stage_ends(config.stage_plan()), stage_names(config.rounds)
    episodes = {"dqn": config.dispatcher.eval_episodes,
                "mdqn": config.schedulers.eval_episodes}

    def on_commit(rs, chunks_done: int) -> None:
        if chunks_done not in ends:
            return
        i = ends.index(chunks_done)
        name, kind = names[i]
        path = os.path.join(root, STAGE_EVAL.format(name))
        if episodes[kind] <= 0 or os.path.exists(path):
            return
        ev = evaluate_stage(config, i, first_member(rs.params))
        write_json_atomic(ev, path)
        print(f"[{name}] " + (dqn if kind == "dqn" else mdqn).format_eval(ev), flush=True)
    return on_commit


def stage_seconds(config: DAMDConfig, root: str) -> list[dict]:
    """`[{"stage", "seconds"}]`: each stage's training time, its chunks' seconds summed from
    `root`'s metrics.jsonl (over every process that ran them)."""
    with open(rundir.run_paths(root)["metrics"]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{"stage": name, "seconds": sum(r["seconds"] for r in rows if r["stage"] == name)}
            for name, _ in stage_names(config.rounds)]


def run(config: DAMDConfig, root: str, resume: bool) -> int:
    """train.damd's run of `config` in `root` (opened by `damdjax.runs.open_run`): the
    pipeline (`make_train`) as a sweep of one member on one device
    (`damdjax.members.train`: checkpoint after each chunk, metrics rows naming the stage,
    Ctrl-C, `resume` from the checkpoint), each stage's evaluation where asked
    (`stage_evaluations`), then the last parameters' policy files and damd.json
    (`save_policy_file`, with the training times: `stage_seconds` and their sum) and
    eval.json. Returns the exit code: 0, or 130 after Ctrl-C."""
    member = Member(index=0, seed=config.seed, point={}, hyper=config.hyper())
    rs, _, interrupted = members.train(make_train, program_config(config), config, [member],
                                       root, resume, single=True,
                                       on_commit=stage_evaluations(config, root))
    if interrupted:
        return 130
    stages = stage_seconds(config, root)
    train_seconds = sum(st["seconds"] for st in stages)
    save_policy_file(root, config, first_member(rs.params), stages=stages,
                     train_seconds=train_seconds)
    t0 = time.perf_counter()
    ev = evaluate(root, config.eval_episodes, config.seed)
    ev["seconds"] = time.perf_counter() - t0
    write_json_atomic(ev, os.path.join(root, "eval.json"))
    print(format_paired(ev, f"DAMD ({config.rounds} round(s), {train_seconds:.0f} s of "
                            f"training) vs the paper's baselines, EC and the best pair "
                            f"({ev['best_heuristic']}), {ev['episodes']} held-out episodes"),
          flush=True)
    return 0


def earlier_layout(run_dir: str) -> str | None:
    """Why `run_dir` cannot be resumed, where it is a train.damd run of the earlier layout
    (a folder per stage, r1-dispatcher/ first); None otherwise."""
    if not os.path.isdir(os.path.join(run_dir, stage_names(1)[0][0])):
        return None
    return (f"{run_dir} is a train.damd run of the earlier layout (a folder per stage, "
            f"{stage_names(1)[0][0]}/ first), which this version cannot continue: start a new "
            f"run (a finished one still loads in eval.compare --damd-run)")


# ---------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------

def add_flags(p: argparse.ArgumentParser, name: str = "damd", init: bool = True) -> None:
    """Every train.damd flag but --help on `p` (`name`: the default run name; `init`:
    whether --stage-eval-episodes is offered, a single pipeline's), generated from the
    stage configs' fields: the shared ones unprefixed, each stage kind's with its prefix."""
    add_run_flags(p, name, "continue an interrupted pipeline from its config.json and "
                  "checkpoint, exactly (only --eval-episodes may change)")
    add_config_flags(p, DAMDConfig, ("rounds",))
    add_config_flags(p, mdqn.MDQNConfig, SHARED_FIELDS)
    add_config_flags(p, dqn.DQNConfig, STAGE_FIELDS + DISPATCHER_FIELDS, prefix="dqn_",
                     defaults=STAGE_DEFAULTS["dqn"], help_prefix="dispatcher stages: ")
    add_config_flags(p, mdqn.MDQNConfig, STAGE_FIELDS, prefix="mdqn_",
                     defaults=STAGE_DEFAULTS["mdqn"], help_prefix="scheduler stages: ")
    add_config_flags(p, mdqn.MDQNConfig, ("share_params",))
    if init:
        p.add_argument("--stage-eval-episodes", type=int, default=0,
                       help="held-out evaluation of each stage at its end (eval-<stage>.json: "
                            "a dispatcher stage against the dispatch rules under its "
                            "schedulers, a schedulers stage against the scheduling rules "
                            "under its dispatcher), 0 to skip (default 0)")
    add_config_flags(p, DAMDConfig, ("eval_episodes",))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.damd", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p)
    return p


def stage_prefix(kind: str):
    """`prefix_of(field)` for `damdjax.configs.flag_message` of a stage kind's config
    ("dqn" or "mdqn"): its own fields are train.damd's `--dqn-*` / `--mdqn-*` flags, the
    setting and the seed are shared (unprefixed), and a stage's `eval_episodes` is
    --stage-eval-episodes."""
    def prefix_of(field: str) -> str:
        if field in SHARED_FIELDS or field in ("setting_range", "share_params"):
            return ""
        return "stage_" if field == "eval_episodes" else f"{kind}_"
    return prefix_of


def config_from_args(p: argparse.ArgumentParser, args) -> DAMDConfig:
    """The pipeline's config from the flags (one-line errors, exit 2, before any compile):
    each stage kind's config checks itself (errors name the `--dqn-*` / `--mdqn-*` flag),
    then the pipeline's own values. Round 1's dispatcher stage learns under a scheduling
    rule (--dqn-scheduler)."""
    if args.dqn_scheduler not in SCHEDULE_RULES:
        p.error(f"--dqn-scheduler must be one of {', '.join(SCHEDULE_RULES)}, got "
                f"{args.dqn_scheduler!r}")
    shared = config_values(p, args, mdqn.MDQNConfig, SHARED_FIELDS)
    shared["eval_episodes"] = getattr(args, "stage_eval_episodes", 0)
    dispatcher = config_or_exit(p, lambda: dqn.DQNConfig.from_values(**shared, **config_values(
        p, args, dqn.DQNConfig, STAGE_FIELDS + DISPATCHER_FIELDS, prefix="dqn_",
        defaults=STAGE_DEFAULTS["dqn"])), stage_prefix("dqn"))
    schedulers = config_or_exit(p, lambda: mdqn.MDQNConfig.from_values(**shared, **config_values(
        p, args, mdqn.MDQNConfig, STAGE_FIELDS, prefix="mdqn_", defaults=STAGE_DEFAULTS["mdqn"]),
        share_params=args.share_params, dispatcher=""), stage_prefix("mdqn"))
    return config_or_exit(p, lambda: DAMDConfig(
        dispatcher=dispatcher, schedulers=schedulers,
        **config_values(p, args, DAMDConfig, ("rounds", "eval_episodes"))))


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.eval_episodes is not None:
        check_int_flag(p, "--eval-episodes", args.eval_episodes, 1)
    config, root = runs.open_run(p, build_parser, args, argv,
                                 config_from_args=config_from_args,
                                 config_from_json=DAMDConfig.from_json,
                                 refuse_resume=earlier_layout)
    with rundir.held(root):
        try:
            return run(config, root, args.resume)
        except RunStopped as err:
            return runs.report_stop(err)


if __name__ == "__main__":
    sys.exit(main())
