"""Sphinx configuration of the igb-rl documentation site.

Build (warnings are errors, as in CI): ``bash .ci/docs [OUTDIR]``, or
``python -m sphinx -W --keep-going -b html docs/site OUTDIR`` after ``pip install -e ".[docs]"``.
Guide pages are Markdown (MyST); ``docs/architecture.md`` and the experiment logs under
``docs/experiments/`` are included in place, not copied. The API reference is generated from the
docstrings (autodoc + autosummary + napoleon, Google style) by the ``api-modules`` directive below:
one page per area, one section per module, nothing written into the source tree.
"""

from __future__ import annotations

import builtins
import importlib.util
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The checkout's packages, whether or not igb-rl is installed (editable or not) in this venv.
sys.path.insert(0, str(ROOT))

from mtl_backends._version import __version__  # noqa: E402

project = "igb-rl"
author = "igb-rl developers"
copyright = "igb-rl developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "myst_parser",
    "sphinxarg.ext",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# --- MyST (Markdown pages, and the Markdown files of docs/ included in place) ---
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# --- API reference ---
# A reference to an object of this project that does not exist is an error (nitpicky). Other
# libraries' names (torch, numpy, gymnasium, SB3, the standard library) stay plain text: CI has no
# network for intersphinx. Type variables and private modules (e.g. the base class
# ``balancers._coefficient.CoefficientBalancer`` named under "Bases") have no page either.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(?!(mtl_backends|igb_env|agents)\.).*"),
    (r"py:.*", r".*\.[A-Z]"),
    (r"py:.*", r".*\._[a-z]\w*\..*"),
]
autosummary_generate = False  # summary tables only; the modules are documented in place
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
# Both re-parse a module's source for every function (about a quarter of the build's CPU time) for
# no gain here: defaults are plain values, and annotations are real, never type comments.
autodoc_preserve_defaults = False
autodoc_use_type_comments = False
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
# Optional extras (igb-rl[ray,onnx,contrib,qm9]) are imported inside functions, never at module
# level, so the reference builds without them; nothing is mocked.
autodoc_mock_imports: list[str] = []

# --- HTML ---
# The sidebar lists pages and module sections, not every class and function (furo renders the
# whole tree on every page); each page's own table of contents still lists its objects.
toc_object_entries = False
html_title = f"igb-rl {release}"
html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_show_sourcelink = False
html_copy_source = False


# --- Docstrings written in Gymnasium's Markdown style (``IGBEnv``) ---
_MD_HEADING = re.compile(r"^(\s*)#{2,4} +(\S.*)$")
_MD_TABLE_RULE = re.compile(r"^\s*\|[\s:|-]+\|\s*$")
_MD_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def _table_cells(line: str) -> list[str]:
    return [_MD_CODE.sub(r"``\1``", cell.strip()) for cell in line.strip().strip("|").split("|")]


