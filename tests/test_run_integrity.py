"""Run directories and result files that never lose, mix or silently accept damaged data
(damdjax.runs, damdjax.rundir, damdjax.chunks, damdjax.checkpoint, damdjax.io): the
marker and --overwrite, the lock, kill -9 at every point of a chunk, checksums, a stored
config's checks, --out."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import flax.serialization
import numpy as np
import pytest

from damdjax import chunks, runner
from damdjax.checkpoint import read_file, read_state_dict
from damdjax.policies import load_dispatcher
from damdjax.train import damd, dqn

# test_train_dqn's TINY program (8 envs, 12 tasks; the suite compiles it once, through the
# shared compilation cache): a chunk is milliseconds once compiled.
TINY = ["--num-envs", "8", "--num-tasks", "12", "--num-servers", "3", "--steps-per-chunk", "10",
        "--buffer-capacity", "512", "--batch-size", "16", "--learning-starts", "16",
        "--eps-decay-steps", "200", "--hidden", "16,16", "--target-every", "5", "--seed", "5",
        "--slack", "1.5", "--eval-episodes", "0"]
CHUNKS = 4


def _env(**extra):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": root, "JAX_PLATFORMS": "cpu", **extra}


def _dqn(args, kill=None):
    """train.dqn in a subprocess (SIGKILLed at `kill`, chunks.KILL_ENV, where given)."""
    env = _env(**({chunks.KILL_ENV: kill} if kill else {}))
    return subprocess.run([sys.executable, "-m", "train.dqn", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _rows(path):
    return [json.loads(ln)["chunk"] for ln in open(path) if ln.strip()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A straight in-process run of CHUNKS chunks (compiles the program for the module's
    subprocesses through the shared compilation cache)."""
    rd = tmp_path_factory.mktemp("runs")
    assert dqn.main(["--run-dir", str(rd), "--name", "s", "--num-chunks", str(CHUNKS),
                     *TINY]) == 0
    return rd / "s"


def test_kill_9_at_every_point_leaves_a_run_that_resumes_to_the_same_files(
        straight, tmp_path, assert_same_checkpoint):
    """An old run at the name; --overwrite killed before its first checkpoint (the old run
    comes back), then killed right after the checkpoint replace (chunk 2), a resume killed
    after the policy file (chunk 3), one killed right after the last chunk's checkpoint:
    the final resume has every row once, the straight run's checkpoint bitwise, a policy
    file holding the checkpoint's parameters, and no stale temp file."""
    rd, k = tmp_path, tmp_path / "k"
    shutil.copytree(straight, k)                       # a finished run to overwrite
    old = (k / dqn.CHECKPOINT).read_bytes()
    base = ["--run-dir", str(rd), "--name", "k"]
    new = [*base, "--overwrite", "--num-chunks", str(CHUNKS), *TINY]

    p = _dqn(new, kill="after-chunk:1")                # before the new run's first checkpoint
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    assert (rd / ".k.replaced" / dqn.CHECKPOINT).read_bytes() == old   # kept aside
    assert not (k / dqn.CHECKPOINT).exists()

    p = _dqn(new, kill="after-checkpoint:2")           # between checkpoint and its row
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    assert "the earlier run is back" in p.stderr       # the first kill, undone
    assert not (rd / ".k.replaced").exists()           # gone once a checkpoint existed
    assert int(read_state_dict(k / dqn.CHECKPOINT)["chunk"]) == 2
    assert _rows(k / "metrics.jsonl") == [1]           # today's code loses row 2 for good

    p = _dqn([*base, "--resume"], kill="after-policy:3")
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    assert _rows(k / "metrics.jsonl") == [1, 2]        # row 2 rebuilt from the checkpoint
    with open(k / "metrics.jsonl", "a") as f:          # and a torn append after it
        f.write('{"chunk": 3, "env_st')

    p = _dqn([*base, "--resume"], kill=f"after-checkpoint:{CHUNKS}")   # the last chunk
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    assert _rows(k / "metrics.jsonl") == [1, 2, 3]
    stale = k / ".tmp-killedwrite"                     # what a write killed mid-way leaves
    stale.write_bytes(b"partial")

    assert dqn.main([*base, "--resume"]) == 0          # nothing to train: rebuilds the files
    assert _rows(k / "metrics.jsonl") == list(range(1, CHUNKS + 1))
    assert not stale.exists()
    assert_same_checkpoint(k / dqn.CHECKPOINT, straight / dqn.CHECKPOINT)
    ckpt = read_state_dict(k / dqn.CHECKPOINT)["params"]
    policy = flax.serialization.to_state_dict(load_dispatcher(str(k))[1])
    for a, b in zip(*(sorted(_leaves(t)) for t in (ckpt, policy))):
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])      # not one chunk behind
    straight_rows = [json.loads(ln) for ln in open(straight / "metrics.jsonl")]
    for got, want in zip((json.loads(ln) for ln in open(k / "metrics.jsonl")), straight_rows):
        assert {**got, "seconds": 0, "env_steps_per_s": 0} == {
            **want, "seconds": 0, "env_steps_per_s": 0}


