"""The relaxed optimum of one instance by OR-Tools' CP-SAT: a yardstick, not a policy.

The relaxation (clairvoyant and offline; docs/optimal.md):
- the whole instance is known in advance;
- no memory limits and no queue limits;
- every task is dispatched at its job's arrival to a server the solver picks, so its
  upload reaches server `n` at `up[i, n] = (arrival[i] + k[n]) + size[i] / bw[n]`;
- each server runs one task at a time, non-preemptive, in any order;
- a task starts no earlier than its upload and than every predecessor's result at its
  server (`finish[p]` on the same server, else `(finish[p] + k[m]) + k[n]`);
- `done[i] = finish[i] + k[n]`; the objective is the mean over real tasks of
  `done[i] - arrival[i]` (the average response time).
Every schedule an online method plays in the environment is feasible here (it
dispatches later, under limits), so the relaxed optimum, and every valid lower bound
on it, lies below every method's average response time on that instance.

CP-SAT needs integers: every time (`up`, `work / cpu`, `k`) becomes a whole number of
ticks of `resolution` time units, rounded in one direction for the whole model:
- `rounding="down"` (the default): each float-feasible schedule, its starts floored, is
  feasible for the integer model and costs no more there, so the solver's proven bound
  (ticks times `resolution`) is a valid lower bound on the relaxed optimum as it is;
- `rounding="up"`: each integer-feasible schedule is float-feasible and its float replay
  costs no more than the solver claims; the lower bound is then the solver's less
  `(3 N + 2) * resolution` (N real tasks), the most rounding can add to one task's done
  time along a chain of N tasks (each task: its duration, two relay delays; the upload
  and the last return delay).
Either way the reported objective is the float replay (`replay`) of the solver's
best schedule: the average response time of a schedule that is feasible in floats. It is
at most the solver's claim plus that slack (rounded up: at most the claim); within the
slack of the claim where the schedule is proven optimal (a merely feasible one may hold
idle time that the replay removes).

Tasks and servers here are the real ones only, renumbered in index order (as
`damdjax.envs.instance.to_reference_input` gives them).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Mapping, Sequence

import numpy as np

EXTRA = "pip install 'damdjax[optimal]'"
ROUNDINGS = ("down", "up")
STATUSES = ("OPTIMAL", "FEASIBLE", "UNKNOWN", "INFEASIBLE", "MODEL_INVALID")


class MissingExtraError(RuntimeError):
    """OR-Tools is not installed (the `optimal` extra)."""


def cp_model():
    """OR-Tools' `cp_model` module; MissingExtraError naming the extra where absent."""
    try:
        from ortools.sat.python import cp_model as module
    except ImportError:
        raise MissingExtraError(f"the CP-SAT solver needs OR-Tools: {EXTRA}") from None
    return module


def _finite(name: str, values, low: float | None = None, strict: bool = False) -> None:
    for j, v in enumerate(values):
        if not math.isfinite(v) or (low is not None and (v <= low if strict else v < low)):
            bound = "" if low is None else f" {'>' if strict else '>='} {low}"
            raise ValueError(f"{name}[{j}] must be a finite number{bound}, got {v}")


