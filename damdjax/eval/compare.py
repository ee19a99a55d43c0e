"""Compare methods on average response time and deadline-miss rate.

    python -m eval.compare                                  # generated instances
    python -m eval.compare --num-tasks 200 --density 3 --num-servers 8 --episodes 300
    python -m eval.compare --instance examples/worked_example.json --out result.json
    python -m eval.compare --methods all                    # every heuristic pair
    python -m eval.compare --dispatcher-checkpoint runs/dqn     # DQN vs N/R/L/E, same scheduler
    python -m eval.compare --damd-run runs/damd                 # DAMD vs NF, RS, LS, EC, best
    python -m eval.compare --lookahead ES --methods ES          # the headroom above ES
    python -m eval.compare --methods best,ES                # the tuned best heuristic vs ES
    python -m eval.compare --rollout "eft[queued/load/r0/l0.25]+sjf" --methods ES
    python -m eval.compare --workload wfcommons:DATA/wfcommons --num-tasks 120  # optional external data

Every method runs on the same instances (the same keys), so differences are
paired. Generated instances are the held-out ones of --seed
(damdjax.evaluation.held_out_keys), which training never draws. The table
gives means with 95% confidence intervals over episodes, the contention-free
`bound` (no method can beat it: docs/model.md), and, when a trained
method is compared, its paired differences from every other method;
`--out` writes the numbers as JSON (and, for a single instance, the per-task
schedule of each method in file order: jobs in file order, tasks in job order, times
on the instance file's own clock, as the setting's `task_times` says).

`--workload SPEC` draws the generated instances' jobs from real jobs
(damdjax.workloads: wfcommons:PATH, alibaba:CSV, library:FILE.npz,
wfchef:RECIPE[:TASKS]) instead of the random DAG generator; it contradicts --instance.

Methods are the classic pairs (two letters: NF, ES, EC, ...; `all` is all 20 of them)
and members of the EFT family (damdjax.family, docs/model.md "The EFT family": `heft+sjf`,
`peft+oct`, `eft[HOLDERS/WAIT/rRELAY/lLOOKAHEAD]+RULE`). `best` is the heuristic a
tuning chose without seeing the held-out episodes (damdjax.tuning): every classic pair
and every member of the family's grid played on --tune-episodes *tuning* episodes of
--seed (keys no held-out or training episode uses), the smallest mean response time
there; or the choice stored by `python -m eval.tune` in --tuned FILE. The held-out table
then shows how the chosen one does on episodes it was not chosen on.

`--rollout PAIR` adds the method `rollout(PAIR)`: the online rollout over the heuristic
PAIR (damdjax.lookahead.online_rollout_dispatch: at each dispatch, every feasible server
tried by playing the tasks arrived so far to their ends with PAIR, the later ones
unknown), with PAIR's scheduling rule: a policy a dispatcher can run.

`--lookahead PAIR` adds the method `lookahead(PAIR)`: a clairvoyant one-step
lookahead over the heuristic pair (damdjax.lookahead: at each dispatch, every
server tried by playing the episode out with the pair, future arrivals known),
with the pair's scheduling rule. It is no worse than the pair on any episode
(the pair is deterministic): a yardstick of how much a better dispatcher could
gain over the pair, not a policy a dispatcher could run, nor a bound. It plays
one episode per server at every step: about M x the steps of an episode times
the pair's cost.

A trained method brings its setting: with --dispatcher-checkpoint or
--damd-run, --num-tasks, --num-servers, --density, --slack,
--queue-capacity and --workload default to the run's own (flags given
override them).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from damdjax.bound import bound_metrics
from damdjax.cli import (add_config_flags, add_seed_flag, check_int_flag, check_out_flag,
                         check_workload_flag, explicit_flags)
from damdjax.configs import int_limit
from damdjax import run_inputs
from damdjax.run_config import RunConfig, setting_flags, setting_from_json
from damdjax.evaluation import format_paired, generate_held_out, held_out_keys, paired_summary
from damdjax.family import (
    canonical_name, method_policy, play_methods, random_dispatch, schedule_rule)
from damdjax.heuristics import ALL_PAIRS, DISPATCH_RULES, SCHEDULE_RULES, Policy, pair, pair_label
from damdjax.io import json_number, load_json_limited, write_json_atomic
from damdjax.lookahead import lookahead_dispatch, online_rollout_dispatch
from damdjax.memory import check_memory, evaluation_bytes
from damdjax.metrics import METRIC_NAMES, episode_metrics, mean_ci95
from damdjax.policies import load_damd, resolve_dispatcher, resolve_scheduler
from damdjax.rollout import play_in_chunks
from damdjax.tuning import TuningResult, tune
from damdjax.rundir import CONFIG
from damdjax.workloads import (resolve_workload, seeded_workload, workload_config,
                               workload_paths)
from damdjax.envs.config import EnvConfig, EnvParams, check_float, check_params
from damdjax.envs.instance import instance_from_spec, spec_config
from damdjax.envs.instance_format import InstanceError
from damdjax.envs.instance_io import load_instance, on_file_clock
from damdjax.envs.instance_padding import global_index
from damdjax.envs.state import done_time, started, unstarted_tasks

DEFAULT_METHODS = "NF,RS,LS,EC"
DAMD_METHODS = "NF,RS,LS,EC,best"

GENERATED_EPISODES = 200   # --episodes' default on generated instances
TUNE_EPISODES = 100        # --tune-episodes' default
TUNED_FILE_BYTES = 1 << 22   # a tuning file holds a few hundred means


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval.compare", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=None,
                   help="comma-separated heuristic methods: two letters, dispatch N(earest)/"
                        "R(andom)/L(east load)/E(FT) then schedule F(CFS)/S(JF)/D (SDF)/"
                        "C(ritical path)/X (least laxity), or EFT-family members (heft+sjf, "
                        "peft+oct, eft[HOLDERS/WAIT/rR/lL]+RULE); 'all' for every pair, "
                        "'best' for the heuristic tuned on tuning episodes (above) "
                        f"(default {DEFAULT_METHODS}; with --dispatcher-checkpoint, the four "
                        "dispatch heuristics with the DQN's scheduler; with --damd-run, "
                        f"{DAMD_METHODS})")
    p.add_argument("--dispatcher-checkpoint", metavar="PATH",
                   help="add the method DQN: a trained dispatcher (a train.dqn or train.damd "
                        "run directory or its dispatcher.msgpack), greedy, with --scheduler")
    p.add_argument("--scheduler", default=None,
                   help="the DQN method's scheduler: fcfs, sjf, sdf, cp, llf or a train.mdqn or "
                        "train.damd run directory (default: the one the dispatcher was "
                        "trained with; a train.damd run's: round 1's rule)")
    p.add_argument("--damd-run", metavar="PATH",
                   help="add the method DAMD: a train.damd run directory (its dispatcher and "
                        "MDQN schedulers, greedy)")
    p.add_argument("--lookahead", metavar="PAIR",
                   help="add the method lookahead(PAIR): the clairvoyant one-step lookahead "
                        "over the heuristic pair PAIR (e.g. ES), with its scheduling rule; a "
                        "yardstick, not a runnable policy (above)")
    p.add_argument("--rollout", metavar="PAIR",
                   help="add the method rollout(PAIR): the online rollout over the heuristic "
                        "PAIR (a classic pair or a family member), with its scheduling rule "
                        "(above)")
    p.add_argument("--tuned", metavar="FILE",
                   help="with --methods best: the choice stored by python -m eval.tune (its "
                        "setting must be this one) instead of tuning here")
    p.add_argument("--tune-episodes", type=int, default=TUNE_EPISODES,
                   help="with --methods best and no --tuned: tuning episodes (default "
                        "%(default)s)")
    p.add_argument("--instance", metavar="FILE",
                   help="a JSON instance file (the format of docs/model.md, 'Instance "
                        "files') instead of generated instances")
    add_config_flags(p, RunConfig, ("num_tasks", "density", "num_servers", "slack", "tau",
                                    "miss_penalty", "workload", "queue_capacity"), unset={
        "workload": "the random generator, or the run's recorded workload with "
                    "--dispatcher-checkpoint / --damd-run",
        "queue_capacity": "16 for generated instances, the number of tasks for an instance "
                          "file, so it never binds"})
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes: generated instances, or random draws on --instance "
                        f"(default {GENERATED_EPISODES}, or 1 with --instance)")
    add_seed_flag(p, "seed of instances and draws")
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check flags; nonsense values exit with a one-line error (code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.instance is not None and args.workload:
        parser.error(f"--workload {args.workload!r} contradicts --instance {args.instance!r} "
                     "(an instance file brings its own jobs)")
    try:
        args.learned, args.run_setting = learned_methods(args)
    except ValueError as e:
        parser.error(str(e))
    given = explicit_flags(build_parser, argv)
    args.run_env = args.run_setting.pop("env", EnvParams())
    args.n_max, args.m_max = args.run_setting.pop("n_max", None), args.run_setting.pop("m_max", None)
    for name, value in args.run_setting.items():
        if name not in given:
            setattr(args, name, value)
    try:   # a wfchef spec records the seed its library is drawn with
        args.workload = seeded_workload(args.workload or "", args.seed)
    except ValueError as e:
        parser.error(f"--workload: {e}")
    if args.methods is None:
        sched = args.learned.pop("_scheduler", None)
        args.methods = (",".join(pair_label(d, sched) for d in DISPATCH_RULES)
                        if sched in SCHEDULE_RULES
                        else DAMD_METHODS if "DAMD" in args.learned else DEFAULT_METHODS)
    args.learned.pop("_scheduler", None)
    try:
        args.method_list = method_list(args.methods)
    except ValueError as e:
        parser.error(str(e))
    check_int_flag(parser, "--tune-episodes", args.tune_episodes, 1)
    if args.tuned and "best" not in args.method_list:
        parser.error(f"--tuned {args.tuned} goes with --methods best")
    if args.instance is not None and "best" in args.method_list and not args.tuned:
        parser.error("--methods best on --instance needs --tuned FILE (python -m eval.tune on "
                     "generated episodes): choosing on the instance itself would peek")
    if args.episodes is not None:
        check_int_flag(parser, "--episodes", args.episodes, 1)
    if args.queue_capacity is not None:
        check_int_flag(parser, "--queue-capacity", args.queue_capacity, 1)
    if args.instance is None:
        check_int_flag(parser, "--num-tasks", args.num_tasks, 1, *int_limit("num_tasks"))
        check_int_flag(parser, "--num-servers", args.num_servers, 1)
        for name in ("density", "slack", "tau"):
            v = getattr(args, name)
            if not v > 0 or not np.isfinite(v):
                parser.error(f"--{name} must be a finite number > 0, got {v}")
            try:   # a float32 value on the device (or float64 under x64)
                check_float(f"--{name}", v)
            except ValueError as e:
                parser.error(str(e))
        check_workload_flag(parser, args.workload, args.num_tasks)
        config = generated_config(args)
        if args.queue_capacity is not None:   # the states' queues are this wide
            config = dataclasses.replace(config, queue_capacity=args.queue_capacity)
        try:
            check_memory(memory_parts(args, config, args.episodes or GENERATED_EPISODES, 4))
        except ValueError as e:
            parser.error(str(e))
    check_out_flag(parser, args.out, input_files(args))
    return args


def generated_config(args) -> EnvConfig:
    """The padded sizes of the generated instances: the counts, or the stored run's padding
    where it holds more (`args.n_max`, `args.m_max`), the workload's job sizes."""
    return workload_config(args.workload, n_max=max(args.num_tasks, args.n_max or 0),
                           m_max=max(args.num_servers, args.m_max or 0),
                           queue_capacity=EnvConfig.queue_capacity)


