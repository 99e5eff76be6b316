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

from mtl_backends.features import LOG_CLIP, MAX_TASKS, TABLES, FeatureSpec, FeatureTable
from mtl_backends.gaps import GapTracker
from mtl_backends.policy import build_sidecar
from mtl_backends.weightings import igbv1_weights


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
        ({"table": "v3"}, "unknown feature table 'v3'; valid choices: v1, v2"),
    ],
)
def test_spec_refuses_bad_settings(kwargs: dict[str, float | str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureSpec(**kwargs)  # type: ignore[arg-type]


def _values(tracker: GapTracker) -> dict[str, float]:
    table = tracker.table
    names = table.names([f"t{t + 1}" for t in range(tracker.n_tasks)])
    return dict(zip(names, tracker.features().tolist(), strict=True))


def _tracker(
    history: int = 2,
    stride: int = 1,
    ema: float = 0.5,
    bounds: tuple[float, ...] = (0.0, 1.0),
    table: str = "v1",
) -> GapTracker:
    return GapTracker(
        len(bounds),
        base_window=(0, 1),
        lower_bounds=torch.tensor(bounds, dtype=torch.float64),
        total_steps=10,
        spec=FeatureSpec(history=history, stride=stride, ema=ema, table=table),
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


# -- table v2 -----------------------------------------------------------------------------------
def _rows_by_name(tracker: GapTracker) -> dict[str, np.ndarray | float]:
    """Every row's float64 value (before the float32 observation), by feature name."""
    return {f.name: f.compute(tracker) for f in tracker.table.rows}


def test_tables_are_named() -> None:
    assert TABLES == ("v1", "v2")
    assert FeatureSpec().table == "v1"
    assert FeatureTable(FeatureSpec(table="v1")).rows == FeatureTable().rows


@settings(max_examples=60, deadline=None)
@given(history=st.integers(0, 8), n_tasks=st.integers(1, 40))
def test_v2_layout_names_and_bounds(history: int, n_tasks: int) -> None:
    v1 = FeatureTable(FeatureSpec(history=history))
    table = FeatureTable(FeatureSpec(history=history, table="v2"))
    changes = [f"log_gap_change_{j}" for j in range(1, history + 1)]
    assert [f.name for f in table.per_task] == [
        "log_gap",
        "raw_log_gap",
        *changes,
        "centered_log_gap",
        "rel_log_loss",
        "log_noise",
        "weight",
    ]
    assert [f.name for f in table.global_] == ["n_tasks", "progress", "lr_ratio"]
    # The gap rows and the last two globals are v1's rows unchanged; only the weight differs.
    assert table.rows[: 2 + history] == v1.rows[: 2 + history]
    assert table.global_[1:] == v1.global_
    assert table.dim(n_tasks) == (history + 6) * n_tasks + 3
    bounds = {f.name: (f.low, f.high) for f in table.rows}
    for name in ("centered_log_gap", "rel_log_loss", "log_noise"):
        assert bounds[name] == (-LOG_CLIP, LOG_CLIP)
    assert bounds["weight"] == (0.0, float(MAX_TASKS)) == (0.0, 32.0)
    assert bounds["n_tasks"] == (0.0, 1.0)
    names = table.names([f"t{t}" for t in range(n_tasks)])
    assert len(set(names)) == len(names) == table.dim(n_tasks)
    assert names[-3:] == ["n_tasks", "progress", "lr_ratio"]
    low, high = table.bounds(n_tasks)
    assert low.shape == high.shape == (table.dim(n_tasks),) and np.all(low < high)


def test_v2_hand_computed_values_over_three_decisions() -> None:
    """The v1 setting (``L* = [0, 1]``, base ``[2, 5]``, EMA 0.5) through table v2."""
    tracker = _tracker(table="v2")
    plain = _tracker()  # the same inputs through table v1
    for t in (tracker, plain):
        t.update(torch.tensor([2.0, 5.0]), 0, 1.0)  # the base window
        t.record_weights(torch.tensor([0.5, 1.5]))
    v = _values(tracker)
    for task in ("t1", "t2"):  # no gaps yet: the gap features are 0
        for name in ("log_gap", "raw_log_gap", "log_gap_change_1", "centered_log_gap"):
            assert v[f"{task}/{name}"] == 0.0
    assert v["t1/weight"] == 0.5 and v["t2/weight"] == 1.5  # the raw weight, not w / T
    assert v["n_tasks"] == pytest.approx(0.2)  # log 2 / log 32
    # Step 1: gaps [0.5, 0.5], margins L - L* = [1, 2]; the noise EMA starts at |0| -> clipped.
    for t in (tracker, plain):
        t.update(torch.tensor([1.0, 3.0]), 1, 0.5)
        t.record_weights(torch.tensor([0.5, 40.0]))
    v = _values(tracker)
    assert v["t1/centered_log_gap"] == v["t2/centered_log_gap"] == 0.0
    assert v["t1/rel_log_loss"] == pytest.approx(-math.log(2.0) / 2, rel=1e-6)
    assert v["t2/rel_log_loss"] == pytest.approx(math.log(2.0) / 2, rel=1e-6)
    assert v["t1/log_noise"] == v["t2/log_noise"] == -LOG_CLIP
    assert v["t1/weight"] == 0.5 and v["t2/weight"] == 32.0  # clipped to MAX_TASKS
    assert v["n_tasks"] == pytest.approx(0.2)
    assert v["progress"] == pytest.approx(0.2) and v["lr_ratio"] == 0.5
    # Step 2: gaps [0.125, 0.25], EMA [0.3125, 0.375], margins [0.25, 1].
    for t in (tracker, plain):
        t.update(torch.tensor([0.25, 2.0]), 2, 1.0)
    v = _values(tracker)
    assert v["t1/centered_log_gap"] == pytest.approx(math.log(0.3125 / 0.375) / 2, rel=1e-6)
    assert v["t2/centered_log_gap"] == pytest.approx(-math.log(0.3125 / 0.375) / 2, rel=1e-6)
    assert v["t1/rel_log_loss"] == pytest.approx(-math.log(2.0), rel=1e-6)
    assert v["t2/rel_log_loss"] == pytest.approx(math.log(2.0), rel=1e-6)
    # |log gap - log EMA| = [log 2.5, log 1.5]; noise = 0.5 * 0 + 0.5 * that
    noise = [math.log(2.5) / 2, math.log(1.5) / 2]
    assert v["t1/log_noise"] == pytest.approx(math.log(noise[0]), rel=1e-6)
    assert v["t2/log_noise"] == pytest.approx(math.log(noise[1]), rel=1e-6)
    # Step 3: same losses; EMA [0.21875, 0.3125]; deviations [log 1.75, log 1.25].
    for t in (tracker, plain):
        t.update(torch.tensor([0.25, 2.0]), 3, 1.0)
    v = _values(tracker)
    assert v["t1/centered_log_gap"] == pytest.approx(math.log(0.21875 / 0.3125) / 2, rel=1e-6)
    noise = [noise[0] / 2 + math.log(1.75) / 2, noise[1] / 2 + math.log(1.25) / 2]
    assert v["t1/log_noise"] == pytest.approx(math.log(noise[0]), rel=1e-6)
    assert v["t2/log_noise"] == pytest.approx(math.log(noise[1]), rel=1e-6)
    # Every row v1 has (except the weight) has v1's value.
    v1 = _values(plain)
    for name, value in v1.items():
        if not name.endswith("/weight"):
            assert v[name] == value, name


@pytest.mark.parametrize(("n_tasks", "expected"), [(1, 0.0), (2, 0.2), (8, 0.6), (32, 1.0)])
def test_n_tasks_feature(n_tasks: int, expected: float) -> None:
    tracker = GapTracker(n_tasks, (0, 1), spec=FeatureSpec(table="v2"))
    assert _rows_by_name(tracker)["n_tasks"] == pytest.approx(expected, abs=1e-15)
    assert float(tracker.features()[-3]) == pytest.approx(expected, abs=1e-7)


def test_n_tasks_feature_is_clipped_above_max_tasks() -> None:
    tracker = GapTracker(MAX_TASKS + 8, (0, 1), spec=FeatureSpec(table="v2"))
    assert _rows_by_name(tracker)["n_tasks"] == 1.0


def _fed(
    losses: list[list[float]],
    spec: FeatureSpec,
    weights: list[list[float]] | None = None,
    bounds: list[float] | None = None,
) -> GapTracker:
    """A tracker with base window ``(0, 1)`` after absorbing ``losses`` (one row per step)."""
    n = len(losses[0])
    lower = None if bounds is None else torch.tensor(bounds, dtype=torch.float64)
    tracker = GapTracker(n, (0, 1), lower_bounds=lower, total_steps=10, spec=spec, lr0=1.0)
    for step, row in enumerate(losses):
        tracker.update(torch.tensor(row, dtype=torch.float64), step, 1.0 - 0.1 * step)
        if weights is not None:
            tracker.record_weights(torch.tensor(weights[step], dtype=torch.float64))
    return tracker


def _loss_rows(n_tasks: int, steps: int = 3) -> st.SearchStrategy[list[list[float]]]:
    row = st.lists(st.floats(0.1, 10.0), min_size=n_tasks, max_size=n_tasks)
    return st.lists(row, min_size=steps, max_size=steps)


V2 = FeatureSpec(history=2, stride=1, ema=0.5, table="v2")


@settings(max_examples=50, deadline=None)
@given(data=st.data(), n_tasks=st.integers(2, 6))
def test_centered_features_sum_to_zero_over_tasks(data: st.DataObject, n_tasks: int) -> None:
    # Losses and base losses within [0.1, 10]: |log| < 4.7, so centering never clips.
    tracker = _fed(data.draw(_loss_rows(n_tasks, steps=4)), V2)
    rows = _rows_by_name(tracker)
    for name in ("centered_log_gap", "rel_log_loss"):
        values = np.asarray(rows[name])
        assert values.shape == (n_tasks,)
        assert abs(float(values.sum())) <= 1e-12 * n_tasks * max(1.0, float(np.abs(values).max()))
        # centering is log_gap / log(L - L*) minus its mean
        assert np.all(np.abs(values) < LOG_CLIP)
    np.testing.assert_allclose(
        rows["centered_log_gap"],
        np.asarray(rows["log_gap"]) - np.mean(rows["log_gap"]),
        rtol=0,
        atol=1e-12,
    )


@settings(max_examples=50, deadline=None)
@given(data=st.data(), n_tasks=st.integers(2, 5), table=st.sampled_from(TABLES))
def test_permuting_tasks_permutes_the_per_task_features(
    data: st.DataObject, n_tasks: int, table: str
) -> None:
    perm = data.draw(st.permutations(range(n_tasks)))
    losses = data.draw(_loss_rows(n_tasks))
    weights = data.draw(_loss_rows(n_tasks))
    bounds = data.draw(st.lists(st.floats(0.0, 0.05), min_size=n_tasks, max_size=n_tasks))
    spec = FeatureSpec(history=2, stride=1, ema=0.5, table=table)

    def permuted(rows: list[list[float]]) -> list[list[float]]:
        return [[row[p] for p in perm] for row in rows]

    a = _fed(losses, spec, weights, bounds)
    b = _fed(permuted(losses), spec, permuted(weights), [bounds[p] for p in perm])
    obs_a, obs_b = a.features(), b.features()
    f = len(a.table.per_task)
    per_a = obs_a[: f * n_tasks].reshape(n_tasks, f)
    per_b = obs_b[: f * n_tasks].reshape(n_tasks, f)
    np.testing.assert_allclose(per_b, per_a[perm], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(obs_b[f * n_tasks :], obs_a[f * n_tasks :])


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n_tasks=st.integers(1, 4), copies=st.integers(2, 3))
def test_v2_features_of_duplicated_tasks_are_the_original_tasks(
    data: st.DataObject, n_tasks: int, copies: int
) -> None:
    """A run whose T tasks each appear ``copies`` times: every copy observes what the task
    observes in the T-task run (IGBv1's weights, too, are the same functions of the gaps), and
    only the ``n_tasks`` global changes."""
    losses = data.draw(_loss_rows(n_tasks))
    spec = V2
    small = GapTracker(n_tasks, (0, 1), total_steps=10, spec=spec, lr0=1.0)
    big = GapTracker(n_tasks * copies, (0, 1), total_steps=10, spec=spec, lr0=1.0)
    for step, row in enumerate(losses):
        for tracker, values in ((small, row), (big, row * copies)):
            tracker.update(torch.tensor(values, dtype=torch.float64), step, 0.5)
            if tracker.gaps is not None:
                tracker.record_weights(igbv1_weights(tracker.gaps).float())
    f = len(small.table.per_task)
    per_small = small.features()[: f * n_tasks].reshape(n_tasks, f)
    per_big = big.features()[: f * n_tasks * copies].reshape(copies, n_tasks, f)
    for c in range(copies):
        np.testing.assert_allclose(per_big[c], per_small, rtol=1e-6, atol=1e-6)
    glob_small, glob_big = small.features()[-3:], big.features()[-3:]
    assert glob_big[1:].tolist() == glob_small[1:].tolist()  # progress, lr_ratio
    assert glob_small[0] == pytest.approx(math.log(n_tasks) / math.log(32), abs=1e-7)
    assert glob_big[0] == pytest.approx(math.log(n_tasks * copies) / math.log(32), abs=1e-7)


def test_v1_weight_feature_depends_on_t_where_v2_does_not() -> None:
    """The contrast that motivates v2: v1 observes ``w / T``, which halves when T doubles."""
    for table, expected in (("v1", [0.5 / 2, 0.5 / 4]), ("v2", [0.5, 0.5])):
        got = []
        for n in (2, 4):
            tracker = GapTracker(n, (0, 1), spec=FeatureSpec(table=table))
            tracker.record_weights(torch.full((n,), 0.5))
            got.append(float(np.asarray(_rows_by_name(tracker)["weight"])[0]))
        assert got == expected


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n_tasks=st.integers(1, 5))
def test_v2_observation_lies_within_its_bounds(data: st.DataObject, n_tasks: int) -> None:
    row = st.lists(st.floats(0.0, 1e6), min_size=n_tasks, max_size=n_tasks)
    base = data.draw(st.lists(st.floats(1e-3, 1e3), min_size=n_tasks, max_size=n_tasks))
    losses = [base, *data.draw(st.lists(row, min_size=1, max_size=4))]
    weights = data.draw(
        st.lists(
            st.lists(st.floats(-5.0, 100.0), min_size=n_tasks, max_size=n_tasks),
            min_size=len(losses),
            max_size=len(losses),
        )
    )
    tracker = _fed(losses, V2, weights)
    obs = tracker.features()
    low, high = tracker.feature_bounds
    assert np.all(np.isfinite(obs)) and np.all(obs >= low) and np.all(obs <= high)


@pytest.mark.parametrize("table", TABLES)
def test_describe_names_the_table_only_for_v2(table: str) -> None:
    spec = FeatureSpec(history=2, stride=5, ema=0.8, table=table)
    described = FeatureTable(spec).describe(3, (5, 10))
    expected: dict[str, object] = {"history": 2, "stride": 5, "ema": 0.8}
    if table == "v2":
        expected["table"] = "v2"
    assert described["spec"] == expected
    assert FeatureSpec(**described["spec"]) == spec  # a sidecar's spec rebuilds the table
    assert [row["name"] for row in described["table"]] == [f.name for f in FeatureTable(spec).rows]
    unsized = FeatureTable(spec).describe(None, None)
    assert unsized["n_tasks"] is None and unsized["base_window"] is None
    sidecar = build_sidecar(
        n_tasks=3,
        features=spec,
        action_mode="interp" if table == "v2" else "residual",
        tau=1.0,
        steps_per_action=5,
        balancer="sum",
        base_window=(5, 10),
        total_steps=60,
        algorithm="test",
    )
    assert sidecar["features"] == described


def test_v2_markdown_rows() -> None:
    lines = FeatureTable(FeatureSpec(history=1, table="v2")).markdown().splitlines()
    assert len(lines) == 2 + 7 + 3
    assert lines[5].startswith("| 7·t + 3 | `centered_log_gap` (task t) | -10 | 10 |")
    assert lines[8] == "| 7·t + 6 | `weight` (task t) | 0 | 32 | the task's last applied weight |"
    assert lines[9] == "| 7·T + 0 | `n_tasks` | 0 | 1 | log T / log 32, clipped to 1 |"
