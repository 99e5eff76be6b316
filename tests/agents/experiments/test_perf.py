from __future__ import annotations

import functools
import json

import pytest
import torch

import agents.experiments.timing as timing
from agents.cli import main
from agents.experiments.perf import all_finite, format_table
from agents.experiments.timing import interleaved_medians, paired_ratios
from mtl_backends.balancers import GRADIENT_BALANCERS


def test_igb_perf_json_tiny_has_every_key_finite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["perf", "--json", "--tiny", "--threads", "1", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threads"] == 1
    # The machine the figures were taken on (timings from different hosts do not compare).
    host = result["host"]
    assert host["cpus"] >= 1 and host["machine"]
    assert host["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(host) == {"machine", "cpus", "torch_capability", "simd", "model"}
    assert set(result["jacobian_batched_speedup"]) == {"T=3", "T=10"}
    for row in result["jacobian_batched_speedup"].values():
        assert set(row) == {"threads=1", "threads=2"}
    expected = set(GRADIENT_BALANCERS) | {f"f-{n}" for n in GRADIENT_BALANCERS}
    for row in result["balancer_cost_vs_ew"].values():
        assert set(row) == expected
        assert all(v > 0 for v in row.values())
    assert all_finite(result)
    # The batched env on the smoke preset, under sum and under DB-MTL (per-task gradients):
    # every size, the single env, and positive rates.
    assert set(result["batched_env_steps_per_second"]) == {"smoke", "smoke_db_mtl"}
    for preset, rates in result["batched_env_steps_per_second"].items():
        assert set(rates) == {"single", "N=1", "N=2"} and all(v > 0 for v in rates.values())
        assert result["batched_env_speedup"][preset] > 0
    assert result["agent_batched16_env_steps_per_second"] > 0
    table = format_table(result)
    assert "f-cagrad" in table and "threads=2" in table and "speedup" in table
    assert f"torch kernels {host['torch_capability']}" in table.splitlines()[1]


def test_interleaved_medians_orders_calls() -> None:
    calls: list[str] = []
    med = interleaved_medians(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 1
    )
    assert calls == ["a", "b"] * 3
    assert set(med) == {"a", "b"}


def test_paired_ratios_alternate_order_and_divide_by_the_same_repeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fake clock: each call of an action advances it by that action's duration.
    durations = {"a": 1.0, "ref": 4.0, "b": 2.0}
    now = [0.0]
    calls: list[str] = []

    def act(name: str) -> None:
        calls.append(name)
        now[0] += durations[name]

    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    actions = {name: functools.partial(act, name) for name in durations}
    ratios = paired_ratios(actions, "ref", repeats=3, calls=2)
    forward = ["a", "a", "ref", "ref", "b", "b"]
    assert calls == forward + forward[::-1] + forward
    assert ratios == {"a": [0.25] * 3, "b": [0.5] * 3}


def test_paired_ratios_rejects_an_unknown_reference() -> None:
    with pytest.raises(ValueError, match="reference 'c' is not one of the actions"):
        paired_ratios({"a": lambda: None}, "c", 1, 1)


def test_all_finite() -> None:
    assert all_finite({"a": [1.0, {"b": 2.0}]})
    assert not all_finite({"a": {"b": float("nan")}})
