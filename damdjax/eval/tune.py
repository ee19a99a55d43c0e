"""Tune the heuristics on tuning episodes and store the choice.

    python -m eval.tune --out runs/tuned.json                    # the default setting
    python -m eval.tune --num-servers 3 --tune-episodes 200 --out runs/tuned-s3.json
    python -m eval.compare --methods best,ES --tuned runs/tuned.json
    python -m eval.tune --env Edge-servers3-v0 --out runs/tuned-servers3.json
    python -m eval.tune --env Edge-wfcommons-servers3-v0 --data DIR --out runs/tuned-wf3.json

Every classic heuristic pair and every member of the EFT family's grid
(damdjax.tuning.family_grid: holders x wait x relay x lookahead x scheduling rule) plays
--tune-episodes tuning episodes of --seed at the setting, generated from keys that no
held-out or training episode uses (damdjax.tuning.TUNE_FOLD); the smallest mean response
time wins. --out gets the setting, every candidate's mean and the choice (JSON, written
atomically), which `eval.compare --methods best --tuned FILE` then plays on the held-out
episodes without tuning again. --env tunes at a registered setting (damdjax.registry;
--data DIR registers the real-workload names first) instead of the setting flags; the
file names it, and a random-generator name's file serves `eval.compare` at the same
setting given as flags. On the 2-core CPU the default grid (447 candidates) takes
a few minutes at 100 episodes.
"""
from __future__ import annotations

import argparse
import sys

from damdjax import registry
from damdjax.cli import (add_config_flags, add_seed_flag, check_int_flag, check_out_flag,
                         explicit_flags)
from damdjax.eval import compare
from damdjax.io import write_json_atomic
from damdjax.run_config import RunConfig
from damdjax.workloads import seeded_workload

SETTING = ("num_tasks", "density", "num_servers", "slack", "workload", "queue_capacity")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, RunConfig, SETTING, unset={
        "workload": "the random generator", "queue_capacity": "16"})
    p.add_argument("--tune-episodes", type=int, default=compare.TUNE_EPISODES,
                   help="tuning episodes (default %(default)s)")
    add_seed_flag(p, "seed of the tuning episodes")
    p.add_argument("--env", metavar="NAME", default=None,
                   help="tune at this registered setting (damdjax.registry) instead of the "
                        "setting flags")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="with --env: register the real-workload names on this data folder "
                        "first (damdjax.registry.register_workloads)")
    p.add_argument("--out", metavar="FILE.json", required=True, help="where the choice goes")
    return p


def registered_setting(p: argparse.ArgumentParser, args, argv):
    """`(config, params, setting, job library or None)` of `--env NAME` (`p.error` for an
    unknown name, a setting flag beside it, or a bad --data folder). The setting holds
    the name and, for `eval.compare --tuned`, its values; a workload name's `workload` is
    the name, which no flag spells."""
    given = explicit_flags(build_parser, argv) & set(SETTING)
    if given:
        p.error("--env sets the setting; it excludes "
                + ", ".join("--" + g.replace("_", "-") for g in sorted(given)))
    if args.data is not None:
        try:
            registry.register_workloads(args.data, replace=True)
        except (OSError, ValueError) as err:
            p.error(f"--data {args.data}: {err}")
    try:
        env, params = registry.make(args.env)
    except ValueError as err:
        p.error(f"--env: {err}")
    library = getattr(env.generator, "library", None)
    setting = {"env": args.env, "num_tasks": int(params.num_tasks),
               "density": float(params.density), "num_servers": int(params.num_servers),
               "slack": float(params.slack), "queue_capacity": env.config.queue_capacity}
    if library is not None:
        setting["workload"] = args.env
    return env.config, params, setting, library


def main(argv=None) -> dict:
    """Tune, write --out, and return what was written."""
    p = build_parser()
    args = p.parse_args(argv)
    check_int_flag(p, "--tune-episodes", args.tune_episodes, 1)
    check_out_flag(p, args.out, [])
    if args.env is not None:
        config, params, setting, library = registered_setting(p, args, argv)
        result = compare.run_tuning(config, params, args.seed, args.tune_episodes, library)
    else:
        if args.data is not None:
            p.error("--data registers the real-workload names for --env; give --env")
        try:
            args.workload = seeded_workload(args.workload or "", args.seed)
        except ValueError as e:
            p.error(f"--workload: {e}")
        args.n_max = args.m_max = None
        try:
            params, config, setting = compare.generated_setting(args)
        except ValueError as e:
            p.error(str(e))
        q = args.queue_capacity or config.queue_capacity
        setting["queue_capacity"] = q
        args.tuned = None
        result = compare.tuned_choice(args, config, params, setting, q)
    out = {"setting": setting, **result.to_json()}
    try:
        write_json_atomic(out, args.out)
    except OSError as err:
        sys.exit(f"error: --out {args.out}: cannot write it: {err}")
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
