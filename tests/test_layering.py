"""The package direction mtl_backends <- igb_env <- agents is enforced by inspecting imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import agents


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
