"""The DAMD pipeline: a DQN dispatcher, then MDQN schedulers under it, alternating.

    python -m train.damd --name damd                  # runs/damd/
    python -m train.damd --name damd --rounds 2       # dispatcher retrained against the schedulers
    python -m eval.compare --damd-run runs/damd       # DAMD against NF, RS, LS, EC, best again

Round 1: stage `r1-dispatcher` trains the DQN dispatcher with FCFS servers
(train.dqn), then stage `r1-schedulers` trains the MDQN schedulers with that
dispatcher frozen (train.mdqn). Round k > 1 continues both: the dispatcher
from round k-1's parameters against round k-1's schedulers (frozen), then the
schedulers from their round k-1 parameters under the new dispatcher. The
scheduler stages discount per agent decision by --mdqn-gamma (0.5, not
train.mdqn's 0.9: under a trained dispatcher an agent's decisions are far
apart; docs/model.md, "The schedulers' discount"). Each
stage is an ordinary run directory inside the DAMD run (config.json,
metrics.jsonl, checkpoint.msgpack, the policy file, eval.json), so a stage can
be inspected, compared or resumed on its own.

At the end, damd.json names the final dispatcher and schedulers and the
setting, and eval.json holds DAMD (both, greedy) against NF, RS, LS, EC (EFT +
critical path) and the best of all 20 heuristic pairs at the setting (its name
in `best_heuristic`, every pair's means in `heuristics`), with the
contention-free bound, on held-out instances, paired, with 95% confidence
intervals. --resume continues
an interrupted pipeline: finished stages are kept, a partial one resumes from
its checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

from damdjax.cli import (SETTING_FIELDS, add_setting_flags, check_positive, check_setting,
                         parse_hidden, setting_config, setting_params)
from damdjax.evaluation import evaluate_paired, format_paired
from damdjax.heuristics import ALL_PAIRS
from damdjax.io import write_json_atomic
from damdjax.policies import DAMD_FILE, load_damd
from damdjax.runs import CONFIG, write_evaluation
from train import dqn, mdqn

BASELINES = ("NF", "RS", "LS", "EC")  # and the best pair at the setting


def stage_names(rounds: int) -> list[tuple[str, str]]:
    """`[(stage directory, "dqn" | "mdqn")]` in training order."""
    return [(f"r{r}-{part}", kind) for r in range(1, rounds + 1)
            for part, kind in (("dispatcher", "dqn"), ("schedulers", "mdqn"))]


def stage_configs(args) -> dict[str, object]:
    """The config of every stage (dqn.DQNConfig / mdqn.MDQNConfig) by directory name."""
    setting = {k: getattr(args, k) for k in SETTING_FIELDS}
    setting.update(seed=args.seed, eval_episodes=args.stage_eval_episodes)
    root = os.path.join(args.run_dir, args.name)
    out = {}
    for r in range(1, args.rounds + 1):
        prev_d, prev_s = f"{root}/r{r - 1}-dispatcher", f"{root}/r{r - 1}-schedulers"
        out[f"r{r}-dispatcher"] = dqn.DQNConfig(
            **setting, num_envs=args.dqn_num_envs, num_chunks=args.dqn_num_chunks,
            hidden=args.dqn_hidden, scheduler="fcfs" if r == 1 else prev_s,
            init_dispatcher="" if r == 1 else prev_d)
        out[f"r{r}-schedulers"] = mdqn.MDQNConfig(
            **setting, num_envs=args.mdqn_num_envs, num_chunks=args.mdqn_num_chunks,
            hidden=args.mdqn_hidden, gamma=args.mdqn_gamma, share_params=args.share_params,
            dispatcher=f"{root}/r{r}-dispatcher", init_schedulers="" if r == 1 else prev_s)
    return out


def evaluate(run_dir: str, episodes: int, seed: int) -> dict:
    """DAMD vs NF, RS, LS, EC and the best of every heuristic pair on held-out instances of
    `seed`, paired (reference "DAMD"), with the contention-free bound."""
    policy, setting = load_damd(run_dir)
    return evaluate_paired({"DAMD": policy}, setting_config(setting), setting_params(setting),
                           seed, episodes, "DAMD", heuristics=ALL_PAIRS, keep=BASELINES)


def build_parser() -> argparse.ArgumentParser:
    d, dd, md = mdqn.MDQNConfig(), dqn.DQNConfig(), mdqn.MDQNConfig()
    p = argparse.ArgumentParser(prog="python -m train.damd", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--name", default="damd", help="run name: the run directory is RUN_DIR/NAME "
      "(default %(default)s)")
    a("--run-dir", default="runs", help="parent folder of run directories (default %(default)s)")
    a("--overwrite", action="store_true", help="replace an existing run directory")
    a("--resume", action="store_true", help="continue an interrupted pipeline (same flags)")
    a("--rounds", type=int, default=1, help="dispatcher/schedulers rounds (default %(default)s)")
    add_setting_flags(p, d)
    a("--seed", type=int, default=d.seed, help="seed of every stage and of the held-out "
      "evaluation (default %(default)s)")
    a("--dqn-num-envs", type=int, default=4096, help="dispatcher stages: parallel envs "
      "(default %(default)s)")
    a("--dqn-num-chunks", type=int, default=dd.num_chunks,
      help="dispatcher stages: chunks of 50 vmapped steps (default %(default)s)")
    a("--dqn-hidden", default=",".join(map(str, dd.hidden)),
      help="dispatcher hidden widths (default %(default)s)")
    a("--mdqn-num-envs", type=int, default=1024, help="scheduler stages: parallel envs "
      "(default %(default)s)")
    a("--mdqn-num-chunks", type=int, default=md.num_chunks,
      help="scheduler stages: chunks of 50 vmapped steps (default %(default)s)")
    a("--mdqn-hidden", default=",".join(map(str, md.hidden)),
      help="scheduler hidden widths (default %(default)s)")
    a("--mdqn-gamma", type=float, default=0.5,
      help="scheduler stages: discount per decision of an agent (default %(default)s: under a "
           "trained dispatcher queues are short and an agent's decisions far apart; "
           "docs/model.md)")
    a("--share-params", action="store_true", help="one scheduler network for all servers")
    a("--stage-eval-episodes", type=int, default=0,
      help="held-out evaluation after each stage (its eval.json), 0 to skip (default 0)")
    a("--eval-episodes", type=int, default=200,
      help="held-out episodes of the final DAMD vs NF/RS/LS/EC/best evaluation "
           "(default %(default)s)")
    return p


def parse_args(p: argparse.ArgumentParser, argv) -> argparse.Namespace:
    args = p.parse_args(argv)
    check_positive(p, args, ints=("rounds", "num_tasks", "num_servers", "queue_capacity",
                                  "dqn_num_envs", "dqn_num_chunks", "mdqn_num_envs",
                                  "mdqn_num_chunks", "eval_episodes"),
                   floats=("density", "slack", "tau"))
    if not 0 <= args.mdqn_gamma <= 1:
        p.error(f"--mdqn-gamma must be in [0, 1], got {args.mdqn_gamma}")
    if args.stage_eval_episodes < 0:
        p.error(f"--stage-eval-episodes must be >= 0, got {args.stage_eval_episodes}")
    args.dqn_hidden = parse_hidden(p, args.dqn_hidden)
    args.mdqn_hidden = parse_hidden(p, args.mdqn_hidden)
    if not args.name or os.sep in args.name or args.name in (".", ".."):
        p.error(f"--name must be a plain folder name, got {args.name!r}")
    if args.resume and args.overwrite:
        p.error("--resume and --overwrite exclude each other")
    return args


def main(argv=None) -> int:
    p = build_parser()
    args = parse_args(p, argv)
    root = os.path.join(args.run_dir, args.name)
    configs = stage_configs(args)
    try:  # the setting itself, before anything is written or compiled
        check_setting(configs["r1-dispatcher"])
    except ValueError as err:
        p.error(str(err))
    if os.path.exists(root) and not args.resume:
        if not args.overwrite:
            p.error(f"run directory {root} exists: pass --overwrite or --resume")
        shutil.rmtree(root)
    os.makedirs(root, exist_ok=True)
    write_json_atomic({k: v for k, v in vars(args).items()}, os.path.join(root, "args.json"))

    t_start = time.perf_counter()
    stages = []
    for stage, kind in stage_names(args.rounds):
        module = dqn if kind == "dqn" else mdqn
        cfg = configs[stage]
        stage_dir = os.path.join(root, stage)
        cfg_path = os.path.join(stage_dir, CONFIG)
        resume = os.path.exists(os.path.join(stage_dir, "checkpoint.msgpack"))
        if resume:
            try:
                with open(cfg_path) as f:
                    stored = type(cfg).from_json(json.load(f))
            except (ValueError, TypeError, KeyError) as err:
                p.error(f"--resume: {cfg_path} is not a valid config ({err})")
            if dataclasses.replace(stored, eval_episodes=0) != dataclasses.replace(
                    cfg, eval_episodes=0):
                p.error(f"--resume: {stage_dir} was made with other settings; use the same "
                        "flags, or --overwrite")
        os.makedirs(stage_dir, exist_ok=True)
        write_json_atomic(cfg.to_json(), cfg_path)
        t0 = time.perf_counter()
        rs, interrupted = module.train(cfg, stage_dir, resume, label=stage)
        if interrupted:
            return 130
        write_evaluation(cfg, rs.params, stage_dir, module.evaluate, module.format_eval)
        stages.append({"stage": stage, "seconds": time.perf_counter() - t0})
    train_seconds = time.perf_counter() - t_start
    last = args.rounds
    setting = {k: getattr(args, k) for k in SETTING_FIELDS}
    write_json_atomic({"rounds": args.rounds, "dispatcher": f"r{last}-dispatcher",
                       "schedulers": f"r{last}-schedulers", "setting": setting,
                       "stages": stages, "train_seconds": train_seconds},
                      os.path.join(root, DAMD_FILE))
    t0 = time.perf_counter()
    ev = evaluate(root, args.eval_episodes, args.seed)
    ev["seconds"] = time.perf_counter() - t0
    write_json_atomic(ev, os.path.join(root, "eval.json"))
    print(format_paired(ev, f"DAMD ({args.rounds} round(s), {train_seconds:.0f} s of training) "
                            f"vs the paper's baselines, EC and the best pair "
                            f"({ev['best_heuristic']}), {ev['episodes']} held-out episodes"),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
