"""The paper's Figures 3, 4 and 5, regenerated with confidence intervals.

    python -m eval.figures --quick                 # 2-core CPU: ~15 min, runs/figures-quick/
    python -m eval.figures                         # full quality (a GPU): runs/figures/
    python -m eval.figures --quick --resume        # continue a killed job: finished parts kept
    python -m eval.figures --axes density --seeds 5 --out runs/fig4
    python -m train.launch --num-processes 2 -- python -m eval.figures --quick --distributed

For each axis (Figure 3: the number of tasks, Figure 4: the task arrival
density, Figure 5: the number of edge servers; AXES, whose comments say why
each range), DAMD is trained at every point for --seeds training seeds as one
compiled program (`train.sweep --trainer damd`, the axis's value a grid field
within the figure's padded sizes), then every method plays the same held-out
episodes per point (generated at the point's setting from --eval-seed, which
no training run uses):

  DAMD          the trained dispatcher and MDQN schedulers (greedy), per seed
  DQN + rule    the trained dispatcher with the scheduling rule of the point's
                best heuristic pair (chosen before the DQN plays, on the same
                episodes), per seed
  NF, RS, LS    the paper's baselines
  best pair     the best of all 20 dispatch x scheduling pairs at the point
                (smallest mean response time on these very episodes: it peeks);
                its name is in the table
  tuned best    the EFT family tuned without peeking (`damdjax.tuning`): every
                classic pair and family member (or --tune-methods) played on
                --tune-episodes *tuning* episodes at the point's setting (keys
                disjoint from the held-out ones), the best there then played on
                the held-out episodes; its name is in the table
  bound         the contention-free lower bound

--generalist also trains one DAMD per seed across each axis's whole range (the
axis's field drawn per training episode, uniformly in [first point, last
point]; the networks score servers and queue slots with shared weights, so one
model serves every setting) with a per-point member's budget, and evaluates it
at every point beside the per-point models (`DAMD generalist`, `DQN generalist
+ rule`; `paired_vs_per_point`: generalist - per-point, seed by seed).

Learned methods: mean over seeds with a 95% CI over the seeds' means (with one
seed: over that seed's episodes, and `ci_over` says so); heuristics and the
bound: 95% CI over episodes. Per point, the paired difference of DAMD and of
DQN + rule against the best pair on the same episodes (per seed, then mean and
95% CI over seeds) is in the JSON and CSV (`paired_vs_best`), and against the tuned
best (`paired_vs_tuned`). The figures' lower panels plot these paired differences
against the strongest heuristic (the tuned best where tuned, else the best pair) with
their CIs and a zero line.

Writes OUT/ (--out): figures.json (the job: what --resume continues),
fig<N>-<axis>.png / .svg (both metrics, two panels), .csv and .json (the numbers),
train/<axis>/ (the sweep's run directory: config, metrics, checkpoint,
member-<i>/ policy files for eval.compare --damd-run) and points/ (each
point's heuristic results and each axis's learned results, per episode, so
that --resume skips them; checksummed msgpack, `damdjax.checkpoint.save_tree`, a
damaged one refused in one line). Every file is written atomically. Progress lines
(stage, point, elapsed, ETA) go to stderr; the sweep's chunk lines to stdout.

--distributed runs the job as one process of several (`jax.distributed.initialize`;
--coordinator HOST:PORT --num-processes N --process-id I, the environment `python -m
train.launch` sets, or a SLURM job's; --distributed-timeout; docs/distributed.md): every
process runs the same command; each sweep and the learned methods' evaluation run with
the members sharded over every process's devices. Process 0 alone holds OUT (its lock;
every file read and written there, --resume's included), plays the heuristics and the
bound, and prints; it sends the others what they need (the job, what is done, each
point's scheduling rule, read-back policy files). The figures equal a single process's
on as many devices. A lost process ends the others with one line.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import io
import json
import os
import shlex
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax.serialization import msgpack_restore, msgpack_serialize

from damdjax import distributed, memory, rundir, runs
from damdjax.bound import bound_metrics
from damdjax.checkpoint import read_state_dict, save_tree
from damdjax.chunks import RunStopped
from damdjax.cli import (add_seed_flag, check_int_flag, check_program, config_or_exit,
                         explicit_flags)
from damdjax.evaluation import (PAIRED_METRICS, best_pair, held_out_keys,
                                play_generated_members, play_named_pairs)
from damdjax.family import canonical_name
from damdjax.heuristics import ALL_PAIRS, SCHEDULE_RULES, pair_names
from damdjax.hyper import member as hyper_member, stack
from damdjax.io import json_number, write_bytes_atomic, write_json_atomic
from damdjax.metrics import ci_excludes_zero, episode_metrics, mean_ci95
from damdjax.policies import (DISPATCHER_FILE, SCHEDULERS_FILE, dispatcher_network,
                              dqn_dispatch_rule, load_dispatcher, load_schedulers,
                              mdqn_schedule_rule, scheduler_network)
from damdjax.rollout import play_pairs
from damdjax.sharding import (member_mesh, member_sharding, pad_members, padded_members,
                              put_members, to_host)
from damdjax.envs.config import offered_load
from damdjax.envs.env import EdgeEnv
from damdjax.envs.state import Action
from damdjax.train import damd, sweep
from damdjax.tuning import TuningResult, tune

KIND = "damdjax.eval.figures"   # figures.json's marker: only such a folder is reused
JOB_FILE = "figures.json"


@dataclasses.dataclass(frozen=True)
class Axis:
    """One figure: the setting field it varies and its points (the others at the
    generator's defaults: 100 tasks, density 2, 5 servers, slack 2.5)."""

    name: str
    field: str          # a damdjax.hyper.SETTING_FIELDS name
    figure: int         # the paper's figure number
    label: str          # the x axis
    values: tuple
    pad_flag: str = ""  # the trainer flag that sets the padded size to the largest point


# Ranges (docs/calibration.md; offered load = density x mean work / capacity,
# damdjax.envs.config.offered_load, 0.45 at the default setting):
# - tasks: 25 to 200 at the default density. The number of tasks does not change the
#   offered load (0.45): it is the episode's length, so the queues have longer to build
#   (LS 7.36 -> 7.78 from 50 to 200 tasks in the calibration). The paper's Fig. 3 varies
#   the same quantity; its load is not stated.
# - density: 1 to 6 tasks per time unit, offered load 0.23 (light: ES misses 0.03%) to
#   1.35 (overload: at density 6, ES misses 17% and RS 30% of deadlines, 100 held-out
#   episodes of seed 0; calibration: density 4 is 0.9, ES 7%).
# - servers: 2 to 10 at density 2, offered load 1.13 (overload) to 0.23 (light); 10 is
#   the environment's default server padding.
AXES = {
    "tasks": Axis("tasks", "num_tasks", 3, "number of tasks per episode",
                  (25, 50, 100, 150, 200), "--num-tasks"),
    "density": Axis("density", "density", 4, "task arrival density (tasks per time unit)",
                    (1.0, 2.0, 3.0, 4.0, 6.0)),
    "servers": Axis("servers", "num_servers", 5, "number of edge servers",
                    (2, 3, 5, 8, 10), "--num-servers"),
}

# Training (train.damd's flags; the rest at its defaults). Full: train.damd's own
# defaults (dispatcher 4096 envs x 40 chunks, schedulers 1024 envs x 40 chunks), for a GPU.
# Quick: sized for the 2-core CPU (45 members in all): per member 32,000 dispatcher env
# steps (the full run's 8.2M / 256) and 4,800 scheduler env steps, exploration and replay
# scaled down with them. Compiles (about 3 programs per figure) are much of its time.
FULL_TRAIN: tuple = ()
QUICK_TRAIN = ("--dqn-num-envs", "64", "--dqn-num-chunks", "10",
               "--dqn-eps-decay-steps", "16000", "--dqn-learning-starts", "1000",
               "--dqn-buffer-capacity", "16384",
               "--mdqn-num-envs", "32", "--mdqn-num-chunks", "3", "--mdqn-updates-per-step", "1",
               "--mdqn-batch-size", "64", "--mdqn-eps-decay-steps", "3000",
               "--mdqn-learning-starts", "320", "--mdqn-buffer-capacity", "4096")
FULL_EPISODES, QUICK_EPISODES = 200, 64
EVAL_SEED = 1000      # held-out episodes of every point; training seeds are --seed, +1, ...

METHODS = ("DAMD", "DQN + rule", "NF", "RS", "LS", "best pair", "bound")
TUNED = "tuned best"   # with --tune-episodes > 0, after "best pair"
LEARNED = ("DAMD", "DQN + rule")
GENERALIST = ("DAMD generalist", "DQN generalist + rule")   # with --generalist
STYLE = {  # method -> (legend label, marker, line style)
    "DAMD": ("DAMD (DQN dispatcher + MDQN schedulers)", "o", "-"),
    "DQN + rule": ("DQN dispatcher + best pair's scheduling rule", "s", "-"),
    "NF": ("NF (nearest + FCFS)", "v", "--"),
    "RS": ("RS (random + SJF)", "^", "--"),
    "LS": ("LS (least load + SDF)", "D", "--"),
    "best pair": ("best heuristic pair at the point (of 20, chosen on these episodes)",
                  "*", ":"),
    TUNED: ("tuned EFT family best (chosen on tuning episodes)", "p", ":"),
    "bound": ("contention-free lower bound", "x", "-."),
    "DAMD generalist": ("DAMD generalist (one model for the whole axis)", "P", (0, (5, 1))),
    "DQN generalist + rule": ("generalist DQN dispatcher + best pair's rule", "X", (0, (5, 1))),
}
METRIC_LABELS = {"avg_response_time": "average response time (time units)",
                 "deadline_miss_rate": "deadline-miss rate"}


# ---------------------------------------------------------------------------
# Flags and the job
# ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.figures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--quick", action="store_true", help="the CPU-sized job (QUICK_TRAIN, "
      f"{QUICK_EPISODES} episodes per point); default: the full-quality job for a GPU")
    a("--axes", default="tasks,density,servers",
      help=f"figures to make, comma-separated, of {', '.join(AXES)} (default %(default)s)")
    a("--points", nargs="+", default=[], metavar="AXIS=V1,V2",
      help="replace an axis's points, e.g. density=1,3 (default: AXES)")
    a("--seeds", type=int, default=3, help="training seeds per point (default %(default)s)")
    add_seed_flag(p, "first training seed")
    add_seed_flag(p, "seed of every point's held-out episodes", EVAL_SEED, "--eval-seed")
    a("--episodes", type=int, default=None,
      help=f"held-out episodes per point (default {FULL_EPISODES}; --quick {QUICK_EPISODES})")
    a("--tune-episodes", type=int, default=None, metavar="N",
      help="tuning episodes per point for the tuned EFT family best (0: no tuning; "
           "default: --episodes)")
    a("--tune-methods", default="", metavar="LIST",
      help="the tuning's candidates, comma-separated method names (default: the 20 "
           "classic pairs and the family's grid, damdjax.tuning.family_grid)")
    a("--train-args", default="",
      help="extra train.damd flags for every figure's sweep, after the profile's (they win), "
           "e.g. \"--dqn-num-chunks 80 --mdqn-gamma 0.7\"")
    a("--generalist", action="store_true",
      help="also train one DAMD per seed across each axis's whole range (the field drawn "
           "per training episode) and evaluate it at every point beside the per-point models")
    a("--out", default=None, help="output folder (default runs/figures, --quick "
      "runs/figures-quick); an existing folder must be one this command wrote")
    a("--resume", action="store_true", help="continue the job stored in OUT: finished "
      "figures, trainings and evaluated points are skipped (other flags but --out refused)")
    a("--overwrite", action="store_true", help="replace OUT (only a folder this command wrote)")
    a("--replot", nargs="+", default=[], metavar="FIG.csv",
      help="draw figures again from their CSV files (the PNG beside each, with "
           "today's panels); nothing is trained or played (--quick: the CPU title note)")
    a("--checkpoint-every", type=int, default=1, metavar="K",
      help="write each sweep's checkpoint after every K-th chunk (train.sweep's flag; at "
           "full quality a figure's checkpoint holds 15 members' replay, several GB); "
           "allowed with --resume (default %(default)s)")
    distributed.add_flags(p)
    return p