def generated_setting(args, params: EnvParams = EnvParams()
                      ) -> tuple[EnvParams, EnvConfig, dict]:
    """`(env params, padded sizes, setting)` of generated instances from the setting flags
    in `args` (`num_tasks`, `num_servers`, `density`, `slack`, and `tau`, `miss_penalty`,
    `workload` where the command has them): `params` with the flags' values,
    `generated_config(args)`, and the setting a results file names. ValueError
    (`check_params`) where the two do not fit."""
    fields = ("num_tasks", "num_servers", "density", "slack", "tau", "miss_penalty")
    params = params.replace(**{f: getattr(args, f) for f in fields if hasattr(args, f)})
    config = generated_config(args)
    check_params(config, params)
    setting = {"num_tasks": args.num_tasks, "density": args.density,
               "num_servers": args.num_servers, "slack": args.slack}
    if getattr(args, "workload", ""):
        setting["workload"] = args.workload
    return params, config, setting


def memory_parts(args, config: EnvConfig, episodes: int, f: int) -> list[tuple[str, int]]:
    """The evaluation batches (`damdjax.memory.evaluation_bytes`): `episodes` instances of
    `config` and the final states of every method played (learned ones, the heuristic
    pairs, all 20 with `best`); floats of `f` bytes."""
    named = [m for m in args.method_list if m != "best"]
    methods = len(args.learned) + len(set(named)) + ("best" in args.method_list)
    at = (f"an instance file's {config.n_max} tasks" if args.instance is not None else
          f"--num-tasks {config.n_max}, --num-servers {config.m_max}")
    if args.queue_capacity is not None:
        at += f", --queue-capacity {args.queue_capacity}"
    return [(f"the evaluation batches (--episodes {episodes} x {methods + 1} batches at {at})",
             evaluation_bytes(config, episodes, methods, f))]


