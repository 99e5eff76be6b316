"""Issue 6: Δm table with paired differences from ``issue6_heldout.py`` result files.

For every (method, balancer) row: Δm mean ± std over the instances, the mean paired difference
against each reference method (same balancer, same instances) with its 95% Student-t interval and
the win count (instances where the row's Δm is lower), and the mean CPU / wall time of the
training run relative to EW on the same instance.

    python docs/experiments/scripts/issue6_paired.py /tmp/exp6/heldout_*.jsonl \
        --refs IGBv1 "tuned static"
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from scipy import stats

Rows = dict[tuple[str, str], dict[int, dict[str, float]]]


def load(files: list[Path]) -> Rows:
    """(method, balancer) -> instance seed -> {delta_m, cpu, wall}."""
    rows: Rows = defaultdict(dict)
    for path in files:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            rows[(r["method"], r["balancer"])][int(r["seed"])] = {
                "delta_m": float(r["delta_m"]),
                "cpu": float(r["cpu_s"]),
                "wall": float(r["wall_s"]),
            }
    return rows


def paired(mine: dict[int, float], theirs: dict[int, float]) -> str:
    """``mean [lo, hi] (wins/n)`` of the paired differences mine - theirs on common seeds."""
    seeds = sorted(set(mine) & set(theirs))
    diffs = [mine[s] - theirs[s] for s in seeds]
    if len(diffs) < 2:
        return "n/a"
    mean = statistics.fmean(diffs)
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    wins = sum(d < 0 for d in diffs)
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] ({wins}/{len(diffs)})"


def ratio(mine: dict[int, dict[str, float]], ew: dict[int, dict[str, float]], key: str) -> str:
    """Mean over common seeds of this row's time / EW's time."""
    seeds = sorted(set(mine) & set(ew))
    if not seeds:
        return "n/a"
    return f"{statistics.fmean(mine[s][key] / ew[s][key] for s in seeds):.2f}x"


def main() -> None:
    """Print one markdown table per balancer."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="JSON-lines result files")
    parser.add_argument("--refs", nargs="+", default=["IGBv1"], help="reference methods")
    args = parser.parse_args()
    rows = load(args.files)
    for balancer in sorted({b for _, b in rows}):
        print(f"\n### balancer {balancer}\n")
        refs = [f"Δm − {r} [95% CI] (wins)" for r in args.refs]
        header = ["method", "n", "Δm % mean ± std", *refs, "CPU vs EW", "wall vs EW"]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        ew = rows.get(("EW", "sum"), {})
        for (method, bal), seeds in rows.items():
            if bal != balancer:
                continue
            dm = {s: v["delta_m"] for s, v in seeds.items()}
            values = list(dm.values())
            std = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells = [method, str(len(values)), f"{statistics.fmean(values):.2f} ± {std:.2f}"]
            for ref in args.refs:
                other = {s: v["delta_m"] for s, v in rows.get((ref, balancer), {}).items()}
                cells.append("0" if ref == method else paired(dm, other))
            cells += [ratio(seeds, ew, "cpu"), ratio(seeds, ew, "wall")]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
