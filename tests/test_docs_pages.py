"""The reference tables of docs/settings.md and docs/environment.md agree with the code.

docs/settings.md lists exactly the registered setting names (and the real-workload names
`register_workloads` adds), with the sizes `make` builds; docs/environment.md's
Observation, feature, Action, info and size tables list exactly the fields of the
structures the env returns, with their shapes and dtypes. A name, field or key added to
or removed from either side fails here. The env is only traced (`jax.eval_shape`), never
compiled, so the checks take a second or two.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from damdjax import registry
from damdjax.envs.config import EnvConfig
from damdjax.envs.env import EdgeEnv
from damdjax.envs.observation import (
    OWN_FEATURES, SERVER_FEATURES, SLOT_FEATURES, TASK_FEATURES, Observation)
from damdjax.envs.state import Action

DOCS = Path(__file__).resolve().parent.parent / "docs"
# A setting name as the pages write it: in backticks, `<Family>-<setting>-v<N>`
NAME_IN_TEXT = re.compile(r"`(" + registry.NAME_PATTERN.pattern + r")`")
# Tiny, pairwise different sizes, so that a wrong symbol in a shape shows
CONFIG = EnvConfig(n_max=9, m_max=3, p_max=2, queue_capacity=4, j_max=3)
SYMBOLS = {"N": CONFIG.n_max, "M": CONFIG.m_max, "Q": CONFIG.queue_capacity,
           "P": CONFIG.p_max, "F_t": len(TASK_FEATURES), "F_s": len(SERVER_FEATURES),
           "F_q": len(SLOT_FEATURES), "F_o": len(OWN_FEATURES)}


def page(name: str) -> str:
    return (DOCS / name).read_text()


def section(text: str, heading: str) -> str:
    """The text under the `## heading` line, up to the next heading of level 2 or less."""
    match = re.search(rf"^## {re.escape(heading)}\s*$", text, re.M)
    assert match, f"no '## {heading}' section"
    end = re.search(r"^#{1,2} ", text[match.end():], re.M)
    return text[match.end():match.end() + end.start() if end else None]


def tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of `text`: its body rows (header and separator dropped), each
    a list of stripped cells."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            assert len(current) >= 2 and set("".join(current[1])) <= set("-: "), current
            found.append(current[2:])
            current = []
    return found


def table_after(text: str, intro: str) -> list[list[str]]:
    """The first table that follows the line starting with `intro`."""
    start = text.index(intro)
    return tables(text[start:])[0]


def code_name(cell: str) -> str:
    """A first-column entry, `name` in backticks, as the bare name."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"table entry {cell!r} is not a name in backticks"
    return match.group(1)


def shape_of(cell: str) -> tuple[int, ...]:
    """A shape cell such as `[M, Q, F_q]` with the symbols of CONFIG's sizes."""
    inner = code_name(cell).strip("[]")
    return tuple(SYMBOLS[s.strip()] for s in inner.split(",") if s.strip())


def dtype_of(cell: str):
    return jnp.asarray(0.0).dtype if cell == "float" else jnp.dtype(cell)


def traced_env():
    """The observation, action and step info of a tiny env, as shapes (no compile)."""
    env = EdgeEnv(CONFIG)
    params = env.default_params
    key = jax.random.PRNGKey(0)
    obs, state = jax.eval_shape(env.reset, key, params)
    action = env.dummy_action()
    _, _, _, _, info = jax.eval_shape(env.step, key, state, action, params)
    return obs, action, info


@pytest.fixture(scope="module")
def traced():
    return traced_env()


# --- docs/settings.md --------------------------------------------------------------------

WORKLOAD_NAMES = [name for name, *_ in registry.WORKLOAD_NAMES]


def test_settings_page_names_exactly_the_registered_settings():
    text = page("settings.md")
    rows = tables(section(text, "Registered at import"))[0]
    listed = [code_name(row[0]) for row in rows]
    assert listed == list(registry.names()), "the table must list every registered name, " \
                                            "in registration order, and no other"
    workload_rows = tables(section(text, "Real workloads"))[0]
    assert [code_name(row[0]) for row in workload_rows] == WORKLOAD_NAMES
    # No name anywhere on the page (prose and code included) that is not registered
    known = set(registry.names()) | set(WORKLOAD_NAMES)
    mentioned = set(NAME_IN_TEXT.findall(text))
    assert mentioned - known == set(), "names on docs/settings.md that are not registered"


def test_settings_table_holds_what_make_builds():
    rows = tables(section(page("settings.md"), "Registered at import"))[0]
    for row in rows:
        name, tasks, servers, density, _load, padding = row[:6]
        env, params = registry.make(code_name(name))
        c = env.config
        assert (int(tasks), int(servers), float(density)) == (
            int(params.num_tasks), int(params.num_servers), float(params.density)), name
        assert padding == f"{c.n_max}, {c.m_max}, {c.queue_capacity}", name


def test_settings_workload_table_holds_the_registered_sizes():
    rows = tables(section(page("settings.md"), "Real workloads"))[0]
    for row, (name, _kind, _rel, slots, servers) in zip(rows, registry.WORKLOAD_NAMES):
        assert (code_name(row[0]), int(row[2]), int(row[3])) == (name, slots, servers)


# --- docs/environment.md ------------------------------------------------------------------

def test_observation_table_lists_every_field_with_its_shape_and_dtype(traced):
    obs, _, _ = traced
    rows = table_after(section(page("environment.md"), "Observation"), "| field |")
    fields = [f.name for f in dataclasses.fields(Observation)]
    assert [code_name(row[0]) for row in rows] == fields
    for name, shape, dtype, *_ in rows:
        leaf = getattr(obs, code_name(name))
        assert shape_of(shape) == leaf.shape, name
        assert dtype_of(dtype) == leaf.dtype, name


@pytest.mark.parametrize("intro, names", [
    ("Task features", TASK_FEATURES), ("Server features", SERVER_FEATURES),
    ("Slot features", SLOT_FEATURES), ("Own features", OWN_FEATURES)])
def test_feature_tables_list_every_feature_in_order(intro, names):
    rows = table_after(section(page("environment.md"), "Observation"), intro)
    assert tuple(code_name(row[0]) for row in rows) == names


def test_action_table_lists_every_field_with_its_shape_and_dtype(traced):
    _, action, _ = traced
    rows = table_after(section(page("environment.md"), "Action"), "| field |")
    assert [code_name(row[0]) for row in rows] == [f.name for f in dataclasses.fields(Action)]
    for name, shape, dtype, *_ in rows:
        leaf = getattr(action, code_name(name))
        assert shape_of(shape) == leaf.shape and dtype_of(dtype) == leaf.dtype, name


def test_info_table_lists_every_key_of_the_step_info(traced):
    _, _, info = traced
    rows = table_after(section(page("environment.md"), "Reward"), "| key |")
    keys = [code_name(row[0]) for row in rows]
    assert len(keys) == len(set(keys)), "a key listed twice"
    assert sorted(keys) == sorted(info)   # a traced dict comes back with sorted keys
    for key, shape, dtype, *_ in rows:
        leaf = info[code_name(key)]
        assert shape_of(shape) == leaf.shape and dtype_of(dtype) == leaf.dtype, key


def test_sizes_table_lists_every_envconfig_field_with_its_default():
    rows = tables(section(page("environment.md"), "Sizes"))[0]
    fields = dataclasses.fields(EnvConfig)
    assert [code_name(row[0]) for row in rows] == [f.name for f in fields]
    for row, f in zip(rows, fields):
        assert row[2] == str(f.default), f.name
