"""``igb compare CONFIG``: the benchmark grid (weightings x balancers x seeds x benchmarks)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``compare`` subcommand."""
    p = subparsers.add_parser(
        "compare",
        help="run (or resume) a comparison grid and write results.md, results.csv and plots",
    )
    p.add_argument(
        "config",
        help="ExperimentConfig YAML, or the name of a built-in one (smoke, baselines, ...: "
        "configs/experiments/)",
    )
    p.add_argument("--out", help="output folder (default runs/compare-<config name>)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="parallel cells: local processes or CPUs of a local Ray instance (default: all cores)",
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help='local process pool, or Ray tasks (needs `pip install -e ".[ray]"`)',
    )
    p.add_argument(
        "--ray-address", help="address of an existing Ray cluster (default: a local instance)"
    )
    p.add_argument("--retry-failed", action="store_true", help="rerun cells recorded as failed")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="only rebuild results.md/csv/plots from the cells on disk (train nothing)",
    )
    p.add_argument(
        "--benchmarks",
        nargs="+",
        metavar="LABEL",
        help="train only these benchmarks of the grid (by label); the report keeps every cell",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``igb compare``; exit code 1 if any cell failed or was lost, else 0."""
    from agents.experiments.config import load_experiment
    from agents.experiments.runner import compare
    from mtl_backends.fileio import check_writable_dir
    from mtl_backends.packaged import resolve_config

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    args.config = str(resolve_config(args.config, "experiments"))
    config = load_experiment(args.config)
    out = Path(args.out) if args.out else Path("runs") / f"compare-{Path(args.config).stem}"
    check_writable_dir(out, "--out")
    # A missing extra (--backend ray) is reported by the CLI's error boundary (exit code 2).
    summary = compare(
        config,
        out,
        workers=args.workers,
        backend=args.backend,
        retry_failed=args.retry_failed,
        progress_bar=not args.no_progress,
        ray_address=args.ray_address,
        config_path=args.config,
        report_only=args.report_only,
        benchmarks=args.benchmarks,
    )
    print((out / "results.md").read_text())
    invalid = (
        f" ({summary.invalid} invalid cell records on disk were not used)"
        if summary.invalid
        else ""
    )
    print(
        f"{summary.computed} cells computed, {summary.reused} reused, {summary.failed} failed, "
        f"{summary.skipped} skipped, {summary.lost} lost in {summary.wall_time_s:.1f} s; "
        f"results in {out}{invalid}"
    )
    if args.report_only:
        return 0
    return 1 if summary.failed or summary.lost else 0