def markdown_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Turn ``## Heading`` lines into rubrics and Markdown pipe tables into list tables.

    Gymnasium's environments document their MDP with Markdown sections (``## Action Space``)
    and ``IGBEnv``'s observation table is generated as a Markdown table; reStructuredText would
    read the first as text and the second as substitutions. Runs before napoleon.
    """
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = _MD_HEADING.match(line)
        if heading:
            out += [f"{heading[1]}.. rubric:: {heading[2]}", ""]
            i += 1
            continue
        if (
            line.lstrip().startswith("|")
            and i + 1 < len(lines)
            and _MD_TABLE_RULE.match(lines[i + 1])
        ):
            indent = line[: len(line) - len(line.lstrip())]
            rows = [_table_cells(line)]
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_table_cells(lines[i]))
                i += 1
            out += [f"{indent}.. list-table::", f"{indent}   :header-rows: 1", ""]
            for row in rows:
                out.append(f"{indent}   * - {row[0]}")
                out += [f"{indent}     - {cell}" for cell in row[1:]]
            out.append("")
            continue
        out.append(line)
        i += 1
    lines[:] = out


# --- Members autodoc leaves out ---
def _documented_module(app: Any) -> str | None:
    current = getattr(app.env, "current_document", None)  # Sphinx 9
    if current is not None:
        return getattr(current, "autodoc_module", None) or None
    return app.env.temp_data.get("autodoc:module")  # Sphinx 8


def skip_member(app: Any, what: str, name: str, obj: Any, skip: bool, options: Any) -> bool | None:
    """Skip NamedTuple field aliases, and the modules, classes and functions a module imports.

    A NamedTuple's fields are documented by its ``Attributes:`` section (napoleon); autodoc would
    add each again as "Alias for field number N", a duplicate object description (an error here).
    Imported classes and functions are documented where they are defined (``ignore-module-all``);
    autodoc drops them from the importing module anyway, but only after formatting their
    signatures (torch's, numpy's, ...), which this skips. Data members keep autodoc's own rule.
    """
    if skip:
        return None
    if what == "class" and type(obj).__name__ == "_tuplegetter":
        return True  # a NamedTuple field: its class docstring's ``Attributes:`` documents it
    if what != "module":
        return None
    if inspect.ismodule(obj):
        return True
    if inspect.isclass(obj) or inspect.isroutine(obj):
        module = _documented_module(app)
        defined_in = getattr(obj, "__module__", None)
        if module and isinstance(defined_in, str) and defined_in != module:
            return True
    return None


# --- A bare name in a docstring means what the module binds to it ---
def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


_BUILTIN_NAMES = frozenset(vars(builtins)) | frozenset(typing.__all__)


def _qualify_bare_names() -> type:
    from sphinx import addnodes
    from sphinx.transforms.post_transforms import SphinxPostTransform

    class QualifyBareNames(SphinxPostTransform):
        """Point a bare Python name at the object the docstring's module means (before resolution).

        ``Raises: MissingExtraError: ...`` in ``benchmarks.qm9`` means the class of
        ``benchmarks.qm9_data``, but two modules of this project define a ``MissingExtraError``
        and Sphinx's own search warns that the reference is ambiguous. The name is taken as the
        module binds it or, where the module does not (an import inside a function), as the
        documented object of that name whose module is nearest (longest common dotted prefix).
        Only references that Sphinx would resolve by its suffix search are touched; those that are
        not ambiguous, or stay ambiguous after this, are left to Sphinx.
        """

        default_priority = 5  # before ReferencesResolver (10)

        def run(self, **kwargs: Any) -> None:
            objects = self.env.get_domain("py").objects
            by_name: dict[str, list[str]] = {}
            for full in objects:
                if full.split(".")[0] in PACKAGES:
                    by_name.setdefault(full.rsplit(".", 1)[-1], []).append(full)
            for node in list(self.document.findall(addnodes.pending_xref)):
                if node.get("refdomain") != "py":
                    continue
                target, modname = node.get("reftarget", ""), node.get("py:module")
                candidates = by_name.get(target, [])
                if node.get("reftype") == "mod" or target.split(".")[0] in PACKAGES:
                    unknown = False
                elif "." in target:
                    last = by_name.get(target.rsplit(".", 1)[-1], [])
                    unknown = not any(full.endswith(f".{target}") for full in last)
                else:
                    unknown = not candidates and target in _BUILTIN_NAMES
                if unknown and node.children:
                    # torch.Tensor, numpy.ndarray, int, Any, ...: nothing here has that name, so
                    # the reference would end as this text after Sphinx searched every object.
                    node.replace_self(node[0].deepcopy())
                    continue
                if not modname or len(candidates) < 2:
                    continue
                clsname = node.get("py:class")
                exact = [f"{modname}.{clsname}.{target}", f"{modname}.{target}", target]
                if any(name in objects for name in exact):
                    continue  # Sphinx finds it without searching
                obj = getattr(sys.modules.get(modname), target, None)
                bound = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
                if bound in candidates:
                    node["reftarget"] = bound
                    continue
                here = modname.split(".")
                shared = {full: _common_prefix(full.split(".")[:-1], here) for full in candidates}
                nearest = [full for full in candidates if shared[full] == max(shared.values())]
                if len(nearest) == 1:
                    node["reftarget"] = nearest[0]

    return QualifyBareNames


# --- The API pages: ``.. api-modules::`` ---
PACKAGES = ("mtl_backends", "igb_env", "agents")


def public_submodules(package: str) -> list[str]:
    """Every public module below ``package`` (any depth), from the files: ``a.b`` before ``a.b.c``.

    Public: no part of the dotted name starts with an underscore (``__init__`` is its package;
    ``__main__`` and ``_private`` modules are left out). ``tests/test_docs.py`` applies the same
    rule to check that the API pages name every public module.
    """
    base = ROOT.joinpath(*package.split("."))
    names = []
    for path in base.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if any(part.startswith("_") for part in parts) or len(parts) <= package.count(".") + 1:
            continue
        names.append(".".join(parts))
    return sorted(names, key=lambda name: name.split("."))


def expand_module_list(lines: list[str]) -> list[str]:
    """Module names of an ``api-modules`` body: ``pkg.*`` stands for ``public_submodules(pkg)``."""
    names: list[str] = []
    for line in (ln.strip() for ln in lines):
        if not line or line.startswith("#"):
            continue
        names += public_submodules(line[:-2]) if line.endswith(".*") else [line]
    return names


def _api_modules_directive() -> type:
    from sphinx.util.docutils import SphinxDirective

    class ApiModules(SphinxDirective):
        """``.. api-modules::`` with module names, one a line (``pkg.*``: its public submodules).

        Writes a summary table of the modules (autosummary: each module's first docstring line)
        and then, for each module, a section titled with its name holding ``automodule`` with its
        members. Sections are one level below the page title (underlined with ``-``).
        """

        has_content = True

        def run(self) -> list[Any]:
            names = expand_module_list(list(self.content))
            text = [".. autosummary::", ""] + [f"   {name}" for name in names] + [""]
            for name in names:
                title = f"``{name}``"
                text += [title, "-" * len(title), "", f".. automodule:: {name}", ""]
            return self.parse_text_to_nodes("\n".join(text), allow_section_headings=True)

    return ApiModules


def setup(app: Any) -> dict[str, Any]:
    """Register the docstring hook (before napoleon's, which runs at the default priority)."""
    app.connect("autodoc-process-docstring", markdown_docstring, priority=400)
    app.connect("autodoc-skip-member", skip_member)
    app.add_directive("api-modules", _api_modules_directive())
    app.add_post_transform(_qualify_bare_names())
    return {"parallel_read_safe": True, "parallel_write_safe": True}