def _number(text: str, field: str):
    v = float(text)
    if not np.isfinite(v):
        raise ValueError(f"{field} takes finite numbers, got {text!r}")
    if field in ("num_tasks", "num_servers"):
        if v != int(v):
            raise ValueError(f"{field} takes integers, got {text!r}")
        return int(v)
    return v


def job_from_args(p: argparse.ArgumentParser, args) -> dict:
    """The job's JSON (what --resume continues) from checked flags; one-line errors."""
    axes = [a.strip() for a in args.axes.split(",") if a.strip()]
    for a in axes:
        if a not in AXES:
            p.error(f"--axes: unknown axis {a!r} (axes: {', '.join(AXES)})")
    if not axes or len(set(axes)) != len(axes):
        p.error(f"--axes must name each axis at most once, got {args.axes!r}")
    points = {a: list(AXES[a].values) for a in axes}
    for spec in args.points:
        name, eq, text = spec.partition("=")
        if not eq or name not in points:
            p.error(f"--points takes AXIS=V1,V2 with AXIS among --axes ({', '.join(axes)}); "
                    f"got {spec!r}")
        try:
            vals = [_number(t, AXES[name].field) for t in text.split(",")]
        except ValueError as err:
            p.error(f"--points {spec!r}: {err}")
        if len(set(vals)) != len(vals) or sorted(vals) != vals:
            p.error(f"--points {spec!r}: values must be increasing, each once")
        points[name] = vals
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    episodes = args.episodes if args.episodes is not None else (
        QUICK_EPISODES if args.quick else FULL_EPISODES)
    if episodes < 2:
        p.error(f"--episodes must be >= 2 (a confidence interval), got {episodes}")
    check_int_flag(p, "--episodes", episodes, 2)
    tune_episodes = episodes if args.tune_episodes is None else args.tune_episodes
    check_int_flag(p, "--tune-episodes", tune_episodes, 0)
    tune_methods = None
    if args.tune_methods:
        try:
            tune_methods = list(dict.fromkeys(canonical_name(m.strip())
                                              for m in args.tune_methods.split(",")))
        except ValueError as err:
            p.error(f"--tune-methods {args.tune_methods!r}: {err}")
    profile = QUICK_TRAIN if args.quick else FULL_TRAIN
    try:
        train_args = shlex.split(args.train_args)
    except ValueError as err:
        p.error(f"--train-args {args.train_args!r}: {err}")
    return {"quick": args.quick, "axes": axes, "points": points, "seeds": args.seeds,
            "seed": args.seed, "eval_seed": args.eval_seed, "episodes": episodes,
            "tune_episodes": tune_episodes, "tune_methods": tune_methods,
            "generalist": args.generalist,
            "train_args": [*profile, *train_args]}