@dataclasses.dataclass(frozen=True)
class Problem:
    """The relaxation's data (float64, real servers and tasks only).

    Servers [M]: `cpu` work/time, `bw` data/time, `k` time. Tasks [N]: `size` data,
    `work` work, `arrival` time, `preds` each task's predecessors (indices below it).
    """

    cpu: tuple[float, ...]
    bw: tuple[float, ...]
    k: tuple[float, ...]
    size: tuple[float, ...]
    work: tuple[float, ...]
    arrival: tuple[float, ...]
    preds: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        if not self.cpu:
            raise ValueError("a problem needs at least one server, got none")
        if not self.size:
            raise ValueError("a problem needs at least one task, got none")
        for name, values in (("bw", self.bw), ("k", self.k)):
            if len(values) != len(self.cpu):
                raise ValueError(f"{name} has {len(values)} servers, cpu {len(self.cpu)}")
        for name, values in (("work", self.work), ("arrival", self.arrival),
                             ("preds", self.preds)):
            if len(values) != len(self.size):
                raise ValueError(f"{name} has {len(values)} tasks, size {len(self.size)}")
        for name in ("cpu", "bw", "k"):
            _finite(name, getattr(self, name), 0.0, strict=True)
        for name in ("size", "work"):
            _finite(name, getattr(self, name), 0.0)
        _finite("arrival", self.arrival)
        for i, ps in enumerate(self.preds):
            for p in ps:
                if not 0 <= p < i:
                    raise ValueError(f"task {i}'s predecessor {p} is not an earlier task")

    @property
    def num_tasks(self) -> int:
        return len(self.size)

    @property
    def num_servers(self) -> int:
        return len(self.cpu)

    @classmethod
    def from_reference(cls, servers: Sequence[Mapping], tasks: Sequence[Mapping]) -> "Problem":
        """From `damdjax.envs.reference.simulate`'s inputs (memory and deadlines unused)."""
        s = lambda key: tuple(float(x[key]) for x in servers)  # noqa: E731
        t = lambda key: tuple(float(x.get(key, x["size"])) for x in tasks)  # noqa: E731
        return cls(cpu=s("cpu"), bw=s("bw"), k=s("k"), size=t("size"), work=t("work"),
                   arrival=t("arrival"),
                   preds=tuple(tuple(int(p) for p in x["preds"]) for x in tasks))

    @classmethod
    def from_instance(cls, instance) -> "Problem":
        """From one `damdjax.envs.instance.Instance` (unbatched): its real servers and
        tasks, the values exactly as stored (float32 instances widen exactly)."""
        from damdjax.envs.instance import instance_to_arrays, to_reference_input

        arrays = {name: np.asarray(a)[None] for name, a in instance_to_arrays(instance).items()}
        return cls.from_reference(*to_reference_input(arrays, 0))

    def upload(self, i: int, n: int) -> float:
        """When task `i`'s upload reaches server `n`, dispatched at its arrival (time)."""
        return (self.arrival[i] + self.k[n]) + self.size[i] / self.bw[n]

    def duration(self, i: int, n: int) -> float:
        """Task `i`'s processing time on server `n` (time)."""
        return self.work[i] / self.cpu[n]


@dataclasses.dataclass(frozen=True)
class Replay:
    """A semi-active schedule: per task [N] `start`, `finish`, `done` (time), and
    `avg_response` the mean of `done - arrival` (time)."""

    start: tuple[float, ...]
    finish: tuple[float, ...]
    done: tuple[float, ...]
    avg_response: float


def _semi_active(preds, upload, duration, k, server, order):
    """Starts and finishes [N] of the assignment `server` [N] and the per-server `order`,
    each task as early as its upload, its inputs and its server's previous task allow;
    `upload(i, n)`, `duration(i, n)` and `k` [M] in any one number type."""
    n_tasks = len(server)
    start, finish = [None] * n_tasks, [None] * n_tasks
    head = [0] * len(order)
    left = n_tasks
    while left:
        moved = False
        for n, queue in enumerate(order):
            while head[n] < len(queue) and all(finish[p] is not None for p in preds[queue[head[n]]]):
                i = queue[head[n]]
                t = upload(i, n)
                if head[n]:
                    t = max(t, finish[queue[head[n] - 1]])
                for p in preds[i]:
                    m = server[p]
                    t = max(t, finish[p] if m == n else (finish[p] + k[m]) + k[n])
                start[i], finish[i] = t, t + duration(i, n)
                head[n] += 1
                left -= 1
                moved = True
        if not moved:
            stuck = [q[h] for q, h in zip(order, head) if h < len(q)]
            raise ValueError(f"the server orders deadlock: tasks {stuck} each wait for a "
                             "predecessor queued behind another")
    return start, finish