def input_files(args) -> list[str]:
    """Every file the comparison reads, directly or not: the instance file, the trained
    runs' files (a run directory: every file below it; a policy file: it and the
    config.json beside it, read as the run's setting), the workload's path (a folder:
    every file below it)."""
    paths = [args.instance, args.dispatcher_checkpoint, args.scheduler, args.damd_run]
    paths += workload_paths(args.workload)   # a recipe names no file
    out = []
    for path in filter(None, paths):
        if os.path.isdir(path):
            out += [os.path.join(root, f) for root, _, files in os.walk(path) for f in files]
        else:   # a run's policy file: the run's setting and kept inputs are read too
            folder = os.path.dirname(os.path.abspath(path))
            out += [path, os.path.join(folder, CONFIG)]
            out += [os.path.join(root, f) for root, _, files
                    in os.walk(os.path.join(folder, run_inputs.INPUTS)) for f in files]
    return out


def method_list(text: str) -> list[str]:
    """`--methods` as a list of canonical method names (`damdjax.family.canonical_name`:
    `LD` is shown as the paper's `LS`, `HEFT+SJF` as `heft+sjf`) and `best`; `all`
    expands to every classic pair.

    ValueError naming a bad or repeated method."""
    names = [m.strip() for m in text.split(",")]
    if not any(names):
        raise ValueError("--methods is empty")
    if not all(names):
        raise ValueError(f"--methods has an empty entry: {text!r}")
    out = []
    for m in names:
        if m.lower() == "all":
            out.extend(ALL_PAIRS)
        elif m.lower() == "best":
            out.append("best")
        else:
            out.append(canonical_name(m))
    if len(set(out)) != len(out):
        raise ValueError(f"--methods lists a method twice: {text}")
    return out