def sweep_config(job: dict, axis: Axis) -> sweep.SweepConfig:
    """The axis's sweep, built as a config: the DAMD pipeline of the job's training flags
    (`train_args`: the profile's and --train-args, train.damd's flags; the padded size at
    the largest point before them, so that they may raise it; no final evaluation), one
    member per point and seed (`SweepConfig`'s checks, then the program's memory and
    counters; one-line exit 2)."""
    vals = job["points"][axis.name]
    p = argparse.ArgumentParser(prog=f"python -m eval.figures (figure {axis.figure}'s "
                                "training)")
    damd.add_flags(p, init=False)
    pad = [axis.pad_flag, str(max(vals))] if axis.pad_flag else []
    args = p.parse_args(["--seed", str(job["seed"]), *pad, *job["train_args"],
                         "--eval-episodes", "0"])
    base = damd.config_from_args(p, args)
    scfg = config_or_exit(p, lambda: sweep.SweepConfig(
        trainer="damd", seeds=job["seeds"], grid=((axis.field, tuple(vals)),), config=base))
    check_program(p, scfg)
    # a point's evaluation: every heuristic pair and each member twice (DAMD, DQN + rule)
    methods = len(ALL_PAIRS) + 2 * len(scfg.members())
    try:
        memory.check_memory([(f"a point's evaluation (--episodes {job['episodes']} x "
                              f"{methods + 1} batches)", memory.evaluation_bytes(
                                  scfg.env_config, job["episodes"], methods,
                                  memory.float_bytes()))])
    except ValueError as err:
        p.error(str(err))
    return scfg


def out_folder(args) -> str:
    """--out, or its default: runs/figures, runs/figures-quick with --quick."""
    return args.out or ("runs/figures-quick" if args.quick else "runs/figures")


def open_out(p: argparse.ArgumentParser, args, argv) -> tuple[dict, str]:
    """`(job, out dir)`: a new job (OUT absent, empty or --overwrite of a figures folder)
    or, with --resume, the stored one."""
    out = out_folder(args)
    if os.path.exists(out) and not os.path.isdir(out):
        p.error(f"--out {out}: is a file, not a folder")
    job_path = os.path.join(out, JOB_FILE)
    stored = None
    if os.path.exists(job_path):
        try:
            with open(job_path) as f:
                stored = json.load(f)
            assert stored.get("kind") == KIND
        except (ValueError, AssertionError, AttributeError):
            p.error(f"{job_path} is not an eval.figures job file: refusing to touch {out}")
    elif os.path.isdir(out) and os.listdir(out):
        p.error(f"{out} exists and is not an eval.figures output folder: choose another --out")
    if args.resume:
        if args.overwrite:
            p.error("--resume and --overwrite exclude each other")
        others = explicit_flags(build_parser, argv) - {"out", "resume", "quick",
                                                            "checkpoint_every",
                                                            *distributed.FLAGS}
        if others:
            p.error("--resume continues the stored job; it takes only --out, "
                    "--checkpoint-every and the distributed flags, not "
                    + ", ".join("--" + o.replace("_", "-") for o in sorted(others)))
        if stored is None:
            p.error(f"--resume: no {JOB_FILE} in {out}")
        return stored["job"], out
    job = job_from_args(p, args)
    for name in job["axes"]:   # every figure's training flags, before anything is written
        sweep_config(job, AXES[name])
    if stored is not None:
        if not args.overwrite:
            p.error(f"{out} holds an eval.figures job: pass --resume or --overwrite")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    write_json_atomic({"kind": KIND, "job": job, "argv": list(argv)}, job_path)
    return job, out


# ---------------------------------------------------------------------------
# Progress over the whole job
# ---------------------------------------------------------------------------