def _leaves(tree, where=""):
    if isinstance(tree, dict):
        for key, v in tree.items():
            yield from _leaves(v, f"{where}/{key}")
    else:
        yield where, np.asarray(tree)


def test_one_writer_per_run_directory(straight, tmp_path, capsys):
    """While another process holds a run directory, --resume and --overwrite on it are
    refused with one line naming that process, and nothing in it changes."""
    k = tmp_path / "k"
    shutil.copytree(straight, k)
    before = {p.name: p.read_bytes() for p in k.iterdir()}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from damdjax import rundir; "
         "rundir._lock(sys.argv[1]); print('held', flush=True); time.sleep(120)", str(k)],
        env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for extra in (["--resume", "--num-chunks", "6"],
                      ["--overwrite", "--num-chunks", "2", *TINY]):
            with pytest.raises(SystemExit) as exc:
                dqn.main(["--run-dir", str(tmp_path), "--name", "k", *extra])
            assert exc.value.code == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert err[-1].startswith("python -m train.dqn: error:"), err
            assert f"in use by process {holder.pid}" in err[-1], err
    finally:
        holder.kill()
        holder.wait()
    assert {p.name: p.read_bytes() for p in k.iterdir()} == before
    assert dqn.main(["--run-dir", str(tmp_path), "--name", "k", "--resume"]) == 0  # free again


