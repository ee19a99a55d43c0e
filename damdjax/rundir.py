"""The run directory: its files' names and paths, its marker, the lock that makes one
process its writer, an --overwrite's old run set aside until the new run's first
checkpoint, and the checks that keep every write inside it.

A run directory `RUN_DIR/NAME/` holds `config.json`, `metrics.jsonl` (one row
per chunk), `checkpoint.msgpack` (the whole runner state: resume is exact),
the trainer's policy file and the marker `.damdjax-run` (what `--overwrite`
requires before it deletes anything). It belongs to one process at a time:
`take` holds an exclusive `fcntl.flock` on `RUN_DIR/.NAME.lock` until `release`
(the end of a `held` block); a second command on the same name is refused with
one line naming the holder. `--overwrite` moves the old run aside
(`RUN_DIR/.NAME.replaced`, `set_aside`) and deletes it only once the new run's
first checkpoint exists (`settle`); a new run that fails or is stopped before
that puts it back (`release`; a killed one: the next command on the name does,
`recover`).

Run directories sit among files damdjax did not make, so: `resolve` checks the run
name (`check_name`: no name of another run's siblings, nothing the file system cannot
hold) and builds the path from RUN_DIR with every symbolic link resolved (every
trainer, however RUN_DIR is spelled, locks the same file), refusing a run directory
that is itself a link and a RUN_DIR that is itself a run directory (a run inside it
would go with an --overwrite of it); the lock file is opened without following a
link; a resume first checks that the folder holds only regular files and folders
(`check_tree`); only real folders (never links) are deleted, a set-aside run only
where it holds the marker (`_remove_tree`, `recover`). So a link planted where damdjax
writes never leads a write or a delete outside the run directory. Each refusal is a
ValueError of one line naming the path or the name.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import sys

from damdjax.io import remove_stale_temps, warn, write_bytes_atomic

CHECKPOINT = "checkpoint.msgpack"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
MARKER = ".damdjax-run"          # says "a damdjax run directory": --overwrite may delete it
# The files every run directory holds (a name of them, as a run name, is refused).
RUN_FILES = (CHECKPOINT, CONFIG, METRICS, MARKER)
# The longest run name in UTF-8 bytes: its siblings `.NAME.replaced` (10 more) and
# `.NAME.lock` stay under the usual 255-byte limit of a file name, with room to spare.
MAX_NAME_BYTES = 200

# run directory -> {"fd": lock file descriptor, "aside": the old run's path or None}: the
# runs this process holds.
_OPEN: dict[str, dict] = {}


def run_paths(run_dir: str) -> dict[str, str]:
    return {"config": os.path.join(run_dir, CONFIG), "checkpoint": os.path.join(run_dir, CHECKPOINT),
            "metrics": os.path.join(run_dir, METRICS)}


def _side_paths(run_dir: str) -> tuple[str, str]:
    """`(lock file, aside folder)` of `run_dir`: siblings `.NAME.lock`, `.NAME.replaced`."""
    parent, name = os.path.split(os.path.normpath(run_dir))
    return os.path.join(parent, f".{name}.lock"), os.path.join(parent, f".{name}.replaced")


def aside_path(run_dir: str) -> str:
    """Where an --overwrite keeps the earlier run of `run_dir`: `RUN_DIR/.NAME.replaced`."""
    return _side_paths(run_dir)[1]


def _shown(name: str) -> str:
    """`name` quoted on one line (control characters escaped), a long one cut short."""
    return repr(name) if len(name) <= 60 else f"{name[:40]!r}... ({len(name)} characters)"


def _name_rule(name: str) -> str | None:
    """The rule a run name breaks (None: a valid name)."""
    if not name:
        return "must not be empty"
    if "/" in name or os.sep in name or (os.altsep and os.altsep in name):
        return "must be a plain folder name, without '/'"
    if not name.isprintable():   # NUL, control characters, line breaks, text-direction marks
        return "must not hold a NUL, control character or other non-printing character"
    if ".." in name:
        return "must not hold '..' (a path's parent)"
    if name.startswith("."):
        return ("must not start with '.' (the names .NAME.lock and .NAME.replaced of a "
                "run's lock and set-aside copy, and '.')")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid UTF-8 text"
    if size > MAX_NAME_BYTES:
        return (f"is {size} bytes long in UTF-8; at most {MAX_NAME_BYTES} (room for its "
                f"siblings .NAME.lock and .NAME.replaced in a file name)")
    if name in RUN_FILES:
        return f"is the name of a file every run directory holds ({', '.join(RUN_FILES)})"
    return None


def check_name(name: str) -> None:
    """ValueError (one line naming `name` and the rule it breaks) unless `name` is a run
    name: not empty, no '/', only printing characters (no NUL, control character or line
    break: names appear in one-line messages), no '..', no leading '.' (which keeps a run
    from taking another run's lock or set-aside name), at most MAX_NAME_BYTES, and not
    one of RUN_FILES."""
    rule = _name_rule(name)
    if rule is not None:
        raise ValueError(f"--name {_shown(name)}: {rule}")


def resolve(parent: str, name: str) -> str:
    """The run directory `parent/name` as an absolute path through no symbolic link (the
    one path, and lock, of that folder whatever the spelling of `parent`); ValueError
    (one line) for a bad name (`check_name`), an empty `parent` or one that is not a
    folder, a `parent` that is itself a run directory, or a run directory that is a
    symbolic link (damdjax would write, move or delete through it). Writes nothing."""
    check_name(name)
    if not parent:
        raise ValueError("--run-dir '': must not be empty (use . for the current folder)")
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise ValueError(f"--run-dir {parent!r}: is not a folder")
    real = os.path.realpath(parent)
    if _is_file(os.path.join(real, MARKER)):
        raise ValueError(f"--run-dir {parent!r}: is itself a run directory (it holds "
                         f"{MARKER}); runs go beside it, not inside it")
    run_dir = os.path.join(real, name)
    if os.path.islink(run_dir):
        raise ValueError(f"run directory {run_dir} is a symbolic link; damdjax writes only "
                         f"in folders it made, not through links (remove the link)")
    return run_dir


def make_parent(run_dir: str) -> None:
    """The folder holding `run_dir` created where missing; ValueError (one line) where it
    cannot be, or is not writable."""
    parent = os.path.dirname(run_dir)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--run-dir {parent!r}: cannot create it ({err.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--run-dir {parent!r}: is not writable")


def _is_file(path: str) -> bool:
    """Whether `path` is a regular file itself (not a link to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_dir(path: str) -> bool:
    """Whether `path` is a folder itself (not a link to one)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _open_lock(path: str) -> int:
    """The lock file `path` opened for writing (created where missing), never through a
    link nor as anything but a regular file of its own (a hard link to another file
    would be truncated with it); ValueError naming it otherwise."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        why = ("is a symbolic link; not following it (remove it)" if err.errno == errno.ELOOP
               else f"cannot be opened ({err.strerror})")
        raise ValueError(f"lock file {path} {why}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise ValueError(f"lock file {path} is not a regular file of its own (a special file "
                         f"or a hard link); not writing it (remove it)")
    return fd


def _lock(run_dir: str) -> int:
    """An exclusive flock on `run_dir`'s lock file (holder's pid and command written in
    it); ValueError naming the holder where another process has it."""
    path = _side_paths(run_dir)[0]
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ValueError(f"run directory {run_dir} is in use by {holder} "
                         f"(lock {path}); wait for it or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:200]})\n".encode(), 0)
    return fd


def take(run_dir: str) -> None:
    """Lock `run_dir` for this process until `release` (ValueError naming the holder where
    another process has it, or the lock file where it is not one damdjax may write)."""
    fd = _lock(run_dir)
    _OPEN[run_dir] = {"fd": fd, "aside": None}


def _remove_tree(path: str) -> None:
    """The folder `path` and everything in it deleted (links inside it unlinked, never
    followed); ValueError, deleting nothing, where `path` itself is a link or no folder."""
    if not _is_dir(path):
        raise ValueError(f"{path} is not a folder (a link or a file); not deleting it")
    shutil.rmtree(path)


def _check_aside(aside: str) -> None:
    """ValueError naming `aside` unless it is what `set_aside` makes: a folder, not a
    link, holding the marker."""
    if not (_is_dir(aside) and has_marker(aside)):
        raise ValueError(f"{aside} is not a run that --overwrite set aside (a link, a file, or "
                         f"a folder without {MARKER}); not touching it: move it away")


def recover(run_dir: str) -> None:
    """Finish an --overwrite that a kill interrupted: the old run set aside comes back if
    the new one never reached its first checkpoint, else it is deleted. ValueError
    (nothing moved) where the set-aside path holds anything but a run set aside."""
    aside = aside_path(run_dir)
    if not os.path.lexists(aside):
        return
    _check_aside(aside)
    if _is_file(run_paths(run_dir)["checkpoint"]):
        _remove_tree(aside)
        return
    if os.path.lexists(run_dir):
        _remove_tree(run_dir)
    os.rename(aside, run_dir)
    warn(f"{run_dir}: an --overwrite was interrupted before its first checkpoint; "
         f"the earlier run is back")


def has_marker(run_dir: str) -> bool:
    """Whether `run_dir` holds the marker (MARKER) of a damdjax run directory, a regular
    file (not a link)."""
    return _is_file(os.path.join(run_dir, MARKER))


def write_marker(run_dir: str) -> None:
    """The marker (MARKER) written in `run_dir`."""
    write_bytes_atomic(b"damdjax run directory\n", os.path.join(run_dir, MARKER))


def _entries(folder: str):
    """Every entry under `folder` (os.DirEntry), without following links."""
    with os.scandir(folder) as it:
        for entry in it:
            yield entry
            if entry.is_dir(follow_symlinks=False):
                yield from _entries(entry.path)


def check_tree(run_dir: str) -> None:
    """ValueError naming the first path in the run directory `run_dir` that damdjax would
    not write: a symbolic link, anything but a regular file or folder (a pipe would block
    a write), or one of the run's files (RUN_FILES) that is not a regular file. A resume
    calls it before reading or writing anything there."""
    if not _is_dir(run_dir):
        raise ValueError(f"run directory {run_dir} is not a folder")
    for entry in _entries(run_dir):
        if entry.is_symlink():
            raise ValueError(f"{entry.path} is a symbolic link; a run directory holds only "
                             f"the files and folders damdjax writes (not following it)")
        is_file = entry.is_file(follow_symlinks=False)
        if entry.name in RUN_FILES and not is_file:
            raise ValueError(f"{entry.path} is not a regular file")
        if not (is_file or entry.is_dir(follow_symlinks=False)):
            raise ValueError(f"{entry.path} is neither a regular file nor a folder")


def remove_stale(run_dir: str) -> None:
    """The temp files that killed writes left in `run_dir` deleted, one line each."""
    for path in remove_stale_temps(run_dir):
        print(f"removed {path} (a write a kill interrupted)", flush=True)


def set_aside(run_dir: str) -> None:
    """The earlier run in `run_dir` (taken by `take`; a folder holding the marker) moved
    aside (`aside_path`) until the new run's first checkpoint (`settle`) or its end
    (`release`). ValueError where something already has the aside's name."""
    entry = _OPEN[run_dir]
    aside = aside_path(run_dir)
    if os.path.lexists(aside):
        raise ValueError(f"{aside} exists; not replacing it: move it away")
    os.rename(run_dir, aside)
    entry["aside"] = aside


def release(run_dir: str) -> None:
    """Give up `run_dir` (see `held`)."""
    entry = _OPEN.pop(run_dir, None)
    if entry is None:
        return
    try:
        if entry["aside"] is not None:  # the new run never reached its first checkpoint
            if _is_file(run_paths(run_dir)["checkpoint"]):
                _remove_tree(entry["aside"])
            else:
                if _is_dir(run_dir):
                    shutil.rmtree(run_dir, ignore_errors=True)
                os.rename(entry["aside"], run_dir)
                print(f"{run_dir}: the new run made no checkpoint; the earlier run is kept",
                      file=sys.stderr, flush=True)
    finally:
        os.close(entry["fd"])


@contextlib.contextmanager
def held(run_dir: str):
    """The block that uses a run directory `take` took (`damdjax.runs.open_run`): on
    leaving it (normally or not) the lock is released and, where an --overwrite's new
    run made no checkpoint, the earlier run put back."""
    try:
        yield run_dir
    finally:
        release(run_dir)


def settle(run_dir: str) -> None:
    """A checkpoint now exists in `run_dir`: the run an --overwrite set aside is deleted."""
    for root, entry in _OPEN.items():
        if entry["aside"] is not None and os.path.abspath(root) == os.path.abspath(run_dir):
            if _is_dir(entry["aside"]):
                shutil.rmtree(entry["aside"], ignore_errors=True)
            entry["aside"] = None