def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Progress lines on stderr: elapsed, share of the job's work done, ETA. Work units:
    one per training chunk, EVAL_UNITS per point's heuristics, per axis's learned methods
    (a rough scale; the ETA is the time per unit so far times the units left)."""

    EVAL_UNITS = 2

    def __init__(self, total: float, stream=None, silent: bool = False):
        self.total, self.done, self.t0 = float(total), 0.0, time.perf_counter()
        self.stream = sys.stderr if stream is None else stream
        self.silent = silent   # (a process other than the first of a --distributed job)

    def advance(self, units: float, message: str) -> None:
        self.done += units
        self.say(message)

    def skip(self, units: float) -> None:   # finished before this process: not timed
        self.total -= units

    def say(self, message: str) -> None:
        if self.silent:
            return
        elapsed = time.perf_counter() - self.t0
        frac = self.done / self.total if self.total > 0 else 1.0
        eta = (f"ETA {_clock(elapsed / self.done * (self.total - self.done))}"
               if self.done > 0 else "ETA -")
        print(f"[figures {_clock(elapsed)} {100 * frac:5.1f}% {eta}] {message}",
              file=self.stream, flush=True)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def heuristics_program(config):
    """jit of `(hyper, inst_keys [E], play_keys [E]) -> name -> metric -> [E]`: the held-out
    instances at `hyper`'s setting (traced: one compile serves every point of an axis),
    every heuristic pair (`rollout.play_pairs`) and the contention-free bound."""
    env = EdgeEnv(config)

    def run(hyper, inst_keys, play_keys):
        params = hyper.env
        instances = jax.vmap(lambda k: env.generate(k, params))(inst_keys)
        states = play_pairs(ALL_PAIRS, play_keys, instances, config.queue_capacity, params)
        out = {}
        for name, st in states.items():
            m = jax.vmap(episode_metrics)(st)
            out[name] = {k: m[k] for k in PAIRED_METRICS}
        out["bound"] = jax.vmap(bound_metrics)(instances)
        return out

    return jax.jit(run)


def typed(point_hyper):
    """A point's `Hyper` with typed scalars (as a stacked one's): traced, one compile serves
    every point of an axis."""
    return jax.tree.map(lambda x: x[0], stack([point_hyper]))


def evaluate_heuristics(scfg, point_hyper, inst_keys, play_keys) -> dict:
    """Every pair and the bound at one point: name -> metric -> [E] float64."""
    out = to_host(heuristics_program(scfg.env_config)(typed(point_hyper), inst_keys, play_keys))
    return {n: {k: np.asarray(v, np.float64) for k, v in m.items()} for n, m in out.items()}


def tuned_point(job: dict, scfg, point_hyper, inst_keys, play_keys) -> tuple[dict, dict]:
    """The family tuned at the point's setting without peeking (`damdjax.tuning.tune`: the
    job's candidates on `tune_episodes` tuning episodes of the eval seed, whose keys the
    held-out episodes never use), then its choice on the held-out episodes (`inst_keys`,
    `play_keys` [E]; generated as `heuristics_program` generates them, the setting traced,
    so that the comparison with the pairs is paired): `(TuningResult JSON, metric -> [E])`."""
    cfg = scfg.env_config
    params = point_hyper.env
    result = tune(cfg, params, job["eval_seed"], job["tune_episodes"],
                  candidates=job.get("tune_methods"))
    env = EdgeEnv(cfg)
    instances = jax.jit(jax.vmap(env.generate, in_axes=(0, None)))(inst_keys,
                                                                   typed(point_hyper).env)
    per = play_named_pairs([result.best], params, instances, play_keys, cfg.queue_capacity)
    return result.to_json(), per[result.best]


def evaluate_learned(scfg, members, params, hyper_host, rules: list[str], inst_keys,
                     play_keys) -> tuple[np.ndarray, np.ndarray, dict]:
    """Every member twice on its point's held-out episodes, as one program: DAMD (its
    dispatcher and schedulers) and its dispatcher with `rules[point]` (a SCHEDULE_RULES
    name per grid point). Returns metric -> [2, K, E] (0: DAMD, 1: DQN + rule)."""
    cfg = scfg.config
    k = len(members)
    time_scale = cfg.env.time_scale
    d_net = dispatcher_network(cfg.dispatcher.hidden)
    s_net = scheduler_network(cfg.schedulers.hidden)
    rule_names = list(SCHEDULE_RULES)
    rule_fns = [SCHEDULE_RULES[r] for r in rule_names]

    def member_fn(mem):
        p, h, which = mem
        dispatch = dqn_dispatch_rule(d_net, p["dispatcher"], time_scale,
                                     eft_feature=cfg.dispatcher.eft_feature,
                                     eft_rule=cfg.dispatcher.eft_rule)
        learned = mdqn_schedule_rule(s_net, p["schedulers"], cfg.schedulers.share_params,
                                     time_scale)

        def policy(key, state):
            k_d, k_s = jax.random.split(key)   # as heuristics.pair
            picks = jnp.stack([learned(k_s, state), *(r(k_s, state) for r in rule_fns)])
            return Action(dispatch=dispatch(k_d, state), picks=picks[which])
        return policy, h.env

    real = jax.tree.map(lambda x: np.asarray(x)[:k], (params, hyper_host))
    which = np.asarray([0] * k + [1 + rule_names.index(rules[m.index // scfg.seeds])
                                  for m in members], np.int32)
    both = jax.tree.map(lambda x: np.concatenate([x, x]), real)
    mesh = member_mesh()
    count = padded_members(2 * k, mesh)
    shard = member_sharding(mesh)
    tree = put_members(pad_members((*both, which), count), shard)
    per = play_generated_members(member_fn, tree, scfg.env_config, inst_keys, play_keys,
                                 sharding=shard)
    return {m: v[:2 * k].reshape(2, k, -1) for m, v in per.items()}


def _ci(values) -> dict:
    mean, half = mean_ci95(values)
    return {"mean": json_number(mean), "ci95": json_number(half)}


def learned_summary(per_seed: dict, seeds: int) -> dict:
    """metric -> {mean, ci95, over, n}: over the seeds' means (seeds >= 2), else over the
    one seed's episodes. `per_seed`: metric -> [seeds, E]."""
    out = {}
    for k, v in per_seed.items():
        if seeds >= 2:
            out[k] = {**_ci(v.mean(axis=1)), "over": "seeds", "n": seeds}
        else:
            out[k] = {**_ci(v[0]), "over": "episodes", "n": int(v.shape[1])}
    return out


def paired_vs(per_seed: dict, ref: dict, seeds: int) -> dict:
    """metric -> paired difference (method - reference) on the same episodes: per seed the
    mean over episodes, then mean and 95% CI over seeds (one seed: over episodes), and
    whether the CI excludes 0; per seed also the paired 95% CI over its episodes and
    whether it excludes 0 (`per_seed_ci95`, `per_seed_excludes_zero`). `per_seed` [seeds,
    E], `ref` [E] or [seeds, E] (seed by seed)."""
    out = {}
    for k, v in per_seed.items():
        d = v - (ref[k] if np.ndim(ref[k]) == 2 else ref[k][None])
        row = learned_summary({k: d}, seeds)[k]
        means = d.mean(axis=1)
        halves = [mean_ci95(x)[1] for x in d]   # over each seed's episodes
        row["per_seed"] = [json_number(float(x)) for x in means]
        row["per_seed_ci95"] = [json_number(h) for h in halves]
        row["per_seed_excludes_zero"] = [ci_excludes_zero(m, h) for m, h in zip(means, halves)]
        row["excludes_zero"] = ci_excludes_zero(row["mean"], row["ci95"])
        out[k] = row
    return out


def point_result(axis: Axis, value, hyper, heur: dict, sets: dict, p: int, seeds: int,
                 rule: str, tuned: str | None = None) -> dict:
    """One point's row of the figure's JSON. `sets`: learned method -> metric -> [2, K, E]
    (row 0: with the learned schedulers, row 1: with the point's `rule`); `tuned`: the
    tuned family's choice, whose held-out metrics are `heur[TUNED]`."""
    best = best_pair(heur, ALL_PAIRS)
    idx = slice(p * seeds, (p + 1) * seeds)
    per_learned = {name: {k: arr[k][1 if "rule" in name else 0, idx] for k in PAIRED_METRICS}
                   for name, arr in sets.items()}
    methods = {name: learned_summary(v, seeds) for name, v in per_learned.items()}
    named = [("NF", "NF"), ("RS", "RS"), ("LS", "LS"), ("best pair", best), ("bound", "bound")]
    for name, src in named + ([(TUNED, TUNED)] if tuned else []):
        methods[name] = {k: {**_ci(heur[src][k]), "over": "episodes",
                             "n": int(heur[src][k].shape[0])} for k in PAIRED_METRICS}
    row = {
        "value": value, "offered_load": offered_load(hyper.env),
        "best_pair": best, "dqn_rule": rule, "methods": methods,
        "paired_vs_best": {name: paired_vs(v, heur[best], seeds)
                           for name, v in per_learned.items()},
        "heuristics": {n: {k: _ci(heur[n][k]) for k in PAIRED_METRICS} for n in ALL_PAIRS},
    }
    if tuned:
        row["tuned_best"] = tuned
        row["paired_vs_tuned"] = {name: paired_vs(v, heur[TUNED], seeds)
                                  for name, v in per_learned.items()}
    if GENERALIST[0] in per_learned:   # each generalist against its per-point twin
        row["paired_vs_per_point"] = {
            g: paired_vs(per_learned[g], per_learned[d], seeds)
            for g, d in zip(GENERALIST, LEARNED)}
    return row


# ---------------------------------------------------------------------------
# Outputs: CSV, plot
# ---------------------------------------------------------------------------

CSV_FIELDS = ("figure", "axis", "field", "value", "offered_load", "method", "detail",
              "avg_response_time", "avg_response_time_ci95", "deadline_miss_rate",
              "deadline_miss_rate_ci95", "ci_over", "n", "response_minus_best_pair",
              "response_minus_best_pair_ci95", "miss_minus_best_pair",
              "miss_minus_best_pair_ci95", "response_minus_tuned_best",
              "response_minus_tuned_best_ci95", "miss_minus_tuned_best",
              "miss_minus_tuned_best_ci95")