def test_overwrite_only_replaces_a_run_and_only_once_the_new_one_started(
        straight, tmp_path, capsys, monkeypatch):
    """--overwrite refuses a folder without the run marker (deleting nothing), and a new
    run that fails before its first checkpoint leaves the old run as it was."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(SystemExit) as exc:
        dqn.main(["--run-dir", str(tmp_path), "--name", "precious", "--overwrite", *TINY])
    assert exc.value.code == 2
    assert "not a damdjax run directory" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "years of work"

    k = tmp_path / "k"
    shutil.copytree(straight, k)
    before = {p.name: p.read_bytes() for p in k.iterdir()}

    def fails(*a, **kw):
        raise MemoryError("cannot allocate the replay buffer")
    monkeypatch.setattr(runner, "first_runner", fails)
    with pytest.raises(MemoryError):
        dqn.main(["--run-dir", str(tmp_path), "--name", "k", "--overwrite", *TINY])
    assert {p.name: p.read_bytes() for p in k.iterdir()} == before
    assert not (tmp_path / ".k.replaced").exists()


def _flip(path, at=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture
def copy(straight, tmp_path, capsys):
    """`(run dir k, refused(argv=resume k --num-chunks 9, module=dqn) -> its error line)`:
    a copy of the straight run, and a check that a command exits 2 with one error line,
    no traceback, and leaves every file of k as it was."""
    k = tmp_path / "k"
    shutil.copytree(straight, k)
    base = ["--run-dir", str(tmp_path), "--name", "k", "--resume", "--num-chunks", "9"]

    def refused(argv=base, module=dqn):
        before = {p.name: p.read_bytes() for p in k.iterdir()}
        with pytest.raises(SystemExit) as exc:
            module.main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "Traceback" not in "\n".join(err), err
        assert err[-1].startswith(f"python -m train.{module.__name__.rsplit('.', 1)[1]}: error:"), err
        assert {p.name: p.read_bytes() for p in k.iterdir()} == before
        return err[-1]
    return k, refused


def test_flipped_bytes_are_refused_naming_the_file(copy, capsys):
    """One flipped byte in checkpoint.msgpack: the resume is refused naming it (nothing
    written); in dispatcher.msgpack: loading it and eval.compare on it are refused."""
    k, refused = copy
    _flip(k / dqn.CHECKPOINT)
    msg = refused()
    assert dqn.CHECKPOINT in msg and "damaged" in msg

    _flip(k / "dispatcher.msgpack")
    with pytest.raises(ValueError, match="dispatcher.msgpack: damaged"):
        load_dispatcher(str(k))
    from damdjax.eval import compare
    with pytest.raises(SystemExit) as exc:
        compare.main(["--dispatcher-checkpoint", str(k), "--episodes", "2"])
    assert exc.value.code == 2 and "damaged" in capsys.readouterr().err


def test_a_checkpoint_carrying_what_the_runner_does_not_is_refused_in_one_line(copy):
    """A checkpoint whose runner holds a leaf that this version's runner does not carry (an
    older version's: the whole observation, where the dispatcher's part is carried now)
    is refused naming the leaf, no traceback, the checkpoint, policy file and metrics as
    they were (config.json takes the new --num-chunks before the checkpoint is read)."""
    from damdjax.checkpoint import save_tree
    k, _ = copy
    path = k / dqn.CHECKPOINT
    state, extra = read_file(path)
    assert state["obs"]["slots"] is None and state["obs"]["servers"] is not None
    state["obs"]["slots"] = np.zeros((8, 3, 4, 10), np.float32)
    save_tree(state, path, extra)
    files = lambda: {p.name: p.read_bytes() for p in k.iterdir() if p.name != "config.json"}
    before = files()
    with pytest.raises(SystemExit) as exc:
        dqn.main(["--run-dir", str(k.parent), "--name", "k", "--resume", "--num-chunks", "9"])
    msg = str(exc.value.code)
    assert "\n" not in msg and "checkpoint.msgpack: /obs/slots holds data" in msg, msg
    assert files() == before


def test_a_stored_config_goes_through_the_configs_checks(copy):
    """Bad values and types in config.json, or a damaged metrics line, refuse the resume
    by the config's own checks (naming the field), and config.json (num_chunks) is not
    rewritten."""
    k, refused = copy
    config = json.loads((k / "config.json").read_text())
    for field, value, says in (("env", {**config["env"], "density": -1}, "density must be > 0"),
                               ("density", 2.0, "unknown fields ['density']"),
                               ("reward", "xyz", "reward must be one of"),
                               ("gamma", 5, "gamma must be in [0, 1]"),
                               ("lr", -1, "lr must be > 0"),
                               ("num_envs", "8", "num_envs must be an integer"),
                               ("seed", 1.5, "seed must be an integer"),
                               ("hidden", [8, "x"], "hidden must be a tuple of integers")):
        (k / "config.json").write_text(json.dumps({**config, field: value}))
        msg = refused()
        assert "config.json is not a valid config" in msg and says in msg, msg
    (k / "config.json").write_text(json.dumps(config))

    rows = (k / "metrics.jsonl").read_text().splitlines(keepends=True)
    (k / "metrics.jsonl").write_text(rows[0] + "garbage\n" + "".join(rows[1:]))
    assert "metrics.jsonl: line 2" in refused()


def test_damd_resume_of_a_name_never_made_is_refused(tmp_path):
    with pytest.raises(SystemExit) as exc:
        damd.main(["--run-dir", str(tmp_path), "--name", "nothing", "--resume"])
    assert exc.value.code == 2
    assert not (tmp_path / "nothing").exists()


def test_files_without_a_checksum_load_with_a_warning(straight, tmp_path, capsys):
    """A policy file written before checksums (bare flax msgpack) still loads, saying so."""
    state, _ = read_file(straight / "dispatcher.msgpack")
    old = tmp_path / "dispatcher.msgpack"
    old.write_bytes(flax.serialization.msgpack_serialize(state))
    capsys.readouterr()
    load_dispatcher(str(old))
    assert "without a checksum" in capsys.readouterr().err


def test_checkpoint_every_k_chunks_commits_every_kth_the_last_and_the_stopped_one(tmp_path):
    """chunks.chunk_loop with checkpoint_every 3 over 7 chunks saves after chunks 3, 6 and 7
    and logs all 7 rows; a resume from chunk 6's checkpoint rebuilds the log to 6 rows and
    runs chunk 7 again; Ctrl-C during chunk 2 saves chunk 2 and stops."""
    run = str(tmp_path)
    saved = []

    def loop(start, num_chunks, every, restored=None, interrupt_at=None):
        def train_chunk(rs):
            if rs + 1 == interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)   # deferred: the chunk still ends
            return rs + 1, {}
        return chunks.chunk_loop(
            train_chunk, start, num_chunks=num_chunks, chunks_done=lambda rs: rs, run_dir=run,
            save=lambda rs, rows: saved.append((rs, rows)),
            rows=lambda rs, m, dt: [{"chunk": rs, "seconds": 1.0, "value": 10 * rs}],
            progress=lambda rows: f"chunk {rows[0]['chunk']}", header="test",
            restored_rows=restored, checkpoint_every=every)

    assert loop(0, 7, 3) == (7, False)
    assert [rs for rs, _ in saved] == [3, 6, 7]
    assert saved[1][1] == [{"chunk": 6, "seconds": 1.0, "value": 60}]   # the checkpoint's own rows
    assert _rows(tmp_path / "metrics.jsonl") == [1, 2, 3, 4, 5, 6, 7]

    saved.clear()
    assert loop(6, 7, 3, restored=[{"chunk": 6, "value": 60}]) == (7, False)
    assert [rs for rs, _ in saved] == [7]
    assert _rows(tmp_path / "metrics.jsonl") == [1, 2, 3, 4, 5, 6, 7]

    if threading.current_thread() is threading.main_thread():   # signal handlers need it
        saved.clear()
        os.remove(tmp_path / "metrics.jsonl")
        assert loop(0, 7, 3, interrupt_at=2) == (2, True)
        assert [rs for rs, _ in saved] == [2]
        assert _rows(tmp_path / "metrics.jsonl") == [1, 2]


def test_a_payload_cut_into_pieces_round_trips_and_a_version_1_file_loads(tmp_path,
                                                                         monkeypatch):
    """A checkpoint whose payload exceeds PAYLOAD_PIECE is stored as several pieces (msgpack
    holds no byte string of 4 GiB or more); it reads back bitwise, a flipped byte in a
    piece is refused, and a version-1 file (one payload string) still loads."""
    import msgpack

    from damdjax import checkpoint
    monkeypatch.setattr(checkpoint, "PAYLOAD_PIECE", 100)
    tree = {"a": np.arange(300, dtype=np.float32), "b": {"c": np.int32(7)}}
    path = tmp_path / "t.msgpack"
    checkpoint.save_tree(tree, path, extra={"rows": [1]})
    outer = msgpack.unpackb(path.read_bytes(), raw=False)
    assert outer["version"] == 2 and len(outer["payload"]) > 10
    assert all(len(x) <= 100 for x in outer["payload"])
    state, extra = read_file(path)
    np.testing.assert_array_equal(state["a"], tree["a"])
    assert int(state["b"]["c"]) == 7 and extra == {"rows": [1]}

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "bad.msgpack").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad.msgpack: damaged"):
        read_file(tmp_path / "bad.msgpack")

    payload = b"".join(outer["payload"])
    v1 = {**outer, "version": 1, "payload": payload}
    (tmp_path / "v1.msgpack").write_bytes(msgpack.packb(v1, use_bin_type=True))
    np.testing.assert_array_equal(read_file(tmp_path / "v1.msgpack")[0]["a"], tree["a"])
    v1_pieces = {**outer, "version": 1}   # a version-1 file never held a list
    (tmp_path / "v1p.msgpack").write_bytes(msgpack.packb(v1_pieces, use_bin_type=True))
    with pytest.raises(ValueError, match="damaged"):
        read_file(tmp_path / "v1p.msgpack")