def _run_config(path: str) -> dict:
    """config.json of the run directory holding `path` (a run directory or a file in one);
    of a train.damd run (or a DAMD sweep member), its dispatcher stages' config (the
    setting, and `scheduler`: round 1's rule)."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    file = os.path.join(folder, CONFIG)
    if not os.path.exists(file):
        return {}
    with open(file) as f:
        cfg = json.load(f)
    return cfg["dispatcher"] if isinstance(cfg.get("dispatcher"), dict) else cfg


def _setting_of(stored: dict) -> dict:
    """A stored run's setting (its config.json or damd.json's; {} for none) as the flags'
    values (`setting_flags`), and "env": its `EnvParams` whole (the fields without a
    flag too). ValueError naming a setting that does not read."""
    if not stored:
        return {}
    env, env_config, workload = setting_from_json(stored)
    return {**setting_flags(env, env_config, workload), "env": env}


def _kept_workload(path: str, setting: dict) -> dict:
    """`setting` with its workload the run's own copy where the run holding `path` kept
    one (`damdjax.run_inputs`): the jobs it trained on, whatever became of the original.
    ValueError naming the index where a copy is missing or changed."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    for entry in run_inputs.read_index(folder):
        if entry["kind"] == "workload" and setting:
            setting = {**setting, "workload": run_inputs.local_value(folder, entry)}
    return setting


