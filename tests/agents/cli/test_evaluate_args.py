"""``igb evaluate`` forwards its agent-seed options to ``agents.experiments.evaluate.evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import agents.experiments.evaluate as evaluate_module
from agents.cli import build_parser


def test_agent_seeds_and_reference_reach_evaluate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_evaluate(target: str, **kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs, target=target)
        return {"table": "| table |"}

    monkeypatch.setattr(evaluate_module, "evaluate", fake_evaluate)
    args = build_parser().parse_args(
        [
            "evaluate",
            str(tmp_path),
            "--agent-seed",
            "runs/a-s1",
            "--agent-seed",
            "runs/a-s2",
            "--reference",
            "si",
        ]
    )
    assert args.func(args) == 0
    assert seen["target"] == str(tmp_path)
    assert seen["agent_seeds"] == ["runs/a-s1", "runs/a-s2"]
    assert seen["reference"] == "si"


def test_without_agent_seeds_the_reference_is_igbv1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        evaluate_module, "evaluate", lambda target, **kw: seen.update(kw) or {"table": ""}
    )
    args = build_parser().parse_args(["evaluate", str(tmp_path)])
    assert args.func(args) == 0
    assert seen["agent_seeds"] == [] and seen["reference"] == "igbv1"
