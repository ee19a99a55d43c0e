"""The chunk loop shared by the trainers: compiled chunks run one after another, each
recorded (checkpoint, policy file, metrics rows, a progress line), Ctrl-C deferred to
the end of the chunk, and the kill points the kill tests use.

After each chunk the checkpoint is replaced (atomically, checksummed) holding the
chunk's metrics rows; then the policy file is written and the rows appended to
metrics.jsonl. The checkpoint is the commit point: a resume rebuilds metrics.jsonl and
the policy file from it (rows past it dropped, a missing last row restored, a torn last
line dropped: `damdjax.runlog.repair_log`), so a kill -9 at any instant leaves a run
that resumes to the same files. Ctrl-C stops the loop between chunks. A chunk whose
parameters or loss are no longer finite (a diverged run), or that cannot be recorded
(a full disk, a file replaced by a link), stops the loop with `RunStopped` before it
is committed: the checkpoint keeps the last finite, complete chunk.

Test hook: DAMDJAX_TEST_KILL_AT=POINT[:CHUNK] makes the process SIGKILL
itself at POINT (after-chunk, after-checkpoint, after-policy, after-metrics)
of chunk CHUNK (the run's chunks done; any chunk where omitted);
only the kill tests set it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from damdjax.rundir import run_paths, settle
from damdjax.runlog import append_rows, repair_log
from damdjax.sharding import to_host

KILL_ENV = "DAMDJAX_TEST_KILL_AT"


class RunStopped(Exception):
    """A run stopped before committing a chunk: its one-line reason (the commands print
    it and exit 1)."""


def divergence(params, loss, members: int | None = None, *, name_members: bool = True
               ) -> str | None:
    """What of `params` (a pytree) and `loss` holds NaN or inf, as `chunk_loop`'s
    `diverged` names it (None: all is finite). `members`: the leaves have a leading
    member axis and the first `members` count; `name_members` names the bad ones (a
    trainer's own run of one member does not)."""
    bad = nonfinite(params, loss, members)
    if not bad:
        return None
    if members is None or not name_members:
        return "the parameters or loss are"
    listed = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
    return f"the parameters or loss of member(s) {listed} are"


def nonfinite(params, loss, members: int | None = None) -> list[int] | bool:
    """Whether `params` (a pytree) or `loss` hold NaN or inf: a bool for one run, or the
    indices of the bad members among the first `members` (leaves with a leading member
    axis). Reduced on the device: only one flag per member comes to the host."""
    def bad(x):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.zeros(x.shape[:1] if members is not None else (), bool)
        x = x.reshape((x.shape[0], -1) if members is not None else (-1,))
        return ~jnp.all(jnp.isfinite(x), axis=-1)
    flags = [to_host(bad(x)) for x in jax.tree.leaves((params, loss))]  # (all processes)
    if members is None:
        return bool(np.any(flags))
    any_bad = np.any(np.stack(flags), axis=0)[:members]
    return [int(i) for i in np.flatnonzero(any_bad)]


def kill_point(point: str, chunk: int) -> None:
    """The kill tests' hook (KILL_ENV): SIGKILL this process at `point` of `chunk`."""
    want = os.environ.get(KILL_ENV)
    if not want:
        return
    name, _, at = want.partition(":")
    if name == point and (not at or int(at) == chunk):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _sigint_deferred():
    """Within the block, the first Ctrl-C only sets `flag["stop"]` (the loop stops at its
    next check, never between a checkpoint and its log row); a second one aborts at once."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        flag["stop"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nCtrl-C: stopping after this chunk is saved (again to abort)",
              flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def chunk_loop(train_chunk: Callable, rs, *, num_chunks: int, chunks_done: Callable[[Any], int],
               run_dir: str, save: Callable[[Any, list[dict]], None],
               rows: Callable[[Any, dict, float], list[dict]],
               progress: Callable[[list[dict]], str], header: str, writer: bool = True,
               save_policy: Callable[[Any], None] | None = None,
               restored_rows: list[dict] | None = None,
               checkpoint_every: int = 1,
               diverged: Callable[[Any, dict], str | None] | None = None) -> tuple[Any, bool]:
    """Run `train_chunk` until `chunks_done(rs) == num_chunks`; returns `(rs, interrupted)`.

    Before, where `rs` is a checkpoint's (chunks done > 0; `restored_rows` its rows):
    metrics.jsonl is rebuilt to match it (`repair_log`) and `save_policy(rs)` writes what
    the run writes from a committed state (a single run's policy file) from it; then `header` is printed. After each chunk: `rows(rs, metrics
    on the host, seconds)`, `save(rs, rows)` (the checkpoint holding the rows:
    `damdjax.runner.save_checkpoint`; the commit point), `save_policy(rs)`, the rows
    appended to metrics.jsonl and `progress(rows)` printed. With `checkpoint_every` K > 1,
    `save` and `save_policy` run only after every K-th chunk, the last one and the one
    Ctrl-C stops at (a big sweep's checkpoint can take longer to write than a chunk to
    run); the rows of the chunks between are logged all the same, and a resume from the
    checkpoint drops them and runs those chunks again (the same values: a chunk is a
    function of the checkpoint). Ctrl-C stops the loop once the current chunk is fully
    recorded and returns it with `interrupted=True` (a second Ctrl-C aborts at once; the
    checkpoint is still a complete chunk, being written atomically).
    With `writer` False (a process other than the first of a multi-host run) the loop
    writes no log; `save` and `save_policy` are called on every process (they may gather)
    and write only where they should. `diverged(rs, metrics)`, where given, names what is
    no longer finite (None: all is): the loop then raises `RunStopped` before recording
    the chunk, as it does where recording fails with an OSError or ValueError; the
    checkpoint keeps the last chunk committed before.
    """
    paths = run_paths(run_dir)
    start = chunks_done(rs)
    committed = {"chunk": start}
    if start > 0:
        if writer:
            repair_log(paths["metrics"], start, restored_rows)
        if save_policy is not None:
            save_policy(rs)
    print(header, flush=True)
    with _sigint_deferred() as flag:
        while chunks_done(rs) < num_chunks and not flag["stop"]:
            t0 = time.perf_counter()
            rs, m = train_chunk(rs)
            m = to_host(m)
            dt = time.perf_counter() - t0
            new_rows = rows(rs, m, dt)
            done = chunks_done(rs)
            kill_point("after-chunk", done)
            bad = diverged(rs, m) if diverged is not None else None
            if bad:
                raise RunStopped(
                    f"chunk {done}: {bad} no longer finite (NaN or inf): training diverged; "
                    f"stopped before recording it. {_kept(paths, committed)} Start again "
                    "with a smaller --lr or --max-grad-norm")
            try:
                _record(rs, new_rows, done, num_chunks, checkpoint_every, flag, committed,
                        run_dir, paths, save, save_policy, writer)
            except (OSError, ValueError) as err:
                raise RunStopped(f"chunk {done}: cannot record it: {err}. "
                                 f"{_kept(paths, committed)}") from None
            print(progress(new_rows), flush=True)
    if flag["stop"]:
        print(f"interrupted: {paths['checkpoint']} holds chunk {chunks_done(rs)}; "
              f"continue with --resume", flush=True)
    return rs, flag["stop"]


def _record(rs, new_rows, done, num_chunks, checkpoint_every, flag, committed, run_dir,
            paths, save, save_policy, writer) -> None:
    """The chunk's checkpoint (where due; the commit point), policy file and rows."""
    if done % checkpoint_every == 0 or done >= num_chunks or flag["stop"]:
        save(rs, new_rows)
        committed["chunk"] = done
        kill_point("after-checkpoint", done)
        if writer:
            settle(run_dir)
        if save_policy is not None:
            save_policy(rs)
        kill_point("after-policy", done)
    if writer:
        append_rows(paths["metrics"], new_rows)
    kill_point("after-metrics", done)


def _kept(paths: dict, committed: dict) -> str:
    """What the run directory keeps: the last committed chunk's checkpoint, or nothing."""
    if committed["chunk"] == 0:
        return "No checkpoint was written."
    return f"{paths['checkpoint']} keeps chunk {committed['chunk']}."
