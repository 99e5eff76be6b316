"""The import graph: no cycles, downward layers only, every module importable on its own.

At run time, `mtl_backends` loads no RL library and `igb_env` no SB3.

The static graph is read from the source (module-level imports, ``TYPE_CHECKING`` blocks excluded).
Importing ``a.b.c`` also runs the ``__init__`` of every package on the way that the importer is not
already inside, so those edges count too: a cycle through a package ``__init__`` is a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import agents
from tests._project import PACKAGES

ROOT = Path(__file__).resolve().parents[1]
# Lower layers never import higher ones; inside ``agents`` the RL core never imports the
# experiment harness or the command line, and the harness never imports the command line.
LAYERS: dict[str, tuple[str, ...]] = {
    "mtl_backends": ("igb_env", "agents"),
    "igb_env": ("agents",),
    "agents.experiments": ("agents.cli",),
}
AGENTS_CORE_FORBIDDEN = ("agents.experiments", "agents.cli")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module, name: str, is_package: bool) -> Iterator[str]:
    def walk(body: list[ast.stmt]) -> Iterator[str]:
        for node in body:
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                yield base
                yield from (f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                yield from walk(node.body)
                yield from walk(node.orelse)
            elif isinstance(node, ast.Try):
                yield from walk(node.body)

    yield from walk(tree.body)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        own_ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        for target in _module_level_imports(tree, name, path.name == "__init__.py"):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix != name:
                    if i < len(parts) and prefix in own_ancestors:
                        continue  # a package the importer is already inside is not run again
                    graph[name].add(prefix)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read_from_every_module() -> None:
    graph = _graph()
    assert {"mtl_backends.trainer", "igb_env.env", "agents.experiments.runner"} <= set(graph)
    assert "mtl_backends.updates" in graph["mtl_backends.trainer"]
    assert "mtl_backends.policy.action_maps" in graph["mtl_backends.weightings.policy"]
    # Importing a module of another package runs that package's __init__ too.
    assert "mtl_backends.weightings" in graph["mtl_backends.build"]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_cycle_detection_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_downwards_only() -> None:
    graph = _graph()
    wrong = []
    for module, targets in graph.items():
        for layer, forbidden in LAYERS.items():
            if module == layer or module.startswith(layer + "."):
                wrong += [(module, t) for t in targets if t.startswith(forbidden)]
        in_core = module.startswith("agents.") and not module.startswith(AGENTS_CORE_FORBIDDEN)
        if in_core:
            wrong += [(module, t) for t in targets if t.startswith(AGENTS_CORE_FORBIDDEN)]
    assert wrong == []


def _third_party_modules(names: list[str]) -> list[str]:
    """Every non-project module that importing all of ``names`` loads, in load order."""
    code = textwrap.dedent(
        f"""
        import importlib, sys
        before = set(sys.modules)
        for name in {names!r}:
            importlib.import_module(name)
        top = {PACKAGES!r}
        print("\\n".join(m for m in sys.modules if m not in before and m.split(".")[0] not in top))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_every_module_imports_on_its_own() -> None:
    """Each module imported first, in a fresh process (forked after the third-party imports).

    The parent imports every third-party module the project loads once, so that each fork pays
    only for the project's own modules (scipy.optimize, matplotlib, TorchJD, ... took seconds
    per module before).
    """
    names = sorted(m for m in _modules() if not m.endswith("__main__"))
    third_party = _third_party_modules(names)
    code = textwrap.dedent(
        f"""
        import os, sys, importlib
        for name in {third_party!r}:  # third-party, once
            try:
                importlib.import_module(name)
            except Exception:
                pass  # a submodule only importable through its parent's import order
        failed = []
        for name in {names!r}:
            pid = os.fork()
            if pid == 0:
                try:
                    importlib.import_module(name)
                except BaseException as exc:
                    print(name, repr(exc), file=sys.stderr)
                    os._exit(1)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if status != 0:
                failed.append(name)
        print(",".join(failed))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", out.stderr


def _loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_mtl_backends_loads_no_rl_library() -> None:
    loaded = _loaded_after_import("mtl_backends")
    assert "gymnasium" not in loaded
    assert "stable_baselines3" not in loaded
    assert "igb_env" not in loaded
    assert "agents" not in loaded


def test_igb_env_does_not_load_sb3() -> None:
    loaded = _loaded_after_import("igb_env")
    assert "stable_baselines3" not in loaded
    assert "agents" not in loaded


def test_cli_parser_builds_without_sb3() -> None:
    loaded = _loaded_after_import("agents.cli")
    code = (
        "import sys; from agents.cli import build_parser; build_parser(); "
        "print('stable_baselines3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"
    assert "stable_baselines3" not in loaded


def test_agents_is_ours() -> None:
    # `agents` is a generic top-level name; make sure the installed one is this project's.
    root = Path(__file__).resolve().parents[1]
    assert Path(agents.__file__).resolve().parent == root / "agents"
