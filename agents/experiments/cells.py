"""Running one cell (in a worker process) and the cell records on disk.

``run_cell`` builds the cell's trainer (``mtl_backends.build_trainer``), trains and selects with
``mtl_backends.run.train_and_evaluate`` and returns a JSON-ready record with its provenance (git
commit, config hash, seed, library versions, wall and CPU time, trajectories for plots);
``run_stl`` gets the single-task references of one (benchmark, seed). Neither raises: a failure
becomes a record. Both exit when the process that started their worker dies
(``mtl_backends.lifetime.exit_with_parent``), so a killed ``igb compare`` leaves no worker behind.
Records are written atomically to ``DIR/cells/<key>.json``; one read back is used only when it is
the record of its cell (``record_problem``: same key, known format, the fields of its status), so
a truncated, hand-edited or swapped file is recomputed instead of trusted.
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
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.build import build_trainer
from mtl_backends.lifetime import exit_with_parent
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


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")
"""CPU flags that change which kernels numpy, oneDNN and MKL run (and so the last bits)."""


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """What of this CPU decides a run's last bits: torch's kernel set and the SIMD flags.

    A run is bit for bit on one CPU model; across models, libraries that choose kernels at run
    time (oneDNN's convolutions, numpy's vectorised math) may round differently, so records from
    different machines can differ (``docs/experiments/generalist.md``, run 11). ``simd`` lists the
    ``SIMD_FLAGS`` the CPU has and ``model`` its model name, read from ``cpuinfo`` (``None``
    where that file does not exist), so that timings (``igb perf``) name the machine they ran on.
    """
    simd: list[str] | None = None
    model: str | None = None
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("flags") and simd is None:
            flags = set(line.partition(":")[2].split())
            simd = [f for f in SIMD_FLAGS if f in flags]
        elif line.startswith("model name") and model is None:
            model = line.partition(":")[2].strip() or None
    return {
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "simd": simd,
        "model": model,
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
    exit_with_parent()
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
            "cpu": cpu_info(),
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
        if cell.selection != "final"
        else [],
        # The methods' own counters (solver fallbacks, failures), so none is hidden.
        "diagnostics": {
            "weighting": trainer.weighting.diagnostics(),
            "balancer": trainer.balancer.diagnostics(),
        },
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
    """The Δm reference of one (benchmark, seed); never raises.

    Our own STL runs (from the cache or trained), or with ``reference: published`` the
    benchmark's ``published_reference()`` (the papers' single-task numbers; nothing trains).

    Returns:
        ``{"reference": ...}`` or ``{"error": traceback}``.
    """
    exit_with_parent()
    torch.set_num_threads(1)
    try:
        spec = task.benchmark.spec_for(task.seed)
        if task.benchmark.reference == "published":
            bench = make_benchmark(spec.name, **dict(spec.kwargs))
            return {"reference": bench.published_reference()}  # type: ignore[attr-defined]
        ref = stl_reference(spec, task.benchmark.train, task.seed, task.cache)
        return {"reference": ref}
    except Exception:
        return {"error": traceback.format_exc()}


def cell_path(out_dir: Path, cell: Cell) -> Path:
    """Where the record of ``cell`` lives."""
    return out_dir / "cells" / f"{cell.key}.json"


STATUSES: tuple[str, ...] = ("ok", "failed", "skipped")
_NUMBER = (int, float)


def _is_number(value: Any, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def record_problem(record: Any, cell: Cell) -> str | None:
    """Why ``record`` is not a usable record of ``cell`` (``None``: it is).

    A record must have this cell's key (a renamed or swapped file has another), the current
    format, a known status and that status's fields: ``error`` (failed), ``reason`` (skipped),
    or the metrics, references and timings an ``ok`` row is built from.
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("key") != cell.key:
        return f"its key {record.get('key')!r} is not the cell's {cell.key!r}"
    if record.get("format") != CELL_FORMAT_VERSION:
        return f"format {record.get('format')!r}, expected {CELL_FORMAT_VERSION}"
    if not isinstance(record.get("cell"), dict):
        return "no 'cell' description"
    status = record.get("status")
    if status not in STATUSES:
        return f"status {status!r}; valid: {', '.join(STATUSES)}"
    if status in ("failed", "skipped"):
        field = "error" if status == "failed" else "reason"
        ok = isinstance(record.get(field), str)
        return None if ok else f"a {status} record without {field!r}"
    metrics = record.get("metrics")
    if not isinstance(metrics, dict) or not all(
        isinstance(metrics.get(split), dict) and all(_is_number(v) for v in metrics[split].values())
        for split in ("val", "test")
    ):
        return "'metrics' must map val and test to metric values"
    specs = record.get("metric_specs")
    if not isinstance(specs, list) or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) for s in specs
    ):
        return "'metric_specs' must be a list of metric descriptions"
    names = {s["name"] for s in specs}
    if set(metrics["test"]) != names:
        return "its test metrics are not the ones its metric_specs name"
    if not isinstance(record.get("task_names"), list):
        return "no 'task_names'"
    for field in ("delta_m", "delta_p", "val_delta_m", "val_delta_p"):
        if not _is_number(record.get(field), optional=True):
            return f"{field!r} must be a number or null"
    for field in ("wall_time_s", "cpu_time_s"):
        if not _is_number(record.get(field)):
            return f"no {field!r}"
    if not isinstance(record.get("selected_step"), int):
        return "no 'selected_step'"
    if not isinstance(record.get("reference"), dict):
        return "no 'reference'"
    return None


def load_record(path: Path, cell: Cell | None = None) -> dict[str, Any] | None:
    """A cell record from disk, or ``None`` if missing or unusable.

    Unusable: unreadable (e.g. a partial write), not JSON, or, with ``cell``, not a valid record
    of that cell (``record_problem``); such a cell is computed again.
    """
    try:
        with path.open(encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if cell is not None and record_problem(record, cell) is not None:
        return None
    return record


def load_records(plan: GridPlan, out_dir: Path) -> dict[str, dict[str, Any]]:
    """The valid records on disk of every cell of ``plan`` (cell key -> record).

    Missing and invalid records (``record_problem``) are left out.
    """
    out: dict[str, dict[str, Any]] = {}
    for cell in plan.cells:
        rec = load_record(cell_path(out_dir, cell), cell)
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
    "cpu_info",
    "failed_record",
    "git_commit",
    "library_versions",
    "load_record",
    "load_records",
    "record_problem",
    "run_cell",
    "run_stl",
]
