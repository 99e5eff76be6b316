"""``agents.experiments.summary``: the compact table of quickstart / evaluate, pinned."""

from __future__ import annotations

import math

import pytest

from agents.experiments.rows import Row, benchmark_rows
from agents.experiments.summary import row_summaries, summary_table
from tests.agents.experiments import _records

T975_DOF2 = 4.302652729749462
BASELINES = [("ew", "EW"), ("igbv1", "IGBv1")]


def _rows(failed: bool = False) -> list[Row]:
    config, plan, records = _records.setup(failed=failed)
    return benchmark_rows(config.benchmarks[0], plan, records)


def test_summary_table_pinned() -> None:
    # Δm of EW 3/4/5, IGBv1 2/2.5/3, SI 2.5/4/3, IGBv1 + DB-MTL 1/2/3, SI + DB-MTL 1.5/3/2.
    # Paired columns: the baseline with the same balancer, else with sum; "—" for the baseline.
    assert summary_table(_rows(), BASELINES).splitlines() == [
        "| method | Δm % (test, 3 seeds) | t1 test loss | t2 test loss | vs EW (wins) "
        "| vs IGBv1 (wins) | time / EW |",
        "|---|---|---|---|---|---|---|",
        "| EW | 4.00 ± 1.00 | 0.5 | 1 | — | +1.50 (0/3) | 1.00 |",
        "| IGBv1 | 2.50 ± 0.50 | 0.5 | 1 | -1.50 (3/3) | — | 1.50 |",
        "| SI | 3.17 ± 0.76 | 1 | 2 | -0.83 (2/3) | +0.67 (0/3) | 1.25 |",
        "| IGBv1 + DB-MTL | 2.00 ± 1.00 | 0.3 | 0.6 | -2.00 (3/3) | — | 2.00 |",
        "| SI + DB-MTL | 2.17 ± 0.76 | 0.4 | 0.8 | -1.83 (3/3) | +0.17 (1/3) | 2.50 |",
    ]


def test_summary_table_without_losses_and_with_intervals() -> None:
    lines = summary_table(_rows(), [("igbv1", "IGBv1")], loss_header=None, intervals=True)
    lines_ = lines.splitlines()
    assert lines_[0] == "| method | Δm % (test, 3 seeds) | vs IGBv1 (wins) | time / EW |"
    # EW - IGBv1 = 1, 1.5, 2: std 0.5, half-width t(0.975, 2) * 0.5 / sqrt(3) = 1.242.
    assert lines_[2] == "| EW | 4.00 ± 1.00 | +1.50 ± 0.50 [+0.26, +2.74] (0/3) | 1.00 |"
    assert lines_[3] == "| IGBv1 | 2.50 ± 0.50 | — | 1.50 |"
    # SI - IGBv1 = 0.5, 1.5, 0: std sqrt(7/12), half-width 1.897.
    assert lines_[4] == "| SI | 3.17 ± 0.76 | +0.67 ± 0.76 [-1.23, +2.56] (0/3) | 1.25 |"


def test_summary_table_loss_header_names_each_task() -> None:
    head = summary_table(_rows(), [], loss_header="L({task})").splitlines()[0]
    assert head == "| method | Δm % (test, 3 seeds) | L(t1) | L(t2) | time / EW |"


def test_summary_table_with_a_failed_seed_pairs_over_common_seeds() -> None:
    lines = summary_table(_rows(failed=True), BASELINES).splitlines()
    # SI + DB-MTL keeps seeds 0 and 1: Δm 1.5, 3 (std sqrt(1.125)); its losses are their mean.
    assert lines[-1].startswith("| SI + DB-MTL | 2.25 ± 1.06 | 0.4 | 0.8 | -1.25 (2/")
    assert lines[-1].endswith(" | +0.75 (0/2) | 2.50 |")


def test_summary_table_of_one_seed_shows_zero_spread() -> None:
    rows = _rows()
    one = [Row(r.label, r.weighting, r.balancer, r.weighting_name, r.balancer_name, r.flat,
               {0: r.records[0]}) for r in rows]  # fmt: skip
    lines = summary_table(one, BASELINES).splitlines()
    assert lines[0].startswith("| method | Δm % (test, 1 seeds) |")
    assert lines[2] == "| EW | 3.00 ± 0.00 | 0.5 | 1 | — | +1.00 (0/1) | 1.00 |"


def test_row_summaries_values() -> None:
    out = row_summaries(_rows(), BASELINES)
    assert list(out) == ["EW", "IGBv1", "SI", "IGBv1 + DB-MTL", "SI + DB-MTL"]
    ew = out["EW"]
    assert ew["weighting"] == "ew" and ew["balancer"] == "sum"
    assert ew["seeds"] == [0, 1, 2]
    assert ew["delta_m"] == {"mean": 4.0, "std": 1.0, "n": 3, "per_seed": {0: 3.0, 1: 4.0, 2: 5.0}}
    assert ew["test_losses"] == pytest.approx([0.5, 1.0])
    assert ew["time_vs_ew"] == 1.0
    assert "vs_ew" not in ew  # no difference to itself
    vs = ew["vs_igbv1"]
    half = T975_DOF2 * 0.5 / math.sqrt(3.0)
    assert (vs["mean"], vs["std"], vs["wins"], vs["n"]) == (1.5, 0.5, 0, 3)
    assert (vs["low"], vs["high"]) == pytest.approx((1.5 - half, 1.5 + half))
    db = out["IGBv1 + DB-MTL"]
    assert db["balancer"] == "db_mtl" and db["time_vs_ew"] == 2.0
    assert "vs_igbv1" not in db  # the baseline's own row under its balancer
    assert db["vs_ew"]["mean"] == -2.0 and db["vs_ew"]["wins"] == 3  # EW + sum: the fallback
    assert out["SI"]["time_vs_ew"] == 1.25


def test_row_summaries_with_a_failed_seed() -> None:
    si_db = row_summaries(_rows(failed=True), BASELINES)["SI + DB-MTL"]
    assert si_db["seeds"] == [0, 1]
    assert si_db["delta_m"]["n"] == 2 and si_db["delta_m"]["mean"] == 2.25
    assert si_db["vs_ew"]["n"] == 2 and si_db["vs_ew"]["mean"] == -1.25
    assert si_db["vs_igbv1"] == pytest.approx(
        {"mean": 0.75, "std": math.sqrt(0.125), "low": 0.75 - 12.706204736174694 * 0.25,
         "high": 0.75 + 12.706204736174694 * 0.25, "wins": 0, "n": 2}
    )  # fmt: skip
    assert si_db["test_losses"] == pytest.approx([0.4, 0.8])