def figure_csv(fig: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for pt in fig["points"]:
        for name in fig["methods"]:
            m = pt["methods"][name]
            detail = {"best pair": pt["best_pair"], TUNED: pt.get("tuned_best", "")}.get(
                name, pt["dqn_rule"] if "rule" in name else "")
            row = {"figure": fig["figure"], "axis": fig["axis"], "field": fig["field"],
                   "value": pt["value"], "offered_load": f"{pt['offered_load']:.4f}",
                   "method": name, "detail": detail, "ci_over": m["avg_response_time"]["over"],
                   "n": m["avg_response_time"]["n"]}
            for k in PAIRED_METRICS:
                row[k], row[k + "_ci95"] = m[k]["mean"], m[k]["ci95"]
            for key, ref in (("paired_vs_best", "best_pair"), ("paired_vs_tuned", "tuned_best")):
                if name in pt.get(key, {}):
                    d = pt[key][name]
                    row[f"response_minus_{ref}"] = d["avg_response_time"]["mean"]
                    row[f"response_minus_{ref}_ci95"] = d["avg_response_time"]["ci95"]
                    row[f"miss_minus_{ref}"] = d["deadline_miss_rate"]["mean"]
                    row[f"miss_minus_{ref}_ci95"] = d["deadline_miss_rate"]["ci95"]
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def strongest_reference(fig: dict) -> tuple[str, str]:
    """`(key of the points' paired differences, its label)`: against the tuned family
    where the figure has it, else against the best pair."""
    if all("paired_vs_tuned" in pt for pt in fig["points"]):
        return "paired_vs_tuned", "tuned best"
    return "paired_vs_best", "best pair"


def plot_figure(fig: dict) -> tuple[bytes, bytes]:
    """`(png, svg)` bytes. Top: response time and miss rate against the axis, every method
    with its 95% CI as error bars. Bottom: each learned method's paired difference from
    the strongest heuristic (`strongest_reference`) with its 95% CI and a zero line;
    below zero the learned method is better."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [pt["value"] for pt in fig["points"]]
    f, grid = plt.subplots(2, 2, figsize=(12, 8.6), sharex=True,
                           gridspec_kw={"height_ratios": (3, 2)})
    panels, lower = grid[0], grid[1]
    colors = {}   # a learned method's difference in its own line's colour
    for ax, metric in zip(panels, PAIRED_METRICS):
        for name in fig["methods"]:
            label, marker, ls = STYLE[name]
            ys = [pt["methods"][name][metric]["mean"] for pt in fig["points"]]
            es = [pt["methods"][name][metric]["ci95"] or 0.0 for pt in fig["points"]]
            bars = ax.errorbar(xs, ys, yerr=es, label=label, marker=marker, linestyle=ls,
                               capsize=3, markersize=6 if name != "best pair" else 9)
            colors[name] = bars.lines[0].get_color()
        ax.set_ylabel(METRIC_LABELS[metric], fontsize=11)
        ax.grid(alpha=0.3)
    key, ref = strongest_reference(fig)
    learned = list(fig["points"][0][key])
    for ax, metric in zip(lower, PAIRED_METRICS):
        ax.axhline(0.0, color="black", linewidth=1)
        for name in learned:
            label, marker, _ = STYLE[name]
            ys = [pt[key][name][metric]["mean"] for pt in fig["points"]]
            es = [pt[key][name][metric]["ci95"] or 0.0 for pt in fig["points"]]
            ax.errorbar(xs, ys, yerr=es, marker=marker, linestyle="-", capsize=3,
                        label=f"{name} - {ref}", color=colors.get(name))
        ax.set_xlabel(fig["label"], fontsize=11)
        ax.set_ylabel(f"learned - {ref} (paired)", fontsize=10)
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for pt in fig["points"]:   # the best pair's name at each point (the tuned: the table)
        y = pt["methods"]["best pair"]["avg_response_time"]["mean"]
        panels[0].annotate(pt["best_pair"], (pt["value"], y), textcoords="offset points",
                           xytext=(0, -14), ha="center", fontsize=7)
    handles, labels = panels[0].get_legend_handles_labels()
    f.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    learned_ci = fig["points"][0]["methods"]["DAMD"]["avg_response_time"]["over"]
    quick = " (--quick: CPU-sized training)" if fig["quick"] else ""
    f.suptitle(f"{fig['title']}{quick}\nerror bars: 95% CI over "
               f"{'training seeds' if learned_ci == 'seeds' else 'episodes'} (learned, "
               f"{fig['seeds']} seed(s); lower panels: paired differences, below 0 = "
               f"learned better), over {fig['episodes']} episodes (heuristics, bound)",
               fontsize=10)
    f.tight_layout(rect=(0, 0.09, 1, 0.94))
    out = []
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        f.savefig(buf, format=fmt, dpi=110)
        out.append(buf.getvalue())
    plt.close(f)
    return out[0], out[1]


def _cell(text: str) -> float | None:
    return None if text == "" else float(text)


def figure_from_csv(text: str, quick: bool) -> dict:
    """What `plot_figure` reads, rebuilt from a figure's CSV (`figure_csv`): the points'
    means and CIs per method and the learned methods' paired differences (`quick`: the
    title's note, which the CSV does not hold). ValueError naming what is missing."""
    rows = list(csv.DictReader(io.StringIO(text)))
    missing = [f for f in ("figure", "axis", "value", "method", "detail", "ci_over", "n",
                           *PAIRED_METRICS) if rows and f not in rows[0]]
    if not rows or missing:
        raise ValueError(f"not an eval.figures CSV (no rows, or no {', '.join(missing)})")
    axis = AXES.get(rows[0]["axis"])
    if axis is None:
        raise ValueError(f"unknown axis {rows[0]['axis']!r}")
    points: dict[str, dict] = {}
    methods: list[str] = []
    for r in rows:
        pt = points.setdefault(r["value"], {"value": _number(r["value"], axis.field),
                                            "methods": {}, "paired_vs_best": {},
                                            "paired_vs_tuned": {}})
        name = r["method"]
        if name not in STYLE:
            raise ValueError(f"unknown method {name!r}")
        if name not in methods:
            methods.append(name)
        pt["methods"][name] = {k: {"mean": float(r[k]), "ci95": _cell(r[k + "_ci95"]),
                                   "over": r["ci_over"], "n": int(r["n"])}
                               for k in PAIRED_METRICS}
        if name == "best pair":
            pt["best_pair"] = r["detail"]
        if name == TUNED:
            pt["tuned_best"] = r["detail"]
        for key, ref in (("paired_vs_best", "best_pair"), ("paired_vs_tuned", "tuned_best")):
            if r.get(f"response_minus_{ref}"):
                pt[key][name] = {k: {"mean": float(r[f"{m}_minus_{ref}"]),
                                     "ci95": _cell(r[f"{m}_minus_{ref}_ci95"])}
                                 for k, m in zip(PAIRED_METRICS, ("response", "miss"))}
    pts = list(points.values())
    for pt in pts:
        if not pt["paired_vs_tuned"]:
            del pt["paired_vs_tuned"]
    learned = next((n for n in methods if n in LEARNED), None)
    if learned is None or "bound" not in methods:
        raise ValueError("the CSV has no learned method or no bound")
    return {"figure": axis.figure, "axis": axis.name, "field": axis.field,
            "label": axis.label, "title": f"Figure {axis.figure}: the effect of the {axis.label}",
            "quick": quick, "methods": methods, "points": pts,
            "seeds": (pts[0]["methods"][learned]["avg_response_time"]["n"]
                      if pts[0]["methods"][learned]["avg_response_time"]["over"] == "seeds"
                      else 1),
            "episodes": pts[0]["methods"]["bound"]["avg_response_time"]["n"]}


def write_figure(fig: dict, out: str, stem: str) -> None:
    """The figure's CSV, PNG and SVG, then its JSON (last: its presence means done)."""
    base = os.path.join(out, stem)
    write_bytes_atomic(figure_csv(fig).encode(), base + ".csv")
    png, svg = plot_figure(fig)
    write_bytes_atomic(png, base + ".png")
    write_bytes_atomic(svg, base + ".svg")
    write_json_atomic(fig, base + ".json")


def _load_tuning(path: str) -> TuningResult:
    """A point's stored tuning (`TuningResult.from_json`'s checks); a missing or damaged
    one ends the job with one line naming it."""
    try:
        with open(path) as f:
            return TuningResult.from_json(json.load(f))
    except (OSError, ValueError) as err:
        sys.exit(f"error: {path}: {err} (delete the point's .msgpack beside it to tune "
                 "the point again)")


def _load_point(path: str) -> dict:
    """A point's stored results (`save_tree`: checksummed), the arrays as float64 numpy;
    a damaged file ends the job with one line naming it."""
    try:
        state = read_state_dict(path)
    except ValueError as err:
        sys.exit(f"error: {err} (delete it to compute the point again)")
    return jax.tree.map(lambda x: np.asarray(x, np.float64), state)


# ---------------------------------------------------------------------------
# One figure
# ---------------------------------------------------------------------------

def stem_of(axis: Axis) -> str:
    return f"fig{axis.figure}-{axis.name}"


def params_from_member_files(scfg, run_dir: str) -> dict | None:
    """A finished sweep's parameters {"dispatcher", "schedulers"} [K, ...] (host), read back
    from its member-<i>/ policy files (train.sweep.finish writes them once the last chunk
    is done); None unless every member's files are there. What makes an axis whose
    checkpoint (several GB at full quality: every member's replay) was deleted, or not
    brought back from the machine that trained it, still count as trained."""
    folders = [os.path.join(run_dir, sweep.MEMBER_DIR.format(m.index)) for m in scfg.members()]
    files = (DISPATCHER_FILE, SCHEDULERS_FILE)
    if not all(os.path.exists(os.path.join(f, x)) for f in folders for x in files):
        return None
    loaded = [(load_dispatcher(f)[1], load_schedulers(f)[1]) for f in folders]
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *loaded)
    return {"dispatcher": stacked[0], "schedulers": stacked[1]}


