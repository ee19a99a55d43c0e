"""One command over many processes (JAX's multi-controller runtime): who they are, how
they start, agree, share what process 0 read, and how they end when one of them fails.

    cluster = cluster_of(args)                    # None: one process, as without flags
    session = start(cluster)                      # jax.distributed.initialize + watchdog
    session.agree("flags", text)                  # every process ran the same command
    data = session.share("config", data)          # process 0's bytes on every process
    value = from_0(session, "plan", fn)           # fn() on process 0, its JSON everywhere
    code = run(session, body)                     # body() under `guard`, then `close`

Who: `--coordinator HOST:PORT --num-processes N --process-id I`, or the environment
(JAX_COORDINATOR_ADDRESS, DAMDJAX_NUM_PROCESSES, DAMDJAX_PROCESS_ID: what
`python -m train.launch` sets), or, with neither, JAX's cluster detection (SLURM,
Open MPI: `jax.distributed.initialize()` reads their variables). On CPU the
collectives go through gloo (TCP); every process then sees the devices of all
(`jax.devices()`), its own in `jax.local_devices()`. `start` must run before anything
starts a JAX backend (importing damdjax's trainers does): a command's entry point
calls `start_from_argv` first.

Failures. Joining: a timer ends a process that has not joined within `timeout`
seconds with one line naming the coordinator (JAX's own timeout, later, would abort
with a stack trace). Running: a watchdog thread in each process bumps its own counter
in the coordinator's key-value store every `timeout / 10` seconds and reads the
others'; a process whose counter has not moved for `timeout` seconds (killed, hung,
its host gone) or that ended with an error, or a coordinator unreachable for `timeout`
seconds, ends this one with one line on stderr naming the process and the
coordinator, exit code 1 (`os._exit`: no wait on collectives or on JAX's shutdown
barrier). JAX's own heartbeat (which aborts with a stack trace) is set to twice that
plus 10 s, so the watchdog speaks first. A collective that fails in the main thread
(gloo: at once, when a peer's connection closes) waits for the watchdog to name the
process, at most `timeout` seconds. Where process 0 itself dies, the service it hosts
goes with it, and JAX's client in every other process would abort at once with its
own message (several lines: its error poll fails as soon as the connection closes,
whatever the heartbeat timeout; JAX 0.10 gives Python no usable hook there). So the
other processes reach the coordinator through a relay of their own (`_Relay`): a
local port whose connections a thread forwards to process 0; when process 0's end
closes one, that thread prints the one line and calls `os._exit(1)` before JAX's
client sees anything (an error of the main thread there, such as a collective failing
with the same loss, waits a second for it). A normal end never trips it: each process
stops watching at exit before JAX's shutdown barrier, and process 0 can only leave
that barrier after every process has reached it.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import sys
import threading
import time
import traceback
from typing import Callable

import jax

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"    # also read by jax.distributed.initialize
ENV_NUM_PROCESSES = "DAMDJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "DAMDJAX_PROCESS_ID"
DEFAULT_TIMEOUT = 120                          # seconds
PIECE = 1 << 20                                # bytes per key-value entry of `share`
_PREFIX = "damdjax/"


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The processes of one run: the coordinator's `HOST:PORT`, their count and this
    one's id (all three None: JAX's cluster detection), and `timeout` in seconds (to
    join, and to notice a lost process)."""

    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    timeout: int


def add_flags(parser) -> None:
    """--distributed and the flags that place this process among the others."""
    a = parser.add_argument
    a("--distributed", action="store_true",
      help="run as one process of several (jax.distributed.initialize): the member axis spans "
           "every process's devices; the processes from --coordinator, --num-processes, "
           "--process-id, else $JAX_COORDINATOR_ADDRESS, $DAMDJAX_NUM_PROCESSES, "
           "$DAMDJAX_PROCESS_ID (python -m train.launch sets them), else a cluster's (SLURM, "
           "Open MPI); see docs/distributed.md")
    a("--coordinator", metavar="HOST:PORT",
      help="--distributed: process 0's address and a free port there (every process the same)")
    a("--num-processes", type=int, metavar="N", help="--distributed: how many processes")
    a("--process-id", type=int, metavar="I", help="--distributed: this process's id, 0..N-1")
    a("--distributed-timeout", type=int, default=DEFAULT_TIMEOUT, metavar="S",
      help="--distributed: seconds to wait for every process to join, and after which a "
           "process that stopped responding ends the others (default %(default)s)")


