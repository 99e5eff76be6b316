from __future__ import annotations

from pathlib import Path

import pytest

from agents.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "configs" / "runs" / "smoke.yaml")


def test_train_with_flat_balancer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 11 steps: the config's base window [5, 10] must end before the budget.
    args = ["train", TINY, "--weighting", "si", "--balancer", "cagrad", "--flat", "--steps", "11"]
    code = main([*args, "--no-stl", "--out", str(tmp_path / "run")])
    assert code == 0
    assert "balancer=cagrad" in capsys.readouterr().out
    assert "flat_rho: 2.0" in (tmp_path / "run" / "config.yaml").read_text()


def test_flat_radius_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", TINY, "--balancer", "mgda", "--flat", "0.5", "--steps", "11", "--no-stl"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert "flat_rho=0.5" in capsys.readouterr().out


def test_transform_conflict_names_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", TINY, "--weighting", "ew", "--balancer", "db_mtl", "--no-stl"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "transform conflict" in err and "DBMTL" in err and "EW" in err