def earliest(preds, upload, duration, k, num_servers: int) -> list[list]:
    """The contention-free earliest finish `[N][M]` of every task on every server (no
    other task in the way; each input from its best server): `f[i][n] = max(upload(i, n),
    inputs at n) + duration(i, n)`, in any one number type. A lower bound in every
    schedule of the relaxation (`damdjax.bound`'s, per server)."""
    f = []
    for i in range(len(preds)):
        row = []
        for n in range(num_servers):
            t = upload(i, n)
            for p in preds[i]:
                t = max(t, min(f[p][m] if m == n else (f[p][m] + k[m]) + k[n]
                               for m in range(num_servers)))
            row.append(t + duration(i, n))
        f.append(row)
    return f


def _check_schedule(problem: Problem, server: Sequence[int], order: Sequence[Sequence[int]]):
    if len(server) != problem.num_tasks:
        raise ValueError(f"server has {len(server)} entries, the problem {problem.num_tasks} tasks")
    if len(order) != problem.num_servers:
        raise ValueError(f"order has {len(order)} servers, the problem {problem.num_servers}")
    for i, n in enumerate(server):
        if not 0 <= n < problem.num_servers:
            raise ValueError(f"task {i}'s server {n} is not in [0, {problem.num_servers})")
    for n, queue in enumerate(order):
        if sorted(queue) != [i for i, s in enumerate(server) if s == n]:
            raise ValueError(f"order[{n}] = {list(queue)} is not the tasks on server {n}")


def replay(problem: Problem, server: Sequence[int], order: Sequence[Sequence[int]]) -> Replay:
    """The float64 semi-active schedule of a server per task [N] and an order per server
    [M lists of task indices]: each task starts at max(its upload, its inputs at its
    server, the finish of the task before it there). ValueError naming a bad schedule or
    a deadlocked order."""
    _check_schedule(problem, server, order)
    start, finish = _semi_active(problem.preds, problem.upload, problem.duration, problem.k,
                                 list(server), order)
    done = [f + problem.k[n] for f, n in zip(finish, server)]
    total = 0.0
    for d, a in zip(done, problem.arrival):  # left to right, as the reference simulator
        total += d - a
    return Replay(tuple(start), tuple(finish), tuple(done), total / problem.num_tasks)


def orders_of(server: Sequence[int], start: Sequence[float], finish: Sequence[float],
              num_servers: int) -> list[list[int]]:
    """Each server's tasks by (start, finish, index): a schedule's order per server."""
    order = [[] for _ in range(num_servers)]
    for i in sorted(range(len(server)), key=lambda i: (start[i], finish[i], i)):
        order[server[i]].append(i)
    return order


def greedy(problem: Problem) -> tuple[list[int], list[list[int]]]:
    """A quick schedule: tasks in index order, each appended to the server where its
    result would be back first (ties to the lowest server). `(server [N], order [M])`."""
    free = [-math.inf] * problem.num_servers
    server, finish = [], []
    order = [[] for _ in range(problem.num_servers)]
    for i in range(problem.num_tasks):
        best = None
        for n in range(problem.num_servers):
            t = max(problem.upload(i, n), free[n])
            for p in problem.preds[i]:
                m = server[p]
                t = max(t, finish[p] if m == n else (finish[p] + problem.k[m]) + problem.k[n])
            f = t + problem.duration(i, n)
            if best is None or f + problem.k[n] < best[0]:
                best = (f + problem.k[n], n, f)
        _, n, f = best
        server.append(n)
        finish.append(f)
        free[n] = f
        order[n].append(i)
    return server, order


def _per_unit(resolution: float) -> float:
    """Ticks per time unit: `1 / resolution`, a whole number where it is one to 1e-9
    (then tick counts convert to times with one correctly rounded division)."""
    per = 1.0 / resolution
    return float(round(per)) if abs(per - round(per)) <= 1e-9 * per else per


