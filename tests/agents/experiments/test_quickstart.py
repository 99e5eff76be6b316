from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.cli import main
from agents.experiments.quickstart import FULL, TINY
from igb_env.config import load_env_config
from mtl_backends.policy import files
from tests.mtl_backends.policy._policies import random_set_policy


@pytest.mark.parametrize("size", [FULL, TINY], ids=["full", "tiny"])
def test_held_out_seeds_are_never_drawn_in_training(size) -> None:
    low, high = load_env_config(dict(size.env)).instances
    assert len(size.held_out) >= 3
    assert all(not low <= s < high for s in size.held_out)


def test_tiny_quickstart_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A shipped generalist (any T) in this install: the quickstart adds its row, untrained here.
    random_set_policy(tmp_path / "shipped" / "generalist")
    monkeypatch.setattr(files, "SHIPPED_DIR", tmp_path / "shipped")
    out = tmp_path / "qs"
    assert main(["quickstart", "--tiny", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    # Progress in a log (stderr is not a terminal here): a few plain lines, no redraws.
    progress = captured.err.splitlines()
    assert "\r" not in captured.err
    for desc in ("stl:", "compare:", "agent:"):
        assert any(line.startswith(desc) and " done in " in line for line in progress), desc
    assert sum(" ETA " in line or " done in " in line for line in progress) <= 40
    for label in (
        "| EW |",
        "| SI |",
        "| IGBv1 |",
        "| learned policy |",
        "| shipped generalist |",
        "time / EW",
    ):
        assert label in printed
    assert str(out) in printed
    for name in (
        "results.json",
        "table.md",
        "weights.png",
        "agent/model.zip",
        "policy/policy.json",
    ):
        assert (out / name).is_file(), name
    assert (out / "weights.png").stat().st_size > 1000
    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    assert set(summary) == {"EW", "SI", "IGBv1", "learned policy", "shipped generalist"}
    for row in summary.values():
        assert row["seeds"] == list(TINY.held_out)
        assert len(row["test_losses"]) == 3
    assert summary["EW"]["time_vs_ew"] == pytest.approx(1.0)
    assert summary["learned policy"]["vs_igbv1"]["n"] == len(TINY.held_out)
    assert summary["shipped generalist"]["vs_igbv1"]["n"] == len(TINY.held_out)
    # Its runs differ from IGBv1's: the random policy's weights were used, not a fallback.
    runs = results["runs"]
    shipped = [r["delta_m"] for r in runs if r["method"] == "shipped generalist"]
    igbv1 = [r["delta_m"] for r in runs if r["method"] == "IGBv1"]
    assert len(shipped) == len(TINY.held_out) and shipped != igbv1
    assert "vs_si" not in summary["SI"] and "vs_igbv1" in summary["SI"]
    assert results["agent"]["timesteps"] > 0
