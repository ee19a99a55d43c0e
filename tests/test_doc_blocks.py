"""Every code block of README.md and docs/**/*.md is run or checked, so that what the
documentation shows works as shown:

- ```python: a file's blocks run in order in one fresh Python process from the root
  of the clone (a later block uses the names of the earlier ones);
- ```bash: every command line (comments and blank lines aside, `\\` continuations
  joined; `&&` and `;` separate commands) is `make TARGET [VAR=VALUE ...]` with a
  target of the Makefile (its ARGS parsed by the command the target runs),
  `pip install ...` / `python -m pip install ...` with extras that pyproject.toml
  declares, `git clone ...`, `cd ...`, `pytest ...`, or `python -m COMMAND ARGS` with
  a command of train/, eval/ or envs/ (tests/doc_cli.py's ENTRY_POINTS) whose parser
  accepts ARGS (parsed, not run);
  A block that is only `--8<-- "examples/FILE"` (a script shown by pymdownx.snippets):
  the file parses with `bash -n` and its `python -m COMMAND` lines use only the
  command's own flags;
- ```text: not run (output, listings); ```json and ```yaml: must parse;
- any other language, or a fence without one: refused.

The checker itself is tested on small Markdown texts at the end of the file.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

import doc_cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LANGUAGES = ("python", "bash", "text", "json", "yaml")
PYTHON_TIMEOUT = 120   # seconds for all the python blocks of one file
SEPARATORS = ("&&", ";")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language (the info string's first word, "" without
    one), its text (the fence's indentation removed) and the line of its opening fence
    (1-based)."""
    lang: str
    text: str
    line: int


# ---------------------------------------------------------------------------
# Reading the blocks
# ---------------------------------------------------------------------------

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def code_blocks(markdown: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of `markdown`, and its problems (a fence never closed, as
    "LINE: ..."). A fence may be indented (in a list or an admonition); it closes at a
    line of at least as many of its characters and nothing else."""
    blocks, problems = [], []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m or (m["fence"][0] == "`" and "`" in m["info"]):  # inline code, not a fence
            i += 1
            continue
        start, indent, fence = i + 1, len(m["indent"]), m["fence"]
        words = m["info"].strip().lstrip("{").split()
        lang = words[0].lstrip(".").rstrip("}").lower() if words else ""
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body = []
        i += 1
        while i < len(lines) and not close.match(lines[i]):
            line = lines[i]
            cut = len(line) - len(line.lstrip(" \t"))
            body.append(line[min(cut, indent):])
            i += 1
        if i == len(lines):
            problems.append(f"{start}: the fence opened here is never closed")
        blocks.append(Block(lang, "\n".join(body) + "\n" if body else "", start))
        i += 1
    return blocks, problems


def logical_lines(text: str, first: int) -> list[tuple[int, str]]:
    """A shell block's command lines with their line numbers (`first`: the block's first
    line): `\\` continuations joined, blank and comment lines left out."""
    out, pending, pending_line = [], "", None
    for number, line in enumerate(text.splitlines(), start=first):
        if pending_line is None:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            pending_line = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((pending_line, pending + line))
        pending, pending_line = "", None
    if pending_line is not None:
        out.append((pending_line, pending))
    return out


# ---------------------------------------------------------------------------
# What the commands may be
# ---------------------------------------------------------------------------

@lru_cache(maxsize=None)
def makefile_targets() -> dict[str, tuple[str, list[str]] | None]:
    """The Makefile's targets -> (the `python -m` command it runs with $(ARGS), the
    arguments before them), or None for a target that passes no ARGS to a command."""
    targets: dict[str, tuple[str, list[str]] | None] = {}
    current: list[str] = []
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t"):
            m = re.search(r"-m\s+([\w.]+)(.*?)\$\(ARGS\)", line)
            if m and m[1] in doc_cli.ENTRY_POINTS:
                for target in current:
                    targets[target] = (m[1], shlex.split(m[2]))
            continue
        m = re.match(r"^([A-Za-z0-9_\-][A-Za-z0-9_.\- ]*?)\s*:(?![=:])", line)
        current = m[1].split() if m else []
        for target in current:
            targets.setdefault(target, None)
    return targets


@lru_cache(maxsize=None)
def extras() -> frozenset[str]:
    """The optional-dependency groups of pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return frozenset(project.get("optional-dependencies", {}))