def _ticks(x: float, per: float, rounding: str) -> int:
    """`x` (time) in whole ticks (`per` to a time unit), rounded `down` or `up`, honest
    against float rounding: `q / per` lies on the stated side of `x`."""
    if rounding == "down":
        q = math.floor(x * per)
        while q / per > x:
            q -= 1
    else:
        q = math.ceil(x * per)
        while q / per < x:
            q += 1
    return int(q)


@dataclasses.dataclass(frozen=True)
class OptimalResult:
    """CP-SAT's answer on one problem (times in time units).

    `status`: CP-SAT's own name (OPTIMAL: the integer model is solved; FEASIBLE: a
    schedule, not proven best; UNKNOWN: the time ran out before any schedule;
    INFEASIBLE / MODEL_INVALID: never expected here). `objective`: the float replay's
    average response of the best schedule (NaN without one). `solver_objective`: what
    the solver claims for it from its rounded data. `solver_bound`: a valid lower bound
    on the relaxed optimum's average response (module docstring; NaN where CP-SAT gives
    none). `server`, `start` [N]: the best schedule (replayed starts; empty without one).
    """

    status: str
    objective: float
    solver_objective: float
    solver_bound: float
    wall_s: float
    server: tuple[int, ...]
    start: tuple[float, ...]
    num_workers: int
    time_limit: float
    resolution: float
    rounding: str
    seed: int

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        _check_settings(self.time_limit, self.num_workers, self.resolution, self.rounding,
                        self.seed)
        if len(self.server) != len(self.start):
            raise ValueError(f"server has {len(self.server)} entries, start {len(self.start)}")
        if bool(self.server) != self.has_schedule or bool(self.server) == math.isnan(self.objective):
            raise ValueError(f"status {self.status} with {len(self.server)} scheduled tasks "
                             f"and objective {self.objective}")

    @property
    def has_schedule(self) -> bool:
        return self.status in ("OPTIMAL", "FEASIBLE")


