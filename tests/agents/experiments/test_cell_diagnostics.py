"""A cell record carries its methods' diagnostics (solver fallbacks are reported, not hidden)."""

from __future__ import annotations

from agents.experiments.cells import CellTask, run_cell
from agents.experiments.config import BenchmarkEntry, MethodEntry
from agents.experiments.grid import Cell
from mtl_backends.config import TrainConfig
from tests._tiny import TINY_SYNTHETIC

BENCH = BenchmarkEntry(
    "synthetic",
    TINY_SYNTHETIC,
    TrainConfig(steps=6, batch_size=20, lr=0.01, base_window=(1, 2)),
    label="tiny",
)
REFERENCE = {split: {f"t{i}_mse": 1.0 for i in (1, 2, 3)} for split in ("val", "test")}
PROVENANCE = {"config_hash": "abc123", "git": {"commit": "c0ffee", "dirty": False}}


def test_record_has_the_balancers_and_weightings_counters() -> None:
    cell = Cell(BENCH, MethodEntry("ew"), MethodEntry("nash_mtl"), 0)
    rec = run_cell(CellTask(cell, REFERENCE, PROVENANCE, trajectory_points=0))
    assert rec["status"] == "ok", rec.get("error")
    diagnostics = rec["diagnostics"]
    assert diagnostics["weighting"] == {}
    assert set(diagnostics["balancer"]) == {
        "nonfinite_weights",
        "solver_fallbacks",
        "unconverged_steps",
    }
    assert all(v >= 0 for v in diagnostics["balancer"].values())
    plain = run_cell(
        CellTask(Cell(BENCH, MethodEntry("ew"), MethodEntry("sum"), 0), REFERENCE, PROVENANCE)
    )
    assert plain["diagnostics"] == {"weighting": {}, "balancer": {}}
