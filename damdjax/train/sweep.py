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
flags (same keys; to float rounding).

    python -m train.sweep --trainer damd --seeds 3 --grid density=1,2,3 mdqn_gamma=0.5,0.9
    python -m eval.compare --damd-run runs/sweep/member-4 The trainer's flags set the program's shape and
every value the grid leaves alone; --num-tasks and --num-servers are also the
padded maxima (grid values must not exceed them).

One program: the trainer's `chunk(runner, hyper)` (train.<trainer>.make_train),
`jax.vmap`ped over members and `jit`ted with the member axis sharded over every
device (a 1-D `Mesh`, `NamedSharding`); members are padded (repeating the last)
to a multiple of the device count. --distributed calls
`jax.distributed.initialize()` first, so the same command runs across hosts
under a cluster launcher (the first process writes the files).

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
import functools
import os
import statistics
import sys
from typing import Any, Callable

import jax
import numpy as np

from damdjax import chunks, rundir, runlog, runner, runs
from damdjax.cli import check_counts, check_int_flag, config_or_exit
from damdjax.configs import ConfigError, Field, check_choice, check_int, int_limit
from damdjax.evaluation import held_out_keys, play_generated_members
from damdjax.grid import check_grid, format_ranking, grid_points, parse_grid, rank_points
from damdjax.hyper import stack
from damdjax.io import json_number, write_json_atomic
from damdjax.metrics import mean_ci95
from damdjax.rollout import Stage
from damdjax.sharding import (
    MEMBER_AXIS, member_mesh, member_sharding, pad_members, padded_members, put_members,
    to_host)
from damdjax.train import dqn
from damdjax.train.trainers import DEFAULT_TRAINER, TRAINERS, trainer_of

