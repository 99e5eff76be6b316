"""The rows of an experiment's tables: the successful cell records of one method, by seed."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agents.experiments.config import BenchmarkEntry
from agents.experiments.grid import GridPlan


@dataclass
class Row:
    """The cells of one table row (one weighting x balancer on one benchmark), by seed.

    Attributes:
        label: Row label.
        weighting: Weighting label.
        balancer: Balancer label.
        weighting_name: Weighting registry name.
        balancer_name: Balancer registry name.
        flat: Whether the balancer runs under the flat wrapper.
        records: Seed -> successful cell record.
    """

    label: str
    weighting: str
    balancer: str
    weighting_name: str
    balancer_name: str
    flat: bool
    records: dict[int, dict[str, Any]]

    def values(self, key: str) -> dict[int, float]:
        """Seed -> a finite top-level number of the records (e.g. ``delta_m``)."""
        out: dict[int, float] = {}
        for seed, rec in self.records.items():
            v = rec.get(key)
            if isinstance(v, int | float) and math.isfinite(v):
                out[seed] = float(v)
        return out

    def metric(self, name: str) -> dict[int, float]:
        """Seed -> test value of metric ``name``."""
        return {
            s: float(r["metrics"]["test"][name])
            for s, r in self.records.items()
            if name in r.get("metrics", {}).get("test", {})
        }


def benchmark_rows(
    bench: BenchmarkEntry, plan: GridPlan, records: Mapping[str, dict[str, Any]]
) -> list[Row]:
    """The rows of ``bench``'s table, in plan order, with their successful records by seed."""
    rows: dict[str, Row] = {}
    for cell in plan.cells:
        if cell.benchmark.display != bench.display:
            continue
        row = rows.setdefault(
            cell.row,
            Row(
                cell.row,
                cell.weighting.display,
                cell.balancer.display,
                cell.weighting.name,
                cell.balancer.name,
                cell.balancer.flat_rho is not None,
                {},
            ),
        )
        rec = records.get(cell.key)
        if rec is not None and rec.get("status") == "ok":
            row.records[cell.seed] = rec
    return list(rows.values())


def baseline_row(rows: Sequence[Row], baseline: str, row: Row) -> Row | None:
    """The baseline weighting's row with the same balancer (else with plain ``sum``)."""
    candidates = [r for r in rows if baseline in (r.weighting, r.weighting_name)]
    for r in candidates:
        if r.balancer == row.balancer and r.flat == row.flat:
            return r
    for r in candidates:
        if r.balancer_name == "sum" and not r.flat:
            return r
    return None


def ew_row(rows: Sequence[Row]) -> Row | None:
    """The EW + ``sum`` row (the cost reference), if the table has one."""
    for r in rows:
        if r.weighting_name == "ew" and r.balancer_name == "sum" and not r.flat:
            return r
    return None


def first_record_value(rows: Sequence[Row], key: str) -> list[Any]:
    """``record[key]`` (a list) of the first successful record of the table (``[]`` if none)."""
    for r in rows:
        for rec in r.records.values():
            value = rec.get(key)
            if value:
                return list(value)
    return []


def slug(text: str) -> str:
    """``text`` as a file-name part (e.g. a benchmark label in a plot's name)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "benchmark"


__all__ = ["Row", "baseline_row", "benchmark_rows", "ew_row", "first_record_value", "slug"]
