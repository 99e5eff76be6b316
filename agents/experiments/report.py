"""The report of an experiment: ``results.csv``, ``results.md``, PNG plots and summary tables.

Everything here is recomputed from the cell records, so a resumed comparison reports exactly what
a single uninterrupted one would. Δm (lower is better) and Δp (higher is better) are reported side
by side, never combined (``mtl_backends.metrics``). Below each table, the RL community's summary
over runs and agent seeds (IQM, mean, probability of improvement over the baseline:
``agents.experiments.rliable_summary``). ``igb compare`` writes the full report;
``igb quickstart`` and ``igb evaluate`` print the compact ``agents.experiments.summary`` table of
the same rows.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.experiments.config import BenchmarkEntry, ExperimentConfig
from agents.experiments.grid import Cell, GridPlan
from agents.experiments.plots import write_plots
from agents.experiments.rliable_summary import summarise, summary_notes, summary_table
from agents.experiments.rows import (
    Row,
    baseline_row,
    benchmark_rows,
    ew_row,
    first_record_value,
    slug,
)
from agents.experiments.stats import mean_std, paired

CSV_NAME = "results.csv"
MD_NAME = "results.md"


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------
def _fmt(x: float, digits: int = 2) -> str:
    return "–" if not math.isfinite(x) else f"{x:+.{digits}f}"


def _fmt_pm(values: Sequence[float], signed: bool = True, sig: int | None = None) -> str:
    m, s = mean_std(values)
    if not math.isfinite(m):
        return "–"
    if sig is not None:
        # ``sig`` significant digits for the mean; the spread gets the same decimals.
        decimals = 0 if m == 0 else max(0, min(6, sig - 1 - math.floor(math.log10(abs(m)))))
        core = f"{m:.{decimals}f}"
        spread = "–" if not math.isfinite(s) else f"{s:.{decimals}f}"
    elif signed:
        core, spread = f"{m:+.2f}", "–" if not math.isfinite(s) else f"{s:.2f}"
    else:
        core, spread = f"{m:.2f}", "–" if not math.isfinite(s) else f"{s:.2f}"
    return f"{core} ± {spread}"


def _fmt_ci(mean: float, low: float, high: float) -> str:
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(low):
        return f"{mean:+.2f} (n<2)"
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on and text != "–" else text


def _best(means: Sequence[float], higher: bool) -> int | None:
    finite = [(m, i) for i, m in enumerate(means) if math.isfinite(m)]
    if len(finite) < 2:
        return None
    return (max(finite) if higher else min(finite))[1]


def _selection_text(config: ExperimentConfig, bench: BenchmarkEntry) -> str:
    rule, every = config.selection_of(bench)
    if rule == "best_val":
        return (
            f"test metrics at the evaluation with the best validation Δm (evaluated every {every} "
            f"steps and at the end of the {bench.train.steps}-step budget); never selected on test"
        )
    if rule == "mean_last_10":
        return (
            f"every metric averaged over the last 10 evaluations (every {every} steps, the last at "
            f"the end of the {bench.train.steps}-step budget), as the published NYUv2 / Cityscapes "
            "tables; no model is chosen"
        )
    return f"final model after the {bench.train.steps}-step budget, test split"


def _table(
    config: ExperimentConfig, bench: BenchmarkEntry, rows: Sequence[Row]
) -> tuple[list[str], list[str]]:
    """Markdown lines of one benchmark's table and its notes."""
    specs: list[dict[str, Any]] = first_record_value(rows, "metric_specs")
    base_label = config.baseline_label
    ew = ew_row(rows)
    ew_cpu = mean_std(list(ew.values("cpu_time_s").values()))[0] if ew else math.nan
    dm_means = [mean_std(list(r.values("delta_m").values()))[0] for r in rows]
    dp_means = [mean_std(list(r.values("delta_p").values()))[0] for r in rows]
    best_dm, best_dp = _best(dm_means, higher=False), _best(dp_means, higher=True)
    metric_best = {
        s["name"]: _best(
            [mean_std(list(r.metric(s["name"]).values()))[0] for r in rows],
            higher=bool(s["higher_is_better"]),
        )
        for s in specs
    }
    header = ["Method", "seeds", "Δm% ↓", f"Δm − {base_label} ↓", "Δp% ↑", f"Δp − {base_label} ↑"]
    header += [f"{s['name']} {'↑' if s['higher_is_better'] else '↓'}" for s in specs]
    header += ["CPU vs EW"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, r in enumerate(rows):
        dm, dp = r.values("delta_m"), r.values("delta_p")
        base = baseline_row(rows, config.baseline, r)
        cells = [r.label, str(len(r.records))]
        cells.append(_bold(_fmt_pm(list(dm.values())), i == best_dm))
        cells.append(_ci_cell(r, base, "delta_m"))
        cells.append(_bold(_fmt_pm(list(dp.values())), i == best_dp))
        cells.append(_ci_cell(r, base, "delta_p"))
        for s in specs:
            vals = list(r.metric(s["name"]).values())
            cells.append(_bold(_fmt_pm(vals, sig=4), metric_best[s["name"]] == i))
        cpu = mean_std(list(r.values("cpu_time_s").values()))[0]
        cells.append("–" if not (math.isfinite(cpu) and ew_cpu > 0) else f"{cpu / ew_cpu:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines, [s["name"] for s in specs]


def _runs_section(
    config: ExperimentConfig, bench: BenchmarkEntry, rows: Sequence[Row]
) -> list[str]:
    """Markdown lines of the table's summary over runs and agent seeds (none without runs)."""
    summaries = summarise(rows, config.baseline, by_run_seed=bench.instances)
    if not any(s.runs for s in summaries):
        return []
    return [
        "### Over runs and agent seeds",
        "",
        summary_notes(config.baseline_label, by_run_seed=bench.instances),
        "",
        *summary_table(summaries, config.baseline_label),
        "",
    ]


def _ci_cell(row: Row, base: Row | None, key: str) -> str:
    if base is None:
        return "–"
    if base is row:
        return "(reference)"
    mine, theirs = row.values(key), base.values(key)
    seeds = sorted(set(mine) & set(theirs))
    diff = paired([mine[s] - theirs[s] for s in seeds])
    return _fmt_ci(diff.mean, diff.low, diff.high)


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------
def write_csv(
    plan: GridPlan, records: Mapping[str, dict[str, Any]], path: Path
) -> list[dict[str, Any]]:
    """One row per cell (every seed), including failed, skipped and excluded cells."""
    rows: list[dict[str, Any]] = []
    metric_names: list[str] = []

    def base(cell: Cell) -> dict[str, Any]:
        return {
            "benchmark": cell.benchmark.display,
            "weighting": cell.weighting.display,
            "balancer": cell.balancer.display,
            "flat_rho": "" if cell.balancer.flat_rho is None else cell.balancer.flat_rho,
            "seed": cell.seed,
            "selection": cell.selection,
            "cell_key": cell.key,
        }

    for cell in plan.cells:
        rec = records.get(cell.key)
        row = base(cell)
        if rec is None:
            row["status"] = "missing"
        else:
            prov = rec.get("provenance", {})
            row.update(
                status=rec.get("status"),
                delta_m=rec.get("delta_m", ""),
                delta_p=rec.get("delta_p", ""),
                val_delta_m=rec.get("val_delta_m", ""),
                selected_step=rec.get("selected_step", ""),
                wall_time_s=rec.get("wall_time_s", ""),
                cpu_time_s=rec.get("cpu_time_s", ""),
                git_commit=prov.get("git", {}).get("commit", "unknown"),
                config_hash=prov.get("config_hash", ""),
                error=_last_line(rec.get("error") or rec.get("reason") or ""),
            )
            for name, value in rec.get("metrics", {}).get("test", {}).items():
                col = f"test/{name}"
                if col not in metric_names:
                    metric_names.append(col)
                row[col] = value
        rows.append(row)
    for cell, reason in plan.skipped:
        rows.append({**base(cell), "status": "skipped", "error": reason})
    fields = [
        "benchmark",
        "weighting",
        "balancer",
        "flat_rho",
        "seed",
        "selection",
        "status",
        "delta_m",
        "delta_p",
        "val_delta_m",
        "selected_step",
        "wall_time_s",
        "cpu_time_s",
        *metric_names,
        "git_commit",
        "config_hash",
        "cell_key",
        "error",
    ]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _last_line(text: str) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def write_markdown(
    config: ExperimentConfig,
    plan: GridPlan,
    records: Mapping[str, dict[str, Any]],
    path: Path,
    provenance: Mapping[str, Any],
) -> str:
    """Write ``results.md`` (one table per benchmark, then failed and skipped cells)."""
    git = provenance.get("git", {})
    commit = str(git.get("commit", "unknown"))
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    statuses = [records.get(c.key, {}).get("status", "missing") for c in plan.cells]
    versions: dict[str, str] = {}
    cpu_total = 0.0
    for c in plan.cells:
        rec = records.get(c.key, {})
        versions = versions or rec.get("provenance", {}).get("versions", {})
        cpu_total += float(rec.get("cpu_time_s") or 0.0)
    lines = [
        "# Comparison results",
        "",
        f"Config: `{provenance.get('config_path') or '(in memory)'}` "
        f"(hash `{provenance.get('config_hash', '')}`); commit `{commit[:12]}`{dirty}; "
        f"seeds {', '.join(map(str, config.seeds))}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; written {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"Cells: {statuses.count('ok')} ok, {statuses.count('failed')} failed, "
        f"{statuses.count('missing')} missing, "
        f"{len(plan.skipped) + statuses.count('skipped')} skipped; "
        f"total CPU time of the cells {cpu_total:.1f} s (one torch thread per cell).",
        "",
        "Δm% (Maninis et al.; mean over all metrics; lower is better) and Δp% (LibMTL; mean over "
        "tasks; higher is better) are taken against single-task references trained with the same "
        "budget, data order and seed (final STL models; a table says when it uses the published "
        "single-task numbers instead); they are separate conventions and never "
        "mixed. Values are mean ± sample std over seeds. "
        f"`Δm − {config.baseline_label}` / `Δp − {config.baseline_label}`: mean paired "
        f"difference to {config.baseline_label} with the same balancer (else with sum) over the "
        "seeds both have, "
        "with its 95% t-interval (Student t, n − 1 dof). CPU vs EW: mean CPU time of the cell "
        "relative to EW + sum on the same benchmark. Best mean in bold.",
        "",
    ]
    for bench in config.benchmarks:
        rows = benchmark_rows(bench, plan, records)
        lines += [f"## {bench.display}", ""]
        lines += [
            f"Model selection: {_selection_text(config, bench)}. "
            f"Training: {bench.train.steps} steps, batch {bench.train.batch_size}, "
            f"{bench.train.optimizer} lr {bench.train.lr:g} ({bench.train.lr_schedule})."
            + (
                " Δm and Δp against the published single-task numbers (the benchmark's "
                "`published_reference()`), not our own STL runs."
                if bench.reference == "published"
                else ""
            ),
            "",
        ]
        table, _ = _table(config, bench, rows)
        lines += [*table, ""]
        lines += _runs_section(config, bench, rows)
        pngs = sorted(path.parent.glob(f"*_{slug(bench.display)}.png"))
        for png in pngs:
            lines.append(f"![{png.stem}]({png.name})")
        if pngs:
            lines.append("")
    failed = [
        (c, records[c.key]) for c in plan.cells if records.get(c.key, {}).get("status") == "failed"
    ]
    if failed:
        lines += [
            "## Failed cells",
            "",
            "| Benchmark | Method | Seed | Error |",
            "|---|---|---|---|",
        ]
        for c, rec in failed:
            err = _last_line(rec.get("error", "")).replace("|", "\\|")
            lines.append(f"| {c.benchmark.display} | {c.row} | {c.seed} | {err} |")
        lines.append("")
        lines.append("Full tracebacks: `cells/<key>.json` (`error`); rerun with `--retry-failed`.")
        lines.append("")
    skipped = [(c, reason) for c, reason in plan.skipped]
    skipped += [
        (c, str(records[c.key].get("reason", "")))
        for c in plan.cells
        if records.get(c.key, {}).get("status") == "skipped"
    ]
    if skipped:
        reasons: dict[tuple[str, str], str] = {}
        for c, reason in skipped:
            reasons.setdefault((c.benchmark.display, c.row), reason)
        lines += ["## Skipped combinations", "", "| Benchmark | Method | Reason |", "|---|---|---|"]
        for (b, row), reason in reasons.items():
            lines.append(f"| {b} | {row} | {reason} |")
        lines.append("")
    text = "\n".join(lines)
    path.write_text(text)
    return text


def write_report(
    config: ExperimentConfig,
    plan: GridPlan,
    records: Mapping[str, dict[str, Any]],
    out_dir: Path,
    provenance: Mapping[str, Any],
) -> list[Path]:
    """Write ``results.csv``, the PNG plots and ``results.md``; return their paths."""
    csv_path = out_dir / CSV_NAME
    write_csv(plan, records, csv_path)
    pngs = write_plots(config, plan, records, out_dir)
    md_path = out_dir / MD_NAME
    write_markdown(config, plan, records, md_path, provenance)
    return [csv_path, md_path, *pngs]


__all__ = ["write_csv", "write_markdown", "write_report"]
