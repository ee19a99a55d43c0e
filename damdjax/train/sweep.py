"""Sweeps: many training runs as one compiled program, the members sharded over every device.

    python -m train.sweep --trainer dqn --seeds 4 --grid lr=1e-4,5e-4,1e-3 gamma=0.9,0.99
    python -m train.sweep --name sweep --resume --num-chunks 60     # continue to 60 chunks
    python -m eval.compare --dispatcher-checkpoint runs/sweep/member-3
    python -m train.sweep --trainer mdqn --dispatcher runs/dqn --seeds 4 --name ms
    python -m train.dqn --scheduler runs/ms/member-2                 # a member's schedulers

--trainer picks the trainer swept (TRAINERS: dqn, the DQN dispatcher; mdqn,
the MDQN schedulers under a frozen --dispatcher; damd, the whole DAMD pipeline,
dispatcher then schedulers stages, in one program); its flags follow it
(`python -m train.sweep --trainer damd --help` lists them). Members are every
point of the --grid (the cartesian product of its lists, over any field of
damdjax.hyper.Hyper: lr, gamma, eps_start, eps_end, eps_decay_steps,
target_every, polyak, double_dqn, n_step, learning_starts, max_grad_norm, tau,
miss_penalty, density, slack, num_tasks, num_servers; damd: of damdjax.hyper.PipelineHyper,
the setting fields and each learning field twice, dqn_lr for the dispatcher
stages, mdqn_lr for the schedulers', ...) times --seeds training seeds
(--seed, --seed + 1, ...): member i is grid point i // K with seed --seed + i %
K, and equals `python -m train.<trainer> --seed S` with the point's values as
flags (same keys; to float rounding). train.damd runs its pipeline as a sweep of
one member on one device: a damd sweep of --seeds 1 and no --grid on one device is
the same program and ends bitwise where train.damd does.

    python -m train.sweep --trainer damd --seeds 3 --grid density=1,2,3 mdqn_gamma=0.5,0.9
    python -m eval.compare --damd-run runs/sweep/member-4

The trainer's flags set the program's shape and every value the grid leaves
alone; the padded sizes --n-max and --m-max (default: --num-tasks and
--num-servers) bound the grid's num_tasks and num_servers.

One program: the trainer's stages (train.<trainer>.make_train: each stage's
`chunk(runner, hyper)`), `jax.vmap`ped over members and `jit`ted with the member
axis sharded over every device (a 1-D `Mesh`, `NamedSharding`; the host loop is
damdjax.members'); members are padded (repeating the last) to a multiple of the
device count. --distributed runs the same command as one process of several
(`jax.distributed.initialize`; --coordinator HOST:PORT --num-processes N
--process-id I, the environment `python -m train.launch` sets, or a SLURM job's):
the member axis spans every process's devices, each process feeds its own
devices' members, and process 0 alone reads and writes the run directory, from
values gathered over all processes; a lost process ends the others with one line
(damdjax.distributed; docs/distributed.md).

Writes runs/<name>/: config.json (trainer, seeds, grid and the trainer's
config), metrics.jsonl (one line per chunk per member: member, seed, its
hyper values, the chunk's metrics; damd: and the stage's name), checkpoint.msgpack (every member's runner
state, atomic, after each chunk; --resume continues it exactly), and at the
end member-<i>/ (the trainer's policy file and config.json: dqn's
dispatcher.msgpack, what eval.compare --dispatcher-checkpoint and train.mdqn
--dispatcher take; mdqn's schedulers.msgpack, what train.dqn --scheduler and
eval.compare --scheduler take; damd's both and damd.json, what eval.compare
--damd-run takes; member.json: its index, seed and hyper values)
and eval.json: every member greedy on the held-out episodes of --seed (the
same instances for all members: paired; mdqn members under the run's
dispatcher), the grid points ranked by mean response time with 95% CIs over
seeds. Ctrl-C stops between chunks as the single-run trainers do.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from typing import Any, Callable

import jax

from damdjax import members as member_loop
from damdjax import distributed, run_inputs, rundir, runs
from damdjax.chunks import RunStopped
from damdjax.cli import check_counts, check_int_flag, config_or_exit
from damdjax.configs import ConfigError, Field, check_choice, check_int, int_limit
from damdjax.evaluation import held_out_keys, play_generated_members
from damdjax.grid import check_grid, format_ranking, grid_points, parse_grid, rank_points
from damdjax.io import json_number, write_json_atomic
from damdjax.members import Member
from damdjax.metrics import mean_ci95
from damdjax.sharding import to_host
from damdjax.train import dqn
from damdjax.train.trainers import DEFAULT_TRAINER, TRAINERS

MEMBER_DIR = "member-{}"
RESUME_FLAGS = runs.RESUME_FLAGS | {"checkpoint_every", *distributed.FLAGS}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """What a sweep trains: `config` (the trainer's; its program, every value the grid
    leaves alone, and the base seed) and the members: `grid` points x `seeds`."""

    trainer: str
    seeds: int
    grid: tuple          # ((field, (v1, v2, ...)), ...), in the order given
    config: Any          # the trainer's config (TRAINERS[trainer].config_class)

    def __post_init__(self):
        """ValueError naming the field: `trainer` one of TRAINERS, `config` of its config
        class (checked itself), `seeds` >= 1 with the last member's seed in range, and
        every `grid` value and point (`damdjax.grid.check_grid`; a TD-only field refused
        when the dispatcher is fitted to rollouts)."""
        check_choice("trainer", self.trainer, TRAINERS)
        want = TRAINERS[self.trainer].config_class
        if not isinstance(self.config, want):
            raise ConfigError(f"config must be a {want.__name__} for ", Field("trainer"),
                              f" {self.trainer}, got {type(self.config).__name__}")
        check_int("seeds", self.seeds, 1)
        last, (limit, why) = self.config.seed + self.seeds - 1, int_limit("seed")
        if last > limit:
            raise ConfigError(Field("seed"), f" {self.config.seed} + ", Field("seeds"),
                              f" {self.seeds} - 1 = {last}, the last member's seed, must be "
                              f"<= {limit} ({why})")
        grid = {f: list(v) for f, v in self.grid}
        check_grid(grid, self.config.hyper(), self.config.env_config)
        damd_run = self.trainer == "damd"
        dispatcher, prefix = (self.config.dispatcher, "dqn_") if damd_run else (self.config, "")
        if getattr(dispatcher, "targets", "td") == "rollout":   # fitted: no target net
            for field in grid:
                if field in {prefix + f for f in (*dqn.TD_ONLY, "polyak")}:
                    raise ConfigError(Field("grid"), f" {field} does not apply to ",
                                      Field(f"{prefix}targets"), " rollout")

    @property
    def num_chunks(self) -> int:
        return self.config.num_chunks

    @property
    def eval_episodes(self) -> int:
        return self.config.eval_episodes

    @property
    def env_config(self):
        """The padded sizes every member shares (the trainer config's, its workload's)."""
        return self.config.env_config

    def with_counts(self, **counts) -> "SweepConfig":
        """Run length / evaluation size changed (what --resume may change)."""
        return dataclasses.replace(self, config=dataclasses.replace(self.config, **counts))

    def counter_totals(self) -> list[tuple[str, int]]:
        """Every member's int32 counters: the trainer config's (`RunConfig.counter_totals`)."""
        return self.config.counter_totals()

    def memory_parts(self) -> list[tuple[str, int]]:
        """The trainer config's parts (`RunConfig.memory_parts`) times the member axis."""
        k = self.seeds * len(self.points())
        return [(f"{k} members (--seeds {self.seeds} x {k // self.seeds} --grid points) x "
                 f"{what}", k * b) for what, b in self.config.memory_parts()]

    def points(self) -> list[dict]:
        return grid_points({f: list(v) for f, v in self.grid})

    def members(self) -> list[Member]:
        base = self.config.hyper()
        return [Member(p * self.seeds + s, self.config.seed + s, point, base.with_values(**point))
                for p, point in enumerate(self.points()) for s in range(self.seeds)]

    def member_config(self, m: Member):
        """The trainer config of member `m` alone (its seed and values; the fields the
        config lacks, e.g. polyak, are in member.json)."""
        return self.config.with_hyper(m.hyper, m.seed)

    def check_inputs(self) -> None:
        """The files the trainer's config names (`config.check_inputs`)."""
        self.config.check_inputs()

    def to_json(self) -> dict:
        return {"trainer": self.trainer, "seeds": self.seeds,
                "grid": {f: list(v) for f, v in self.grid}, "config": self.config.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "SweepConfig":
        """ValueError/KeyError/TypeError where `d` is not a stored sweep config."""
        if sorted(d) != ["config", "grid", "seeds", "trainer"]:
            raise ValueError(f"not a sweep config (keys {sorted(d)})")
        if d["trainer"] not in TRAINERS:
            raise ValueError(f"unknown trainer {d['trainer']!r}")
        return cls(trainer=d["trainer"], seeds=d["seeds"],
                   grid=tuple((f, tuple(v)) for f, v in d["grid"].items()),
                   config=TRAINERS[d["trainer"]].config_class.from_json(d["config"]))


# ---------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------

def trainer_flag(argv) -> str:
    """The --trainer of `argv` (default DEFAULT_TRAINER): it decides the other flags."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--trainer", default=DEFAULT_TRAINER)
    return pre.parse_known_args(argv)[0].trainer


def build_parser(trainer: str = DEFAULT_TRAINER) -> argparse.ArgumentParser:
    """The sweep's flags and `trainer`'s (an unknown name: DEFAULT_TRAINER's, refused later
    by `config_from_args`)."""
    p = argparse.ArgumentParser(prog="python -m train.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--trainer", default=DEFAULT_TRAINER, help=f"the trainer swept: {', '.join(TRAINERS)}; "
      "the flags after --checkpoint-every are its own (default %(default)s)")
    a("--seeds", type=int, default=1,
      help="training seeds per grid point: --seed, --seed + 1, ..., each <= 2**32 - 1 "
           "(default %(default)s)")
    a("--grid", nargs="+", default=[], metavar="FIELD=V1,V2",
      help="values of Hyper fields to sweep, e.g. lr=1e-4,1e-3 gamma=0.9,0.99 (members: "
           "every combination x --seeds)")
    distributed.add_flags(p)
    a("--checkpoint-every", type=int, default=1, metavar="K",
      help="write the checkpoint after every K-th chunk (and the last, and at Ctrl-C) "
           "instead of every chunk: a big sweep's checkpoint (every member's replay) can take "
           "longer to write than a chunk to run; not part of the run's config, so a --resume "
           "may change it (default %(default)s)")
    TRAINERS.get(trainer, TRAINERS[DEFAULT_TRAINER]).add_flags(p, name="sweep", init=False)
    return p


def config_from_args(p: argparse.ArgumentParser, args) -> SweepConfig:
    """The sweep from the flags: one-line errors (exit 2) before anything compiles (the
    trainer's config, then the sweep's own values, `SweepConfig`'s checks)."""
    if args.trainer not in TRAINERS:
        p.error(f"--trainer must be one of {', '.join(TRAINERS)}, got {args.trainer!r}")
    cfg = TRAINERS[args.trainer].config_from_args(p, args)
    try:
        grid = parse_grid(args.grid, type(cfg.hyper()))
    except ValueError as err:
        p.error(str(err))
    return config_or_exit(p, lambda: SweepConfig(
        trainer=args.trainer, seeds=args.seeds,
        grid=tuple((f, tuple(v)) for f, v in grid.items()), config=cfg))


# ---------------------------------------------------------------------------
# The host loop (damdjax.members)
# ---------------------------------------------------------------------------

def train(scfg: SweepConfig, run_dir: str, resume: bool, writer: bool = True,
          on_chunk: Callable[[int], None] | None = None, checkpoint_every: int = 1
          ) -> tuple[Any, list[Member], Any, bool]:
    """Run (or continue) every member's chunks (`damdjax.members.train` of the trainer's
    program); `(runner [K'], members, hyper [K'], interrupted)` with K' >= K members
    (padding last). `on_chunk(chunks done)`, where given, is called after each chunk is
    recorded (a caller's progress report); the checkpoint is written after every
    `checkpoint_every`-th chunk (`chunks.chunk_loop`)."""
    trainer, members = TRAINERS[scfg.trainer], scfg.members()
    rs, hyper, interrupted = member_loop.train(
        trainer.make_train, trainer.program_config(scfg.config), scfg.config, members,
        run_dir, resume, writer=writer, on_chunk=on_chunk, checkpoint_every=checkpoint_every)
    return rs, members, hyper, interrupted


# ---------------------------------------------------------------------------
# The end: policy files and the held-out evaluation
# ---------------------------------------------------------------------------

def save_members(scfg: SweepConfig, run_dir: str, members: list[Member], params) -> None:
    """member-<i>/: the trainer's policy file (dispatcher.msgpack, schedulers.msgpack),
    config.json (the member's trainer config) and member.json (index, seed, grid point,
    every hyper value). `params`: host [K', ...]."""
    for m in members:
        folder = os.path.join(run_dir, MEMBER_DIR.format(m.index))
        os.makedirs(folder, exist_ok=True)
        mcfg = scfg.member_config(m)
        TRAINERS[scfg.trainer].save_policy_file(folder, mcfg,
                                                jax.tree.map(lambda x: x[m.index], params))
        write_json_atomic(mcfg.to_json(), os.path.join(folder, rundir.CONFIG))
        write_json_atomic({"member": m.index, "seed": m.seed, "point": m.point,
                           "hyper": m.hyper.values()}, os.path.join(folder, "member.json"))


def evaluate(scfg: SweepConfig, members: list[Member], params, hyper, shard) -> dict:
    """Every member's greedy policy on the held-out episodes of the sweep's seed (the same
    instances for all members, each at its own setting within the padding), and the
    grid points ranked by mean response time with 95% CIs over seeds."""
    cfg = scfg.config
    time_scale, greedy = cfg.env.time_scale, TRAINERS[scfg.trainer].greedy_policy
    inst_keys, play_keys = held_out_keys(cfg.seed, cfg.eval_episodes)
    per = play_generated_members(
        lambda mem: (greedy(cfg, mem[0], time_scale), mem[1].env),
        (params, hyper), cfg.env_config, inst_keys, play_keys, sharding=shard,
        workload=cfg.job_library())
    per_member = []
    for m in members:
        row = {"member": m.index, "seed": m.seed, "point": m.point, "hyper": m.hyper.values()}
        for k, v in per.items():
            mean, half = mean_ci95(v[m.index])
            row[k] = {"mean": json_number(mean), "ci95": json_number(half)}
        per_member.append(row)
    means = [{k: r[k]["mean"] for k in per} for r in per_member]
    return {"trainer": scfg.trainer, "episodes": cfg.eval_episodes, "seed": cfg.seed,
            "grid": {f: list(v) for f, v in scfg.grid}, "seeds": scfg.seeds,
            "ranking": rank_points(means, scfg.points(), scfg.seeds), "members": per_member}


def finish(scfg: SweepConfig, run_dir: str, rs, members: list[Member], hyper,
           writer: bool = True) -> dict | None:
    """Policy files of every member, then (eval_episodes > 0) eval.json and the table."""
    params_host = to_host(rs.params)
    if writer:
        save_members(scfg, run_dir, members, params_host)
    if scfg.eval_episodes <= 0:
        return None
    ev = evaluate(scfg, members, rs.params, hyper, sharding_of(rs))
    if writer:
        write_json_atomic(ev, os.path.join(run_dir, "eval.json"))
    print(format_ranking(ev["ranking"], f"held-out evaluation: {ev['episodes']} episodes of "
                         f"seed {ev['seed']}, every member on the same instances; mean ± 95% "
                         f"CI over {scfg.seeds} seed(s)"), flush=True)
    return ev


def sharding_of(tree):
    """The sharding of a pytree's first leaf (a sweep state's member sharding)."""
    return jax.tree.leaves(tree)[0].sharding


def main(argv=None) -> int:
    trainer = trainer_flag(argv)
    p = build_parser(trainer)
    args = p.parse_args(argv)
    check_counts(p, args)
    check_int_flag(p, "--checkpoint-every", args.checkpoint_every, 1)
    session = distributed.session_of(p, args, "train.sweep")
    if session is None:
        return run_sweep(p, args, argv, trainer)
    return distributed.run(session, lambda: run_sweep(p, args, argv, trainer, session))


def run_sweep(p: argparse.ArgumentParser, args, argv, trainer: str,
              session: distributed.Session | None = None) -> int:
    """The sweep of parsed flags: open the run, train, finish; the exit code. With a
    `session` (--distributed), every process runs it: the flags agreed first, process 0
    opens the run (`open_shared`) and writes every file from gathered values."""
    with tempfile.TemporaryDirectory(prefix="damdjax-inputs-") as inputs:
        if session is None:
            scfg, run_dir = open_run(p, args, argv, trainer)
        else:
            session.agree("flags", distributed.flags_text(args))
            scfg, run_dir = open_shared(p, args, argv, trainer, session, inputs)
            session.hint = (f"{rundir.run_paths(run_dir)['checkpoint']} keeps the last "
                            f"committed chunk: continue with --resume")
        writer = session is None or session.index == 0
        with rundir.held(run_dir):
            try:
                rs, members, hyper, interrupted = train(
                    scfg, run_dir, args.resume, writer, checkpoint_every=args.checkpoint_every)
            except RunStopped as err:
                return runs.report_stop(err)
            if interrupted:
                return 130
            finish(scfg, run_dir, rs, members, hyper, writer)
    return 0


def open_run(p: argparse.ArgumentParser, args, argv, trainer: str) -> tuple[SweepConfig, str]:
    """`runs.open_run` of the sweep's flags: `(local config, run directory)`."""
    return runs.open_run(p, lambda: build_parser(trainer), args, argv,
                         config_from_args=config_from_args,
                         config_from_json=SweepConfig.from_json, resume_flags=RESUME_FLAGS)


def open_shared(p: argparse.ArgumentParser, args, argv, trainer: str,
                session: distributed.Session, inputs: str) -> tuple[SweepConfig, str]:
    """`(local config, run directory)` on every process of a --distributed sweep: process
    0 opens the run (`runs.open_run`: checks, lock, config.json, the input copies; its
    refusal ends every process with its exit code) and sends the others its local config
    and its input copies (`damdjax.run_inputs.input_files`), which they keep in `inputs`
    (a folder of their own): no process reads the run directory but process 0."""
    opened = {}

    def open_0() -> dict:
        opened["run"] = scfg, run_dir = open_run(p, args, argv, trainer)
        opened["files"] = run_inputs.input_files(run_dir)
        return {"config": scfg.to_json(), "run_dir": run_dir,
                "inputs": [n for n, _ in opened["files"]]}

    got = distributed.from_0(session, "run", open_0)
    if session.index == 0:
        for name, data in opened["files"]:
            session.share(f"inputs/{name}", data)
        return opened["run"]
    run_inputs.place_inputs([(n, session.share(f"inputs/{n}", None)) for n in got["inputs"]],
                            inputs)
    return SweepConfig.from_json(run_inputs.moved(got["config"], inputs)), got["run_dir"]


if __name__ == "__main__":
    sys.exit(main())
