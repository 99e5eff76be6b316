"""The feature table: layout, bounds, names and values on hand-made tracker states."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.features import LOG_CLIP, FeatureSpec, FeatureTable
from mtl_backends.gaps import GapTracker
from mtl_backends.policy import build_sidecar


@settings(max_examples=60, deadline=None)
@given(history=st.integers(0, 8), n_tasks=st.integers(1, 6))
def test_dim_layout_names_and_bounds_agree(history: int, n_tasks: int) -> None:
    table = FeatureTable(FeatureSpec(history=history))
    per_task = [f.name for f in table.per_task]
    assert per_task == [
        "log_gap",
        "raw_log_gap",
        *[f"log_gap_change_{j}" for j in range(1, history + 1)],
        "weight",
    ]
    assert [f.name for f in table.global_] == ["progress", "lr_ratio"]
    dim = table.dim(n_tasks)
    assert dim == (history + 3) * n_tasks + 2
    tasks = [f"task{t}" for t in range(n_tasks)]
    layout = table.layout(tasks)
    names = table.names(tasks)
    low, high = table.bounds(n_tasks)
    assert len(layout) == len(names) == low.shape[0] == high.shape[0] == dim
    assert low.dtype == high.dtype == np.float32
    assert len(set(names)) == dim
    f = len(per_task)
    for t, task in enumerate(tasks):
        for i, feature in enumerate(table.per_task):
            assert layout[t * f + i] == (f"{task}/{feature.name}", feature.low, feature.high)
    assert names[-2:] == ["progress", "lr_ratio"]
    assert np.all(low < high) and np.all(np.isfinite(low)) and np.all(np.isfinite(high))
    np.testing.assert_array_equal(low, np.asarray([lo for _, lo, _ in layout], np.float32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"history": -1}, "history must be >= 0, got -1"),
        ({"stride": 0}, "stride must be >= 1, got 0"),
        ({"ema": 1.0}, r"ema must be in \[0, 1\), got 1.0"),
        ({"ema": -0.1}, r"ema must be in \[0, 1\), got -0.1"),
    ],
)
def test_spec_refuses_bad_settings(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureSpec(**kwargs)  # type: ignore[arg-type]


def _values(tracker: GapTracker) -> dict[str, float]:
    table = tracker.table
    names = table.names([f"t{t + 1}" for t in range(tracker.n_tasks)])
    return dict(zip(names, tracker.features().tolist(), strict=True))


def _tracker(
    history: int = 2, stride: int = 1, ema: float = 0.5, bounds: tuple[float, ...] = (0.0, 1.0)
) -> GapTracker:
    return GapTracker(
        len(bounds),
        base_window=(0, 1),
        lower_bounds=torch.tensor(bounds, dtype=torch.float64),
        total_steps=10,
        spec=FeatureSpec(history=history, stride=stride, ema=ema),
        lr0=1.0,
    )


def test_zeros_before_the_base_window_except_weight_and_globals() -> None:
    tracker = _tracker()
    tracker.update(torch.tensor([2.0, 5.0]), 0, 0.8)
    tracker.record_weights(torch.tensor([0.5, 1.5]))
    values = _values(tracker)
    for task in ("t1", "t2"):
        for name in ("log_gap", "raw_log_gap", "log_gap_change_1", "log_gap_change_2"):
            assert values[f"{task}/{name}"] == 0.0
    assert values["t1/weight"] == 0.25 and values["t2/weight"] == 0.75
    assert values["progress"] == pytest.approx(0.1) and values["lr_ratio"] == pytest.approx(0.8)


def test_hand_computed_values_over_three_decisions() -> None:
    """``L* = [0, 1]``, base ``[2, 5]`` (margins ``[2, 4]``), EMA 0.5, snapshots every step."""
    tracker = _tracker()
    tracker.update(torch.tensor([2.0, 5.0]), 0, 1.0)  # the base window
    # Step 1: gaps [0.5, 0.5]; the EMA starts at the gap; no past snapshot yet.
    tracker.update(torch.tensor([1.0, 3.0]), 1, 0.5)
    tracker.record_weights(torch.tensor([0.5, 3.0]))
    v = _values(tracker)
    for task in ("t1", "t2"):
        assert v[f"{task}/log_gap"] == pytest.approx(math.log(0.5))
        assert v[f"{task}/raw_log_gap"] == pytest.approx(math.log(0.5))
        assert v[f"{task}/log_gap_change_1"] == v[f"{task}/log_gap_change_2"] == 0.0
    assert v["t1/weight"] == 0.25 and v["t2/weight"] == 1.0  # 3 / 2 clipped to 1
    assert v["progress"] == pytest.approx(0.2) and v["lr_ratio"] == 0.5
    # Step 2: gaps [0.125, 0.25]; EMA [0.3125, 0.375]; one past snapshot.
    tracker.update(torch.tensor([0.25, 2.0]), 2, 1.0)
    v = _values(tracker)
    assert v["t1/log_gap"] == pytest.approx(math.log(0.3125))
    assert v["t2/log_gap"] == pytest.approx(math.log(0.375))
    assert v["t1/raw_log_gap"] == pytest.approx(math.log(0.125))
    assert v["t2/raw_log_gap"] == pytest.approx(math.log(0.25))
    assert v["t1/log_gap_change_1"] == pytest.approx(10 * math.log(0.3125 / 0.5), rel=1e-6)
    assert v["t2/log_gap_change_1"] == pytest.approx(10 * math.log(0.375 / 0.5), rel=1e-6)
    assert v["t1/log_gap_change_2"] == v["t2/log_gap_change_2"] == 0.0
    # Step 3: same losses; EMA [0.21875, 0.3125]; two past snapshots.
    tracker.update(torch.tensor([0.25, 2.0]), 3, 1.0)
    v = _values(tracker)
    assert v["t1/log_gap"] == pytest.approx(math.log(0.21875))
    assert v["t1/log_gap_change_1"] == pytest.approx(10 * math.log(0.21875 / 0.3125), rel=1e-6)
    assert v["t1/log_gap_change_2"] == pytest.approx(10 * math.log(0.21875 / 0.5), rel=1e-6)
    assert v["t2/log_gap_change_1"] == pytest.approx(10 * math.log(0.3125 / 0.375), rel=1e-6)
    assert v["t2/log_gap_change_2"] == pytest.approx(10 * math.log(0.3125 / 0.5), rel=1e-6)
    assert v["progress"] == pytest.approx(0.4) and v["lr_ratio"] == 1.0


def test_changes_between_decision_points_compare_with_the_last_snapshot() -> None:
    """Stride 2 from the base end 1: snapshots at steps 1, 3, 5; step 2 sees the one of step 1."""
    tracker = _tracker(history=1, stride=2, ema=0.0, bounds=(0.0,))
    tracker.update(torch.tensor([1.0]), 0, 1.0)
    tracker.update(torch.tensor([0.5]), 1, 1.0)
    assert _values(tracker)["t1/log_gap_change_1"] == 0.0
    tracker.update(torch.tensor([0.25]), 2, 1.0)
    assert _values(tracker)["t1/log_gap_change_1"] == pytest.approx(10 * math.log(0.5))
    # Step 3 is a decision point: its own snapshot is the newest, the change is against step 1.
    tracker.update(torch.tensor([0.4]), 3, 1.0)
    assert _values(tracker)["t1/log_gap_change_1"] == pytest.approx(10 * math.log(0.8))
    tracker.update(torch.tensor([0.2]), 4, 1.0)
    assert _values(tracker)["t1/log_gap_change_1"] == pytest.approx(10 * math.log(0.5))


@pytest.mark.parametrize(("loss", "sign"), [(1e-9, -1.0), (1e9, 1.0), (0.0, -1.0)])
def test_log_features_are_clipped(loss: float, sign: float) -> None:
    tracker = _tracker(history=1, ema=0.0, bounds=(0.0,))
    tracker.update(torch.tensor([1.0]), 0, 1.0)
    tracker.update(torch.tensor([1.0]), 1, 1.0)
    tracker.update(torch.tensor([loss]), 2, 1.0)
    v = _values(tracker)
    assert v["t1/log_gap"] == v["t1/raw_log_gap"] == sign * LOG_CLIP
    # 10 x (±10 - 0) is clipped as well.
    assert v["t1/log_gap_change_1"] == sign * LOG_CLIP


def test_weight_is_clipped_to_the_unit_interval() -> None:
    tracker = _tracker()
    tracker.record_weights(torch.tensor([-1.0, 10.0]))
    v = _values(tracker)
    assert v["t1/weight"] == 0.0 and v["t2/weight"] == 1.0


def test_compute_is_task_major_float32() -> None:
    tracker = _tracker(history=0, ema=0.0, bounds=(0.0, 0.0, 0.0))
    tracker.update(torch.tensor([1.0, 1.0, 1.0]), 0, 1.0)
    tracker.update(torch.tensor([0.5, 2.0, 4.0]), 1, 1.0)
    tracker.record_weights(torch.tensor([0.3, 0.6, 2.1]))
    obs = FeatureTable(tracker.spec).compute(tracker)
    assert obs.dtype == np.float32
    expected = [
        *[math.log(0.5), math.log(0.5), 0.1],
        *[math.log(2.0), math.log(2.0), 0.2],
        *[math.log(4.0), math.log(4.0), 0.7],
        0.2,
        1.0,
    ]
    np.testing.assert_allclose(obs, np.asarray(expected, np.float32), rtol=1e-6)


def test_rows_compare_by_description_not_by_function() -> None:
    assert FeatureTable(FeatureSpec(history=2)).rows == FeatureTable(FeatureSpec(history=2)).rows
    assert FeatureTable(FeatureSpec(history=2)).rows != FeatureTable(FeatureSpec(history=3)).rows
    # stride and ema change no row (they change the values, not the table)
    a = FeatureTable(FeatureSpec(history=1, stride=3, ema=0.0)).rows
    assert a == FeatureTable(FeatureSpec(history=1, stride=9, ema=0.5)).rows


def test_default_spec() -> None:
    table = FeatureTable()
    assert table.spec == FeatureSpec(history=3, stride=25, ema=0.9)
    assert table.dim(3) == 20


@pytest.mark.parametrize("base_window", [None, (5, 10)])
def test_describe_is_what_sidecars_store(base_window: tuple[int, int] | None) -> None:
    spec = FeatureSpec(history=2, stride=5, ema=0.8)
    table = FeatureTable(spec)
    described = table.describe(3, base_window)
    assert set(described) == {"spec", "table", "n_tasks", "base_window"}
    assert described["spec"] == {"history": 2, "stride": 5, "ema": 0.8}
    assert described["n_tasks"] == 3
    assert described["base_window"] == (None if base_window is None else [5, 10])
    assert [row["name"] for row in described["table"]] == [f.name for f in table.rows]
    for row in described["table"]:
        assert set(row) == {"name", "low", "high", "per_task", "description"}
    assert json.loads(json.dumps(described)) == described
    sidecar = build_sidecar(
        n_tasks=3,
        features=spec,
        action_mode="residual",
        tau=1.0,
        steps_per_action=5,
        balancer="sum",
        base_window=base_window,
        total_steps=60,
        algorithm="test",
    )
    assert sidecar["features"] == described
    assert sidecar["obs_dim"] == table.dim(3) == 17


def test_tracker_describe_uses_its_table_and_window() -> None:
    tracker = GapTracker(2, (3, 7), spec=FeatureSpec(history=1))
    assert tracker.describe() == FeatureTable(FeatureSpec(history=1)).describe(2, (3, 7))
    low, high = tracker.feature_bounds
    low2, high2 = FeatureTable(FeatureSpec(history=1)).bounds(2)
    np.testing.assert_array_equal(low, low2)
    np.testing.assert_array_equal(high, high2)


def test_markdown_table_rows() -> None:
    table = FeatureTable(FeatureSpec(history=2))
    lines = table.markdown().splitlines()
    assert lines[0] == "| Index | Feature | Min | Max | Description |"
    assert lines[1] == "|---|---|---|---|---|"
    assert len(lines) == 2 + 5 + 2
    assert lines[2] == (
        "| 5·t + 0 | `log_gap` (task t) | -10 | 10 | log of the EMA-smoothed improvable gap |"
    )
    assert lines[4].startswith("| 5·t + 2 | `log_gap_change_1` (task t) | -10 | 10 |")
    assert lines[6] == (
        "| 5·t + 4 | `weight` (task t) | 0 | 1 | the task's last applied weight divided by T |"
    )
    assert lines[7] == "| 5·T + 0 | `progress` | 0 | 1 | fraction of the step budget spent |"
    assert lines[8].startswith("| 5·T + 1 | `lr_ratio` | 0 | 1 |")


def test_feature_describe_drops_the_function() -> None:
    row = FeatureTable().rows[0]
    assert row.describe() == {
        "name": "log_gap",
        "low": -LOG_CLIP,
        "high": LOG_CLIP,
        "per_task": True,
        "description": "log of the EMA-smoothed improvable gap",
    }
    assert "compute" not in repr(row)
    assert dataclasses.replace(row, description="x") != row
