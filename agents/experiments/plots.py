"""The plots of an experiment report: Δm bars, performance profiles, weight and gap trajectories."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agents.experiments.config import CellSelector, ExperimentConfig
from agents.experiments.grid import GridPlan
from agents.experiments.rl_stats import PROFILE_REPS, profile_interval
from agents.experiments.rliable_summary import RunsRow, row_seed, runs_rows
from agents.experiments.rows import Row, baseline_row, benchmark_rows, slug
from agents.experiments.stats import mean_std


def write_plots(
    config: ExperimentConfig,
    plan: GridPlan,
    records: Mapping[str, dict[str, Any]],
    out_dir: Path,
) -> list[Path]:
    """Δm bars, performance profiles and weight / gap trajectories of the chosen cells.

    Δm bars (mean ± std) and performance profiles (``write_profile``) are drawn with
    ``plots.delta_m_bars``; a benchmark with several agent seeds of one design (``rliable_summary``)
    gets its profile in any case, since that is where agent-seed variability shows.
    """
    seeded = any(
        any(len(rr.agent_seeds) > 1 for rr in runs_rows(benchmark_rows(b, plan, records)))
        for b in config.benchmarks
    )
    if not config.plots.delta_m_bars and config.plots.trajectory_points == 0 and not seeded:
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
        all_rows = benchmark_rows(bench, plan, records)
        merged = runs_rows(all_rows)
        if any(rr.scores() for rr in merged) and (
            config.plots.delta_m_bars or any(len(rr.agent_seeds) > 1 for rr in merged)
        ):
            written.append(
                write_profile(
                    all_rows,
                    config.baseline,
                    out_dir / f"performance_profile_{bench_slug}.png",
                    title=bench.display,
                    by_run_seed=bench.instances,
                )
            )
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


def write_profile(
    rows: list[Row],
    reference: str,
    path: Path,
    *,
    title: str,
    by_run_seed: bool,
    reps: int = PROFILE_REPS,
    seed: int = 0,
) -> Path:
    """Performance profiles of Δm (Agarwal et al., 2021): one panel per balancer.

    Each curve is the fraction of a row's runs (agent seeds merged, ``rliable_summary.runs_rows``)
    whose Δm is below τ: Δm is lower-is-better, so a curve further up and to the left is better.
    The band is the pointwise 95% stratified-bootstrap interval (strata as in the report's
    summary). The reference row of each panel (``reference`` under that balancer) is dashed black;
    rows with several agent seeds are drawn thicker.

    Args:
        rows: The benchmark's rows.
        reference: Weighting label or registry name of the reference.
        path: PNG to write.
        title: Benchmark label (in the title).
        by_run_seed: Strata are the run seeds (instances) instead of one for the benchmark.
        reps: Bootstrap replicates of the bands.
        seed: Seed of the bootstrap.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    merged = [rr for rr in runs_rows(rows) if rr.scores()]
    panels: dict[str, list[RunsRow]] = {}
    for rr in merged:
        panels.setdefault(rr.members[0].balancer, []).append(rr)
    # One colour per weighting in every panel, and one legend for the figure.
    names = list(dict.fromkeys(rr.weighting for rr in merged))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {name: cycle[i % len(cycle)] for i, name in enumerate(names)}
    handles: dict[str, Any] = {}
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.8 * len(panels) + 2.4, 3.4), squeeze=False, sharey=True
    )
    for ax, (balancer, group) in zip(axes[0], panels.items(), strict=True):
        ref = baseline_row(rows, reference, group[0].members[0])
        values = np.concatenate([list(rr.scores().values()) for rr in group])
        lo, hi = float(values.min()), float(values.max())
        ends = [lo - 0.1 * max(1.0, abs(lo)), hi + 0.1 * max(1.0, abs(hi))]
        # A profile only changes at a run's value: evaluated there (and at the ends), drawn as
        # steps that hold each value leftwards ("pre", as "Δm < τ" is strict), it is exact.
        taus = np.unique(np.concatenate([values, ends]))
        for rr in group:
            profile, low, high = profile_interval(
                rr.strata(by_run_seed),
                taus,
                higher_is_better=False,
                reps=reps,
                seed=row_seed(seed, rr.label, 3),
            )
            is_ref = ref is not None and ref in rr.members
            several = len(rr.agent_seeds) > 1
            colour = "black" if is_ref else colours[rr.weighting]
            (line,) = ax.step(
                taus,
                profile,
                where="pre",
                color=colour,
                ls="--" if is_ref else "-",
                lw=2.2 if several else 1.2,
            )
            ax.fill_between(taus, low, high, step="pre", color=colour, alpha=0.12, lw=0)
            name = rr.weighting + (f" ({len(rr.agent_seeds)} agent seeds)" if several else "")
            handles.setdefault(f"{name} (reference)" if is_ref else name, line)
        # Δm spans orders of magnitude within a panel (a diverging run next to runs near the
        # single-task level): a log scale beyond ±1 keeps the close rows apart.
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(taus[0], taus[-1])
        ax.set_title(f"balancer: {balancer}", fontsize=8)
        ax.set_xlabel("τ (Δm %, symmetric log scale)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3, lw=0.5)
    axes[0][0].set_ylabel("fraction of runs with Δm < τ", fontsize=8)
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center right", frameon=False)
    fig.suptitle(
        f"{title}: performance profiles of Δm (lower Δm is better, so a higher curve is "
        "better); 95% stratified-bootstrap bands",
        fontsize=9,
    )
    # The legend takes the right 2.2 inches.
    fig.tight_layout(rect=(0.0, 0.0, 1.0 - 2.2 / (3.8 * len(panels) + 2.4), 1.0))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["write_plots", "write_profile"]
