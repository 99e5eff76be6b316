"""The baselines table of issue 15: every row of an ``igb compare`` run against EW + sum.

``results.md`` pairs each row with the baseline weighting *under the same balancer*; for the
baselines experiment (``configs/experiments/baselines.yaml``: weightings with ``sum``, balancers
with EW) the useful reference is plain EW. For every row of one benchmark this prints a Markdown
table: test Δm (mean ± std over seeds), the paired difference to EW + sum with its 95% Student-t
interval and the wins (seeds where the row's Δm is lower), the CPU time relative to EW + sum
(mean of the per-seed ratios), and the methods' diagnostics summed over the seeds (solver
fallbacks, unconverged steps, ...) from the cell records.

    python docs/experiments/scripts/issue15_baselines_table.py runs/baselines synthetic

With ``--combined`` (and no benchmark) it prints one table of every row on every benchmark of the
run instead (test Δm mean ± std, and the seeds where the row beats EW + sum), the README's table:

    python docs/experiments/scripts/issue15_baselines_table.py runs/baselines --combined
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

from agents.experiments.stats import mean_std, paired


def row_label(row: dict[str, str]) -> str:
    """The table row of a CSV line: weighting, plus `` + balancer`` unless it is plain sum."""
    if row["balancer"] == "sum" and not row["flat_rho"]:
        return row["weighting"]
    return f"{row['weighting']} + {row['balancer']}"


def diagnostics(run: Path) -> dict[tuple[str, str, int], dict[str, float]]:
    """(benchmark, row, seed) -> the cell's diagnostics (weighting and balancer counters)."""
    out: dict[tuple[str, str, int], dict[str, float]] = {}
    for path in sorted((run / "cells").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("status") != "ok":
            continue
        cell = rec["cell"]
        counters = {
            **rec.get("diagnostics", {}).get("weighting", {}),
            **rec.get("diagnostics", {}).get("balancer", {}),
        }
        out[(cell["benchmark_label"], cell["row"], int(cell["seed"]))] = counters
    return out


def collect(
    run: Path, benchmark: str
) -> tuple[list[str], dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """Rows in table order, and ``row -> seed -> Δm`` and ``-> CPU seconds`` of one benchmark."""
    dm: dict[str, dict[int, float]] = defaultdict(dict)
    cpu: dict[str, dict[int, float]] = defaultdict(dict)
    order: list[str] = []
    with (run / "results.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["benchmark"] != benchmark or row["status"] != "ok":
                continue
            label = row_label(row)
            if label not in order:
                order.append(label)
            dm[label][int(row["seed"])] = float(row["delta_m"])
            cpu[label][int(row["seed"])] = float(row["cpu_time_s"])
    return order, dm, cpu


def benchmarks(run: Path) -> list[str]:
    """Benchmark labels of the run with at least one finished cell, in table order."""
    out: list[str] = []
    with (run / "results.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["status"] == "ok" and row["benchmark"] not in out:
                out.append(row["benchmark"])
    return out


def combined(run: Path) -> None:
    """Print every row's Δm on every benchmark (mean ± std, wins against EW + sum)."""
    names = benchmarks(run)
    data = {b: collect(run, b) for b in names}
    order: list[str] = []
    for b in names:
        order += [label for label in data[b][0] if label not in order]
    print("| Method | " + " | ".join(f"{b} Δm% ↓ (beats EW)" for b in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label in order:
        cells = []
        for b in names:
            _, dm, _ = data[b]
            if label not in dm:
                cells.append("—")
                continue
            mean, std = mean_std([dm[label][s] for s in sorted(dm[label])])
            ew = dm.get("EW", {})
            seeds = sorted(set(dm[label]) & set(ew))
            wins = sum(dm[label][s] < ew[s] for s in seeds)
            versus = "" if label == "EW" else f" ({wins}/{len(seeds)})"
            cells.append(f"{mean:+.2f} ± {std:.2f}{versus}")
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    """Print the table of one benchmark, or (``--combined``) of all of them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path, help="the --out folder of igb compare")
    parser.add_argument("benchmark", nargs="?", help="benchmark label")
    parser.add_argument("--combined", action="store_true", help="every benchmark, Δm only")
    args = parser.parse_args()
    if args.combined:
        combined(args.run)
        return
    if args.benchmark is None:
        parser.error("give a benchmark label, or --combined")
    order, dm, cpu = collect(args.run, args.benchmark)
    counters = diagnostics(args.run)
    print("| Method | seeds | Δm% ↓ | Δm − EW ↓ (wins) | CPU vs EW | diagnostics (summed) |")
    print("|---|---|---|---|---|---|")
    ew = dm["EW"]
    for label in order:
        seeds = sorted(set(dm[label]) & set(ew))
        mean, std = mean_std([dm[label][s] for s in sorted(dm[label])])
        diff = paired([dm[label][s] - ew[s] for s in seeds])
        ratio, _ = mean_std([cpu[label][s] / cpu["EW"][s] for s in seeds])
        if label == "EW":
            versus = "(reference)"
        else:
            versus = f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}] ({diff.wins}/{diff.n})"
        summed: dict[str, float] = defaultdict(float)
        for s in dm[label]:
            for key, value in counters.get((args.benchmark, label, s), {}).items():
                summed[key] += value
        notes = ", ".join(f"{k} {v:g}" for k, v in sorted(summed.items()) if v) or "—"
        print(
            f"| {label} | {len(dm[label])} | {mean:+.2f} ± {std:.2f} | {versus} | {ratio:.2f} | "
            f"{notes} |"
        )


if __name__ == "__main__":
    main()
