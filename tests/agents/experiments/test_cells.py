"""``agents.experiments.cells``: one tiny cell in process, failures as records, records on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.experiments import cells
from agents.experiments.cells import (
    CellTask,
    StlTask,
    cell_path,
    cpu_info,
    failed_record,
    load_record,
    load_records,
    run_cell,
    run_stl,
)
from agents.experiments.config import BenchmarkEntry, MethodEntry
from agents.experiments.grid import CELL_FORMAT_VERSION, Cell, plan_grid
from mtl_backends.config import TrainConfig
from mtl_backends.registry import ConfigError
from tests._tiny import TINY_SYNTHETIC
from tests.agents.experiments import _records

BENCH = BenchmarkEntry(
    "synthetic",
    TINY_SYNTHETIC,
    TrainConfig(steps=30, batch_size=20, lr=0.01, base_window=(5, 10)),
    label="tiny",
)
# Unit STL references: Δm is then the mean relative error of the three test MSEs, in percent.
REFERENCE = {split: {f"t{i}_mse": 1.0 for i in (1, 2, 3)} for split in ("val", "test")}
PROVENANCE = {"config_hash": "abc123", "git": {"commit": "c0ffee", "dirty": False}}


def _cell(weighting: MethodEntry | None = None, **changes: Any) -> Cell:
    return Cell(BENCH, weighting or MethodEntry("igbv1"), MethodEntry("sum"), 0, **changes)


def _run(cell: Cell, points: int = 5) -> dict[str, Any]:
    return run_cell(CellTask(cell, REFERENCE, PROVENANCE, trajectory_points=points))


@pytest.fixture(scope="module")
def best_val() -> dict[str, Any]:
    return _run(_cell(selection="best_val", eval_every=10))


def test_cpu_info_reads_the_simd_flags_that_change_kernels(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Example CPU 9000\n"
        "flags\t\t: fpu sse4_2 avx2 fma avx512f avx512vl ht\n"
        "processor\t: 1\nflags\t\t: fpu sse4_2 avx2 fma avx512f avx512vl ht\n"
    )
    info = cpu_info(cpuinfo)
    assert info["simd"] == ["sse4_2", "avx2", "fma", "avx512f", "avx512vl"]  # SIMD_FLAGS order
    assert info["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["model"] == "Example CPU 9000"
    cpuinfo.write_text("flags\t\t: fpu sse4_2 avx avx2 fma\n")
    assert cpu_info(cpuinfo)["simd"] == ["sse4_2", "avx", "avx2", "fma"]
    assert cpu_info(cpuinfo)["model"] is None  # no model line (e.g. some ARM kernels)
    assert cpu_info(tmp_path / "absent")["simd"] is None  # not Linux: unknown, not empty


def test_ok_record_with_finite_delta_m_and_provenance(best_val: dict[str, Any]) -> None:
    rec = best_val
    assert rec["status"] == "ok"
    assert rec["format"] == CELL_FORMAT_VERSION
    assert rec["key"] == _cell(selection="best_val", eval_every=10).key
    assert math.isfinite(rec["delta_m"]) and math.isfinite(rec["delta_p"])
    assert rec["task_names"] == ["t1", "t2", "t3"]
    assert [s["name"] for s in rec["metric_specs"]] == ["t1_mse", "t2_mse", "t3_mse"]
    assert all(s["higher_is_better"] is False for s in rec["metric_specs"])
    assert rec["reference"] == REFERENCE
    assert len(rec["losses"]["test"]) == 3
    prov = rec["provenance"]
    assert prov["config_hash"] == "abc123" and prov["git"]["commit"] == "c0ffee"
    assert prov["seed"] == 0 and prov["torch_threads"] == 1
    assert set(prov["versions"]) == {"python", "torch", "numpy", "igb-rl"}
    assert prov["cpu"] == cpu_info()
    assert prov["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability() != ""
    assert rec["cell"]["benchmark_label"] == "tiny" and rec["cell"]["row"] == "IGBv1"
    assert rec["cell"]["seed"] == 0 and rec["cell"]["selection"] == "best_val"
    assert 0.0 <= rec["train_wall_time_s"] <= rec["wall_time_s"]
    assert rec["cpu_time_s"] > 0.0
    json.dumps(rec)  # JSON-ready


def test_delta_m_is_taken_against_the_reference(best_val: dict[str, Any]) -> None:
    test = best_val["metrics"]["test"]
    expected = sum(100.0 * (test[m] - 1.0) / 1.0 for m in test) / len(test)
    assert best_val["delta_m"] == pytest.approx(expected, rel=1e-9)


def test_best_val_selects_the_lowest_validation_delta_m(best_val: dict[str, Any]) -> None:
    curve = best_val["val_curve"]
    assert [p["step"] for p in curve] == [10, 20, 30]
    best = min(curve, key=lambda p: p["val_delta_m"])
    assert best_val["selected_step"] == best["step"]
    assert best_val["val_delta_m"] == pytest.approx(best["val_delta_m"])


def test_mean_last_10_reports_the_mean_of_the_last_ten_evaluations() -> None:
    rec = _run(_cell(selection="mean_last_10", eval_every=2), points=0)
    curve = rec["val_curve"]
    assert [p["step"] for p in curve] == list(range(2, 31, 2))
    last = [p["val_delta_m"] for p in curve[-10:]]
    assert rec["val_delta_m"] == pytest.approx(sum(last) / 10, rel=1e-9)
    assert rec["selected_step"] == 30 and rec["cell"]["selection"] == "mean_last_10"


def test_trajectories_are_subsampled_to_the_requested_points(best_val: dict[str, Any]) -> None:
    traj = best_val["trajectories"]
    # round(i * 29 / 4) for i = 0..4 (Python rounds 14.5 to 14).
    assert traj["steps"] == [0, 7, 14, 22, 29]
    assert len(traj["weights"]) == 5 and all(len(w) == 3 for w in traj["weights"])
    assert all(sum(w) == pytest.approx(3.0, abs=1e-4) for w in traj["weights"])
    # Gaps exist once the base window [5, 10) is over.
    assert traj["gap_steps"] == [14, 22, 29] and len(traj["gaps"]) == 3


def test_final_selection_all_steps_and_no_trajectories() -> None:
    rec = _run(_cell(), points=100)
    assert rec["selected_step"] == 30 and rec["val_curve"] == []
    assert rec["trajectories"]["steps"] == list(range(30))
    assert rec["trajectories"]["gap_steps"] == list(range(10, 30))
    assert "trajectories" not in _run(_cell(), points=0)


def test_a_cell_is_reproducible() -> None:
    a, b = _run(_cell(MethodEntry("ew"))), _run(_cell(MethodEntry("ew")))
    assert a["metrics"] == b["metrics"] and a["delta_m"] == b["delta_m"]
    assert a["trajectories"] == b["trajectories"]


def test_a_weighting_that_raises_gives_a_failed_record() -> None:
    cell = _cell(MethodEntry("tuned_static", {"weights": [1.0]}))  # one weight for three tasks
    rec = _run(cell)
    assert rec["status"] == "failed"
    assert rec["error"].startswith("Traceback (most recent call last)")
    assert (
        rec["error"]
        .rstrip()
        .endswith("ValueError: tuned_static has 1 weights but the run has 3 tasks")
    )
    assert "delta_m" not in rec and "metrics" not in rec
    assert rec["key"] == cell.key and rec["cell"]["row"] == "tuned static"
    assert rec["wall_time_s"] >= 0.0 and rec["cpu_time_s"] >= 0.0


def test_a_transform_conflict_is_a_skipped_record() -> None:
    cell = Cell(BENCH, MethodEntry("ew"), MethodEntry("db_mtl"), 0)
    rec = _run(cell)
    assert rec["status"] == "skipped"
    assert "transform conflict" in rec["reason"] and "error" not in rec


def test_errors_during_training_never_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("diverged at step 3")

    monkeypatch.setattr(cells, "train_and_evaluate", boom)
    rec = _run(_cell())
    assert rec["status"] == "failed"
    assert rec["error"].rstrip().endswith("RuntimeError: diverged at step 3")


def test_other_config_errors_are_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    def bad(*args: Any, **kwargs: Any) -> None:
        raise ConfigError("unknown loss weighting 'x'")

    monkeypatch.setattr(cells, "build_trainer", bad)
    rec = _run(_cell())
    assert rec["status"] == "failed" and "unknown loss weighting 'x'" in rec["error"]


def test_run_stl_returns_the_error_instead_of_raising() -> None:
    task = StlTask(BenchmarkEntry("synthetic", {"bogus": 1}), seed=0, cache=None)
    out = run_stl(task)
    assert set(out) == {"error"}
    assert "got unknown argument(s) 'bogus'" in out["error"]


def test_failed_record_fields() -> None:
    cell = _cell()
    rec = failed_record(cell, PROVENANCE, "STL reference failed")
    assert rec == {
        "format": CELL_FORMAT_VERSION,
        "key": cell.key,
        "cell": {**cell.identity(), "row": "IGBv1"},
        "provenance": {**PROVENANCE, "seed": 0},
        "status": "failed",
        "error": "STL reference failed",
        "wall_time_s": 0.0,
        "cpu_time_s": 0.0,
    }


def test_load_record_returns_none_for_unreadable_files(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"status": "ok", "delta_m": 1.5}))
    assert load_record(good) == {"status": "ok", "delta_m": 1.5}
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps({"status": "ok", "delta_m": 1.5})[:-7])
    assert load_record(truncated) is None
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert load_record(empty) is None
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert load_record(listed) is None
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    assert load_record(binary) is None
    assert load_record(tmp_path / "missing.json") is None
    assert load_record(tmp_path) is None  # a folder


def test_load_records_reads_the_plan_cells_only(tmp_path: Path) -> None:
    config = _records.experiment(balancers=["sum"], seeds=[0])
    plan = plan_grid(config)
    ew, igb, si = plan.cells
    assert cell_path(tmp_path, ew) == tmp_path / "cells" / f"{ew.key}.json"
    (tmp_path / "cells").mkdir()
    good = failed_record(ew, {}, "boom")
    cell_path(tmp_path, ew).write_text(json.dumps(good))
    cell_path(tmp_path, igb).write_text('{"status": "fai')  # a partial write
    cell_path(tmp_path, si).write_text(json.dumps({"status": "ok"}))  # edited: no key, no fields
    (tmp_path / "cells" / "stranger.json").write_text(json.dumps(good))
    assert load_records(plan, tmp_path) == {ew.key: good}
    assert load_records(plan, tmp_path / "nowhere") == {}