MEMBER_DIR = "member-{}"
RESUME_FLAGS = runs.RESUME_FLAGS | {"distributed", "checkpoint_every"}


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a sweep: its index, training seed, grid point and every value."""

    index: int
    seed: int
    point: dict
    hyper: Any           # Hyper (train.damd: PipelineHyper)


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
        check_grid(grid, self.config.hyper(), self.config.env_config())
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

    def env_config(self):
        """The padded sizes every member shares (the trainer config's, its workload's)."""
        return self.config.env_config()

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
      "the flags after --distributed are its own (default %(default)s)")
    a("--seeds", type=int, default=1,
      help="training seeds per grid point: --seed, --seed + 1, ..., each <= 2**32 - 1 "
           "(default %(default)s)")
    a("--grid", nargs="+", default=[], metavar="FIELD=V1,V2",
      help="values of Hyper fields to sweep, e.g. lr=1e-4,1e-3 gamma=0.9,0.99 (members: "
           "every combination x --seeds)")
    a("--distributed", action="store_true",
      help="call jax.distributed.initialize() first (one process per host under a cluster "
           "launcher; the member axis spans every host's devices)")
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
# The program and the host loop
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def sweep_program(program: Any, devices: tuple):
    """`(init, stages, sharding)`: `make_train(program)`'s init and each stage's begin and
    chunk (the trainer of `program`'s config class, `trainer_of`) vmapped over members and
    jitted with the member axis sharded over `devices` (cached: a resume in the same
    process compiles nothing new; stages sharing a program share its compile).

    init(keys [K, 2], hyper [K]) -> runner [K]; stages: `damdjax.rollout.Stage`s of
    chunk(runner [K], hyper [K]) -> (runner [K], metrics [K] with the runner's
    `env_steps`, `updates` and `chunk`) and begin(runner [K], hyper [K]) -> runner [K] or
    None. The vmap axis is named MEMBER_AXIS: an env step where no member's episode
    ended skips the auto-reset for all (one all-reduce of a flag across devices per env
    step).
    """
    fns = trainer_of(program).make_train(program, axis_name=MEMBER_AXIS)
    shard = member_sharding(member_mesh(list(devices)))
    donate = () if devices[0].platform == "cpu" else (0,)  # (CPU cannot donate buffers)

    def counted(chunk):
        def with_counters(rs, hyper):
            rs, m = chunk(rs, hyper)
            return rs, {**m, "env_steps": rs.env_steps, "updates": rs.updates,
                        "chunk": rs.chunk}
        return with_counters

    def vmapped(fn):
        return jax.vmap(fn, axis_name=MEMBER_AXIS)

    jitted: dict[int, Any] = {}   # id(function) -> its jit: one compile per program

    def jit_once(fn, wrap, out_shardings):
        if fn is None:
            return None
        if id(fn) not in jitted:
            jitted[id(fn)] = jax.jit(vmapped(wrap(fn)), in_shardings=(shard, shard),
                                     out_shardings=out_shardings, donate_argnums=donate)
        return jitted[id(fn)]

    init = jax.jit(vmapped(fns.init), in_shardings=(shard, shard), out_shardings=shard)
    stages = tuple(Stage(chunk=jit_once(st.chunk, counted, (shard, shard)),
                         begin=jit_once(st.begin, lambda f: f, shard)) for st in fns.stages)
    return init, stages, shard


def stage_at(plan: list[tuple[str, int, int]], chunks_done: int) -> tuple[int, bool]:
    """`(stage index, whether it is the stage's first chunk)` of the next chunk after
    `chunks_done` in `plan` (`config.stage_plan()`)."""
    start = 0
    for i, (_, n, _) in enumerate(plan):
        if chunks_done < start + n:
            return i, chunks_done == start
        start += n
    raise ValueError(f"chunk {chunks_done + 1} is past the plan's {start} chunks")


def member_inputs(seeds: list[int], hypers: list, count: int, shard):
    """`(keys [count, 2], hyper [count])` of K members on their devices: `PRNGKey(seed)`
    and `stack(hypers)`, padded to `count` by repeating the last member (`sharding`)."""
    keys = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in seeds])
    return (put_members(pad_members(keys, count), shard),
            put_members(pad_members(stack(hypers), count), shard))


def member_rows(members: list[Member], m: dict, seconds: float, env_steps_per_chunk: int,
                stage: str | None = None) -> list[dict]:
    """One metrics row per member (not padding) from a chunk's metrics [K'] on the host
    (`stage`: the stage's name, on each row, where the trainer has several)."""
    extra = {} if stage is None else {"stage": stage}
    return [{"member": mem.index, "seed": mem.seed, "hyper": mem.hyper.values(), **extra,
             **runlog.metrics_row(int(m["chunk"][mem.index]), int(m["env_steps"][mem.index]),
                                int(m["updates"][mem.index]), seconds, env_steps_per_chunk,
                                {k: v[mem.index] for k, v in m.items()
                                 if k not in ("chunk", "env_steps", "updates")})}
            for mem in members]


def _median_best(rows: list[dict], key: str) -> str:
    vals = [(r[key], r["member"]) for r in rows if r[key] is not None]
    if not vals:
        return "-"
    best = min(vals)
    return f"{statistics.median(v for v, _ in vals):.3f} best {best[0]:.3f} (member {best[1]})"


def progress_line(rows: list[dict], num_chunks: int) -> str:
    """A chunk's line: total env steps/s over members, median and best response time and
    miss rate, median loss."""
    total = sum(r["env_steps"] for r in rows)
    rate = sum(r["env_steps_per_s"] for r in rows)
    return (f"chunk {rows[0]['chunk']:>4}/{num_chunks}  members {len(rows)}  env steps "
            f"{total:>11}  {rate:>9.0f}/s  resp median {_median_best(rows, 'avg_response_time')}"
            f"  miss median {_median_best(rows, 'deadline_miss_rate')}  loss median "
            f"{statistics.median(r['loss'] for r in rows):.4f}  eps {rows[0]['epsilon']:.3f}")


def train(scfg: SweepConfig, run_dir: str, resume: bool, writer: bool = True,
          on_chunk: Callable[[int], None] | None = None, checkpoint_every: int = 1
          ) -> tuple[Any, list[Member], Any, bool]:
    """Run (or continue) every member's chunks; `(runner [K'], members, hyper [K'],
    interrupted)` with K' >= K members (padding last). `on_chunk(chunks done)`, where
    given, is called after each chunk is recorded (a caller's progress report); the
    checkpoint is written after every `checkpoint_every`-th chunk (`chunks.chunk_loop`)."""
    cfg = scfg.config
    members = scfg.members()
    mesh = member_mesh()
    count = padded_members(len(members), mesh)
    init, stages, shard = sweep_program(TRAINERS[scfg.trainer].program_config(cfg),
                                        tuple(mesh.devices.flat))
    keys, hyper = member_inputs([m.seed for m in members], [m.hyper for m in members],
                                count, shard)
    rs = init(keys, hyper)
    restored = None
    if resume:  # the checkpoint holds the real members only (any device count resumes it)
        real = jax.tree.map(lambda x: x[:len(members)], to_host(rs))
        real, restored = runner.restore_runner(real, run_dir)
        rs = put_members(pad_members(real, count), shard)
    done = {"chunks": int(to_host(rs.chunk)[0])}
    plan = cfg.stage_plan()
    named = len(plan) > 1

    def chunk(rs_):
        i, first = stage_at(plan, done["chunks"])
        if first and stages[i].begin is not None:
            rs_ = stages[i].begin(rs_, hyper)
        done["stage"] = i
        return stages[i].chunk(rs_, hyper)

    def rows(rs_, m, seconds):
        name, _, steps = plan[done["stage"]]
        out = member_rows(members, m, seconds, steps, name if named else None)
        done["chunks"] = out[0]["chunk"]
        return out

    def save(rs_, rows_):
        host = to_host(rs_)
        if writer:
            runner.save_checkpoint(jax.tree.map(lambda x: x[:len(members)], host), run_dir, rows_)

    def progress(rows_):
        if on_chunk is not None:
            on_chunk(rows_[0]["chunk"])
        line = progress_line(rows_, cfg.num_chunks)
        return f"[{rows_[0]['stage']}] {line}" if named else line

    pad = f" (+{count - len(members)} padding)" if count > len(members) else ""
    stages_text = ", ".join(f"{n} x {steps} env steps" + (f" ({name})" if named else "")
                            for name, n, steps in plan)
    rs, interrupted = chunks.chunk_loop(
        chunk, rs, num_chunks=cfg.num_chunks,
        chunks_done=lambda _: done["chunks"], run_dir=run_dir, save=save, rows=rows,
        progress=progress, writer=writer, restored_rows=restored,
        checkpoint_every=checkpoint_every, header=f"sweep {run_dir}: {len(members)} members{pad} on {mesh.devices.size} "
               f"device(s), chunks: {stages_text}, from chunk {done['chunks']}")
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
    time_scale, greedy = cfg.env_params().time_scale, TRAINERS[scfg.trainer].greedy_policy
    inst_keys, play_keys = held_out_keys(cfg.seed, cfg.eval_episodes)
    per = play_generated_members(
        lambda mem: (greedy(cfg, mem[0], time_scale), mem[1].env_params()),
        (params, hyper), cfg.env_config(), inst_keys, play_keys, sharding=shard,
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
    if args.distributed:
        jax.distributed.initialize()
    writer = jax.process_index() == 0
    scfg, run_dir = runs.open_run(p, lambda: build_parser(trainer), args, argv,
                                  config_from_args=config_from_args,
                                  config_from_json=SweepConfig.from_json,
                                  resume_flags=RESUME_FLAGS, writer=writer)
    with rundir.held(run_dir):
        rs, members, hyper, interrupted = train(scfg, run_dir, args.resume, writer,
                                                checkpoint_every=args.checkpoint_every)
        if interrupted:
            return 130
        finish(scfg, run_dir, rs, members, hyper, writer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
