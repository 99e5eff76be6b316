from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.cli import main

ROOT = Path(__file__).resolve().parents[3]


def _tiny_config(tmp_path: Path) -> Path:
    text = (ROOT / "configs" / "runs" / "smoke.yaml").read_text()
    path = tmp_path / "tiny.yaml"
    path.write_text(text.replace(".igb-cache/stl", str(tmp_path / "stl")))
    return path


def test_igb_train_writes_run_folder_and_prints_delta_m(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            str(_tiny_config(tmp_path)),
            "--weighting",
            "igbv1",
            "--seed",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Δm" in printed and "weighting=igbv1" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]["metrics"]) == {"t1_mse", "t2_mse", "t3_mse"}
    assert metrics["test"]["delta_m"] is not None
    assert "weighting:\n  name: igbv1" in (out / "config.yaml").read_text()


def test_igb_train_unknown_weighting_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            str(_tiny_config(tmp_path)),
            "--weighting",
            "nope",
            "--no-stl",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    assert "unknown loss weighting 'nope'; valid choices" in capsys.readouterr().err


def test_igb_stl_prints_references(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stl", str(_tiny_config(tmp_path)), "--seed", "0"]) == 0
    assert "t3_mse" in capsys.readouterr().out
    assert list((tmp_path / "stl").glob("*.json"))


def test_torch_threads_option_sets_the_thread_count_and_rejects_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        argv = ["train", str(_tiny_config(tmp_path)), "--no-stl", "--out", str(tmp_path / "r")]
        assert main(["--torch-threads", "1", *argv]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main(["--torch-threads", "0", *argv])
    assert "--torch-threads must be at least 1" in capsys.readouterr().err
