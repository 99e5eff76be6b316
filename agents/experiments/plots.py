"""The plots of an experiment report: Δm bars per benchmark, weight and gap trajectories."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agents.experiments.config import CellSelector, ExperimentConfig
from agents.experiments.grid import GridPlan
from agents.experiments.rows import benchmark_rows, slug
from agents.experiments.stats import mean_std


def write_plots(
    config: ExperimentConfig,
    plan: GridPlan,
    records: Mapping[str, dict[str, Any]],
    out_dir: Path,
) -> list[Path]:
    """Δm bars (mean ± std) per benchmark and weight / gap trajectories of the chosen cells."""
    if not config.plots.delta_m_bars and config.plots.trajectory_points == 0:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    for bench in config.benchmarks:
        bench_slug = slug(bench.display)
        rows = [r for r in benchmark_rows(bench, plan, records) if r.values("delta_m")]
        if config.plots.delta_m_bars and rows:
            stats = [mean_std(list(r.values("delta_m").values())) for r in rows]
            fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(rows) + 1.5), 3.6))
            x = np.arange(len(rows))
            means = [m for m, _ in stats]
            errs = [0.0 if not math.isfinite(s) else s for _, s in stats]
            colors = ["tab:blue" if m <= 0 else "tab:red" for m in means]
            ax.bar(x, means, yerr=errs, capsize=3, color=colors, alpha=0.8)
            ax.axhline(0.0, color="black", lw=0.8)
            ax.set_xticks(x, [r.label for r in rows], rotation=35, ha="right", fontsize=8)
            ax.set_ylabel("Δm % (lower is better)")
            ax.set_title(f"{bench.display}: Δm vs STL, mean ± std over seeds", fontsize=9)
            written.append(_save(fig, out_dir / f"delta_m_{bench_slug}.png"))
        selectors = config.plots.trajectories or (
            CellSelector(balancer="sum", seed=config.seeds[0]),
        )
        chosen = [
            (c, records[c.key])
            for c in plan.cells
            if c.benchmark.display == bench.display
            and any(s.matches(c) for s in selectors)
            and records.get(c.key, {}).get("status") == "ok"
            and records[c.key].get("trajectories", {}).get("steps")
        ]
        for kind in ("weights", "gaps"):
            if not chosen:
                break
            n = len(chosen)
            fig, axes = plt.subplots(
                1, n, figsize=(3.2 * n + 0.6, 3.0), squeeze=False, sharey=(kind == "gaps")
            )
            for ax, (cell, rec) in zip(axes[0], chosen, strict=True):
                traj = rec["trajectories"]
                steps = traj["steps"] if kind == "weights" else traj["gap_steps"]
                values = np.asarray(traj[kind], dtype=np.float64)
                names = rec.get("task_names") or [f"t{i + 1}" for i in range(values.shape[-1])]
                if values.size:
                    for t, name in enumerate(names):
                        ax.plot(steps, values[:, t], lw=1.0, label=name)
                if kind == "gaps":
                    ax.set_yscale("log")
                ax.set_title(f"{cell.row} (seed {cell.seed})", fontsize=8)
                ax.set_xlabel("step", fontsize=8)
                ax.tick_params(labelsize=7)
            axes[0][0].set_ylabel(
                "task weight" if kind == "weights" else "improvable gap L/L_base", fontsize=8
            )
            axes[0][-1].legend(fontsize=7)
            fig.suptitle(f"{bench.display}: {kind} over training", fontsize=9)
            written.append(_save(fig, out_dir / f"{kind}_{bench_slug}.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["write_plots"]
