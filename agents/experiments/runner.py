"""``igb compare``: run (or resume) the grid of an experiment and write its report.

Each finished cell is written atomically to ``DIR/cells/<key>.json``; rerunning skips the cells
already on disk, so a killed comparison resumes where it stopped; a record that is not a valid
record of its cell (wrong key, missing fields, not JSON: ``cells.record_problem``) is computed
again. A cell that raises is recorded as failed with its traceback and the grid goes on. The
output folder, the STL cache and the seeds are checked before any worker starts. Invalid
combinations (a transform conflict such as ``db_mtl`` with ``ew``) and user exclusions are skipped
with a stated reason. One benchmark at a time: its STL references, then its cells. The report
(``agents.experiments.report``) is rebuilt from the cell files at the end of every run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.experiments.backends import Backend, make_backend
from agents.experiments.cells import (
    CellTask,
    StlTask,
    cell_path,
    failed_record,
    git_commit,
    load_record,
    run_cell,
    run_stl,
)
from agents.experiments.config import ExperimentConfig, config_hash
from agents.experiments.grid import Cell, plan_grid
from agents.experiments.report import write_report
from mtl_backends.atomic import write_json_atomic
from mtl_backends.config import check_seed, to_dict
from mtl_backends.fileio import check_writable_dir
from mtl_backends.progress import Progress
from mtl_backends.registry import ConfigError


@dataclass(frozen=True)
class CompareSummary:
    """What one ``compare`` call did.

    Attributes:
        out_dir: Output folder.
        computed: Cells run in this call.
        reused: Cells found on disk and not rerun.
        failed: Cells recorded as failed (in this call or before).
        skipped: Invalid or excluded cells.
        lost: Cells whose worker died (not recorded; rerun to retry).
        wall_time_s: Wall time of the call.
        report: Paths of the written report files.
        invalid: Records found on disk that were not valid records of their cells (computed
            again, or left out of a ``report_only`` report).
    """

    out_dir: Path
    computed: int
    reused: int
    failed: int
    skipped: int
    lost: int
    wall_time_s: float
    report: tuple[Path, ...]
    invalid: int = 0


def compare(
    config: ExperimentConfig,
    out_dir: str | Path,
    workers: int = 2,
    backend: str = "local",
    retry_failed: bool = False,
    progress_bar: bool = True,
    ray_address: str | None = None,
    config_path: str | Path | None = None,
    report_only: bool = False,
    benchmarks: Sequence[str] | None = None,
    runner: Backend | None = None,
) -> CompareSummary:
    """Run (or resume) the grid of ``config`` and write the report to ``out_dir``.

    Args:
        config: The experiment.
        out_dir: Output folder (cells, CSV, Markdown, PNGs).
        workers: Parallel processes (local) or CPUs of a local Ray instance.
        backend: ``local`` or ``ray``.
        retry_failed: Rerun cells recorded as failed (default: keep their records).
        progress_bar: Show progress over cells and STL references (a bar on a terminal, plain
            lines in a log).
        ray_address: Existing Ray cluster (``None``: a local instance).
        config_path: Where the config came from (stated in the report).
        report_only: Only rebuild the report from the cells on disk (e.g. to look at a grid
            another process is still running); nothing is trained.
        benchmarks: Train only the cells of these benchmark labels (``None``: all); the report
            still covers every finished cell of the grid on disk.
        runner: A backend that is already running (entered) to use instead of a new one of
            ``backend`` (e.g. one pool shared by several steps of ``igb quickstart``).

    Returns:
        Counts of computed, reused, failed and skipped cells, and the report files.

    Raises:
        ConfigError: A label of ``benchmarks`` that the grid does not have, or a negative seed.
        NotADirectoryError: ``out_dir`` or ``config.stl_cache`` is (inside) a file.
        PermissionError: ``out_dir`` or ``config.stl_cache`` is not writable.
    """
    start = time.perf_counter()
    labels = [b.display for b in config.benchmarks]
    unknown = sorted(set(benchmarks or ()) - set(labels))
    if unknown:
        raise ConfigError(
            f"unknown benchmark label(s) {', '.join(map(repr, unknown))}; "
            f"this grid has: {', '.join(labels)}"
        )
    for seed in config.seeds:
        check_seed(seed, f"{config_path or 'experiment'}: seeds")
    out = check_writable_dir(out_dir, "the output folder")
    if not report_only and config.stl_cache is not None:
        check_writable_dir(config.stl_cache, "stl_cache")
    # Fails early (before any file is written) when the backend's extra is missing.
    owned = (
        None if report_only or runner is not None else make_backend(backend, workers, ray_address)
    )
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_grid(config)
    records: dict[str, dict[str, Any]] = {}
    todo: list[Cell] = []
    invalid = 0
    for cell in plan.cells:
        path = cell_path(out, cell)
        rec = load_record(path, cell)
        if rec is None and path.exists():
            invalid += 1
        if rec is not None and (rec.get("status") != "failed" or not retry_failed):
            records[cell.key] = rec
        else:
            todo.append(cell)
    reused = len(records)
    provenance = {
        "git": git_commit(),
        "config_hash": config_hash(config),
        "config_path": None if config_path is None else str(config_path),
        "backend": backend,
    }
    lost = 0
    if report_only:
        todo = []
    else:
        if benchmarks is not None:
            todo = [c for c in todo if c.benchmark.display in benchmarks]
        write_json_atomic(
            {"config": to_dict(config), "provenance": provenance}, out / "experiment.json"
        )
    active = runner if runner is not None else owned
    if todo and active is not None:
        with contextlib.nullcontext() if runner is not None else active:
            bar = Progress(len(todo), "compare", "cell", disable=not progress_bar)
            try:
                # One benchmark at a time (its STL references, then its cells), so that each table
                # fills up completely while later benchmarks wait; the report is refreshed after
                # each benchmark.
                for bench in config.benchmarks:
                    pending = [c for c in todo if c.benchmark.display == bench.display]
                    if not pending:
                        continue
                    lost += _run_benchmark(
                        active, config, pending, provenance, out, records, bar, progress_bar
                    )
                    if bench is not config.benchmarks[-1]:
                        write_report(config, plan, records, out, provenance)
            finally:
                bar.close()
    report = write_report(config, plan, records, out, provenance)
    statuses = [records[c.key].get("status") for c in plan.cells if c.key in records]
    return CompareSummary(
        out_dir=out,
        computed=len(todo) - lost,
        reused=reused,
        failed=sum(s == "failed" for s in statuses),
        skipped=len(plan.skipped) + sum(s == "skipped" for s in statuses),
        lost=lost,
        wall_time_s=time.perf_counter() - start,
        report=tuple(report),
        invalid=invalid,
    )


def _run_benchmark(
    runner: Backend,
    config: ExperimentConfig,
    pending: Sequence[Cell],
    provenance: Mapping[str, Any],
    out: Path,
    records: dict[str, dict[str, Any]],
    bar: Progress,
    progress_bar: bool,
) -> int:
    """STL references, then the cells, of one benchmark; returns the number of lost cells."""
    lost = 0
    references = _stl_stage(runner, config, pending, progress_bar)
    tasks: list[CellTask] = []
    for cell in pending:
        ref = references.get((cell.benchmark.display, cell.seed))
        if ref is None:  # the STL worker died: not recorded, retried on the next run
            lost += 1
            bar.update(1)
            continue
        if isinstance(ref, str):
            rec = failed_record(cell, provenance, f"STL reference failed:\n{ref}")
            write_json_atomic(rec, cell_path(out, cell))
            records[cell.key] = rec
            bar.update(1)
            continue
        tasks.append(CellTask(cell, ref, provenance, config.plots.trajectory_points))
    for i, result in runner.map_unordered(run_cell, tasks):
        cell = tasks[i].cell
        if isinstance(result, BaseException):
            lost += 1
            bar.write(f"cell {cell.row} seed {cell.seed} lost: {result!r}")
        else:
            write_json_atomic(result, cell_path(out, cell))
            records[cell.key] = result
            if result.get("status") == "failed":
                last = str(result.get("error", "")).strip().splitlines()[-1:]
                bar.write(f"cell {cell.row} seed {cell.seed} failed: {last}")
        bar.update(1)
    return lost


def _stl_stage(
    runner: Backend, config: ExperimentConfig, todo: Sequence[Cell], progress_bar: bool
) -> dict[tuple[str, int], dict[str, dict[str, float]] | str]:
    """STL references of every (benchmark, seed) with pending cells.

    A failing STL run gives its traceback text; a pair whose worker died is left out.
    """
    pairs: dict[tuple[str, int], StlTask] = {}
    for cell in todo:
        key = (cell.benchmark.display, cell.seed)
        if key not in pairs:
            pairs[key] = StlTask(cell.benchmark, cell.seed, config.stl_cache)
    keys = list(pairs)
    out: dict[tuple[str, int], dict[str, dict[str, float]] | str] = {}
    bar = Progress(len(keys), "stl", "ref", disable=not progress_bar, leave=False)
    try:
        for i, result in runner.map_unordered(run_stl, [pairs[k] for k in keys]):
            if isinstance(result, BaseException):
                bar.write(f"STL {keys[i][0]} seed {keys[i][1]} lost: {result!r}")
            elif "error" in result:
                out[keys[i]] = str(result["error"])
            else:
                out[keys[i]] = result["reference"]
            bar.update(1)
    finally:
        bar.close()
    return out


__all__ = ["CompareSummary", "compare"]
