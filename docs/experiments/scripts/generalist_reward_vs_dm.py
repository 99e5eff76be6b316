"""Issue 14: does the training reward rank weightings as test Δm does, on the held-out runs?

The generalist is trained on ``val_log_improvement``, whose episode return is (up to the shared
start) ``R = -mean_t log(L_val,t - L*_t)`` at the end of the run; issue 14's target is test Δm
against single-task references. For every held-out synthetic cell of a comparison (sum balancer),
this pairs each row with IGBv1 on the same instance and seed and prints, per row:

* how often the reward's verdict (``R - R_IGBv1 > 0``: better) agrees with Δm's
  (``Δm - Δm_IGBv1 < 0``), and the Spearman correlation of ``R - R_IGBv1`` with
  ``-(Δm - Δm_IGBv1)``;
* the same for a log form of Δm on test metrics, ``-mean_t ±log(M_t / M_STL,t)`` (``+`` for
  lower-is-better metrics), which differs from the reward only in split, metric (accuracy for
  classification tasks) and reference.

    python docs/experiments/scripts/generalist_reward_vs_dm.py runs/generalist

``--balancer`` and ``--reference`` pick another balancer's cells and another reference row (e.g.
``--balancer DB-MTL --reference SI`` for the DB-MTL generalist against DB-MTL as published).

The cells must be in ``DIR/cells`` (extract ``docs/results/generalist_eval/cells.tar.xz``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from mtl_backends.benchmarks import make_benchmark

REFERENCE = "IGBv1"


def _lower_bounds(spec: dict[str, Any], cache: dict[str, np.ndarray]) -> np.ndarray:
    key = json.dumps(spec, sort_keys=True)
    if key not in cache:
        cache[key] = make_benchmark(**spec).lower_bounds.double().numpy()
    return cache[key]


def _scores(cell: dict[str, Any], cache: dict[str, np.ndarray]) -> tuple[float, float, float]:
    """``(R, Δm, log-Δm)`` of one cell record."""
    lower = _lower_bounds(cell["cell"]["benchmark"], cache)
    val = np.asarray(cell["losses"]["val"], dtype=np.float64)
    reward = -float(np.mean(np.log(np.maximum(val - lower, 1e-30))))
    logs = []
    for spec in cell["metric_specs"]:
        got = cell["metrics"]["test"][spec["name"]]
        ref = cell["reference"]["test"][spec["name"]]
        sign = -1.0 if spec["higher_is_better"] else 1.0
        logs.append(sign * math.log(max(got, 1e-12) / max(ref, 1e-12)))
    return reward, float(cell["delta_m"]), 100.0 * float(np.mean(logs))


def main() -> None:
    """Print the agreement table of every row against the reference row (IGBv1)."""
    parser = argparse.ArgumentParser(description="training reward vs test Δm against IGBv1")
    parser.add_argument("folder", type=Path, help="an igb compare output folder with cells/")
    parser.add_argument("--prefix", default="synthetic-wide", help="benchmark label prefix")
    parser.add_argument("--balancer", default="sum", help="balancer label of the cells")
    parser.add_argument("--reference", default=REFERENCE, help="weighting row to pair with")
    args = parser.parse_args()
    reference = args.reference
    cache: dict[str, np.ndarray] = {}
    by_pair: dict[tuple[str, str], dict[str, tuple[float, float, float]]] = defaultdict(dict)
    with (args.folder / "results.csv").open() as f:
        for row in csv.DictReader(f):
            if row["status"] != "ok" or row["balancer"] != args.balancer:
                continue
            if not row["benchmark"].startswith(args.prefix):
                continue
            cell = json.loads((args.folder / "cells" / f"{row['cell_key']}.json").read_text())
            by_pair[(row["benchmark"], row["seed"])][row["weighting"]] = _scores(cell, cache)
    methods = sorted({m for pair in by_pair.values() for m in pair} - {reference})
    print(
        "| row | pairs | reward agrees with Δm | Spearman(ΔR, −ΔΔm) | "
        "agrees with log-Δm | Spearman(ΔR, −Δlog-Δm) | mean ΔR | mean ΔΔm |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for method in methods:
        d_r, d_dm, d_log = [], [], []
        for pair in by_pair.values():
            if method in pair and reference in pair:
                r, dm, log_dm = pair[method]
                r0, dm0, log0 = pair[reference]
                d_r.append(r - r0)
                d_dm.append(dm - dm0)
                d_log.append(log_dm - log0)
        a, b, c = np.asarray(d_r), np.asarray(d_dm), np.asarray(d_log)
        agree = float(np.mean((a > 0) == (b < 0)))
        agree_log = float(np.mean((a > 0) == (c < 0)))
        rho = float(spearmanr(a, -b).statistic)
        rho_log = float(spearmanr(a, -c).statistic)
        print(
            f"| {method} | {len(a)} | {agree:.2f} | {rho:+.2f} | {agree_log:.2f} | "
            f"{rho_log:+.2f} | {a.mean():+.4f} | {b.mean():+.2f} |"
        )


if __name__ == "__main__":
    main()
