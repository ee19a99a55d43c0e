"""The reference pages of the documentation: docs/cli.md is what tests/doc_cli.py
generates from the commands' parsers (and that is what `--help` prints), docs/api.md
documents the public modules through mkdocstrings."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import doc_cli

ROOT = Path(__file__).resolve().parent.parent


def test_cli_page_is_up_to_date():
    assert doc_cli.PAGE.is_file(), f"docs/cli.md is missing: run {doc_cli.REGENERATE}"
    assert doc_cli.PAGE.read_text() == doc_cli.render(), (
        f"docs/cli.md is out of date with the commands' flags: run {doc_cli.REGENERATE}")


@pytest.mark.parametrize("name, sub", [("train.sweep", None), ("eval.traffic", None),
                                       ("envs.convert", "alibaba")])
def test_generated_help_is_what_the_command_prints(name, sub):
    """In-process help is the subprocess's `--help`: train.sweep chooses its flags from
    its arguments and its entry point joins other processes first; eval.traffic builds
    its parser inside `main`; envs.convert's sources are subcommands."""
    env = dict(os.environ, COLUMNS=str(doc_cli.WIDTH))
    argv = [sys.executable, "-m", name, *([sub] if sub else []), "--help"]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == doc_cli.help_text(name, sub)


def test_every_command_is_on_the_page():
    """Every `python -m` module of train/, eval/ and envs/ is a documented command, with
    each of its subcommands."""
    modules = sorted(f"{folder}.{p.stem}" for folder in ("train", "eval", "envs")
                     for p in (ROOT / folder).glob("*.py") if p.stem != "__init__")
    assert modules == sorted(doc_cli.ENTRY_POINTS)
    page = doc_cli.PAGE.read_text()
    for name in doc_cli.ENTRY_POINTS:
        assert f"### `{name}`" in page and f"usage: python -m {name} " in page
        for sub in doc_cli.subcommands(name):
            assert f"#### `{name} {sub}`" in page and f"usage: python -m {name} {sub} " in page
    assert doc_cli.subcommands("envs.convert") == ("wfcommons", "alibaba", "wfchef")


def test_parse_error_names_the_bad_flag():
    assert doc_cli.parse_error("train.dqn", ["--num-envs", "8"]) is None
    assert doc_cli.parse_error("train.sweep", ["--trainer", "mdqn", "--grid", "lr=1e-3"]) is None
    err = doc_cli.parse_error("train.dqn", ["--no-such-flag"])
    assert err is not None and "--no-such-flag" in err
    err = doc_cli.parse_error("train.dqn", ["--num-envs", "many"])
    assert err is not None and "--num-envs" in err
    with pytest.raises(KeyError):
        doc_cli.parser_of("train.nothing")


def test_api_page_documents_the_public_modules():
    """docs/api.md renders each public module (`::: module`) with the mkdocstrings plugin
    configured; each named module exists (a misspelt one fails the site's build too)."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    plugins = [next(iter(p)) if isinstance(p, dict) else p for p in config["plugins"]]
    assert "mkdocstrings" in plugins and "search" in plugins
    page = (ROOT / "docs" / "api.md").read_text()
    documented = re.findall(r"^::: ([\w.]+)", page, flags=re.M)
    for module in ("damdjax", "damdjax.envs.env", "damdjax.envs.config", "damdjax.envs.state",
                   "damdjax.registry", "damdjax.wrappers", "damdjax.views.dispatcher",
                   "damdjax.views.schedulers", "damdjax.views.joint",
                   "damdjax.bridges.gymnasium", "damdjax.bridges.pettingzoo",
                   "damdjax.heuristics", "damdjax.eft", "damdjax.family", "damdjax.tuning",
                   "damdjax.evaluation", "damdjax.train.dqn", "damdjax.train.mdqn",
                   "damdjax.train.damd", "damdjax.train.sweep", "damdjax.optimal"):
        assert module in documented, f"docs/api.md does not document {module}"
    for name in documented:
        head = name
        while not _is_module(head):   # a module's member: its module
            head = head.rpartition(".")[0]
            assert head, f"docs/api.md names {name}, which is not in damdjax"


def _is_module(name: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:   # a name inside a module, not a package
        return False