@lru_cache(maxsize=None)
def parse_error(command: str, args: tuple[str, ...]) -> str | None:
    """`doc_cli.parse_error`, once per command line."""
    return doc_cli.parse_error(command, list(args))


def _last(message: str) -> str:
    """A parser's error without its usage lines: the last line, "PROG: error: ..."."""
    return message.strip().splitlines()[-1]


def _pip_problem(args: list[str]) -> str | None:
    """Extras of this project (`.`, a path, or `damdjax`) that pyproject.toml lacks."""
    for arg in args:
        m = re.fullmatch(r"(?P<target>[^\[\]]+)\[(?P<extras>[^\]]*)\]", arg)
        if not m:
            continue
        target = m["target"]
        ours = target == "damdjax" or target.startswith((".", "/"))
        if not ours:
            continue   # another package's extras: not ours to check
        unknown = sorted(set(e.strip() for e in m["extras"].split(",")) - extras())
        if unknown:
            return (f"extras {', '.join(unknown)} are not in pyproject.toml "
                    f"(it has {', '.join(sorted(extras()))})")
    return None


def command_problem(words: list[str]) -> str | None:
    """Why one command (its words) is not one the documentation may show, or None."""
    head = words[0]
    if head == "make":
        targets = [w for w in words[1:] if "=" not in w]
        variables = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        if not targets or any(t.startswith("-") for t in targets):
            return "make needs a target of the Makefile and no options"
        known = makefile_targets()
        for target in targets:
            if target not in known:
                return (f"make {target}: no such target in the Makefile "
                        f"(it has {', '.join(t for t in known if not t.startswith('.'))})")
        for target in targets:
            if known[target] and "ARGS" in variables:
                module, before = known[target]
                err = parse_error(module, tuple(before + shlex.split(variables["ARGS"])))
                if err:
                    return (f"make {target} runs python -m {module}, which refuses ARGS: "
                            f"{_last(err)}")
        return None
    if head in ("pip", "pip3") and words[1:2] == ["install"]:
        return _pip_problem(words[2:])
    if head in ("python", "python3") and words[1:2] == ["-m"] and len(words) > 2:
        module, args = words[2], words[3:]
        if module == "pip" and args[:1] == ["install"]:
            return _pip_problem(args[1:])
        if module not in doc_cli.ENTRY_POINTS:
            return (f"python -m {module}: not a command of this project "
                    f"({', '.join(doc_cli.ENTRY_POINTS)})")
        err = parse_error(module, tuple(args))
        return None if err is None else f"python -m {module} refuses its arguments: {_last(err)}"
    if words[:2] == ["git", "clone"] or head in ("cd", "pytest"):
        return None
    return (f"{shlex.join(words)!r} is none of: make TARGET, pip install, git clone, cd, "
            "pytest, python -m COMMAND")


