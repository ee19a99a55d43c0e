"""Hostile files given to the readers of user-loaded formats: each ends in the reader's
one-line error, never a traceback, a hang or exhausted memory.

The readers and their errors: instance files (`load_instance`) and servers files
(`convert.read_servers`) raise InstanceError; a WfCommons file (`convert.read_wfcommons`,
also behind `--workload wfcommons:DIR`) is skipped as malformed (convert.Skip); an
Alibaba CSV (`convert.read_alibaba`) skips a job with a malformed row or refuses the file
with a one-line ValueError, which the converter prints as `error: ...` (exit 2).

Files that never end or block (/dev/zero, a FIFO) are read in a child process with a
memory cap and an alarm, so a reader that would exhaust the memory or hang fails the
test instead of the machine.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from damdjax.envs import convert
from damdjax.envs.instance_format import InstanceError
from damdjax.envs.instance_io import load_instance
from damdjax.io import JSON_MAX_DEPTH, JSON_MAX_INT_DIGITS

ROOT = Path(__file__).resolve().parent.parent
FORKJOIN = ROOT / "tests" / "data" / "wfcommons" / "helloworld-forkjoin-10-chameleon.json"

INSTANCE = {"servers": [{"cpu": 1, "bw": 10, "mem": 100, "k": 0.5}],
            "jobs": [{"arrival": 0, "tasks": [{"size": 2, "deadline": 10}]}]}
SERVERS = [{"cpu": 1, "bw": 10, "mem": 100, "k": 0.5}]
# reader, its error, a valid document with the placeholder "HOLE" where any JSON value fits
READERS = {
    "instance": (load_instance, InstanceError, dict(INSTANCE, meta="HOLE")),
    "servers": (convert.read_servers, InstanceError, [dict(SERVERS[0], meta="HOLE")]),
    "wfcommons": (convert.read_wfcommons, convert.Skip,
                  dict(json.loads(FORKJOIN.read_text()), extra="HOLE")),
}
DEEP = "[" * 100_000 + "]" * 100_000


def with_value(kind: str, literal: str) -> str:
    """The valid document of `kind` with `literal` (JSON text) in its free-form slot."""
    return json.dumps(READERS[kind][2]).replace('"HOLE"', literal)


def refused(kind: str, path: Path) -> str:
    """The one-line message of the reader of `kind` refusing `path`."""
    reader, error, _ = READERS[kind]
    with pytest.raises(error) as info:
        reader(path)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    return message


@pytest.mark.parametrize("kind", list(READERS))
def test_reader_accepts_the_valid_document(kind, tmp_path):
    """The documents the other tests damage are valid as they stand."""
    path = tmp_path / "ok.json"
    path.write_text(with_value(kind, "[[1, 2], {\"a\": null}]"))
    assert READERS[kind][0](path)


@pytest.mark.parametrize("kind", list(READERS))
def test_integer_of_5000_digits(kind, tmp_path):
    path = tmp_path / "big.json"
    path.write_text(with_value(kind, "1" * 5000))
    message = refused(kind, path)
    assert f"an integer of 5000 digits, more than the limit of {JSON_MAX_INT_DIGITS}" in message


@pytest.mark.parametrize("where", ["whole file", "inside meta"])
@pytest.mark.parametrize("kind", list(READERS))
def test_arrays_nested_100000_deep(kind, where, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(DEEP if where == "whole file" else with_value(kind, DEEP))
    message = refused(kind, path)
    assert f"levels deep, more than the limit of {JSON_MAX_DEPTH}" in message


@pytest.mark.parametrize("literal", ["1e-99999999999", "1e-9999999999999999999999"])
def test_instance_time_with_a_huge_exponent(literal, tmp_path):
    """A deadline far below the first arrival's precision is a valid time (the arrival
    itself, once rounded); one beyond Decimal's exponent range is refused."""
    doc = json.loads(json.dumps(INSTANCE))
    doc["jobs"][0]["arrival"] = 5
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(doc).replace('"deadline": 10', f'"deadline": {literal}'))
    if literal == "1e-99999999999":
        assert load_instance(path).jobs[0].tasks[0].deadline == -5.0
    else:
        assert "has an exponent out of range" in refused("instance", path)


def wf_damaged(change) -> str:
    """The fork-join WfFormat file with `change(doc)` applied to its decoded document."""
    doc = json.loads(FORKJOIN.read_text())
    change(doc["workflow"])
    return json.dumps(doc, allow_nan=True)


def _set(key, value, where="execution"):
    def change(wf):
        wf[where]["tasks" if key != "sizeInBytes" else "files"][0][key] = value
    return change


WF_VALUES = {  # a value of the wrong kind or size -> (the change, the Skip's reason)
    "runtime of 400 digits": (_set("runtimeInSeconds", 10 ** 400), "no runtime"),
    "runtime true": (_set("runtimeInSeconds", True), "no runtime"),
    "size of 400 digits": (_set("sizeInBytes", 10 ** 400, "specification"), "bad size"),
    "infinite size": (_set("sizeInBytes", math.inf, "specification"), "bad size"),
    "children a number": (_set("children", 5, "specification"), "malformed"),
    "a newline in a task id": (_set("id", "a\nb", "specification"), "no runtime"),
}