def _check_settings(time_limit, num_workers, resolution, rounding, seed) -> None:
    if not (isinstance(time_limit, (int, float)) and math.isfinite(time_limit) and time_limit > 0):
        raise ValueError(f"time_limit must be a finite number of seconds > 0, got {time_limit}")
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got {num_workers}")
    if not (isinstance(resolution, (int, float)) and math.isfinite(resolution) and resolution > 0):
        raise ValueError(f"resolution must be a finite number of time units > 0, got {resolution}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ValueError(f"seed must be an integer in [0, 2**31 - 1], got {seed}")


def rounding_slack(num_tasks: int, resolution: float) -> float:
    """`(3 N + 2) * resolution`: the most the rounding of times to ticks moves one task's
    done time, on either side (module docstring); per task, so also the average's."""
    return (3 * num_tasks + 2) * resolution


def solve(problem: Problem, time_limit: float = 10.0, num_workers: int = 1,
          resolution: float = 1e-3, rounding: str = "down", seed: int = 0,
          hint: bool = True) -> OptimalResult:
    """Minimize the relaxation's average response time with CP-SAT.

    One optional interval per (task, server) with a presence literal, exactly one
    server per task, NoOverlap per server; precedence with the relay delay enforced by
    each pair of the two tasks' presence literals. `hint`: start from `greedy`'s
    schedule. CP-SAT stops at `time_limit` wall seconds: with one worker and a fixed
    `seed` the search is deterministic, but where the time limit cuts it depends on the
    machine's speed and load; with several workers even the order of the search varies
    between runs. A proven OPTIMAL value is the same in every run (its schedule need not
    be). MissingExtraError without OR-Tools; ValueError naming a bad setting.
    """
    _check_settings(time_limit, num_workers, resolution, rounding, seed)
    cp = cp_model()
    t0 = time.perf_counter()
    N, M, per = problem.num_tasks, problem.num_servers, _per_unit(resolution)
    up = [[_ticks(problem.upload(i, n), per, rounding) for n in range(M)] for i in range(N)]
    dur = [[_ticks(problem.duration(i, n), per, rounding) for n in range(M)] for i in range(N)]
    k = [_ticks(x, per, rounding) for x in problem.k]
    low = min(min(row) for row in up)
    horizon = (max(max(row) for row in up) + sum(max(row) for row in dur)
               + 2 * N * max(k) + 1)

    model = cp.CpModel()
    start = [model.NewIntVar(min(up[i]), horizon, f"s{i}") for i in range(N)]
    finish = [model.NewIntVar(low, horizon, f"f{i}") for i in range(N)]
    on = [[model.NewBoolVar(f"x{i}_{n}") for n in range(M)] for i in range(N)]
    intervals = [[] for _ in range(M)]
    # Redundant, for propagation and the LP: each task's contention-free earliest
    # finish on its server and done time, in the model's own ticks.
    soonest = earliest(problem.preds, lambda i, n: up[i][n], lambda i, n: dur[i][n], k, M)
    for i in range(N):
        model.AddExactlyOne(on[i])
        for n in range(M):
            intervals[n].append(model.NewOptionalIntervalVar(
                start[i], dur[i][n], finish[i], on[i][n], f"iv{i}_{n}"))
            model.Add(start[i] >= soonest[i][n] - dur[i][n]).OnlyEnforceIf(on[i][n])
        model.Add(finish[i] + sum(k[n] * on[i][n] for n in range(M))
                  >= min(soonest[i][n] + k[n] for n in range(M)))
        for p in problem.preds[i]:
            model.Add(start[i] >= finish[p])       # the same server: no relay
            for m in range(M):
                for n in range(M):
                    if m != n:
                        model.Add(start[i] >= finish[p] + k[m] + k[n]).OnlyEnforceIf(
                            [on[p][m], on[i][n]])
    for n in range(M):
        model.AddNoOverlap(intervals[n])
    model.Minimize(sum(finish) + sum(k[n] * on[i][n] for i in range(N) for n in range(M)))

    if hint:
        g_server, g_order = greedy(problem)
        g_start, _ = _semi_active(problem.preds, lambda i, n: up[i][n],
                                  lambda i, n: dur[i][n], k, g_server, g_order)
        for i in range(N):
            model.AddHint(start[i], g_start[i])
            model.AddHint(finish[i], g_start[i] + dur[i][g_server[i]])
            for n in range(M):
                model.AddHint(on[i][n], n == g_server[i])

    solver = cp.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit)
    solver.parameters.num_workers = num_workers
    solver.parameters.random_seed = seed
    status = solver.StatusName(solver.Solve(model))
    arrivals = math.fsum(problem.arrival)
    to_mean = lambda ticks: (ticks / per - arrivals) / N  # noqa: E731
    bound = math.nan
    if status in ("OPTIMAL", "FEASIBLE", "UNKNOWN"):
        bound = to_mean(math.ceil(solver.BestObjectiveBound() - 1e-9))
        if rounding == "up":
            bound -= rounding_slack(N, resolution)
    server, starts, objective, claim = (), (), math.nan, math.nan
    if status in ("OPTIMAL", "FEASIBLE"):
        server = tuple(next(n for n in range(M) if solver.Value(on[i][n])) for i in range(N))
        s = [solver.Value(v) for v in start]
        f = [solver.Value(v) for v in finish]
        played = replay(problem, server, orders_of(server, s, f, M))
        claim = to_mean(round(solver.ObjectiveValue()))
        objective, starts = played.avg_response, played.start
    return OptimalResult(status=status, objective=objective, solver_objective=claim,
                         solver_bound=bound, wall_s=time.perf_counter() - t0, server=server,
                         start=starts, num_workers=num_workers, time_limit=float(time_limit),
                         resolution=float(resolution), rounding=rounding, seed=seed)