def shell_words(line: str) -> list[str]:
    """A command line's words; `&&`, `;` and other shell operators are words of their own,
    a word that starts with # starts a comment."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words = []
    for word in lexer:
        if word.startswith("#"):
            break
        words.append(word)
    return words


_INCLUDE = re.compile(r'^--8<-- "(?P<path>examples/[^"]+)"$')
_MODULE = re.compile(r"python3? -m (?P<module>[\w.]+)(?P<rest>[^\"|&;]*)")


def script_problems(path: str, line: int) -> list[str]:
    """A script of examples/ that a page includes (pymdownx.snippets): it exists, `bash
    -n` reads it, and every `python -m COMMAND ...` in it names a command of this project
    whose flags (the `--words`; values may be shell variables) its parser has."""
    file = ROOT / path
    if not file.is_file():
        return [f"{line}: included {path} does not exist"]
    check = subprocess.run(["bash", "-n", str(file)], capture_output=True, text=True)
    if check.returncode:
        return [f"{line}: bash -n {path}: {check.stderr.strip()}"]
    text = file.read_text().replace("\\\n", " ")
    problems = []
    for m in _MODULE.finditer(text):
        module = m["module"]
        if module not in doc_cli.ENTRY_POINTS:
            problems.append(f"{line}: {path}: python -m {module}: not a command of this project")
            continue
        known = {o for a in doc_cli.parser_of(module)._actions for o in a.option_strings}
        for flag in re.findall(r"(?<!\S)(--[\w-]+)", m["rest"]):
            if flag not in known:
                problems.append(f"{line}: {path}: python -m {module} has no flag {flag}")
    return problems


def bash_problems(block: Block) -> list[str]:
    include = _INCLUDE.match(block.text.strip())
    if include:
        return script_problems(include["path"], block.line)
    problems = []
    for number, line in logical_lines(block.text, block.line + 1):
        try:
            words = shell_words(line)
        except ValueError as e:   # an unclosed quote
            problems.append(f"{number}: {e}: {line.strip()}")
            continue
        command: list[str] = []
        for word in [*words, ";"]:
            if word in SEPARATORS:
                if command:
                    why = command_problem(command)
                    if why:
                        problems.append(f"{number}: {why}")
                command = []
            elif word and set(word) <= set("();<>|&"):
                problems.append(f"{number}: shell operator {word!r} (only && and ; join "
                                f"commands): {line.strip()}")
                break
            else:
                command.append(word)
    return problems


def block_problems(block: Block) -> list[str]:
    """Why a block that is not python fails, as "LINE: ..." (the fence's line)."""
    if block.lang == "bash":
        return bash_problems(block)
    if block.lang == "json":
        try:
            json.loads(block.text)
        except ValueError as e:
            return [f"{block.line}: json block does not parse: {e}"]
    elif block.lang == "yaml":
        try:
            list(yaml.safe_load_all(block.text))
        except yaml.YAMLError as e:
            return [f"{block.line}: yaml block does not parse: {e}"]
    elif block.lang not in LANGUAGES:
        what = f"language {block.lang!r}" if block.lang else "a fence without a language"
        return [f"{block.line}: {what}; a block is one of {', '.join(LANGUAGES)}"]
    return []


def markdown_problems(markdown: str, name: str) -> list[str]:
    """Every problem of a page's blocks other than running its python, as NAME:LINE: ..."""
    blocks, problems = code_blocks(markdown)
    for block in blocks:
        if block.lang != "python":
            problems += block_problems(block)
    return [f"{name}:{p}" for p in problems]


# ---------------------------------------------------------------------------
# Running the python blocks
# ---------------------------------------------------------------------------

# Runs the blocks of one file in order in one namespace; each block is compiled under
# the file's name at its own lines, so a traceback points into the page.
_DRIVER = r"""
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for block in blocks:
    print(f"\ndoc-block {block['line']}", file=sys.stderr, flush=True)
    code = "\n" * block["line"] + block["text"]
    try:
        exec(compile(code, sys.argv[2], "exec"), namespace)
    except SystemExit as e:
        if e.code not in (0, None):
            traceback.print_exc()
            sys.exit(3)
    except BaseException:
        traceback.print_exc()
        sys.exit(3)
"""


def _running_block(stderr: str) -> str:
    lines = re.findall(r"^doc-block (\d+)$", stderr or "", flags=re.M)
    return lines[-1] if lines else "?"


def python_failure(markdown: str, name: str, timeout: float = PYTHON_TIMEOUT) -> str | None:
    """None where the python blocks of `markdown` run in order in one fresh process
    (from the root of the clone) without an error; else which block failed and how."""
    blocks = [b for b in code_blocks(markdown)[0] if b.lang == "python"]
    if not blocks:
        return None
    with tempfile.TemporaryDirectory(prefix="doc-blocks-") as tmp:
        source = Path(tmp) / "blocks.json"
        source.write_text(json.dumps([{"line": b.line, "text": b.text} for b in blocks]))
        env = dict(os.environ, MPLBACKEND="Agg")
        try:
            result = subprocess.run([sys.executable, "-c", _DRIVER, str(source), name],
                                    cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=timeout)
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            return (f"{name}: the python block at line {_running_block(err)} did not end "
                    f"within {timeout:g} s (the file's blocks run in one process)\n"
                    f"{err[-3000:]}")
    if result.returncode == 0:
        return None
    tail = re.sub(r"^doc-block \d+\n", "", result.stderr, flags=re.M)[-3000:]
    return (f"{name}: the python block at line {_running_block(result.stderr)} failed "
            f"(exit code {result.returncode}; the file's blocks run in order in one "
            f"process):\n{tail}")


# ---------------------------------------------------------------------------
# The pages
# ---------------------------------------------------------------------------

def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _has_python(page: Path) -> bool:
    return any(b.lang == "python" for b in code_blocks(page.read_text())[0])


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_blocks_of_page(page):
    """The page's bash, json, yaml and text blocks, and its fences' languages."""
    problems = markdown_problems(page.read_text(), _name(page))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", [p for p in PAGES if _has_python(p)], ids=_name)
def test_python_blocks_of_page(page):
    failure = python_failure(page.read_text(), _name(page))
    assert failure is None, failure


# ---------------------------------------------------------------------------
# The checker, on pages made up for it
# ---------------------------------------------------------------------------

def _md(*blocks: tuple[str, str]) -> str:
    """Markdown with one paragraph and then each (info string, body) as a block."""
    out = ["# A page", "", "Some text.", ""]
    for info, body in blocks:
        out += [f"```{info}", *body.splitlines(), "```", ""]
    return "\n".join(out)


def test_reads_fences_as_markdown_does():
    text = ("Intro\n\n"
            "````text\n```python\nnot a block\n```\n````\n\n"
            "- a list item:\n\n    ```bash\n    cd docs\n    ```\n\n"
            "~~~json\n{\"a\": 1}\n~~~\n\n"
            "```code``` at a line's start is inline code.\n\n"
            "```{.yaml}\na: 1\n```\n")
    blocks, problems = code_blocks(text)
    assert problems == []
    assert [(b.lang, b.line) for b in blocks] == [
        ("text", 3), ("bash", 11), ("json", 15), ("yaml", 21)]
    assert blocks[0].text == "```python\nnot a block\n```\n"
    assert blocks[1].text == "cd docs\n"
    assert code_blocks("x\n```python\nprint(1)\n")[1] == [
        "2: the fence opened here is never closed"]


def test_accepts_the_allowed_commands():
    text = _md(("bash", "# a comment\n\n"
                        "git clone https://example.org/damdjax.git\n"
                        "cd damdjax && make test\n"
                        "make run ARGS=\"--num-envs 64 --num-chunks 2\"   # a short run\n"
                        "python -m pip install -e '.[test,docs]'\n"
                        "pip install -e \".[gym]\" jax[cuda12]\n"
                        "python -m train.dqn --num-envs 8 \\\n"
                        "    --num-tasks 20 --name tiny\n"
                        "python3 -m train.sweep --trainer mdqn --grid lr=1e-4,1e-3\n"
                        "python -m eval.compare --help\n"
                        "pytest -q tests/test_doc_blocks.py\n"),
               ("text", "$ anything at all\n"),
               ("json", '{"a": [1, 2]}'), ("yaml", "a: 1\nb: [x, y]\n"))
    assert markdown_problems(text, "ok.md") == []


@pytest.mark.parametrize("body, line, message", [
    ("python -m train.dqn --no-such-flag", 6, "unrecognized arguments: --no-such-flag"),
    ("python -m train.dqn --num-envs eight", 6, "--num-envs"),
    ("python -m train.dqn \\\n  --num-envs 8 \\\n  --bogus 1", 6, "--bogus"),
    ("cd x\n\npython -m eval.compare --methods", 8, "--methods"),
    ("make deploy", 6, "make deploy: no such target"),
    ("make run ARGS='--nope'", 6, "refuses ARGS"),
    ("make -j2 test", 6, "no options"),
    ("pip install -e '.[nope,docs]'", 6, "extras nope are not in pyproject.toml"),
    ("python -m train.nothing", 6, "not a command of this project"),
    ("python -m pytest -q", 6, "not a command of this project"),
    ("rm -rf runs", 6, "is none of"),
    ("XLA_FLAGS=x python -m train.dqn", 6, "is none of"),
    ("cd x && curl http://x", 6, "is none of"),
    ("python -m eval.bench > out.txt", 6, "shell operator '>'"),
    ("echo 'unclosed", 6, "No closing quotation"),
])
def test_refuses_bad_commands(body, line, message):
    problems = markdown_problems(_md(("bash", body)), "bad.md")
    assert len(problems) == 1 and problems[0].startswith(f"bad.md:{line}: "), problems
    assert message in problems[0], problems


@pytest.mark.parametrize("info, body, message", [
    ("ruby", "puts 1", "bad.md:5: language 'ruby'"),
    ("", "anything", "bad.md:5: a fence without a language"),
    ("sh", "make test", "bad.md:5: language 'sh'"),
    ("json", "{'a': 1}", "bad.md:5: json block does not parse"),
    ("yaml", "a: [1, 2\n", "bad.md:5: yaml block does not parse"),
])
def test_refuses_other_blocks(info, body, message):
    problems = markdown_problems(_md(("bash", "make test"), (info, body)), "bad.md")
    assert len(problems) == 1 and problems[0].startswith(message.replace(":5:", ":9:")), problems


def test_included_scripts_are_read_and_their_flags_known(tmp_path, monkeypatch):
    """A fence that includes an examples/ script: the script must exist, parse as bash and
    use only flags its commands have."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "examples").mkdir()
    good = 'srun python -m train.sweep --distributed --seeds $N \\\n    --name big\n'
    (tmp_path / "examples" / "good.sh").write_text(good)
    (tmp_path / "examples" / "flag.sh").write_text("python -m train.sweep --no-such-flag 1\n")
    (tmp_path / "examples" / "syntax.sh").write_text("for i in 1; do\n")
    (tmp_path / "examples" / "other.sh").write_text("python -m nosuch.module\n")

    def problems(name):
        return bash_problems(Block("bash", f'--8<-- "examples/{name}"\n', 3))
    assert problems("good.sh") == []
    assert "no flag --no-such-flag" in problems("flag.sh")[0]
    assert "bash -n" in problems("syntax.sh")[0]
    assert "not a command" in problems("other.sh")[0]
    assert "does not exist" in problems("missing.sh")[0]


def test_python_blocks_share_one_process():
    ok = _md(("python", "import damdjax\nx = 41\n"), ("text", "41"),
             ("python", "assert x + 1 == 42\nassert damdjax.__version__\n"))
    assert python_failure(ok, "ok.md") is None


def test_python_failure_names_the_block_and_the_error():
    text = _md(("python", "x = 1\n"), ("python", "y = x\nraise ValueError('broken page')\n"),
               ("python", "print('never')\n"))
    failure = python_failure(text, "bad.md")
    assert failure is not None
    assert failure.startswith("bad.md: the python block at line 9 failed")
    assert "ValueError: broken page" in failure
    assert 'File "bad.md", line 11' in failure   # the line of the raise, in the page
    assert python_failure(_md(("python", "import sys\nsys.exit(2)\n")), "x.md") is not None
    assert python_failure(_md(("python", "import sys\nsys.exit(0)\n")), "x.md") is None


def test_python_timeout_names_the_block():
    text = _md(("python", "x = 1\n"), ("python", "import time\ntime.sleep(60)\n"))
    failure = python_failure(text, "slow.md", timeout=3)
    assert failure is not None and failure.startswith(
        "slow.md: the python block at line 9 did not end within 3 s"), failure