def learned_methods(args) -> tuple[dict[str, Policy], dict]:
    """`({"DQN"/"DAMD"/"lookahead(PAIR)": policy, "_scheduler": the DQN's scheduler name},
    the run's setting)`: the methods every other one is paired against.

    ValueError naming the path when a run cannot be loaded.
    """
    learned, setting = {}, {}
    if args.dispatcher_checkpoint:
        cfg = _run_config(args.dispatcher_checkpoint)
        sched = args.scheduler or cfg.get("scheduler", "fcfs")
        learned["DQN"] = pair(resolve_dispatcher(args.dispatcher_checkpoint),
                              resolve_scheduler(sched))
        learned["_scheduler"] = sched
        setting = _kept_workload(args.dispatcher_checkpoint, _setting_of(cfg))
    elif args.scheduler:
        raise ValueError("--scheduler goes with --dispatcher-checkpoint")
    if args.damd_run:
        learned["DAMD"], damd_cfg = load_damd(args.damd_run)
        setting = setting or _kept_workload(args.damd_run, _setting_of(damd_cfg))
    for flag, value, rule in (("--lookahead", args.lookahead, lookahead_dispatch),
                              ("--rollout", args.rollout, online_rollout_dispatch)):
        if not value:
            continue
        try:
            base, s = method_policy(value)
            name = canonical_name(value)
        except ValueError as err:
            raise ValueError(f"{flag}: {err}") from None
        if random_dispatch(name):
            raise ValueError(f"{flag} {value}: the base pair must be deterministic (not "
                             "Random's)")
        learned[f"{flag[2:]}({name})"] = pair(rule(base), schedule_rule(s))
    return learned, setting


def tuning_setting(setting: dict) -> dict:
    """The part of a comparison's setting a tuning must match (its episodes and seed
    aside)."""
    return {k: setting.get(k) for k in ("num_tasks", "density", "num_servers", "slack",
                                        "workload", "queue_capacity")}


def tuned_choice(args, config: EnvConfig, params: EnvParams, setting: dict, q: int
                 ) -> TuningResult:
    """`--methods best`'s choice: read from --tuned (refused, in one line, where its
    setting is not this one), or tuned here on --tune-episodes tuning episodes of --seed
    (damdjax.tuning) with a progress line per chunk of candidates."""
    if args.tuned:
        try:
            stored = load_json_limited(args.tuned, TUNED_FILE_BYTES, "a tuning file")
            result = TuningResult.from_json(stored)
            got = tuning_setting(stored.get("setting", {}))
        except ValueError as err:
            sys.exit(f"error: --tuned {args.tuned}: {err}")
        if got != tuning_setting(setting):
            sys.exit(f"error: --tuned {args.tuned} was tuned at {got}, not this setting "
                     f"{tuning_setting(setting)}")
        print(f"best heuristic from {args.tuned}: {result.best} (tuned on {result.episodes} "
              f"tuning episodes of seed {result.seed})", flush=True)
        return result
    return run_tuning(dataclasses.replace(config, queue_capacity=q), params, args.seed,
                      args.tune_episodes, resolve_workload(args.workload))


def run_tuning(config: EnvConfig, params: EnvParams, seed: int, episodes: int,
               workload=None) -> TuningResult:
    """`damdjax.tuning.tune` at the setting, with a line before, one per chunk of family
    members and one with the choice."""
    t0 = time.perf_counter()

    def progress(done, total):
        print(f"  tuning: {done}/{total} family members, {time.perf_counter() - t0:.0f} s",
              flush=True)
    print(f"tuning: every classic pair and the EFT family's grid on {episodes} "
          f"tuning episodes of seed {seed} (keys no held-out episode uses)", flush=True)
    result = tune(config, params, seed, episodes, workload, progress=progress)
    print(f"best heuristic on the tuning episodes (of {len(result.means)}): {result.best} "
          f"({result.means[result.best]:.4f})", flush=True)
    return result


def progress_printer(method: str):
    """A `play_in_chunks` progress callback printing one line for `method`."""
    t0 = time.perf_counter()

    def show(steps, episodes, finished, tasks):
        print(f"  {method}: {steps} steps, {episodes} episode(s) done, {finished}/{tasks} "
              f"tasks finished, {time.perf_counter() - t0:.0f} s", flush=True)
    return show


