"""Running one cell (in a worker process) and the cell records on disk.

``run_cell`` builds the cell's trainer (``mtl_backends.build_trainer``), trains and selects with
``mtl_backends.run.train_and_evaluate`` and returns a JSON-ready record with its provenance (git
commit, config hash, seed, library versions, wall and CPU time, trajectories for plots);
``run_stl`` gets the single-task references of one (benchmark, seed). Neither raises: a failure
becomes a record. Records are written atomically to ``DIR/cells/<key>.json``.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.experiments.config import BenchmarkEntry
from agents.experiments.grid import CELL_FORMAT_VERSION, Cell, GridPlan
from mtl_backends.build import build_trainer
from mtl_backends.registry import ConfigError
from mtl_backends.run import train_and_evaluate
from mtl_backends.stl import stl_reference
from mtl_backends.trainer import MTLTrainer, StepResult


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell (picklable; no open files or tensors).

    Attributes:
        cell: The cell.
        reference: STL reference metrics (split -> metric -> value).
        provenance: Commit and config hash of the comparison.
        trajectory_points: Steps of weights and gaps kept for plots (0: none).
    """

    cell: Cell
    reference: dict[str, dict[str, float]]
    provenance: Mapping[str, Any]
    trajectory_points: int = 100


def library_versions() -> dict[str, str]:
    """Versions of python, torch, numpy and igb-rl in this process."""
    try:
        ours = importlib.metadata.version("igb-rl")
    except importlib.metadata.PackageNotFoundError:
        ours = "unknown"
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "igb-rl": ours,
    }


