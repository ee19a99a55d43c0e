"""Fuzzing the readers of user-loaded files with damaged copies of valid files.

Each reader (`load_instance`, `convert.read_servers`, `convert.read_wfcommons`,
`convert.read_alibaba`) gets a valid file with generated damage: truncation at a random
byte, flipped bytes, a value of another type, deep nesting, huge numbers, NaN and
Infinity, and for the CSV short and long rows, NUL bytes and huge fields. It must return
a valid result or raise its one-line error (InstanceError, convert.Skip, ValueError for
the CSV), never another exception, within the hypothesis deadline.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from damdjax.envs import convert
from damdjax.envs.instance_format import InstanceError, InstanceSpec, ServerSpec
from damdjax.envs.instance_io import load_instance

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
# A valid instance with every optional key (names, meta, work, preds, a later predecessor).
INSTANCE = {
    "name": "fuzz", "meta": {"source": "tests", "list": [1, 2.5, None, True, "x"]},
    "servers": [{"name": "a", "cpu": 1, "bw": 10, "mem": 100, "k": 0.5, "meta": {"r": 1}},
                {"cpu": 2.5, "bw": 5, "mem": 80, "k": 1.0}],
    "jobs": [
        {"arrival": 0, "name": "j0", "meta": [1, {"a": "b"}], "tasks": [
            {"size": 2, "deadline": 10, "preds": [2]},
            {"size": 4, "work": 4.5, "deadline": 12, "preds": [0], "meta": {"m": [0]}},
            {"size": 2, "deadline": 8.25, "preds": [], "name": "t2"}]},
        {"arrival": 1.5, "tasks": [{"size": 1, "deadline": 5}]},
    ],
}
SERVERS = INSTANCE["servers"]
WFCOMMONS = DATA / "wfcommons" / "helloworld-forkjoin-10-chameleon.json"
# The Alibaba excerpt's first 60 rows: whole jobs and skipped ones, small enough to read fast.
ALIBABA = "".join((DATA / "alibaba-excerpt.csv").read_text().splitlines(keepends=True)[:61])

SAMPLES = {
    "instance": json.dumps(INSTANCE, indent=1).encode(),
    "servers": json.dumps(SERVERS, indent=1).encode(),
    "wfcommons": WFCOMMONS.read_bytes(),
    "alibaba": ALIBABA.encode(),
}

# JSON text put in place of a value: other types, deep nesting, huge numbers, NaN, Infinity
REPLACEMENTS = [
    '"x"', '""', "null", "true", "false", "[]", "{}", "[1]", '{"a": 1}', '"1"', "0", "-1",
    "[" * 63 + "]" * 63, "[" * 65 + "]" * 65, "[" * 100_000 + "]" * 100_000, "[" * 5000,
    '{"a":' * 70 + "1" + "}" * 70,
    "9" * 309, "9" * 1000, "9" * 1001, "9" * 5000, "-" + "9" * 4301, "1" + "0" * 400 + ".5",
    "1e308", "1e309", "-1e999", "1e-999999999", "1e-99999999999", "1e99999999999999999999",
    "5e-324", "NaN", "Infinity", "-Infinity",
]
# CSV fields put in place of a field
FIELDS = ["", "nan", "inf", "-inf", "-1", "0", "1e999", "1e-400", "abc", "M1_x", "R2_1_1",
          "Running", "Terminated", "9" * 5000, "x" * 200_000, "\0", "a\nb", '"', "j_1"]
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
STRING = re.compile(rb'"[^"\\]*"')


# Bytes a flip writes: mostly JSON's and CSV's structure and digits, so that damage
# reaches past the decoder; any byte now and then (not UTF-8).
FLIP_BYTES = b'{}[]",:0123456789-.eE \\\ntfnaN' + bytes([0x00, 0x80, 0xff])


def _splice(data: bytes, start: int, end: int, new: bytes) -> bytes:
    return data[:start] + new + data[end:]


def _at(draw, n: int) -> int:
    """A position in [0, n), spread over the whole range (hypothesis draws small
    integers far more often, which would damage only the start of a file)."""
    return draw(st.integers(0, 2 ** 32)) % n


def _flips(draw, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 4))):
        i = _at(draw, len(data))
        data = _splice(data, i, i + 1, bytes([draw(st.sampled_from(FLIP_BYTES))]))
    return data


@st.composite
def json_damage(draw, data: bytes) -> bytes:
    """One kind of damage to JSON text `data`."""
    kind = draw(st.sampled_from(["truncate", "flip", "value", "insert"]))
    if kind == "truncate":
        return data[:_at(draw, len(data))]
    if kind == "flip":
        return _flips(draw, data)
    spans = [m.span() for m in NUMBER.finditer(data)] + [m.span() for m in
                                                        STRING.finditer(data)]
    if kind == "value" and spans:  # a number or a string replaced by another kind of value
        start, end = spans[_at(draw, len(spans))]
        return _splice(data, start, end, draw(st.sampled_from(REPLACEMENTS)).encode())
    i = _at(draw, len(data) + 1)  # raw text inserted anywhere
    return _splice(data, i, i, draw(st.sampled_from(REPLACEMENTS + [",", ":", '"', "\\"])).encode())


@st.composite
def csv_damage(draw, data: bytes) -> bytes:
    """One kind of damage to the CSV `data`."""
    kind = draw(st.sampled_from(["truncate", "flip", "field", "short", "long", "insert"]))
    if kind == "truncate":
        return data[:_at(draw, len(data))]
    if kind == "flip":
        return _flips(draw, data)
    if kind == "insert":
        i = _at(draw, len(data) + 1)
        return _splice(data, i, i, draw(st.sampled_from(["\0", "\n", ",", '"', "\r", "\xff"]
                                                        )).encode("latin-1"))
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"))))
    except csv.Error:  # earlier damage: left as it is
        return data
    r = _at(draw, len(rows)) if rows else None
    if r is None or not rows[r]:
        return data
    if kind == "field":
        rows[r][draw(st.integers(0, len(rows[r]) - 1))] = draw(st.sampled_from(FIELDS))
    elif kind == "short":
        rows[r] = rows[r][:draw(st.integers(0, len(rows[r]) - 1))]
    else:
        rows[r] = rows[r] + ["extra"] * draw(st.integers(1, 3))
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode("utf-8", "surrogateescape")


def damaged(kind: str):
    """A strategy: the sample of `kind` with one to three kinds of damage in turn."""
    damage = csv_damage if kind == "alibaba" else json_damage

    @st.composite
    def strategy(draw):
        data = SAMPLES[kind]
        for _ in range(draw(st.integers(1, 3))):
            if data:
                data = draw(damage(data))
        return data
    return strategy()


def finite_positive(*values) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)


def check_instance(spec) -> None:
    assert isinstance(spec, InstanceSpec) and spec.num_servers >= 1 and spec.num_tasks >= 1
    for s in spec.servers:
        assert finite_positive(s.cpu, s.bw, s.mem, s.k)
    for job in spec.jobs:
        for t in job.tasks:
            assert finite_positive(t.size, t.work) and math.isfinite(t.deadline)


def check_servers(servers) -> None:
    assert servers and all(isinstance(s, ServerSpec) for s in servers)
    for s in servers:
        assert finite_positive(s.cpu, s.bw, s.mem, s.k)


def check_job(job) -> None:
    assert isinstance(job, convert.RawJob) and job.tasks
    for t in job.tasks:
        assert finite_positive(t.runtime_s, t.data)
        assert all(0 <= p < len(job.tasks) for p in t.preds)


def check_alibaba(result) -> None:
    jobs, skips = result
    for job in jobs:
        check_job(job)
    for s in skips:
        assert s.reason in convert.SKIP_REASONS and len(str(s).splitlines()) == 1


READERS = {  # reader, the valid result's check, its one-line error
    "instance": (load_instance, check_instance, InstanceError),
    "servers": (convert.read_servers, check_servers, InstanceError),
    "wfcommons": (convert.read_wfcommons, check_job, convert.Skip),
    "alibaba": (convert.read_alibaba, check_alibaba, ValueError),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def fuzz(kind: str, folder: Path, data: bytes) -> None:
    """The reader of `kind` on `data`: a valid result or its one-line error."""
    reader, check, error = READERS[kind]
    path = folder / f"{kind}.{'csv' if kind == 'alibaba' else 'json'}"
    path.write_bytes(data)
    try:
        result = reader(path)
    except error as e:
        assert len(str(e).splitlines()) == 1, str(e)
        return
    check(result)


FUZZ = settings(max_examples=100, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(data=damaged("instance"))
def test_fuzz_load_instance(folder, data):
    fuzz("instance", folder, data)


@FUZZ
@given(data=damaged("servers"))
def test_fuzz_read_servers(folder, data):
    fuzz("servers", folder, data)


@FUZZ
@given(data=damaged("wfcommons"))
def test_fuzz_read_wfcommons(folder, data):
    fuzz("wfcommons", folder, data)


@FUZZ
@given(data=damaged("alibaba"))
def test_fuzz_read_alibaba(folder, data):
    fuzz("alibaba", folder, data)


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_the_samples_are_valid(kind, folder):
    """Undamaged, every sample reads to a valid result (so the damage is what is tested)."""
    reader, check, _ = READERS[kind]
    path = folder / f"valid-{kind}.{'csv' if kind == 'alibaba' else 'json'}"
    path.write_bytes(SAMPLES[kind])
    check(reader(path))
