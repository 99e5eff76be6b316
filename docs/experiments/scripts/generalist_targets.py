"""Issue 14's "done when" table from the results.csv of the generalist comparison.

For every agent seed of the generalist (rows ``generalist sN``) and every target of issue 14, the
paired Δm difference (mean over the run seeds both rows finished, 95% Student-t interval) and
whether the target is met:

* held-out synthetic (each ``synthetic-wide T=*`` table, and all of them pooled: one pair per
  (T, run seed)): ``− IGBv1`` at most −1 with its interval below 0, and ``− SI`` below 0;
* qm9-20k: ``− IGBv1`` and ``− SI`` below 0;
* multi_digits: ``− IGBv1`` and ``− SI`` below 0, and ``− EW`` within noise or better (the
  interval's lower end at or below 0);
* with a balancer underneath (``--balancer DB-MTL``): ``− SI + DB-MTL`` below 0 on synthetic and
  multi_digits.

    python docs/experiments/scripts/generalist_targets.py runs/generalist/results.csv
    python docs/experiments/scripts/generalist_targets.py runs/generalist/results.csv \
        --balancer DB-MTL --policy "generalist s"

"below 0" means the interval's upper end is below 0; a row with fewer than two common seeds has no
interval and is reported as not met.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

from paired_from_csv import row_label  # this folder's script: the same row labels

from agents.experiments.stats import Paired, paired

SYNTHETIC_PREFIX = "synthetic-wide"


def load(path: Path) -> dict[tuple[str, str], dict[int, float]]:
    """``(benchmark, row label) -> seed -> test Δm`` of the finished cells."""
    out: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    with path.open() as fh:
        for row in csv.DictReader(fh):
            if row["status"] == "ok":
                out[(row["benchmark"], row_label(row))][int(row["seed"])] = float(row["delta_m"])
    return out


def pairs(
    data: dict[tuple[str, str], dict[int, float]], benchmarks: list[str], a: str, b: str
) -> Paired:
    """Paired A − B over every (benchmark, seed) both rows finished."""
    diffs = []
    for bench in benchmarks:
        da, db = data.get((bench, a), {}), data.get((bench, b), {})
        diffs += [da[s] - db[s] for s in sorted(set(da) & set(db))]
    return paired(diffs)


def fmt(p: Paired) -> str:
    """``mean [low, high] (wins/n)``."""
    if p.n == 0:
        return "–"
    if math.isnan(p.low):
        return f"{p.mean:+.2f} (n = 1)"
    return f"{p.mean:+.2f} [{p.low:+.2f}, {p.high:+.2f}] ({p.wins}/{p.n})"


def below(p: Paired, at_most: float = 0.0) -> bool:
    """Mean at most ``at_most`` and the interval's upper end below 0."""
    return p.n > 1 and p.mean <= at_most and p.high < 0.0


def main() -> None:
    """Print one markdown table per target group."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--policy", default="generalist s", help="label prefix of the agent rows")
    parser.add_argument(
        "--balancer", default="sum", help="balancer label under every row (sum, DB-MTL, ...)"
    )
    args = parser.parse_args()
    data = load(args.csv)
    suffix = "" if args.balancer == "sum" else f" + {args.balancer}"
    benchmarks = sorted({bench for bench, _ in data})
    synthetic = [b for b in benchmarks if b.startswith(SYNTHETIC_PREFIX)]
    agents = sorted(
        {lbl for _, lbl in data if lbl.startswith(args.policy) and lbl.endswith(suffix)}
    )
    agents = [a for a in agents if (a[: -len(suffix)] if suffix else a).count("+") == 0]
    ew, si, igb = f"EW{suffix}", f"SI{suffix}", f"IGBv1{suffix}"
    print(f"| target | row | − IGBv1{suffix} | − SI{suffix} | − EW{suffix} | met |")
    print("|---|---|---|---|---|---|")
    groups: list[tuple[str, list[str]]] = [(b, [b]) for b in synthetic]
    if synthetic:
        groups.append((f"{SYNTHETIC_PREFIX} pooled", synthetic))
    groups += [(b, [b]) for b in benchmarks if not b.startswith(SYNTHETIC_PREFIX)]
    for name, benches in groups:
        for agent in agents:
            vs_igb, vs_si, vs_ew = (pairs(data, benches, agent, b) for b in (igb, si, ew))
            if vs_igb.n == 0 and vs_si.n == 0:
                continue
            verdict = "met" if _met(name, args.balancer, vs_igb, vs_si, vs_ew) else "missed"
            if args.balancer != "sum" and not name.startswith((SYNTHETIC_PREFIX, "multi_digits")):
                verdict = "(no target)"
            cells = " | ".join(fmt(p) for p in (vs_igb, vs_si, vs_ew))
            print(f"| {name} | {agent} | {cells} | {verdict} |")


def _met(name: str, balancer: str, vs_igb: Paired, vs_si: Paired, vs_ew: Paired) -> bool:
    if balancer != "sum":
        return below(vs_si)
    if name.startswith(SYNTHETIC_PREFIX):
        return below(vs_igb, -1.0) and below(vs_si)
    if name.startswith("multi_digits"):
        return below(vs_igb) and below(vs_si) and vs_ew.n > 1 and vs_ew.low <= 0.0
    return below(vs_igb) and below(vs_si)


if __name__ == "__main__":
    main()