# The flags of `add_flags` that differ between the processes of one run.
PROCESS_FLAGS = ("process_id",)
FLAGS = ("distributed", "coordinator", "num_processes", "process_id", "distributed_timeout")


def _env_int(name: str, environ) -> int | None:
    value = environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} {value!r} is not an integer") from None


def cluster_of(args, environ=os.environ) -> Cluster | None:
    """The `Cluster` of parsed flags (`add_flags`), each missing value from `environ`;
    None without --distributed. ValueError (one line naming the value) for a flag given
    without --distributed, a bad HOST:PORT, count or id, or only some of the three."""
    given = [f for f in ("coordinator", "num_processes", "process_id")
             if getattr(args, f) is not None]
    if not args.distributed:
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} needs --distributed")
        return None
    if args.distributed_timeout < 1:
        raise ValueError(f"--distributed-timeout must be >= 1 second, got "
                         f"{args.distributed_timeout}")
    coordinator = args.coordinator or environ.get(ENV_COORDINATOR)
    n = args.num_processes if args.num_processes is not None else _env_int(
        ENV_NUM_PROCESSES, environ)
    i = args.process_id if args.process_id is not None else _env_int(ENV_PROCESS_ID, environ)
    values = {"--coordinator": coordinator, "--num-processes": n, "--process-id": i}
    if all(v is None for v in values.values()):
        return Cluster(None, None, None, args.distributed_timeout)   # the cluster's own
    missing = [k for k, v in values.items() if v is None]
    if missing and not (coordinator is not None and n is None and i is None):
        raise ValueError(f"--distributed: {', '.join(missing)} missing (give all three, or "
                         f"none for a SLURM or Open MPI job's own)")
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--coordinator {coordinator!r} is not HOST:PORT (a port "
                             f"1..65535)")
    if n is not None and n < 1:
        raise ValueError(f"--num-processes must be >= 1, got {n}")
    if i is not None and n is not None and not 0 <= i < n:
        raise ValueError(f"--process-id must be in 0..{n - 1} (--num-processes {n}), got {i}")
    return Cluster(coordinator, n, i, args.distributed_timeout)


def flags_text(args) -> str:
    """The parsed flags that every process of one run must share, as text (their
    `repr`s, sorted by name; `PROCESS_FLAGS` left out): what `Session.agree` compares."""
    return "\n".join(f"{k}={v!r}" for k, v in sorted(vars(args).items())
                     if k not in PROCESS_FLAGS)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _say(line: str) -> None:
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)


_SESSION: list = []   # the session `start` made in this process (at most one)


