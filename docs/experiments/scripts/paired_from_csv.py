"""Paired Δm differences between any two rows of an ``igb compare`` results.csv.

``results.md`` pairs every row with IGBv1 (the config's ``baseline``) under the same balancer.
This prints other pairs, e.g. a learned policy + DB-MTL against DB-MTL as published (SI + DB-MTL):
mean of (A − B) over the seeds both finished, its 95% Student-t interval, and the wins of A
(seeds where A's Δm is lower).

    python docs/experiments/scripts/paired_from_csv.py runs/igb_vs_rl/results.csv synthetic \
        "learned policy + DB-MTL" "SI + DB-MTL"

A benchmark ending in ``*`` pools every benchmark label with that prefix (one pair per benchmark
and seed), e.g. ``"synthetic-wide*"`` for the held-out synthetic tables of the generalist
comparison.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from agents.experiments.stats import paired


def row_label(row: dict[str, str]) -> str:
    """The table row of a CSV line: weighting, plus `` + balancer`` unless it is plain sum."""
    if row["balancer"] == "sum" and not row["flat_rho"]:
        return row["weighting"]
    return f"{row['weighting']} + {row['balancer']}"


def delta_m_by_seed(path: Path, benchmark: str, label: str) -> dict[tuple[str, int], float]:
    """(Benchmark, seed) -> test Δm of the finished cells of one row.

    ``benchmark`` ending in ``*`` matches every benchmark label with that prefix.
    """
    out: dict[tuple[str, int], float] = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            if benchmark.endswith("*"):
                match = row["benchmark"].startswith(benchmark[:-1])
            else:
                match = row["benchmark"] == benchmark
            if row["status"] == "ok" and match and row_label(row) == label:
                out[(row["benchmark"], int(row["seed"]))] = float(row["delta_m"])
    return out


def main() -> None:
    """Print A − B for every (A, B) pair given (A B [A B ...])."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", type=Path)
    parser.add_argument("benchmark")
    parser.add_argument("rows", nargs="+", help="row labels, in (A, B) pairs")
    args = parser.parse_args()
    if len(args.rows) % 2:
        parser.error("rows come in (A, B) pairs")
    for a, b in zip(args.rows[::2], args.rows[1::2], strict=True):
        da = delta_m_by_seed(args.csv, args.benchmark, a)
        db = delta_m_by_seed(args.csv, args.benchmark, b)
        seeds = sorted(set(da) & set(db))
        if not seeds:
            print(f"{a} − {b}: no seed finished for both")
            continue
        stats = paired([da[s] - db[s] for s in seeds])
        print(
            f"{args.benchmark}: {a} − {b} = {stats.mean:+.2f} [{stats.low:+.2f}, "
            f"{stats.high:+.2f}] (A wins {stats.wins}/{len(seeds)}; "
            f"seeds {sorted({seed for _, seed in seeds})})"
        )


if __name__ == "__main__":
    main()
