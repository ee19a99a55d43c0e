"""Sweep grids over `Hyper` fields: parsing, checking, members, and the ranked table.

    grid = parse_grid(["lr=1e-4,1e-3", "gamma=0.9,0.99"])   # {"lr": [...], "gamma": [...]}
    grid = parse_grid(["mdqn_gamma=0.5,0.9"], PipelineHyper)  # train.damd's fields
    check_grid(grid, base_hyper, env_config)                 # ValueError naming a bad value
    points = grid_points(grid)                               # cartesian product, in order
    table = rank_points(per_member, members)                 # by held-out response time

A sweep's members are every grid point times every seed (points outer, seeds
inner: member `i` is point `i // seeds`, seed offset `i % seeds`). Errors are
one line (ValueError), meant for `argparse`'s `parser.error`.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from damdjax.hyper import Hyper, check_hyper
from damdjax.io import json_number
from damdjax.metrics import mean_ci95
from damdjax.envs.config import EnvConfig

RANK_METRICS = ("avg_response_time", "deadline_miss_rate")


def _number(field: str, text: str, is_int: bool):
    """`text` as the field's type (an integer field: "1e4" is 10000), else ValueError."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--grid {field}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"--grid {field}: {text!r} is not a finite number")
    if is_int:
        if value != int(value):
            raise ValueError(f"--grid {field}: {text!r} is not an integer")
        return int(value)
    return value


def parse_grid(specs, hyper_class: type = Hyper) -> dict[str, list]:
    """`["field=v1,v2", ...]` -> `{field: [v1, v2]}` (in the given order) over the fields of
    `hyper_class` (`Hyper`, or `damdjax.hyper.PipelineHyper` for train.damd); ValueError
    for an unknown field, a field given twice, an empty list or value, or a non-number."""
    fields = hyper_class.field_names()
    grid: dict[str, list] = {}
    for spec in specs:
        field, eq, text = spec.partition("=")
        field = field.strip().replace("-", "_")
        if not eq:
            raise ValueError(f"--grid takes field=v1,v2,...; got {spec!r}")
        if field not in fields:
            raise ValueError(f"--grid: unknown field {field!r} (fields: {', '.join(fields)})")
        if field in grid:
            raise ValueError(f"--grid: {field} is given twice")
        items = [t.strip() for t in text.split(",")]
        if not text.strip() or any(not t for t in items):
            raise ValueError(f"--grid {field}: empty value list or empty value in {spec!r}")
        values = [_number(field, t, hyper_class.is_int_field(field)) for t in items]
        if len(set(values)) != len(values):
            raise ValueError(f"--grid {field}: a value is listed twice in {spec!r}")
        grid[field] = values
    return grid


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values (`[{}]` for an empty grid), first field
    outermost."""
    fields = list(grid)
    return [dict(zip(fields, combo)) for combo in itertools.product(*grid.values())]


def check_grid(grid: dict[str, list], base, config: EnvConfig) -> None:
    """ValueError naming the first value `damdjax.hyper.check_hyper` refuses: each value
    alone on `base` (a `Hyper` or `PipelineHyper`), then each grid point (`config`: the
    padded sizes)."""
    for field, values in grid.items():
        for v in values:
            try:
                check_hyper(base.with_values(**{field: v}), config)
            except ValueError as err:
                raise ValueError(f"grid {field}={v}: {err}") from None
    for point in grid_points(grid):
        try:
            check_hyper(base.with_values(**point), config)
        except ValueError as err:
            where = " ".join(f"{k}={v}" for k, v in point.items())
            raise ValueError(f"grid point {where}: {err}") from None


def rank_points(per_member: list[dict], points: list[dict], seeds: int) -> list[dict]:
    """The grid points ranked by mean held-out response time over their seeds.

    `per_member[i]`: metric -> member i's mean over the held-out episodes (members in
    sweep order, `len(points) * seeds` of them). Each row: `point`, `members`, `seeds`,
    and per metric `{mean, ci95}`: mean and 95% CI half-width (Student t) over the
    seeds' means (ci95 None with one seed).
    """
    rows = []
    for p, point in enumerate(points):
        idx = list(range(p * seeds, (p + 1) * seeds))
        row = {"point": point, "members": idx, "seeds": seeds}
        for k in RANK_METRICS:
            mean, half = mean_ci95(np.asarray([per_member[i][k] for i in idx]))
            row[k] = {"mean": json_number(mean), "ci95": json_number(half)}
        rows.append(row)
    rows.sort(key=lambda r: r["avg_response_time"]["mean"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def format_ranking(rows: list[dict], title: str = "") -> str:
    """The ranked grid points as a plain-text table."""
    fields = list(rows[0]["point"]) if rows else []

    def cell(d):
        return f"{d['mean']:.4f}" + ("" if d["ci95"] is None else f" ± {d['ci95']:.4f}")

    lines = [title] if title else []
    lines.append(f"{'rank':<6}" + "".join(f"{f:>14}" for f in fields)
                 + f"{'seeds':>7}{'avg response time':>24}{'deadline-miss rate':>24}")
    for r in rows:
        lines.append(f"{r['rank']:<6}" + "".join(f"{r['point'][f]:>14g}" for f in fields)
                     + f"{r['seeds']:>7}{cell(r['avg_response_time']):>24}"
                     + f"{cell(r['deadline_miss_rate']):>24}")
    return "\n".join(lines)
