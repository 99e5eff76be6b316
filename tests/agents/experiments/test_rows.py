"""``agents.experiments.rows``: a table's rows, its baseline and EW rows (hand-written records)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agents.experiments.grid import plan_grid
from agents.experiments.rows import (
    Row,
    baseline_row,
    benchmark_rows,
    ew_row,
    first_record_value,
    slug,
)
from tests.agents.experiments import _records


def _row(
    label: str, weighting: str, balancer: str = "sum", flat: bool = False, **records: Any
) -> Row:
    names = {"EW": "ew", "IGBv1": "igbv1", "SI": "si", "sum": "sum", "DB-MTL": "db_mtl"}
    names.update({"MGDA": "mgda", "F-MGDA": "mgda"})
    return Row(
        label,
        weighting,
        balancer,
        names.get(weighting, weighting),
        names[balancer],
        flat,
        {int(k.removeprefix("s")): v for k, v in records.items()},
    )


def test_benchmark_rows_follow_the_plan_and_keep_successful_records() -> None:
    config, plan, records = _records.setup()
    rows = benchmark_rows(config.benchmarks[0], plan, records)
    assert [r.label for r in rows] == ["EW", "IGBv1", "SI", "IGBv1 + DB-MTL", "SI + DB-MTL"]
    assert [sorted(r.records) for r in rows] == [[0, 1, 2]] * 4 + [[0, 1]]  # seed 2 failed
    si_db = rows[-1]
    assert (si_db.weighting, si_db.balancer) == ("SI", "DB-MTL")
    assert (si_db.weighting_name, si_db.balancer_name, si_db.flat) == ("si", "db_mtl", False)
    assert rows[0].values("delta_m") == {0: 3.0, 1: 4.0, 2: 5.0}


def test_benchmark_rows_without_records_are_empty_and_other_tables_are_left_out() -> None:
    two = dict(_records.BENCH, label="other")
    config = _records.experiment(benchmarks=[_records.BENCH, two])
    plan = plan_grid(config)
    first = _records.records(plan_grid(_records.experiment()))
    rows = benchmark_rows(config.benchmarks[1], plan, first)
    # The benchmarks differ only by label: equal cells, equal keys, so the records are shared ...
    assert [len(r.records) for r in rows] == [3, 3, 3, 3, 2]
    # ... while no record at all gives rows without seeds (the table still lists them).
    empty = benchmark_rows(config.benchmarks[0], plan, {})
    assert [r.label for r in empty] == [r.label for r in rows]
    assert all(r.records == {} for r in empty)


def test_a_flat_balancer_makes_a_flat_row() -> None:
    config = _records.experiment(balancers=[{"name": "mgda", "flat_rho": 0.5}])
    rows = benchmark_rows(config.benchmarks[0], plan_grid(config), {})
    assert [r.label for r in rows] == ["EW + F-MGDA", "IGBv1 + F-MGDA", "SI + F-MGDA"]
    assert all(r.flat and r.balancer == "F-MGDA" and r.balancer_name == "mgda" for r in rows)


def test_values_keeps_finite_numbers_only() -> None:
    row = _row(
        "EW",
        "EW",
        s0={"delta_m": 1.5},
        s1={"delta_m": None},
        s2={"delta_m": math.nan},
        s3={"delta_m": math.inf},
        s4={},
        s5={"delta_m": "2.0"},
        s6={"delta_m": 2},
    )
    assert row.values("delta_m") == {0: 1.5, 6: 2.0}


def test_metric_reads_the_test_split() -> None:
    row = _row(
        "EW",
        "EW",
        s0={"metrics": {"test": {"acc": 0.5}, "val": {"acc": 0.9}}},
        s1={"metrics": {"test": {"mse": 1.0}}},
        s2={},
    )
    assert row.metric("acc") == {0: 0.5}


def test_baseline_row_prefers_the_same_balancer_then_sum() -> None:
    ew, igb = _row("EW", "EW"), _row("IGBv1", "IGBv1")
    ew_db, igb_db = _row("EW + DB-MTL", "EW", "DB-MTL"), _row("IGBv1 + DB-MTL", "IGBv1", "DB-MTL")
    ew_mgda = _row("EW + MGDA", "EW", "MGDA")
    rows = [ew, igb, ew_db, igb_db, ew_mgda]
    assert baseline_row(rows, "igbv1", ew) is igb
    assert baseline_row(rows, "igbv1", ew_db) is igb_db
    assert baseline_row(rows, "igbv1", ew_mgda) is igb  # no IGBv1 + MGDA: the sum row
    assert baseline_row(rows, "IGBv1", ew_db) is igb_db  # the label works as well as the name
    assert baseline_row(rows, "igbv1", igb) is igb  # the baseline's own row is its reference
    assert baseline_row(rows, "si", ew) is None


def test_baseline_row_matches_flat_variants_only_to_flat_variants() -> None:
    igb, igb_mgda = _row("IGBv1", "IGBv1"), _row("IGBv1 + MGDA", "IGBv1", "MGDA")
    igb_fmgda = _row("IGBv1 + F-MGDA", "IGBv1", "F-MGDA", flat=True)
    ew_fmgda = _row("EW + F-MGDA", "EW", "F-MGDA", flat=True)
    ew_mgda = _row("EW + MGDA", "EW", "MGDA")
    assert baseline_row([igb, igb_mgda, igb_fmgda], "igbv1", ew_fmgda) is igb_fmgda
    assert baseline_row([igb, igb_mgda, igb_fmgda], "igbv1", ew_mgda) is igb_mgda
    assert baseline_row([igb, igb_mgda], "igbv1", ew_fmgda) is igb


def test_baseline_row_without_a_sum_row_is_none() -> None:
    igb_db = _row("IGBv1 + DB-MTL", "IGBv1", "DB-MTL")
    assert baseline_row([igb_db], "igbv1", _row("SI + MGDA", "SI", "MGDA")) is None


def test_ew_row_is_ew_with_plain_sum() -> None:
    ew, ew_db = _row("EW", "EW"), _row("EW + DB-MTL", "EW", "DB-MTL")
    ew_flat = _row("EW + F-MGDA", "EW", "F-MGDA", flat=True)
    renamed = Row("equal weights", "equal weights", "sum", "ew", "sum", False, {})
    assert ew_row([ew_db, ew_flat, ew]) is ew
    assert ew_row([ew_db, renamed]) is renamed  # found by registry name, not label
    assert ew_row([ew_db, ew_flat, _row("SI", "SI")]) is None
    # A flat "sum" would not be the cost reference either.
    assert ew_row([Row("EW + F-sum", "EW", "F-sum", "ew", "sum", True, {})]) is None


def test_first_record_value_skips_rows_and_records_without_it() -> None:
    rows = [
        _row("EW", "EW"),
        _row("SI", "SI", s0={"task_names": []}, s1={"other": 1}),
        _row("IGBv1", "IGBv1", s4={"task_names": ("a", "b")}),
    ]
    assert first_record_value(rows, "task_names") == ["a", "b"]
    assert first_record_value(rows, "metric_specs") == []
    assert first_record_value([], "task_names") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("qm9-20k", "qm9-20k"),
        ("synthetic v1.2", "synthetic_v1.2"),
        ("learned policy (DB-MTL-trained)", "learned_policy_DB-MTL-trained"),
        ("a//b", "a_b"),
        ("Δm", "m"),
        ("///", "benchmark"),
        ("", "benchmark"),
    ],
)
def test_slug(text: str, expected: str) -> None:
    assert slug(text) == expected
