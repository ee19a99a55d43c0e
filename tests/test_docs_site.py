"""The documentation site (mkdocs.yml, docs/): it builds in MkDocs' strict mode, where a
broken link or anchor, a link out of docs/ or a nav entry to a missing page fails the
build, and its nav lists every page under docs/ (a page left out is one nobody finds)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def nav_pages(entries) -> list[str]:
    """The page paths (relative to docs/) a MkDocs nav names: an entry is a path, a
    {title: path} or a {title: [entries]} section; external URLs are not pages."""
    pages = []
    for entry in entries:
        targets = entry.values() if isinstance(entry, dict) else [entry]
        for target in targets:
            if isinstance(target, list):
                pages += nav_pages(target)
            elif "://" not in target:
                pages.append(target)
    return pages


def test_site_builds_in_strict_mode(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's banner, not a problem
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}")
    assert (tmp_path / "index.html").is_file()


def test_nav_lists_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs"
    listed = nav_pages(config["nav"])
    on_disk = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(set(listed) - set(on_disk)) == [], "nav entries without a page"
    assert sorted(set(on_disk) - set(listed)) == [], "pages under docs/ not in the nav"
    assert len(listed) == len(set(listed)), "a page listed twice in the nav"


def test_citation_file_names_this_version_and_the_paper():
    """CITATION.cff parses, cites this version of the software and, preferred, the DAMD
    paper by its DOI."""
    import damdjax
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["version"] == damdjax.__version__
    assert cff["preferred-citation"]["doi"] == "10.18293/SEKE2023-059"


def test_docstrings_use_no_sphinx_roles():
    """The API page renders docstrings as Markdown (mkdocstrings), where a Sphinx role
    such as :func:`x` shows literally: the package's sources write `x` instead."""
    import re
    from test_layers import project_modules
    role = re.compile(r":(func|mod|class|meth|attr|data|obj|exc|ref):`")
    found = [f"{path.relative_to(ROOT)}:{n}"
             for path in project_modules().values()
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if role.search(line)]
    assert found == [], f"Sphinx roles in docstrings: {found}"
