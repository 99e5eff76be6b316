"""The documentation site covers every public module (once) and every experiment log (no Sphinx).

``docs/site/api/*.rst`` document modules with the ``api-modules`` directive of
``docs/site/conf.py``: one module name a line, ``pkg.*`` for every public module below ``pkg``.
A new module that no list names would be missing from the site without any Sphinx warning; a
module named on two pages would be documented twice (an error in the Sphinx build, which
``.ci/docs`` runs with the docs extra). Public: no part of the dotted name starts with ``_``.
Each experiment log of ``docs/experiments/`` is included by a page of ``docs/site/experiments/``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "site"
PACKAGES = ("mtl_backends", "igb_env", "agents")
DIRECTIVE = re.compile(r"^\.\. api-modules::[^\n]*\n((?:[ \t]*\n|[ \t]+\S[^\n]*\n)*)", re.M)


def _module_files() -> dict[str, Path]:
    """Every module of the three packages, public or not, by dotted name (read from the files)."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts[-1] != "__main__":
                out[".".join(parts)] = path
    return out


def _conf() -> ModuleType:
    spec = importlib.util.spec_from_file_location("igb_docs_conf", SITE / "conf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented() -> dict[str, list[str]]:
    """Module name -> the API pages whose ``api-modules`` lists name it (wildcards expanded)."""
    conf = _conf()
    pages: dict[str, list[str]] = {}
    for page in sorted((SITE / "api").glob("*.rst")):
        for body in DIRECTIVE.findall(page.read_text()):
            for name in conf.expand_module_list(body.splitlines()):
                pages.setdefault(name, []).append(page.name)
    return pages


def test_every_public_module_is_on_exactly_one_api_page() -> None:
    documented = _documented()
    public = {n for n in _module_files() if not any(p.startswith("_") for p in n.split("."))}
    missing = sorted(public - set(documented))
    assert not missing, (
        f"modules missing from the API reference: {missing}; add each to the `api-modules` list "
        "of its area in docs/site/api/*.rst (or under a `pkg.*` line)"
    )
    twice = {name: pages for name, pages in documented.items() if len(pages) > 1}
    assert not twice, f"modules listed more than once (documented twice): {twice}"


def test_api_pages_name_only_existing_modules() -> None:
    stale = sorted(set(_documented()) - set(_module_files()))
    assert not stale, f"docs/site/api/*.rst name modules that do not exist: {stale}"


def test_every_experiment_log_has_a_page() -> None:
    logs = {path.name for path in (ROOT / "docs" / "experiments").glob("*.md")}
    pages = {path.name for path in (SITE / "experiments").glob("*.md")} - {"index.md"}
    assert logs <= pages, (
        f"experiment logs without a page in docs/site/experiments/: {sorted(logs - pages)}; add "
        "one that includes the log (as the others do) and list it in experiments/index.md"
    )
