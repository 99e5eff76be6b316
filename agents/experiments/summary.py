"""The compact summary of one benchmark's rows: what ``igb quickstart`` and ``igb evaluate`` print.

Built from the same rows (``agents.experiments.rows``) and statistics as the full report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from agents.experiments.rows import Row, baseline_row, ew_row, first_record_value
from agents.experiments.stats import mean_std, paired


def summary_table(
    rows: Sequence[Row],
    baselines: Sequence[tuple[str, str]],
    loss_header: str | None = "{task} test loss",
    intervals: bool = False,
) -> str:
    """A compact Markdown table of one benchmark (what quickstart and evaluate print).

    Columns: the method, test Δm (mean ± std over seeds), optionally the mean test loss of every
    task, the paired difference of Δm to each baseline under the same balancer (mean and wins;
    with ``intervals`` also the std and the 95% t-interval; ``—`` for the baseline itself) and the
    training wall time relative to EW.

    Args:
        rows: The table's rows (``benchmark_rows``).
        baselines: ``(weighting name or label, column title)`` of each paired column.
        loss_header: Title of the per-task loss columns (``{task}`` is the task name); ``None``:
            no loss columns.
        intervals: Add the std and the 95% t-interval to the paired columns.
    """
    n = max((len(r.records) for r in rows), default=0)
    names = [str(t) for t in first_record_value(rows, "task_names")]
    head = ["method", f"Δm % (test, {n} seeds)"]
    if loss_header is not None:
        head += [loss_header.format(task=t) for t in names]
    head += [f"vs {title} (wins)" for _, title in baselines] + ["time / EW"]
    ew = ew_row(rows)
    ew_time = float(np.mean(list(ew.values("train_wall_time_s").values()))) if ew else math.nan
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        dm = r.values("delta_m")
        seeds = sorted(dm)
        mean, std = mean_std([dm[s] for s in seeds])
        cells = [r.label, f"{mean:.2f} ± {0.0 if len(seeds) < 2 else std:.2f}"]
        if loss_header is not None:
            losses = np.mean([r.records[s]["losses"]["test"] for s in seeds], axis=0)
            cells += [f"{v:.4g}" for v in losses]
        for name, _ in baselines:
            base = baseline_row(rows, name, r)
            if base is None or base is r:
                cells.append("—")
                continue
            theirs = base.values("delta_m")
            common = [s for s in seeds if s in theirs]
            d = paired([dm[s] - theirs[s] for s in common])
            text = f"{d.mean:+.2f}"
            if intervals:
                spread = "(n<2)" if d.n < 2 else f"± {d.std:.2f} [{d.low:+.2f}, {d.high:+.2f}]"
                text += f" {spread}"
            cells.append(f"{text} ({d.wins}/{d.n})")
        wall = float(np.mean(list(r.values("train_wall_time_s").values())))
        cells.append(f"{wall / ew_time:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def row_summaries(
    rows: Sequence[Row], baselines: Sequence[tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """The numbers of ``summary_table`` as JSON: one entry per row label.

    Each entry holds the registry names, the seeds, Δm (mean, std, n, per seed), the mean test
    loss of every task, the training time relative to EW and, for each baseline, the paired
    differences (``vs_<name>``: mean, std, t-interval, wins, n).
    """
    ew = ew_row(rows)
    ew_time = float(np.mean(list(ew.values("train_wall_time_s").values()))) if ew else math.nan
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        dm = r.values("delta_m")
        seeds = sorted(dm)
        mean, std = mean_std([dm[s] for s in seeds])
        entry: dict[str, Any] = {
            "weighting": r.weighting_name,
            "balancer": r.balancer_name,
            "seeds": seeds,
            "delta_m": {"mean": mean, "std": std, "n": len(seeds), "per_seed": dm},
            "test_losses": np.mean(
                [r.records[s]["losses"]["test"] for s in seeds], axis=0
            ).tolist(),
            "time_vs_ew": float(np.mean(list(r.values("train_wall_time_s").values())) / ew_time),
        }
        for name, _ in baselines:
            base = baseline_row(rows, name, r)
            if base is None or base is r:
                continue
            theirs = base.values("delta_m")
            diff = paired([dm[s] - theirs[s] for s in seeds if s in theirs])
            entry[f"vs_{name}"] = dataclasses.asdict(diff)
        out[r.label] = entry
    return out


__all__ = ["row_summaries", "summary_table"]