@pytest.mark.parametrize("case", list(WF_VALUES))
def test_wfcommons_value_of_the_wrong_kind(case, tmp_path):
    change, reason = WF_VALUES[case]
    path = tmp_path / "wf.json"
    path.write_text(wf_damaged(change))
    with pytest.raises(convert.Skip) as info:
        convert.read_wfcommons(path)
    assert info.value.reason == reason
    assert len(str(info.value).splitlines()) == 1, str(info.value)


# ---------------------------------------------------------------------------
# Files that never end or never open: /dev/zero, a FIFO (in a capped child process)
# ---------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from damdjax.envs import convert
    from damdjax.envs.instance_io import load_instance
    readers = {"instance": load_instance, "servers": convert.read_servers,
               "wfcommons": convert.read_wfcommons, "alibaba": convert.read_alibaba}

    class Hung(Exception):
        pass

    def alarm(*_):
        raise Hung

    signal.signal(signal.SIGALRM, alarm)
    cap = 3 * 2 ** 30  # more than the process holds after its imports
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    for kind, path in json.loads(sys.argv[1]):
        signal.alarm(5)
        try:
            readers[kind](path)
            result = ["returned", ""]
        except Hung:
            result = ["hung", ""]
        except BaseException as e:
            result = [type(e).__name__, str(e)]
        finally:
            signal.alarm(0)
        print(json.dumps([kind, path, *result]), flush=True)
""")
ERROR_NAMES = {"instance": "InstanceError", "servers": "InstanceError", "wfcommons": "Skip",
               "alibaba": "ReadError"}


@pytest.fixture(scope="module")
def endless(tmp_path_factory):
    """{(kind, 'zero' or 'fifo'): (exception name, message)} from the child process."""
    fifo = tmp_path_factory.mktemp("fifo") / "pipe.json"
    os.mkfifo(fifo)
    cases = [(kind, path) for kind in ERROR_NAMES for path in ("/dev/zero", str(fifo))]
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    results = {}
    for line in proc.stdout.splitlines():
        kind, path, name, message = json.loads(line)
        results[kind, "zero" if path == "/dev/zero" else "fifo"] = (name, message)
    assert len(results) == len(cases), proc.stderr[-2000:]
    return results


@pytest.mark.parametrize("kind", list(ERROR_NAMES))
def test_dev_zero_is_refused(kind, endless):
    name, message = endless[kind, "zero"]
    assert name == ERROR_NAMES[kind], (name, message)
    assert "is a character device, not a regular file" in message
    assert len(message.splitlines()) == 1 and message.count("cannot read") == 1


@pytest.mark.parametrize("kind", list(ERROR_NAMES))
def test_fifo_is_refused_without_blocking(kind, endless):
    name, message = endless[kind, "fifo"]
    assert name == ERROR_NAMES[kind], (name, message)
    assert "is a FIFO (named pipe), not a regular file" in message
    assert len(message.splitlines()) == 1 and message.count("cannot read") == 1


# ---------------------------------------------------------------------------
# Alibaba CSV: short rows, huge fields, NUL bytes
# ---------------------------------------------------------------------------

# task_name last: a short row then lacks it (its length was taken of None)
HEADER = ["job_name", "instance_num", "task_type", "status", "start_time", "end_time",
          "plan_cpu", "plan_mem", "task_name"]


def row(job: str, name: str, start: int = 100, end: int = 110) -> list[str]:
    return [job, "1.0", "1", "Terminated", str(start), str(end), "100.0", "0.3", name]


def write_csv(path: Path, rows: list[list[str]], tail: str = "") -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)
        f.write(tail)
    return path


def converter_error(path: Path, tmp_path: Path, capsys) -> str:
    """The converter's one error line on `path` (exit 2)."""
    with pytest.raises(SystemExit) as info:
        convert.main(["alibaba", str(path), "--out", str(tmp_path / "out.json")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_alibaba_short_row_skips_its_job(tmp_path):
    good = [row("j_good", "M1"), row("j_good", "R2_1", 111, 120)]
    path = write_csv(tmp_path / "t.csv", good + [row("j_bad", "M1"), row("j_bad", "R2_1")[:6]])
    jobs, skips = convert.read_alibaba(path)
    assert [j.name for j in jobs] == ["j_good"]
    assert [str(s) for s in skips] == ["j_bad: malformed: line 5 has 6 fields, the header 9"]
    assert convert.skip_summary(skips, len(jobs)) == "skipped 1 of 2 jobs, malformed 1"


def test_alibaba_field_over_the_csv_limit(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", [row("j_1", "M1"), row("j_2", "M1" + "1" * 200_000)])
    error = converter_error(path, tmp_path, capsys)
    assert error == f"error: {path}: line 3: field larger than field limit (131072)"


def test_alibaba_nul_bytes(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", [row("j_1", "M1")], tail="\0" * 4096)
    error = converter_error(path, tmp_path, capsys)
    assert error == f"error: {path}: line 3 holds a NUL byte (not a text CSV)"
    assert not (tmp_path / "out.json").exists()


# ---------------------------------------------------------------------------
# --out may not name a file the converter reads
# ---------------------------------------------------------------------------


def test_out_may_not_overwrite_the_servers_file(tmp_path, capsys):
    servers = tmp_path / "servers.json"
    servers.write_text(json.dumps(SERVERS))
    before = servers.read_bytes()
    with pytest.raises(SystemExit) as info:
        convert.main(["wfcommons", str(FORKJOIN), "--servers", str(servers),
                      "--out", str(servers)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"--out {servers}: would overwrite the input {servers}"), err
    assert servers.read_bytes() == before