def train_members(scfg, run_dir: str, what: str, progress: Progress, checkpoint_every: int,
                  session: distributed.Session | None = None):
    """Train (or continue, where `run_dir` holds a checkpoint) a sweep, its checkpoint
    written every `checkpoint_every` chunks; `(scfg, params [K', ...], members, hyper [K'],
    seconds)` on the host, or None where Ctrl-C stopped it. Progress: one line per chunk.
    A finished sweep without its checkpoint is read from its policy files
    (`params_from_member_files`; seconds 0). With a `session`, process 0 alone looks at
    `run_dir` and writes it; every process trains (`sweep.train`)."""
    paths, found = rundir.run_paths(run_dir), {}

    def plan() -> dict:   # process 0: what run_dir holds, a fresh start prepared
        if os.path.exists(paths["checkpoint"]):
            with open(paths["config"]) as f:
                return {"from": "checkpoint", "config": json.load(f)}
        if os.path.exists(paths["config"]):
            with open(paths["config"]) as f:
                stored = json.load(f)
            found["params"] = params_from_member_files(sweep.SweepConfig.from_json(stored),
                                                       run_dir)
            if found["params"] is not None:
                return {"from": "policy files", "config": stored}
        if os.path.exists(run_dir):
            shutil.rmtree(run_dir)   # inside OUT, never a finished chunk: a fresh start
        os.makedirs(run_dir)
        write_json_atomic(scfg.to_json(), paths["config"])
        return {"from": "start"}

    name = os.path.basename(run_dir)
    got = distributed.from_0(session, f"train/{name}", plan)
    if got["from"] != "start":
        scfg = sweep.SweepConfig.from_json(got["config"])
    if got["from"] == "policy files":
        params = found.get("params")
        if session is not None and session.index != 0:   # process 0's, as bits
            params = msgpack_restore(session.share(f"params/{name}", None))
        elif session is not None:
            session.share(f"params/{name}", msgpack_serialize(params))
        progress.skip(scfg.num_chunks)
        progress.say(f"{what}: trained before (no checkpoint): the members' policy "
                     f"files read back")
        members = scfg.members()
        return scfg, params, members, stack([m.hyper for m in members]), 0.0
    resume = got["from"] == "checkpoint"
    writer = session is None or session.index == 0
    n_chunks = scfg.num_chunks
    state = {"last": None}

    def on_chunk(chunk: int) -> None:
        if state["last"] is None:   # the first chunk of this process: earlier ones skipped
            progress.skip(chunk - 1)
        state["last"] = chunk
        progress.advance(1, f"{what}: training chunk {chunk}/{n_chunks}")

    progress.say(f"{what}: {'resuming' if resume else 'training'} {len(scfg.members())} "
                 f"DAMD members as one program (compiling first)")
    t0 = time.perf_counter()
    rs, members, hyper, interrupted = sweep.train(scfg, run_dir, resume, writer,
                                                  on_chunk=on_chunk,
                                                  checkpoint_every=checkpoint_every)
    if interrupted:
        return None
    if state["last"] is None:
        progress.skip(n_chunks)
    seconds = time.perf_counter() - t0
    sweep.finish(scfg, run_dir, rs, members, hyper, writer)     # member-<i>/ policy files
    return scfg, to_host(rs.params), members, to_host(hyper), seconds


def generalist_config(scfg, axis: Axis, vals) -> sweep.SweepConfig:
    """One DAMD per seed trained across the axis's range: each training episode draws the
    axis's field uniformly in [first point, last point] (a `SettingRangeGenerator`), the
    same padding, program sizes and run length as a per-point member."""
    rng = f"{axis.field}={min(vals)}:{max(vals)}"
    cfg = scfg.config
    cfg = dataclasses.replace(
        cfg, dispatcher=dataclasses.replace(cfg.dispatcher, setting_range=rng),
        schedulers=dataclasses.replace(cfg.schedulers, setting_range=rng))
    return dataclasses.replace(scfg, grid=(), config=cfg)


