"""Issue 14: which tasks a weighting feeds, read from the weight trajectories of a comparison.

For every row of an ``igb compare`` output folder (its ``results.csv`` and ``cells/``), under one
balancer, it prints:

* on multi_digits (or any benchmark given with ``--quarters``): the mean weight of each task in
  each quarter of the run (mean over the run seeds);
* on the held-out synthetic tables (``--prefix``, default ``synthetic-wide``): the mean weight of
  the classification tasks and of the regression tasks over the second half of each run (mean over
  the tasks of each kind in all runs; a task is a classification task when its test metric is an
  accuracy).

    python docs/experiments/scripts/generalist_weights.py runs/generalist --balancer DB-MTL

The cells must be in ``DIR/cells`` (extract ``docs/results/generalist_eval/cells.tar.xz``).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _rows(folder: Path, balancer: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """``(results.csv row, cell)`` of every finished cell under ``balancer``."""
    out = []
    with (folder / "results.csv").open() as f:
        for row in csv.DictReader(f):
            if row["status"] != "ok" or row["balancer"] != balancer:
                continue
            cell = json.loads((folder / "cells" / f"{row['cell_key']}.json").read_text())
            out.append((row, cell))
    return out


def _quarters(weights: np.ndarray) -> list[np.ndarray]:
    return [part.mean(axis=0) for part in np.array_split(weights, 4)]


def main() -> None:
    """Print both tables."""
    parser = argparse.ArgumentParser(description="task weights of every row, from the cells")
    parser.add_argument("folder", type=Path, help="an igb compare output folder with cells/")
    parser.add_argument("--balancer", default="sum", help="balancer label (sum, DB-MTL, ...)")
    parser.add_argument("--quarters", default="multi_digits", help="benchmark label")
    parser.add_argument("--prefix", default="synthetic-wide", help="held-out benchmark prefix")
    args = parser.parse_args()
    rows = _rows(args.folder, args.balancer)

    per_quarter: dict[str, list[list[np.ndarray]]] = defaultdict(list)
    by_kind: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    tasks: list[str] = []
    for row, cell in rows:
        weights = np.asarray(cell["trajectories"]["weights"], dtype=float)
        if row["benchmark"] == args.quarters:
            per_quarter[row["weighting"]].append(_quarters(weights))
            tasks = list(cell["task_names"])
        elif row["benchmark"].startswith(args.prefix):
            late = weights[len(weights) // 2 :].mean(axis=0)
            is_cls = np.zeros(len(late), dtype=bool)
            for spec in cell["metric_specs"]:
                is_cls[int(spec["task"])] = str(spec["name"]).endswith("_acc")
            for value, kind in zip(late, is_cls, strict=True):
                by_kind[row["weighting"]].append((float(value), float(kind)))

    print(f"{args.quarters} + {args.balancer}: mean weight per quarter ({' / '.join(tasks)})\n")
    print("| row | runs | 1st quarter | 2nd | 3rd | 4th |")
    print("|---|---|---|---|---|---|")
    for name, runs in sorted(per_quarter.items()):
        mean = np.mean(np.asarray(runs), axis=0)  # [quarter, task]
        cells = " | ".join(" ".join(f"{w:.2f}" for w in q) for q in mean)
        print(f"| {name} | {len(runs)} | {cells} |")

    print(f"\n{args.prefix}* + {args.balancer}: mean weight over the second half of each run\n")
    print("| row | classification | regression | tasks (classification of all) |")
    print("|---|---|---|---|")
    for name, values in sorted(by_kind.items()):
        arr = np.asarray(values)
        cls = arr[:, 1] == 1.0
        print(
            f"| {name} | {arr[cls, 0].mean():.2f} | {arr[~cls, 0].mean():.2f} | "
            f"{int(cls.sum())} of {len(arr)} |"
        )


if __name__ == "__main__":
    main()
