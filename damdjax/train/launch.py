"""Several processes of one --distributed command on this machine: the multi-process path
of train.sweep tried without a cluster.

    python -m train.launch --num-processes 2 -- python -m train.sweep --distributed --seeds 2 ...
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m train.launch \\
        --num-processes 2 -- python -m train.sweep --distributed ...    # 2 x 2 CPU devices

Runs COMMAND --num-processes times, child i with JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT
(--port, else a free port: one the system gives for port 0), DAMDJAX_NUM_PROCESSES=N and
DAMDJAX_PROCESS_ID=i in its environment (what --distributed reads where its flags do not
say: damdjax.distributed), its stdout and stderr forwarded line by line to this process's
with the prefix "[i] ". When a child exits with a non-zero code, one line names it and
the others are ended (SIGTERM, SIGKILL after --grace seconds); the launcher then exits
with that child's code (128 + the signal's number for a child killed by a signal). Ctrl-C
ends every child the same way (exit 130); the run's checkpoint keeps its last committed
chunk (--resume continues it). Exit 0 when every child exits 0.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from damdjax.distributed import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID

POLL = 0.05   # seconds between looks at the children


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (the system's pick for port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def child_env(environ: dict, coordinator: str, count: int, index: int) -> dict:
    """`environ` plus the variables that place child `index` among `count` processes."""
    return {**environ, ENV_COORDINATOR: coordinator, ENV_NUM_PROCESSES: str(count),
            ENV_PROCESS_ID: str(index)}


def exit_code(returncode: int) -> int:
    """A shell's exit code of a child's `returncode` (a signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def _described(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def _forward(stream, out, prefix: str, lock: threading.Lock) -> None:
    """Each line of `stream` written to `out` after `prefix` (whole lines, one at a time)."""
    for line in iter(stream.readline, b""):
        with lock:
            out.buffer.write(prefix.encode() + line)
            out.flush()
    stream.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-processes", type=int, required=True, metavar="N",
                   help="how many processes to start (>= 1)")
    p.add_argument("--port", type=int, default=None,
                   help="the coordinator's port on 127.0.0.1 (default: a free one)")
    p.add_argument("--grace", type=float, default=5.0, metavar="S",
                   help="seconds between SIGTERM and SIGKILL when ending the children "
                        "(default %(default)s)")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- then the command each process runs (it takes --distributed)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.num_processes < 1:
        p.error(f"--num-processes must be >= 1, got {args.num_processes}")
    if args.port is not None and not 0 < args.port < 65536:
        p.error(f"--port must be in 1..65535, got {args.port}")
    if args.grace < 0:
        p.error(f"--grace must be >= 0 seconds, got {args.grace}")
    if not command:
        p.error("no command: give it after --, e.g. -- python -m train.sweep --distributed ...")
    if "--distributed" not in command:
        p.error(f"the command must take --distributed (without it each process would run "
                f"alone): {' '.join(command)[:200]}")
    coordinator = f"127.0.0.1:{args.port or free_port()}"
    return run(command, args.num_processes, coordinator, args.grace)


def run(command: list[str], count: int, coordinator: str, grace: float) -> int:
    """`command` as `count` processes joined at `coordinator` (see the module's text);
    the launcher's exit code."""
    lock = threading.Lock()
    children, threads = [], []
    for i in range(count):
        child = subprocess.Popen(command, env=child_env(os.environ, coordinator, count, i),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True)
        children.append(child)
        for stream, out in ((child.stdout, sys.stdout), (child.stderr, sys.stderr)):
            t = threading.Thread(target=_forward, args=(stream, out, f"[{i}] ", lock),
                                 daemon=True)
            t.start()
            threads.append(t)
    print(f"launch: {count} processes of {' '.join(command)[:200]} (coordinator "
          f"{coordinator})", file=sys.stderr, flush=True)
    code = 0
    try:
        while [c.poll() for c in children].count(None):   # (polls every child)
            failed = [(i, c.returncode) for i, c in enumerate(children)
                      if c.returncode not in (None, 0)]
            if failed:
                i, rc = failed[0]
                print(f"launch: process {i} {_described(rc)}; ending the others",
                      file=sys.stderr, flush=True)
                code = exit_code(rc)
                break
            time.sleep(POLL)
    except KeyboardInterrupt:
        print("launch: Ctrl-C; ending every process", file=sys.stderr, flush=True)
        code = 130
    _end(children, grace)
    for t in threads:
        t.join()
    if code == 0:
        bad = [(i, c.returncode) for i, c in enumerate(children) if c.returncode != 0]
        if bad:
            i, rc = bad[0]
            print(f"launch: process {i} {_described(rc)}", file=sys.stderr, flush=True)
            code = exit_code(rc)
    return code


def _end(children: list[subprocess.Popen], grace: float) -> None:
    """Every child still running ended: SIGTERM to its session, SIGKILL after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        running = [c for c in children if c.poll() is None]
        for c in running:
            try:
                os.killpg(c.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (wait or 0)
        for c in running:
            try:
                c.wait(timeout=None if wait is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


if __name__ == "__main__":
    sys.exit(main())