def run_axis(job: dict, axis: Axis, out: str, scfg, progress: Progress,
             checkpoint_every: int = 1, session: distributed.Session | None = None
             ) -> dict | None:
    """Train (or continue) the axis's sweep (checkpoints every `checkpoint_every` chunks),
    evaluate every point, write the figure; None where Ctrl-C stopped the training. With a
    `session`: every process trains and plays the learned methods (both sharded over every
    process's devices); process 0 alone plays the heuristics, reads and writes OUT, and
    sends the others what they need (each point's scheduling rule, what is done); the
    others return {}."""
    t_axis = time.perf_counter()
    vals = job["points"][axis.name]
    what = f"figure {axis.figure} ({axis.name})"
    writer = session is None or session.index == 0
    trained = train_members(scfg, os.path.join(out, "train", axis.name),
                            f"{what}, {len(vals)} points x {scfg.seeds} seeds", progress,
                            checkpoint_every, session)
    if trained is None:
        return None
    scfg, params, members, hyper_host, train_seconds = trained

    inst_keys, play_keys = held_out_keys(job["eval_seed"], job["episodes"])
    heur, tuned, t0 = {}, {}, time.perf_counter()
    tuning = job.get("tune_episodes", 0) > 0   # a job of an older version: none

    def heuristics() -> list[str]:   # process 0: every point's pairs; the rules sent
        for p, v in enumerate(vals):
            path = os.path.join(out, "points", f"{axis.name}-{v}.msgpack")
            tuning_path = os.path.join(out, "points", f"{axis.name}-{v}-tuning.json")
            point_hyper = hyper_member(hyper_host, p * scfg.seeds)
            if os.path.exists(path):
                heur[p] = _load_point(path)
                progress.say(f"figure {axis.figure} ({axis.name}={v}): heuristics done before")
                if not tuning or TUNED in heur[p]:
                    progress.skip(Progress.EVAL_UNITS)
                    if tuning:
                        tuned[p] = _load_tuning(tuning_path).best
                    continue
            else:
                heur[p] = evaluate_heuristics(scfg, point_hyper, inst_keys, play_keys)
            message = ""
            if tuning:
                t_tune = time.perf_counter()
                result, heur[p][TUNED] = tuned_point(job, scfg, point_hyper, inst_keys,
                                                     play_keys)
                write_json_atomic(result, tuning_path)   # before the point: its file ends it
                tuned[p] = result["best"]
                message = (f"; tuned on {job['tune_episodes']} tuning episodes "
                           f"({len(result['means'])} candidates, "
                           f"{_clock(time.perf_counter() - t_tune)}): {tuned[p]}")
            save_tree(heur[p], path)
            progress.advance(Progress.EVAL_UNITS,
                             f"figure {axis.figure} ({axis.name}={v}): 20 heuristic pairs and "
                             f"the bound on {job['episodes']} episodes (best: "
                             f"{best_pair(heur[p], ALL_PAIRS)}){message}")
        return [pair_names(best_pair(heur[p], ALL_PAIRS))[1] for p in range(len(vals))]

    rules = distributed.from_0(session, f"rules/{axis.name}", heuristics)
    heur_seconds = time.perf_counter() - t0

    def learned_of(name: str, params_of_members) -> tuple[dict | None, float]:
        path = os.path.join(out, "points", f"{axis.name}-{name}.msgpack")
        t0, stored = time.perf_counter(), {}

        def load() -> bool:   # process 0: the stored results, if any
            if os.path.exists(path):
                stored["res"] = _load_point(path)
            return bool(stored)

        if distributed.from_0(session, f"learned/{axis.name}/{name}", load):
            progress.skip(Progress.EVAL_UNITS)
        else:
            stored["res"] = evaluate_learned(scfg, members, params_of_members(), hyper_host,
                                             rules, inst_keys, play_keys)
            if writer:
                save_tree(stored["res"], path)
            progress.advance(Progress.EVAL_UNITS,
                             f"{what}: {name} DAMD and DQN + rule, {len(members)} members on "
                             f"their points' episodes")
        return stored.get("res"), time.perf_counter() - t0

    learned, learned_seconds = learned_of("learned", lambda: params)
    sets = {"DAMD": learned, "DQN + rule": learned}
    seconds = {"train": train_seconds, "heuristics": heur_seconds, "learned": learned_seconds}
    gen_info = None
    if job.get("generalist"):
        gcfg = generalist_config(scfg, axis, vals)
        g = train_members(gcfg, os.path.join(out, "train", f"{axis.name}-generalist"),
                          f"{what}, generalist x {scfg.seeds} seeds", progress, checkpoint_every,
                          session)
        if g is None:
            return None
        gcfg, gparams, _, _, seconds["generalist_train"] = g
        tile = np.asarray([m.index % scfg.seeds for m in members])  # member (p, s) -> seed s
        gen, seconds["generalist_eval"] = learned_of(
            "generalist", lambda: jax.tree.map(lambda x: np.asarray(x)[tile], gparams))
        sets.update({"DAMD generalist": gen, "DQN generalist + rule": gen})
        gen_info = {"setting_range": gcfg.config.dispatcher.setting_range,
                    "train_dir": os.path.join("train", f"{axis.name}-generalist")}
    if not writer:
        return {}

    points = [point_result(axis, v, hyper_member(hyper_host, p * scfg.seeds), heur[p],
                           sets, p, scfg.seeds, rules[p], tuned.get(p))
              for p, v in enumerate(vals)]
    seconds["axis"] = time.perf_counter() - t_axis
    fig = {
        "figure": axis.figure, "axis": axis.name, "field": axis.field, "label": axis.label,
        "title": f"Figure {axis.figure}: the effect of the {axis.label}",
        "quick": job["quick"], "seeds": scfg.seeds,
        "training_seeds": sorted({m.seed for m in members}),
        "eval_seed": job["eval_seed"], "episodes": job["episodes"],
        "tune_episodes": job.get("tune_episodes", 0), "tune_methods": job.get("tune_methods"),
        "setting": {k: v for k, v in scfg.config.setting().items()},
        "train_args": job["train_args"], "train_dir": os.path.join("train", axis.name),
        "stage_plan": [list(s) for s in scfg.config.stage_plan()],
        "methods": [*METHODS, *([TUNED] if tuning else []),
                    *([*GENERALIST] if gen_info else [])],
        "generalist": gen_info,
        "notes": {"learned CI": "95% CI over the training seeds' means (one seed: over its "
                                "episodes; see each entry's 'over')",
                  "heuristic CI": "95% CI over the held-out episodes",
                  "DQN + rule": "the trained dispatcher with the scheduling rule of the "
                                "point's best heuristic pair",
                  "paired_vs_best": "method - best pair on the same episodes: per seed the "
                                    "mean over episodes, then mean and 95% CI over seeds; "
                                    "per_seed_ci95: each seed's paired 95% CI over the "
                                    "episodes",
                  "tuned best": "the EFT family's member (or classic pair) with the "
                                "smallest mean response time on the tuning episodes of "
                                "the eval seed at the point's setting, played on the "
                                "held-out episodes; paired_vs_tuned: as paired_vs_best",
                  "generalist": "one DAMD per seed trained with the axis's field drawn per "
                                "episode uniformly over the axis's range; paired_vs_per_point: "
                                "generalist - the per-point DAMD of the same seed index"},
        "seconds": seconds,
        "points": points,
    }
    write_figure(fig, out, stem_of(axis))
    progress.say(f"figure {axis.figure} ({axis.name}) written: "
                 f"{os.path.join(out, stem_of(axis))}.png/.svg/.csv/.json")
    return fig