def git_commit(where: Path | None = None) -> dict[str, Any]:
    """``{"commit": HEAD or "unknown", "dirty": bool | None}`` of the checkout holding the code."""
    cwd = where or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return {"commit": "unknown", "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def _subsample(n: int, points: int) -> set[int]:
    if points <= 0 or n <= 0:
        return set()
    if n <= points:
        return set(range(n))
    return {round(i * (n - 1) / (points - 1)) for i in range(points)} if points > 1 else {n - 1}


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def run_cell(task: CellTask) -> dict[str, Any]:
    """Train and evaluate one cell; never raises (a failure is returned as a failed record).

    Runs with one torch thread; measures wall and CPU time (``time.process_time``) of the whole
    cell (building, training, evaluating).

    Returns:
        The JSON-ready cell record (``status`` ``ok``, ``failed`` or ``skipped``).
    """
    torch.set_num_threads(1)
    cell = task.cell
    record: dict[str, Any] = {
        "format": CELL_FORMAT_VERSION,
        "key": cell.key,
        "cell": {
            **cell.identity(),
            "benchmark_label": cell.benchmark.display,
            "weighting_label": cell.weighting.display,
            "balancer_label": cell.balancer.display,
            "row": cell.row,
        },
        "provenance": {
            **dict(task.provenance),
            "seed": cell.seed,
            "versions": library_versions(),
            "host": platform.node(),
            "pid": os.getpid(),
            "torch_threads": torch.get_num_threads(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        record.update(_train_cell(task))
        record["status"] = "ok"
    except ConfigError as exc:
        if "transform conflict" not in str(exc):
            record.update(status="failed", error=traceback.format_exc())
        else:
            record.update(status="skipped", reason=str(exc))
    except Exception:
        record.update(status="failed", error=traceback.format_exc())
    record["wall_time_s"] = time.perf_counter() - wall0
    record["cpu_time_s"] = time.process_time() - cpu0
    return record


def _train_cell(task: CellTask) -> dict[str, Any]:
    cell = task.cell
    trainer = build_trainer(
        cell.benchmark.spec_for(cell.seed),
        cell.weighting.spec,
        cell.balancer.spec,
        cell.train,
        seed=cell.seed,
        reference=task.reference,
    )
    keep = _subsample(cell.train.steps, task.trajectory_points)
    steps: list[int] = []
    weights: list[list[float]] = []
    gap_steps: list[int] = []
    gaps: list[list[float]] = []

    def observe(tr: MTLTrainer, result: StepResult) -> None:
        if result.step in keep:
            steps.append(result.step)
            weights.append([float(v) for v in result.weights])
            if tr.progress.gaps is not None:
                gap_steps.append(result.step)
                gaps.append([float(v) for v in tr.progress.gaps])

    outcome = train_and_evaluate(trainer, cell.selection, cell.eval_every, [observe])
    val, test = outcome.val, outcome.test
    benchmark = trainer.benchmark
    specs = [
        {"name": m.name, "task": m.task, "higher_is_better": m.higher_is_better}
        for m in benchmark.metric_specs
    ]
    out: dict[str, Any] = {
        "selected_step": outcome.selected_step,
        "train_wall_time_s": outcome.train_wall_time_s,
        "task_names": list(benchmark.task_names),
        "metric_specs": specs,
        "metrics": {"val": val.metrics, "test": test.metrics},
        "losses": {"val": val.losses, "test": test.losses},
        "delta_m": _finite(test.delta_m),
        "delta_p": _finite(test.delta_p),
        "val_delta_m": _finite(val.delta_m),
        "val_delta_p": _finite(val.delta_p),
        "reference": task.reference,
        "val_curve": [{"step": v.step, "val_delta_m": _finite(v.delta_m)} for v, _ in outcome.evals]
        if cell.selection == "best_val"
        else [],
    }
    if task.trajectory_points > 0:
        out["trajectories"] = {
            "steps": steps,
            "weights": weights,
            "gap_steps": gap_steps,
            "gaps": gaps,
        }
    return out


@dataclass(frozen=True)
class StlTask:
    """One STL reference job: (benchmark, seed) with the benchmark's training settings.

    Attributes:
        benchmark: Benchmark entry.
        seed: Seed.
        cache: STL cache folder (``None``: no cache).
    """

    benchmark: BenchmarkEntry
    seed: int
    cache: str | None


def run_stl(task: StlTask) -> dict[str, Any]:
    """STL references of one (benchmark, seed), from the cache or trained; never raises.

    Returns:
        ``{"reference": ...}`` or ``{"error": traceback}``.
    """
    torch.set_num_threads(1)
    try:
        spec = task.benchmark.spec_for(task.seed)
        ref = stl_reference(spec, task.benchmark.train, task.seed, task.cache)
        return {"reference": ref}
    except Exception:
        return {"error": traceback.format_exc()}


def cell_path(out_dir: Path, cell: Cell) -> Path:
    """Where the record of ``cell`` lives."""
    return out_dir / "cells" / f"{cell.key}.json"


def load_record(path: Path) -> dict[str, Any] | None:
    """A cell record from disk, or ``None`` if missing or unreadable (e.g. a partial write)."""
    try:
        with path.open() as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def load_records(plan: GridPlan, out_dir: Path) -> dict[str, dict[str, Any]]:
    """The records on disk of every cell of ``plan`` (cell key -> record; missing ones absent)."""
    out: dict[str, dict[str, Any]] = {}
    for cell in plan.cells:
        rec = load_record(cell_path(out_dir, cell))
        if rec is not None:
            out[cell.key] = rec
    return out


def failed_record(cell: Cell, provenance: Mapping[str, Any], error: str) -> dict[str, Any]:
    """The record of a cell that could not run (e.g. its STL reference failed)."""
    return {
        "format": CELL_FORMAT_VERSION,
        "key": cell.key,
        "cell": {**cell.identity(), "row": cell.row},
        "provenance": {**dict(provenance), "seed": cell.seed},
        "status": "failed",
        "error": error,
        "wall_time_s": 0.0,
        "cpu_time_s": 0.0,
    }


__all__ = [
    "CellTask",
    "StlTask",
    "cell_path",
    "failed_record",
    "git_commit",
    "library_versions",
    "load_record",
    "load_records",
    "run_cell",
    "run_stl",
]
