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


def test_a_shipped_policy_is_evaluated_by_name_with_an_out_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        evaluate_module, "evaluate", lambda target, **kw: seen.update(kw) or {"table": ""}
    )
    monkeypatch.chdir(tmp_path)  # a name, not a folder here
    args = build_parser().parse_args(["evaluate", "generalist"])
    with pytest.raises(ValueError, match=r"'generalist' names a shipped policy.*give --out"):
        args.func(args)
    assert not seen  # refused before any work
    out = tmp_path / "eval" / "evaluation.json"
    args = build_parser().parse_args(["evaluate", "generalist", "--out", str(out)])
    assert args.func(args) == 0
    assert seen["out"] == out
    assert f"results written to {out}" in capsys.readouterr().out


def test_the_policy_of_a_shipped_name_resolves_with_its_env_config() -> None:
    from mtl_backends.policy.files import shipped_policy

    folder, env_config = evaluate_module.resolve_policy("generalist")
    assert folder == shipped_policy("generalist")
    assert env_config["action_mode"] == "interp" and env_config["feature_table"] == "v2"