def format_table(fig: dict) -> str:
    """The figure's numbers as a Markdown table (method x point), then the paired
    differences against the best pair."""
    def cell(d, digits):
        half = d["ci95"]
        return f"{d['mean']:.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")

    pts = fig["points"]
    head = "| method | " + " | ".join(f"{fig['field']}={p['value']:g}" for p in pts) + " |"
    sep = "|---|" + "---:|" * len(pts)
    lines = [f"Figure {fig['figure']} ({fig['axis']}): response time / miss rate", head, sep]
    for name in fig["methods"]:
        lines.append(f"| {name} | " + " | ".join(
            cell(p["methods"][name]["avg_response_time"], 2) + " / "
            + cell(p["methods"][name]["deadline_miss_rate"], 3) for p in pts) + " |")
    lines.append("| best pair is | " + " | ".join(p["best_pair"] for p in pts) + " |")
    if all(p.get("tuned_best") for p in pts):
        lines.append("| tuned best is | " + " | ".join(f"`{p['tuned_best']}`" for p in pts)
                     + " |")
    lines += ["", "Paired difference vs the best pair, response time (* = CI excludes 0; "
              "per seed: its paired CI over the episodes)",
              head, sep]
    def diff(d):
        return cell(d, 3) + ("*" if d["excludes_zero"] else "")

    for name in pts[0]["paired_vs_best"]:
        rows = [p["paired_vs_best"][name]["avg_response_time"] for p in pts]
        lines.append(f"| {name} - best | " + " | ".join(diff(d) for d in rows) + " |")
        if all("per_seed_excludes_zero" in d for d in rows):   # none in an older figure
            lines.append(f"| {name} - best, per seed | " + " | ".join(", ".join(
                f"{m:.3f}" + ("*" if e else "") for m, e in zip(
                    d["per_seed"], d["per_seed_excludes_zero"])) for d in rows) + " |")
    if all("paired_vs_tuned" in p for p in pts):
        lines += ["", "Paired difference vs the tuned best, response time", head, sep]
        for name in pts[0]["paired_vs_tuned"]:
            rows = [p["paired_vs_tuned"][name]["avg_response_time"] for p in pts]
            lines.append(f"| {name} - tuned | " + " | ".join(diff(d) for d in rows) + " |")
            lines.append(f"| {name} - tuned, per seed | " + " | ".join(", ".join(
                f"{m:.3f}" + ("*" if e else "") for m, e in zip(
                    d["per_seed"], d["per_seed_excludes_zero"])) for d in rows) + " |")
    for name in pts[0].get("paired_vs_per_point", {}):
        lines.append(f"| {name} - per-point | " + " | ".join(
            diff(p["paired_vs_per_point"][name]["avg_response_time"]) for p in pts) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    args = p.parse_args(argv)
    check_int_flag(p, "--checkpoint-every", args.checkpoint_every, 1)
    if args.replot:
        return replot(p, args.replot, args.quick)
    session = distributed.session_of(p, args, "eval.figures")
    if session is None:
        return run_job(p, args, argv)
    return distributed.run(session, lambda: run_job(p, args, argv, session))


def replot(p: argparse.ArgumentParser, paths: list[str], quick: bool) -> int:
    """--replot: each CSV's figure drawn again beside it (`figure_from_csv`,
    `plot_figure`); a file that does not read ends with one line naming it."""
    for path in paths:
        try:
            with open(path) as f:
                fig = figure_from_csv(f.read(), quick)
        except (OSError, ValueError, KeyError) as err:
            p.error(f"--replot {path}: {err}")
        png, _ = plot_figure(fig)
        write_bytes_atomic(png, os.path.splitext(path)[0] + ".png")
        print(f"wrote {os.path.splitext(path)[0]}.png", flush=True)
    return 0


def lock_out(p: argparse.ArgumentParser, args) -> str:
    """One command per output folder: the run directories' lock (OUT's sibling .NAME.lock),
    taken before anything in OUT is read, replaced or trained; OUT's real path."""
    out = os.path.realpath(out_folder(args))
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        rundir.take(out)
    except (OSError, ValueError) as err:
        p.error(f"--out {out}: {err}")
    return out


def run_job(p: argparse.ArgumentParser, args, argv,
            session: distributed.Session | None = None) -> int:
    """The job of checked flags (or the stored one, --resume): every figure's training,
    evaluation and files, skipping what is done. Returns the exit code. With a `session`
    (--distributed), every process runs it (the flags agreed first); process 0 alone holds
    OUT's lock, reads and writes OUT and prints (`run_axis`)."""
    writer = session is None or session.index == 0
    with contextlib.ExitStack() as stack:
        if not writer:   # the sweeps' chunk lines: process 0's alone
            stack.enter_context(contextlib.redirect_stdout(
                stack.enter_context(open(os.devnull, "w"))))
        if session is not None:
            session.agree("flags", distributed.flags_text(args))

        def open_job() -> list:   # process 0
            stack.enter_context(rundir.held(lock_out(p, args)))
            return list(open_out(p, args, argv))

        job, out = distributed.from_0(session, "job", open_job)
        if session is not None:
            session.hint = f"{out} keeps what was finished: continue with --resume"
        return run_axes(job, out, args.checkpoint_every, session)


def run_axes(job: dict, out: str, checkpoint_every: int,
             session: distributed.Session | None = None) -> int:
    """Every figure of `job` into `out` (`run_axis`), those done before skipped; the exit
    code."""
    writer = session is None or session.index == 0
    axes = [AXES[a] for a in job["axes"]]
    configs = {}
    for axis in axes:   # every figure's flags checked before anything compiles
        configs[axis.name] = sweep_config(job, axis)
    gen = 2 if job.get("generalist") else 1
    total = sum(gen * c.num_chunks + (len(job["points"][a]) + gen) * Progress.EVAL_UNITS
                for a, c in configs.items())
    progress = Progress(total, silent=not writer)
    progress.say(f"{len(axes)} figure(s) into {out}: "
                 + ", ".join(f"{a.name} {job['points'][a.name]}" for a in axes)
                 + f"; {job['seeds']} seed(s), {job['episodes']} episodes per point"
                 + (" (--quick)" if job["quick"] else ""))
    for axis in axes:
        fig_path = os.path.join(out, stem_of(axis) + ".json")
        c = configs[axis.name]
        fig = {}

        def done_before() -> bool:   # process 0
            if os.path.exists(fig_path):
                with open(fig_path) as f:
                    fig.update(json.load(f))
            return bool(fig)

        if distributed.from_0(session, f"done/{axis.name}", done_before):
            progress.skip(gen * c.num_chunks + (len(job["points"][axis.name]) + gen)
                          * Progress.EVAL_UNITS)
            progress.say(f"figure {axis.figure} ({axis.name}): done before, skipped")
        else:
            try:
                fig = run_axis(job, axis, out, c, progress, checkpoint_every, session)
            except RunStopped as err:
                return runs.report_stop(err)
            if fig is None:
                progress.say("interrupted: continue with --resume")
                return 130
        if writer:
            print(format_table(fig), flush=True)
    progress.say("all figures done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
