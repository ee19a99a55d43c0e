"""The installed package: a wheel built from the source, installed into a fresh virtual
environment, imported and stepped from a user's project that has its own `envs/`
package, `train.py` and `eval/` package (names an installed damdjax must not claim)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

USER_CODE = textwrap.dedent("""
    import sys
    import envs, train, eval as user_eval          # the user's own modules come first
    assert envs.OWNER == train.OWNER == user_eval.OWNER == "user", "user modules shadowed"
    import damdjax
    import damdjax.heuristics, damdjax.train.dqn    # both failed when envs/train were installed
    from damdjax import EdgeEnv, EnvConfig, EnvParams, make_train, DQNConfig
    import jax, jax.numpy as jnp
    env = EdgeEnv(EnvConfig(n_max=8, m_max=2, queue_capacity=4))
    params = EnvParams(num_tasks=8, num_servers=2)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    step = jax.jit(env.step)
    for _ in range(3):
        obs, state, reward, done, info = step(jax.random.PRNGKey(1), state,
                                              env.dummy_action(), params)
    print("version", damdjax.__version__)
    print("file", damdjax.__file__)
    print("stepped", float(state.time))
""")


def build_wheel(out: Path) -> Path:
    """A wheel of the project, built from a copy of what it packages (the source tree
    stays untouched)."""
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "damdjax", src / "damdjax",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out / "dist"), str(src)],
                   check=True, capture_output=True, text=True)
    (wheel,) = (out / "dist").glob("damdjax-*.whl")
    return wheel


def fresh_venv(path: Path) -> Path:
    """A new virtual environment whose only site-packages entries are its own and, as
    plain path entries, the dependencies' (jax, flax, ... of this interpreter; their
    .pth hooks, such as a development install's, are not run)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True
                          ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    Path(site, "damdjax-test-deps.pth").write_text(deps + "\n")
    return python


def test_wheel_installs_next_to_a_users_envs_train_and_eval(tmp_path):
    wheel = build_wheel(tmp_path)
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"damdjax"}, tops

    python = fresh_venv(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)

    project = tmp_path / "project"
    for pkg in ("envs", "eval"):
        (project / pkg).mkdir(parents=True)
        (project / pkg / "__init__.py").write_text('OWNER = "user"\n')
    (project / "envs" / "dynamics.py").write_text("raise ImportError('the user envs')\n")
    (project / "train.py").write_text('OWNER = "user"\n')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([str(python), "-c", USER_CODE], cwd=project, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    from damdjax import __version__
    assert out["version"] == __version__
    assert Path(out["file"]).resolve().is_relative_to((tmp_path / "venv").resolve())
    assert float(out["stepped"]) >= 0.0


def test_version_and_public_names():
    """`damdjax.__version__` is the package's version; every exported name resolves to
    the object of the module that defines it."""
    import importlib
    import importlib.metadata

    import damdjax
    assert damdjax.__version__ == importlib.metadata.version("damdjax")
    for name, module in damdjax._EXPORTS.items():
        assert getattr(damdjax, name) is getattr(importlib.import_module(module), name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        damdjax.nope


def _main_block(path: Path) -> str:
    """The source of a module's `if __name__ == "__main__":` body."""
    import ast
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return "\n".join(ast.unparse(s) for s in node.body)
    raise AssertionError(f"{path} has no __main__ block")


@pytest.mark.parametrize("entry", sorted(
    str(p.relative_to(ROOT)) for top in ("envs", "train", "eval")
    for p in (ROOT / top).glob("*.py") if p.name != "__init__.py"))
def test_entry_points_run_their_module_as_it_runs_itself(entry):
    """`python -m train.dqn` (a clone's entry point) does what `python -m damdjax.train.dqn`
    does: the same module's `main`, called the same way (a `sys.exit(main())` where the
    module returns an exit code, a plain `main()` where it returns its results)."""
    module = ROOT / "damdjax" / entry
    assert module.exists(), f"{entry} names no module of damdjax"
    assert _main_block(ROOT / entry) == _main_block(module)
    assert f"from damdjax.{entry[:-3].replace('/', '.')} import main" in (ROOT / entry).read_text()
