from __future__ import annotations

import json

import pytest

from agents.cli import main
from agents.perf import all_finite, format_table, interleaved_medians
from mtl_backends.balancers import GRADIENT_BALANCERS


def test_igb_perf_json_tiny_has_every_key_finite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["perf", "--json", "--tiny", "--threads", "1", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threads"] == 1
    assert set(result["jacobian_batched_speedup"]) == {"T=3", "T=10"}
    for row in result["jacobian_batched_speedup"].values():
        assert set(row) == {"threads=1", "threads=2"}
    expected = set(GRADIENT_BALANCERS) | {f"f-{n}" for n in GRADIENT_BALANCERS}
    for row in result["balancer_cost_vs_ew"].values():
        assert set(row) == expected
        assert all(v > 0 for v in row.values())
    assert all_finite(result)
    table = format_table(result)
    assert "f-cagrad" in table and "threads=2" in table


def test_interleaved_medians_orders_calls() -> None:
    calls: list[str] = []
    med = interleaved_medians(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 1
    )
    assert calls == ["a", "b"] * 3
    assert set(med) == {"a", "b"}


def test_all_finite() -> None:
    assert all_finite({"a": [1.0, {"b": 2.0}]})
    assert not all_finite({"a": {"b": float("nan")}})
