"""A trainer's program run over members, chunk by chunk: the host loop of train.sweep
(a grid of members) and of train.damd (its pipeline as a sweep of one member).

    init, stages, shard = member_program(make_train, program, devices)
    rs, hyper, interrupted = train(make_train, program, config, members, run_dir, resume)

`member_program` vmaps the trainer's `init` and each stage's `begin` and `chunk`
(`make_train(program).stages`) over members and jits them with the member axis sharded
over the devices. `train` runs the stages' chunks in `config.stage_plan()` order (a
stage's `begin` before its first chunk) and records each chunk
(`damdjax.chunks.chunk_loop`): the checkpoint of every member's runner, one metrics row
per member (naming the stage where the trainer has several), a progress line, Ctrl-C
between chunks; `resume` continues the checkpoint exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import statistics
from typing import Any, Callable

import jax
import numpy as np

from damdjax import chunks, runlog, runner
from damdjax.hyper import stack
from damdjax.rollout import Stage
from damdjax.sharding import (
    MEMBER_AXIS, from_process_0, member_mesh, member_sharding, pad_members, padded_members,
    put_members, to_host)


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a sweep: its index, training seed, grid point and every value."""

    index: int
    seed: int
    point: dict
    hyper: Any           # Hyper (train.damd: PipelineHyper)


@functools.lru_cache(maxsize=4)
def member_program(make_train: Callable, program: Any, devices: tuple):
    """`(init, stages, sharding)`: `make_train(program)`'s init and each stage's begin and
    chunk (`program`: the trainer's `program_config`) vmapped over members and jitted with
    the member axis sharded over `devices` (cached: a resume in the same process compiles
    nothing new; stages sharing a program share its compile).

    init(keys [K, 2], hyper [K]) -> runner [K]; stages: `damdjax.rollout.Stage`s of
    chunk(runner [K], hyper [K]) -> (runner [K], metrics [K] with the runner's
    `env_steps`, `updates` and `chunk`) and begin(runner [K], hyper [K]) -> runner [K] or
    None. The vmap axis is named MEMBER_AXIS: an env step where no member's episode
    ended skips the auto-reset for all (one all-reduce of a flag across devices per env
    step).
    """
    fns = make_train(program, axis_name=MEMBER_AXIS)
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


def stage_ends(plan: list[tuple[str, int, int]]) -> list[int]:
    """The chunks done at the end of each stage of `plan` (cumulative)."""
    ends, done = [], 0
    for _, n, _ in plan:
        done += n
        ends.append(done)
    return ends


def member_inputs(seeds: list[int], hypers: list, count: int, shard):
    """`(keys [count, 2], hyper [count])` of K members on their devices: `PRNGKey(seed)`
    and `stack(hypers)`, padded to `count` by repeating the last member (`sharding`)."""
    keys = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in seeds])
    return (put_members(pad_members(keys, count), shard),
            put_members(pad_members(stack(hypers), count), shard))


