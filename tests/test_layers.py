"""The import layers (damdjax/__init__.py's docstring), read from the source (AST).

From the bottom: `damdjax.io` (standard library only), `damdjax.envs` (the model),
the algorithms in `damdjax` itself, `damdjax.train`, `damdjax.eval`, and the clone's
entry-point folders `envs/`, `train/`, `eval/`. A module imports only from its own
layer or those below, and the project's modules import each other without a circle
(function-level imports count too: a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY_FOLDERS = ("envs", "train", "eval")


def layer(module: str) -> int:
    """The layer of a project module (`damdjax.x.y`, or an entry point `train.dqn`)."""
    parts = module.split(".")
    if parts[0] in ENTRY_FOLDERS:
        return 5
    if module == "damdjax.io":
        return 0
    sub = parts[1] if len(parts) > 1 else ""
    return {"envs": 1, "train": 3, "eval": 4}.get(sub, 2)


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    found = {}
    for top in ("damdjax", *ENTRY_FOLDERS):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports (module level or inside functions)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            # `from pkg import sub` names a submodule when one exists
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_layers_are_read():
    """The scan finds the packages and their imports (a scan that finds nothing passes
    every rule below)."""
    graph = import_graph()
    assert {"damdjax.envs.env", "damdjax.train.dqn", "damdjax.eval.compare",
            "train.dqn"} <= set(graph)
    assert "damdjax.envs.dynamics" in graph["damdjax.envs.env"]
    assert "damdjax.train.dqn" in graph["train.dqn"]


def test_no_module_imports_from_a_layer_above():
    bad = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
           for m, targets in import_graph().items() for t in sorted(targets)
           if layer(t) > layer(m) and m != "damdjax"]
    assert not bad, "\n".join(bad)


def test_the_model_and_io_stand_alone():
    """`damdjax.io` imports no project module; `damdjax.envs` only itself and io."""
    graph = import_graph()
    assert not graph["damdjax.io"]
    bad = [f"{m} imports {t}" for m, targets in graph.items() if m.startswith("damdjax.envs")
           for t in targets if not (t.startswith("damdjax.envs") or t == "damdjax.io")]
    assert not bad, "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (its modules in order), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circle():
    # the package's own __init__ exports lazily (by name), and a package imports its
    # submodules' parent implicitly: neither is an edge
    graph = {m: {t for t in ts if t != "damdjax"} for m, ts in import_graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("graph, circle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
])
def test_find_cycle_finds_circles(graph, circle):
    assert (find_cycle(graph) is not None) == circle


def test_layers_catch_an_upward_import(tmp_path):
    """The scan sees a function-level import of an algorithm in a model module (a planted
    file), and the layers rank it upward."""
    env = tmp_path / "env.py"
    env.write_text("def f():\n    from damdjax.heuristics import x\n")
    modules = {"damdjax.envs.env": env, "damdjax.heuristics": tmp_path / "h.py"}
    assert imports_of("damdjax.envs.env", env, modules) == {"damdjax.heuristics"}
    assert layer("damdjax.heuristics") > layer("damdjax.envs.env")
