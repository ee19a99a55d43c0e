"""docs/cli.md, generated: every `python -m` command's purpose and its `--help`.

    python tests/doc_cli.py --write    # write docs/cli.md
    python tests/doc_cli.py --check    # exit 1 where docs/cli.md is not what it generates

One process imports every command's module and asks its `main` for its parser (the
parser's `parse_args` is stopped before it parses): the parser `python -m X` uses,
whether the module builds it in `build_parser()` or inside `main`, and the flags a
command chooses from its arguments (train.sweep's `--trainer`). Its help is printed
for a terminal of WIDTH columns (argparse reads COLUMNS), so the page does not depend
on the terminal it was made in. tests/test_docs_reference.py regenerates the page and
compares it with a `python -m X --help` subprocess; tests/test_doc_blocks.py parses the
documentation's `python -m` lines with `parse_error`.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "cli.md"
WIDTH = 88   # the COLUMNS the help is printed for
# (group heading, the commands of the group): `python -m` NAME runs damdjax.NAME's main
GROUPS = (
    ("Training", ("train.dqn", "train.mdqn", "train.damd", "train.sweep", "train.launch")),
    ("Evaluation and benchmarks", (
        "eval.compare", "eval.figures", "eval.bench", "eval.bench_train", "eval.traffic",
        "eval.spreads", "eval.target_spread", "eval.tune", "eval.optimal")),
    ("Instance files", ("envs.convert",)),
)
ENTRY_POINTS = tuple(name for _, names in GROUPS for name in names)
REGENERATE = "python tests/doc_cli.py --write"


class _Stopped(BaseException):
    """Raised in place of a command's first `parse_args`: the parser it was called on.
    A BaseException, so that no `except Exception` of the command swallows it."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


@contextlib.contextmanager
def _stop_at_parse() -> Iterator[None]:
    original = argparse.ArgumentParser.parse_args

    def stop(self, args=None, namespace=None):
        raise _Stopped(self)

    argparse.ArgumentParser.parse_args = stop
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


@contextlib.contextmanager
def _columns(width: int = WIDTH) -> Iterator[None]:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def module_of(name: str):
    """damdjax's module behind `python -m NAME` (train/NAME.py runs its `main`)."""
    if name not in ENTRY_POINTS:
        raise KeyError(f"{name!r} is not a command (one of {', '.join(ENTRY_POINTS)})")
    return importlib.import_module(f"damdjax.{name}")


def parser_of(name: str, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser `python -m NAME ARGV` parses ARGV with: its `main(argv)` run up to its
    first `parse_args` (nothing before that reads files, trains or starts JAX)."""
    main = module_of(name).main
    with _stop_at_parse():
        try:
            main(list(argv))
        except _Stopped as stopped:
            return stopped.parser
    raise RuntimeError(f"damdjax.{name}.main returned without parsing its arguments")


def subcommands(name: str) -> tuple[str, ...]:
    """The subcommands of `python -m NAME` (envs.convert's sources), in their order."""
    for action in parser_of(name, ["--help"])._actions:
        if isinstance(action, argparse._SubParsersAction):
            return tuple(action.choices)
    return ()


def help_text(name: str, subcommand: str | None = None) -> str:
    """What `COLUMNS=WIDTH python -m NAME [SUBCOMMAND] --help` prints."""
    argv = ["--help"] if subcommand is None else [subcommand, "--help"]
    parser = parser_of(name, argv)
    if subcommand is not None:
        parser = next(a for a in parser._actions
                      if isinstance(a, argparse._SubParsersAction)).choices[subcommand]
    with _columns():
        return parser.format_help()


def parse_error(name: str, argv: Sequence[str]) -> str | None:
    """None where `python -m NAME ARGV`'s parser accepts ARGV (nothing runs), else its
    error message."""
    parser = parser_of(name, argv)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(list(argv))
        except SystemExit as e:
            if e.code not in (0, None):
                return err.getvalue().strip() or f"exit code {e.code}"
    return None


def purpose(name: str) -> str:
    """The first paragraph of the command's module docstring, on one line."""
    doc = (module_of(name).__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return ticks


def render() -> str:
    """The text of docs/cli.md."""
    out = [
        "# Command line",
        "",
        "Every command runs from the root of a clone as `python -m NAME`: the `train/`,",
        "`eval/` and `envs/` folders hold thin entry points around `damdjax.train`,",
        "`damdjax.eval` and `damdjax.envs`, and stay out of the installed package. Each section gives a command's purpose and",
        f"the full text of its `--help`, as printed for a terminal {WIDTH} columns wide.",
        "A bad flag or value ends a command before any work with a one-line error and",
        "exit code 2.",
        "",
        "This page is generated from the parsers themselves; after changing a flag, run",
        f"`{REGENERATE}` (the test suite fails while the page is out of date).",
        "",
    ]
    for group, names in GROUPS:
        out += [f"## {group}", ""]
        for name in names:
            text = help_text(name).rstrip("\n")
            fence = _fence(text)
            out += [f"### `{name}`", "", purpose(name), "",
                    f"{fence}text", text, fence, ""]
            for sub in subcommands(name):
                text = help_text(name, sub).rstrip("\n")
                fence = _fence(text)
                out += [f"#### `{name} {sub}`", "", f"{fence}text", text, fence, ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tests/doc_cli.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"write {PAGE.relative_to(ROOT)}")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 where the page is not what it generates")
    mode.add_argument("--print", action="store_true", help="print the page")
    args = p.parse_args(argv)
    text = render()
    if args.print:
        sys.stdout.write(text)
    elif args.write:
        PAGE.write_text(text)
        print(f"wrote {PAGE.relative_to(ROOT)}")
    elif not PAGE.is_file() or PAGE.read_text() != text:
        print(f"{PAGE.relative_to(ROOT)} is out of date: run {REGENERATE}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))   # run as a script: damdjax from this clone
    sys.exit(main())