def member_rows(members: list[Member], m: dict, seconds: float, env_steps_per_chunk: int,
                stage: str | None = None, single: bool = False) -> list[dict]:
    """One metrics row per member (not padding) from a chunk's metrics [K'] on the host
    (`stage`: the stage's name, on each row, where the trainer has several): its member
    index, seed and values, then `runlog.metrics_row`'s; `single` (a trainer's own run):
    without the member's index, seed and values, as a single run's row."""
    extra = {} if stage is None else {"stage": stage}
    return [{**({} if single else {"member": mem.index, "seed": mem.seed,
                                   "hyper": mem.hyper.values()}), **extra,
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


def train(make_train: Callable, program: Any, config: Any, members: list[Member],
          run_dir: str, resume: bool, *, writer: bool = True,
          on_chunk: Callable[[int], None] | None = None, checkpoint_every: int = 1,
          single: bool = False, on_commit: Callable[[Any, int], None] | None = None
          ) -> tuple[Any, Any, bool]:
    """Run (or continue, from `run_dir`'s checkpoint) every member's chunks of `config`
    (`stage_plan()`, `num_chunks`) with `member_program(make_train, program, devices)`;
    returns `(runner [K'], hyper [K'], interrupted)` with K' >= K members (padding last).

    The members are sharded over every device, padded to a multiple of their count;
    `single` (a trainer's own run of one member: train.damd) runs on one device and
    writes a single run's metrics rows and progress lines (`member_rows`). After each
    chunk: the checkpoint (after every `checkpoint_every`-th chunk, the last and the
    one Ctrl-C stops at; `chunks.chunk_loop`), the rows, then `on_chunk(chunks done)`
    where given. Over several processes (`jax.distributed`), each places its own devices'
    members; process 0 alone reads the checkpoint (its values reach the others as bits:
    `sharding.from_process_0`) and, with `writer`, writes. `on_commit(runner [K'], chunks
    done)`, where given, is called whenever
    the checkpoint holds the runner: after each checkpoint and, resuming, before the
    first chunk (what a run writes from its committed state)."""
    mesh = member_mesh(jax.local_devices()[:1] if single else None)
    count = padded_members(len(members), mesh)
    init, stages, shard = member_program(make_train, program, tuple(mesh.devices.flat))
    keys, hyper = member_inputs([m.seed for m in members], [m.hyper for m in members],
                                count, shard)
    rs = init(keys, hyper)
    restored = None
    if resume:  # the checkpoint holds the real members only (any device count resumes it)
        real = jax.tree.map(lambda x: x[:len(members)], to_host(rs))
        if jax.process_index() == 0:   # (its file; the other processes get its values)
            real, restored = runner.restore_runner(real, run_dir)
        rs = put_members(pad_members(from_process_0(real), count), shard)
    done = {"chunks": int(to_host(rs.chunk)[0])}
    plan = config.stage_plan()
    named = len(plan) > 1

    def chunk(rs_):
        i, first = stage_at(plan, done["chunks"])
        if first and stages[i].begin is not None:
            rs_ = stages[i].begin(rs_, hyper)
        done["stage"] = i
        return stages[i].chunk(rs_, hyper)

    def rows(rs_, m, seconds):
        name, _, steps = plan[done["stage"]]
        out = member_rows(members, m, seconds, steps, name if named else None, single)
        done["chunks"] = out[0]["chunk"]
        return out

    def save(rs_, rows_):
        host = to_host(rs_)
        if writer:
            runner.save_checkpoint(jax.tree.map(lambda x: x[:len(members)], host), run_dir, rows_)

    def progress(rows_):
        if on_chunk is not None:
            on_chunk(rows_[0]["chunk"])
        line = (runlog.progress_line(rows_[0]) if single
                else progress_line(rows_, config.num_chunks))
        return f"[{rows_[0]['stage']}] {line}" if named else line

    stages_text = ", ".join(f"{n} x {steps} env steps" + (f" ({name})" if named else "")
                            for name, n, steps in plan)
    if single:
        header = f"run {run_dir}: chunks: {stages_text}, from chunk {done['chunks']}"
    else:
        pad = f" (+{count - len(members)} padding)" if count > len(members) else ""
        header = (f"sweep {run_dir}: {len(members)} members{pad} on {mesh.devices.size} "
                  f"device(s), chunks: {stages_text}, from chunk {done['chunks']}")
    commit = None if on_commit is None else (lambda rs_: on_commit(rs_, done["chunks"]))
    rs, interrupted = chunks.chunk_loop(
        chunk, rs, num_chunks=config.num_chunks, chunks_done=lambda _: done["chunks"],
        run_dir=run_dir, save=save, rows=rows, progress=progress, writer=writer,
        save_policy=commit, restored_rows=restored, checkpoint_every=checkpoint_every,
        header=header, diverged=lambda rs_, m: chunks.divergence(
            rs_.params, m["loss"], len(members), name_members=not single))
    return rs, hyper, interrupted