def run_batch(policy: Policy, keys: jax.Array, instances, queue_capacity: int,
              params: EnvParams, method: str = ""):
    """Play every instance (batched on axis 0) with `policy`; returns final states
    (`play_in_chunks`: progress lines on long episodes, Ctrl-C within a chunk)."""
    return play_in_chunks(policy, keys, instances, queue_capacity, params,
                          progress=progress_printer(method or "policy"))


def summarize(states) -> dict:
    """Means and 95% CI half-widths of the metrics over a batch of final states."""
    metrics = jax.vmap(episode_metrics)(states)
    out = {"episodes": int(states.step.shape[0]),
           "truncated": int(np.sum(np.asarray(states.truncated))),
           "stranded": int(np.sum(np.asarray(jax.vmap(unstarted_tasks)(states)) > 0))}
    for name in METRIC_NAMES:
        mean, half = mean_ci95(np.asarray(metrics[name]))
        out[name] = mean
        out[name + "_ci95"] = half
    out["_per_episode"] = {name: np.asarray(metrics[name]) for name in
                           ("avg_response_time", "deadline_miss_rate")}
    return out


def summarize_bound(instances) -> dict:
    """The contention-free bound's response time and miss rate over a batch of instances,
    in `summarize`'s format (lower bounds on every method's, episode by episode)."""
    bounds = jax.jit(jax.vmap(bound_metrics))(instances)
    out = {"episodes": int(bounds["avg_response_time"].shape[0]), "truncated": 0, "stranded": 0}
    for name in ("avg_response_time", "deadline_miss_rate"):
        out[name], out[name + "_ci95"] = mean_ci95(np.asarray(bounds[name]))
    out["_per_episode"] = {name: np.asarray(bounds[name], np.float64) for name in
                           ("avg_response_time", "deadline_miss_rate")}
    return out


def schedule_in_file_order(state, spec) -> dict:
    """Per-task `server`, `start`, `finish`, `done` lists in file order (first episode);
    times on the instance file's clock (the simulator's plus `spec.time_offset`, the
    file's first arrival: `instance_io.on_file_clock`); None for a time that never came (a task that
    never started)."""
    first = jax.tree_util.tree_map(lambda x: x[0], state)
    order = [g for job in global_index(spec) for g in job]
    server = np.asarray(first.server)[order]
    ran = np.asarray(started(first))[order]
    times = lambda xs: [on_file_clock(float(x), spec.time_offset) if r else None  # noqa: E731
                        for x, r in zip(np.asarray(xs)[order], ran)]
    return {"server": [int(s) for s in server], "start": times(first.start),
            "finish": times(first.finish), "done": times(done_time(first))}


def format_table(results: dict) -> str:
    """A plain-text table: method, avg response time ± CI, miss rate ± CI."""
    w = max([8, *(len(name) for name in results)])
    lines = [f"{'method':<{w}} {'avg response time':>24} {'deadline-miss rate':>24} {'episodes':>9}"]
    for name, r in results.items():
        def cell(key):
            half = r[key + "_ci95"]
            return f"{r[key]:.4f}" + ("" if np.isnan(half) else f" ± {half:.4f}")
        lines.append(f"{name:<{w}} {cell('avg_response_time'):>24} "
                     f"{cell('deadline_miss_rate'):>24} {r['episodes']:>9}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Run the comparison; returns `{"setting", "methods"}` (also printed / written)."""
    args = parse_args(argv)
    # One instance file is cheap: run it in float64 so its times come out exact.
    try:
        with jax.enable_x64(args.instance is not None):
            return _compare(args)
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C): nothing written", file=sys.stderr, flush=True)
        sys.exit(130)