def start(cluster: Cluster) -> "Session":
    """`jax.distributed.initialize` for `cluster`, then the watchdog; the session. It has
    to run before anything starts a JAX backend (importing damdjax's trainers does:
    `start_from_argv`). A process that cannot join within `cluster.timeout` seconds (a
    process that never starts, a wrong address) ends with one line naming the
    coordinator, exit 1."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_preemption_service", False)   # (unused: no poller)
    me = "" if cluster.process_id is None else f"process {cluster.process_id}: "
    line = (f"error: {me}could not join the {cluster.num_processes or ''} processes at the "
            f"coordinator {cluster.coordinator or 'of the cluster environment'} within "
            f"{cluster.timeout} s (--distributed-timeout)")
    # JAX aborts with a stack trace where its own timeout passes first (a process whose
    # coordinator never answers): this timer speaks at `timeout`, JAX's is later.
    joined = threading.Event()
    timer = threading.Thread(target=lambda: joined.wait(cluster.timeout) or (
        _say(f"{line}: not every process started, or a wrong address"), os._exit(1)),
        name="damdjax-join", daemon=True)
    timer.start()
    coordinator, n, i = cluster.coordinator, cluster.num_processes, cluster.process_id
    relay = None
    try:
        if None in (coordinator, n, i):   # what jax.distributed.initialize would detect
            detect = jax._src.clusters.ClusterEnv.auto_detect_unset_distributed_params
            coordinator, n, i, _ = detect(coordinator, n, i, None, None, cluster.timeout + 10)
        if coordinator is not None and i not in (None, 0):
            relay = _Relay(coordinator)
        jax.distributed.initialize(
            relay.address if relay else coordinator, n, i,
            initialization_timeout=cluster.timeout + 10,
            heartbeat_timeout_seconds=2 * cluster.timeout + 10,
            shutdown_timeout_seconds=cluster.timeout)
    except Exception as err:   # JaxRuntimeError, ValueError of cluster detection, ...
        _say(f"{line}: {_first_line(err)}")
        os._exit(1)
    joined.set()
    session = Session(jax.process_index(), jax.process_count(), coordinator, cluster.timeout)
    session.start_watchdog()
    if relay is not None:
        relay.on_loss, session.watches_0 = session.lost_0, True
        atexit.register(setattr, relay, "on_loss", None)   # runs before JAX's shutdown
    _SESSION.append(session)
    return session


def start_from_argv(argv: list[str]) -> "Session | None":
    """`start` for the distributed flags among `argv` (a command's whole argument list:
    the others are left to the command's parser, as are flags it will refuse); None
    without --distributed. What a command's entry point calls before importing what
    starts JAX's backend."""
    p = argparse.ArgumentParser(add_help=False)
    add_flags(p)
    try:
        cluster = cluster_of(p.parse_known_args(argv)[0])
    except (SystemExit, ValueError):   # the command's parser says it, in its words
        return None
    return None if cluster is None else start(cluster)


def current() -> "Session | None":
    """The session `start` made in this process, if any."""
    return _SESSION[0] if _SESSION else None


def session_of(parser, args, command: str) -> "Session | None":
    """The session of a command's parsed flags (`add_flags`): None without --distributed,
    else the one `start_from_argv` made; `parser.error` (one line, exit 2) for bad
    distributed flags or where JAX started before it could join (`command`: what to run)."""
    try:
        cluster = cluster_of(args)
    except ValueError as err:
        parser.error(str(err))
    if cluster is None:
        return None
    if current() is None:
        parser.error(f"--distributed: JAX started before it could join the other processes: "
                     f"run python -m {command}, with the distributed flags spelled in full")
    return current()


def from_0(session: "Session | None", name: str, fn: Callable[[], object]):
    """`fn()` run by process 0 (or the only process) and its value, JSON, on every process.
    Where `fn` refuses (SystemExit), every process ends with its exit code, the line printed
    by process 0."""
    if session is None:
        return fn()
    if session.index == 0:
        try:
            value = fn()
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else int(err.code is not None)
            session.share(name, json.dumps({"refused": code}).encode())
            raise
        session.share(name, json.dumps({"value": value}).encode())
        return value
    got = json.loads(session.share(name, None))
    if "refused" in got:
        print("error: process 0 refused the run (its own line says why)", file=sys.stderr,
              flush=True)
        raise SystemExit(got["refused"])
    return got["value"]


@dataclasses.dataclass
class Session:
    """This process among `count` (`index` 0 is the coordinator's and the writer), joined
    to `coordinator`; `timeout` seconds: see the module's text. `hint`: what a failure's
    line ends with (set by the caller: where the run's checkpoint is)."""

    index: int
    count: int
    coordinator: str
    timeout: int
    hint: str = ""

    def __post_init__(self):
        self._stop = threading.Event()
        self._failing = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._last_ok = time.monotonic()
        self._said = False
        self.watches_0 = False   # through a `_Relay`: set by `start`

    def lost_0(self) -> None:
        """End this process now (not process 0): process 0's connection closed. One line,
        as `fail`'s (none where `fail` has printed one), exit 1; the coordinator gone,
        nothing is sent to it."""
        if self._failing.acquire(timeout=1) and not self._said:   # (held: the process ends)
            self._said = True
            _say(self.line("lost process 0, which runs the coordinator (its connection "
                           "closed: killed, crashed or its host lost)")
                 + (f"; {self.hint}" if self.hint else ""))
        os._exit(1)

    @property
    def client(self):
        return jax._src.distributed.global_state.client

    def _key(self, *parts) -> str:
        return _PREFIX + "/".join(map(str, parts))

    def line(self, why: str) -> str:
        """An error line: `why`, then which process this is and the coordinator."""
        return (f"error: {why} (process {self.index} of {self.count}, coordinator "
                f"{self.coordinator})")

    def fail(self, why: str) -> None:
        """End this process now with one line on stderr: `why`, which process this is, the
        coordinator, and `hint`. No return."""
        with self._failing:
            self._said = True
            _say(self.line(why) + (f"; {self.hint}" if self.hint else ""))
            with contextlib.suppress(Exception):
                self.client.key_value_set(self._key("exit", self.index), "1", True)
            os._exit(1)

    # -- the watchdog --------------------------------------------------------------

    def start_watchdog(self) -> None:
        """The beat thread (this process's counter, the others' read) and the monitor
        thread (ends the process when a peer or the coordinator is lost)."""
        period = max(0.2, self.timeout / 10)
        seen = {j: (None, time.monotonic()) for j in range(self.count) if j != self.index}
        ended: dict[int, int] = {}

        def beat():
            n = 0
            while not self._stop.wait(period):
                n += 1
                try:
                    self.client.key_value_set(self._key("beat", self.index), str(n), True)
                    for j in list(seen):
                        if j in ended:
                            continue
                        code = _try_get(self.client, self._key("exit", j))
                        if code is not None:
                            ended[j] = int(code)
                            continue
                        if _try_get(self.client, self._key("done", j)) is not None:
                            ended[j] = 0   # at `close`: waits for the others there
                            continue
                        value = _try_get(self.client, self._key("beat", j))
                        if value != seen[j][0]:
                            seen[j] = (value, time.monotonic())
                    self._last_ok = time.monotonic()
                except Exception:   # the coordinator unreachable: the monitor decides
                    continue

        def monitor():
            while not self._stop.wait(period):
                now = time.monotonic()
                for j, code in list(ended.items()):
                    if code != 0:
                        self.fail(f"process {j} ended with exit code {code}")
                if self.index != 0 and now - self._last_ok > self.timeout:
                    self.fail(f"lost the coordinator (process 0): unreachable for "
                              f"{self.timeout} s")
                for j, (_, since) in list(seen.items()):
                    if j not in ended and now - since > self.timeout:
                        self.fail(f"process {j} stopped responding (no heartbeat for "
                                  f"{self.timeout} s: killed, hung or its host lost)")

        for fn in (beat, monitor):
            t = threading.Thread(target=fn, name=f"damdjax-{fn.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def _stop_watchdog(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    # -- agreeing and sharing ------------------------------------------------------

    def agree(self, name: str, text: str) -> None:
        """Every process's `text` the same as process 0's, else every process prints one
        line naming the processes that differ and exits 2 (SystemExit: they end together
        at `close`). Compared by sha256 through the coordinator's key-value store:
        process 0 reads every digest and posts the verdict, the others read it."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        self.client.key_value_set(self._key("agree", name, self.index), digest)
        wait = self.timeout * 1000
        if self.index == 0:
            differ = [j for j in range(1, self.count) if self.client.blocking_key_value_get(
                self._key("agree", name, j), wait) != digest]
            self.client.key_value_set(self._key("agree", name, "verdict"),
                                      ",".join(map(str, differ)))
        else:
            verdict = self.client.blocking_key_value_get(self._key("agree", name, "verdict"),
                                                         wait)
            differ = [int(j) for j in verdict.split(",") if j]
        if differ:
            who = ", ".join(map(str, differ))
            _say(self.line(f"the {name} of process{'es' if len(differ) > 1 else ''} {who} "
                           f"differ from process 0's: every process must run the same "
                           f"command"))
            raise SystemExit(2)

    def share(self, name: str, data: bytes | None) -> bytes:
        """Process 0's `data` on every process (the others pass None), through the
        coordinator's key-value store in pieces of PIECE bytes. The others wait for it as
        long as process 0 runs (it may compute first; the watchdog ends them when it is
        lost), and end with one line where it ends without sending it."""
        wait = self.timeout * 1000
        if self.index == 0:
            pieces = [data[i:i + PIECE] for i in range(0, len(data), PIECE)] or [b""]
            for k, piece in enumerate(pieces):
                self.client.key_value_set_bytes(self._key("share", name, k), piece)
            self.client.key_value_set(self._key("share", name, "n"), str(len(pieces)))
            return data
        n = int(self._patient_get(self._key("share", name, "n"), wait, name))
        return b"".join(self.client.blocking_key_value_get_bytes(
            self._key("share", name, k), wait) for k in range(n))

    def _patient_get(self, key: str, wait_ms: int, what: str) -> str:
        """The value at `key` once process 0 sets it, asked for in spans of `wait_ms`."""
        while True:
            try:
                return self.client.blocking_key_value_get(key, wait_ms)
            except jax.errors.JaxRuntimeError as err:
                if "DEADLINE_EXCEEDED" not in str(err):
                    raise
            if _try_get(self.client, self._key("done", 0)) is not None:
                self.fail(f"process 0 ended without sending {what!r}")

    # -- the run's span --------------------------------------------------------------

    @contextlib.contextmanager
    def guard(self):
        """The block that runs collectives: a failure in it (a collective whose peer is
        gone, any error of this process) ends this process with one line, exit 1; first,
        at most `timeout` seconds for the watchdog to name a lost peer. SystemExit passes
        (every process exits together through `close`)."""
        try:
            yield
        except (SystemExit, KeyboardInterrupt):
            raise
        except jax.errors.JaxRuntimeError as err:
            deadline = time.monotonic() + self.timeout + 2 * max(0.2, self.timeout / 10)
            while time.monotonic() < deadline:   # the watchdog ends the process first
                time.sleep(0.1)
            self.fail(f"a collective failed: {_first_line(err)}")
        except Exception as err:
            if self.watches_0:   # process 0 lost (a collective's peer too): the relay speaks
                time.sleep(1)
            traceback.print_exc()
            self.fail(f"this process stopped: {_first_line(err)}")

    def close(self, code: int) -> int:
        """The end of the run on every process: the watchdog stopped, then every process
        waits for the others (at most `timeout` seconds; a process lost there ends this
        one with one line). Returns `code`."""
        self.client.key_value_set(self._key("done", self.index), str(code), True)
        self._stop_watchdog()
        try:
            self.client.wait_at_barrier(self._key("end"), self.timeout * 1000)
        except Exception as err:
            self.fail(f"not every process reached the end within {self.timeout} s "
                      f"({_first_line(err)})")
        return code


class _Relay:
    """A local port (`address`) whose connections are forwarded to `coordinator`: what
    JAX's client of a process other than 0 connects to. Where process 0's side of one
    closes, `on_loss()` runs (when set) before the client's side is closed."""

    def __init__(self, coordinator: str):
        host, _, port = coordinator.rpartition(":")
        self._upstream = (host.strip("[]"), int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.on_loss: Callable[[], None] | None = None
        threading.Thread(target=self._accept, name="damdjax-relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            try:
                peer = socket.create_connection(self._upstream, timeout=10)
            except OSError:   # not listening yet: the client tries again
                client.close()
                continue
            peer.settimeout(None)
            for s in (client, peer):   # as gRPC's own sockets: small messages at once
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            closed = threading.Event()   # set where this side closed it
            for src, dst, from_0 in ((client, peer, False), (peer, client, True)):
                threading.Thread(target=self._pump, args=(src, dst, from_0, closed),
                                 name="damdjax-relay", daemon=True).start()

    def _pump(self, src, dst, from_0: bool, closed: threading.Event) -> None:
        """Bytes from `src` to `dst` until one closes; process 0's side closing (its
        end, or a send to it failing) calls `on_loss`, unless this side closed first."""
        lost = False
        try:
            while data := src.recv(1 << 16):
                try:
                    dst.sendall(data)
                except OSError:
                    lost = not from_0
                    break
            else:
                lost = from_0
        except OSError:
            lost = from_0
        on_loss = self.on_loss
        if lost and on_loss is not None and not closed.is_set():
            on_loss()
        closed.set()
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def _try_get(client, key: str) -> str | None:
    """The value at `key`, None where it is not set (any other error raises)."""
    try:
        return client.key_value_try_get(key)
    except Exception as err:
        if "NOT_FOUND" in str(err) or "not found" in str(err).lower():
            return None
        raise


def run(session: Session, body: Callable[[], int]) -> int:
    """`body()` under `session.guard()`, its exit code (a SystemExit's too) agreed at
    `session.close`."""
    try:
        with session.guard():
            code = body()
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        if not isinstance(err.code, (int, type(None))):
            _say(str(err.code))
    return session.close(code)
