"""The README's code examples run as written (blocks marked ``<!-- readme-test: NAME -->``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks() -> dict[str, str]:
    text = README.read_text()
    pattern = re.compile(r"<!-- readme-test: ([\w-]+) -->\n```python\n(.*?)```", re.S)
    return {name: code for name, code in pattern.findall(text)}


def test_readme_has_the_examples() -> None:
    assert {"igbv1-loop", "policy-loop"} <= set(_blocks())


def test_igbv1_loop_runs_and_switches_to_igbv1_weights() -> None:
    namespace: dict[str, object] = {}
    exec(compile(_blocks()["igbv1-loop"], "README:igbv1-loop", "exec"), namespace)
    weights = namespace["weights"]
    assert isinstance(weights, torch.Tensor)
    assert float(weights.sum()) == pytest.approx(3.0, abs=1e-5)
    assert not torch.equal(weights, torch.ones(3))


def test_policy_loop_runs_with_the_shipped_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the README's path is relative to the repository root
    code = _blocks()["policy-loop"]
    assert '"policies/synthetic-ppo-residual"' in code
    namespace: dict[str, object] = {}
    exec(compile(code, "README:policy-loop", "exec"), namespace)
    weights = namespace["weights"]
    assert isinstance(weights, torch.Tensor) and weights.shape == (3,)
    assert float(weights.sum()) == pytest.approx(3.0, abs=1e-5)