def _compare(args: argparse.Namespace) -> dict:
    params = args.run_env
    if args.instance is not None:
        try:
            spec = load_instance(args.instance)
        except InstanceError as e:
            sys.exit(f"error: {e}")
        print(f"loaded {args.instance}: {sum(len(j.tasks) for j in spec.jobs)} tasks",
              flush=True)
        episodes = args.episodes or 1
        try:  # before anything is allocated: the instance's sizes, float64 (x64)
            config = spec_config(spec)
            if args.queue_capacity is not None:   # the states' queues are this wide
                config = dataclasses.replace(config, queue_capacity=args.queue_capacity)
            check_memory(memory_parts(args, config, episodes, 8))
        except ValueError as e:
            sys.exit(f"error: {e}")
        instance, q_default = instance_from_spec(spec)
        instances = jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x, (episodes,) + x.shape), instance)
        setting = {"instance": args.instance, "time_offset": spec.time_offset,
                   "task_times": "per-task start, finish and done on the instance file's "
                                 "clock: the simulator's times plus time_offset"}
    else:
        spec = None
        args.episodes = args.episodes or GENERATED_EPISODES
        try:
            params, config, setting = generated_setting(args, params)
        except ValueError as e:
            sys.exit(f"error: {e}")
        q_default = config.queue_capacity
        episodes = args.episodes
        inst_keys, play_keys = held_out_keys(args.seed, episodes)
        instances = generate_held_out(config, params, inst_keys, resolve_workload(args.workload))
    if args.instance is not None:
        play_keys = held_out_keys(args.seed, episodes)[1]
    q = args.queue_capacity or q_default
    setting.update(queue_capacity=q, episodes=episodes, seed=args.seed)
    wants_best = "best" in args.method_list
    named = [m for m in args.method_list if m != "best"]
    tuning = None
    if wants_best:
        tuning = tuned_choice(args, config, params, setting, q)
    best = tuning.best if tuning else None
    heuristics = list(dict.fromkeys([*named, *([best] if best else [])]))
    print(f"comparing {', '.join([*args.learned, *heuristics])} on {episodes} "
          f"episode(s): {setting}", flush=True)
    states = {}
    for method, policy in args.learned.items():
        states[method] = run_batch(policy, play_keys, instances, q, params, method)
    t0 = time.perf_counter()
    pair_states = play_methods(heuristics, play_keys, instances, q, params,
                               chunked={"progress": progress_printer("heuristics")})
    pair_seconds = time.perf_counter() - t0
    pair_results = {name: summarize(st) for name, st in pair_states.items()}
    shown = heuristics
    states.update({name: pair_states[name] for name in shown})
    results = {**{m: summarize(states[m]) for m in args.learned},
               **{name: pair_results[name] for name in shown}}
    if spec is not None:
        for method, st in states.items():
            results[method].update(schedule_in_file_order(st, spec))
    results["bound"] = summarize_bound(instances)
    print(format_table(results))
    for name, r in results.items():
        if r["truncated"]:
            print(f"warning: {name}: {r['truncated']} episode(s) hit the step cap", file=sys.stderr)
        if r["stranded"]:
            print(f"warning: {name}: {r['stranded']} episode(s) ended with tasks that no "
                  "server can run (counted as missed, infinite response time)", file=sys.stderr)
    out = {"setting": setting,
           "methods": {name: {k: json_number(v) for k, v in r.items() if not k.startswith("_")}
                       for name, r in results.items()},
           "heuristic_seconds": pair_seconds}
    if wants_best:
        out["best_heuristic"] = best
        out["tuning"] = {**{k: v for k, v in tuning.to_json().items() if k != "means"},
                         "candidates": len(tuning.means), "source": args.tuned or "tuned here",
                         "ranking": [{"method": n, "avg_response_time": json_number(v)}
                                     for n, v in tuning.ranking(10)]}
    if args.learned and episodes > 1:
        per = {name: r["_per_episode"] for name, r in results.items()}
        for ref in args.learned:
            paired = paired_summary(per, reference=ref)
            print(format_paired({**paired, "methods": {}}, f"paired differences, {ref} - other:"))
            out.setdefault("paired", {})[ref] = paired
    if args.out:
        try:
            write_json_atomic(out, args.out)
        except OSError as err:   # a full disk: nothing half-written is left behind
            sys.exit(f"error: --out {args.out}: cannot write it: {err}")
        print(f"wrote {args.out}")
    return {"setting": setting, "methods": results, "paired": out.get("paired", {}),
            "best_heuristic": best}


if __name__ == "__main__":
    main()
