"""``agents.experiments.report``: results.csv and results.md from hand-written records."""

from __future__ import annotations

import csv
from pathlib import Path

from agents.experiments import report
from agents.experiments.grid import plan_grid
from tests.agents.experiments import _records

TABLE = [
    "| Method | seeds | Δm% ↓ | Δm − IGBv1 ↓ | Δp% ↑ | Δp − IGBv1 ↑ | t1_mse ↓ | t2_acc ↑ "
    "| CPU vs EW |",
    "|---|---|---|---|---|---|---|---|---|",
    # EW - IGBv1: Δm 1, 1.5, 2 (t-interval ± 1.242); Δp -1, -1, -2.5 (std sqrt(3/4), ± 2.151).
    "| EW | 3 | +4.00 ± 1.00 | +1.50 [+0.26, +2.74] | -2.00 ± 1.00 | -1.50 [-3.65, +0.65] "
    "| 0.5000 ± 0.0000 | 0.8000 ± 0.0000 | 1.00 |",
    "| IGBv1 | 3 | +2.50 ± 0.50 | (reference) | -0.50 ± 0.50 | (reference) "
    "| 0.5000 ± 0.1000 | **0.9000 ± 0.0000** | 1.50 |",
    "| SI | 3 | +3.17 ± 0.76 | +0.67 [-1.23, +2.56] | -1.00 ± 0.00 | -0.50 [-1.74, +0.74] "
    "| 1.000 ± 0.000 | 0.7000 ± 0.0000 | 1.00 |",
    "| IGBv1 + DB-MTL | 3 | **+2.00 ± 1.00** | (reference) | **+0.50 ± 0.50** | (reference) "
    "| **0.3000 ± 0.0000** | 0.8500 ± 0.0000 | 2.00 |",
    # Seed 2 failed: two seeds, differences to IGBv1 + DB-MTL over seeds 0 and 1 (t with 1 dof).
    "| SI + DB-MTL | 2 | +2.25 ± 1.06 | +0.75 [-2.43, +3.93] | +0.25 ± 0.00 | -0.25 [-6.60, +6.10] "
    "| 0.4000 ± 0.1414 | 0.7000 ± 0.1414 | 2.50 |",
]


def _markdown(tmp_path: Path, failed: bool = True) -> str:
    config, plan, records = _records.setup(failed=failed)
    provenance = {**_records.PROVENANCE, "config_path": "configs/experiments/x.yaml"}
    return report.write_markdown(config, plan, records, tmp_path / "results.md", provenance)


def test_markdown_table_pinned(tmp_path: Path) -> None:
    lines = _markdown(tmp_path).splitlines()
    start = lines.index(TABLE[0])
    assert lines[start : start + len(TABLE)] == TABLE
    assert lines[start + len(TABLE)] == ""


def test_markdown_header_counts_and_provenance(tmp_path: Path) -> None:
    text = _markdown(tmp_path)
    assert (tmp_path / "results.md").read_text() == text
    assert text.startswith("# Comparison results\n")
    assert "Config: `configs/experiments/x.yaml` (hash `cafe`); commit `0123456789ab`" in text
    assert "(uncommitted changes); seeds 0, 1, 2; torch 2.0; written " in text
    # 15 planned cells (14 ok, 1 failed), EW + DB-MTL skipped at 3 seeds; CPU 6+9+6+12+10+0.5.
    assert (
        "Cells: 14 ok, 1 failed, 0 missing, 3 skipped; total CPU time of the cells 43.5 s" in text
    )
    assert "difference to IGBv1 with the same balancer (else with sum)" in text


def test_markdown_benchmark_section_states_selection_and_training(tmp_path: Path) -> None:
    lines = _markdown(tmp_path).splitlines()
    i = lines.index("## syn")
    assert lines[i + 2] == (
        "Model selection: final model after the 30-step budget, test split. "
        "Training: 30 steps, batch 20, adam lr 0.01 (constant)."
    )


def test_markdown_best_val_selection_text(tmp_path: Path) -> None:
    bench = {**_records.BENCH, "selection": "best_val", "eval_every": 10}
    config = _records.experiment(benchmarks=[bench])
    plan = plan_grid(config)
    text = report.write_markdown(config, plan, {}, tmp_path / "r.md", {})
    assert (
        "Model selection: test metrics at the evaluation with the best validation Δm (evaluated "
        "every 10 steps and at the end of the 30-step budget); never selected on test." in text
    )
    assert "Config: `(in memory)` (hash ``); commit `unknown`;" in text
    assert "Cells: 0 ok, 0 failed, 15 missing, 3 skipped" in text


def test_markdown_failed_and_skipped_sections(tmp_path: Path) -> None:
    lines = _markdown(tmp_path).splitlines()
    i = lines.index("## Failed cells")
    assert lines[i + 2 : i + 5] == [
        "| Benchmark | Method | Seed | Error |",
        "|---|---|---|---|",
        "| syn | SI + DB-MTL | 2 | ValueError: boom \\| bar |",  # last line, pipe escaped
    ]
    assert "rerun with `--retry-failed`" in lines[i + 6]
    j = lines.index("## Skipped combinations")
    assert lines[j + 2 :] == [
        "| Benchmark | Method | Reason |",
        "|---|---|---|",
        # One line per row (not per seed).
        "| syn | EW + DB-MTL | transform conflict: balancer 'db_mtl' requires the 'log' transform "
        "but weighting 'ew' declares 'identity' |",
    ]


def test_markdown_without_failures_has_no_failed_section(tmp_path: Path) -> None:
    text = _markdown(tmp_path, failed=False)
    assert "## Failed cells" not in text
    assert "Cells: 15 ok, 0 failed, 0 missing, 3 skipped" in text


def test_markdown_lists_skipped_records_and_excluded_cells(tmp_path: Path) -> None:
    config = _records.experiment(balancers=["sum"], exclude=[{"weighting": "si", "seed": 1}])
    plan = plan_grid(config)
    records = _records.records(plan)
    igb = next(c for c in plan.cells if c.row == "IGBv1" and c.seed == 0)
    records[igb.key] = {"status": "skipped", "reason": "needs the log transform"}
    text = report.write_markdown(config, plan, records, tmp_path / "r.md", {})
    assert "| syn | SI | excluded by the experiment config |" in text
    assert "| syn | IGBv1 | needs the log transform |" in text
    # 9 cells minus the excluded one; one of the 8 recorded as skipped by its worker.
    assert "Cells: 7 ok, 0 failed, 0 missing, 2 skipped" in text
    assert "| IGBv1 | 2 |" in text  # the skipped seed is not counted


def test_markdown_links_the_benchmark_plots(tmp_path: Path) -> None:
    (tmp_path / "delta_m_syn.png").write_bytes(b"")
    (tmp_path / "weights_other.png").write_bytes(b"")
    lines = _markdown(tmp_path).splitlines()
    assert "![delta_m_syn](delta_m_syn.png)" in lines
    assert not any("weights_other" in ln for ln in lines)


def test_csv_has_one_row_per_cell_including_skipped(tmp_path: Path) -> None:
    _, plan, records = _records.setup()
    missing = plan.cells[0]
    del records[missing.key]
    rows = report.write_csv(plan, records, tmp_path / "results.csv")
    with (tmp_path / "results.csv").open() as fh:
        reader = csv.DictReader(fh)
        on_disk = list(reader)
        fields = reader.fieldnames
    assert fields == [
        "benchmark", "weighting", "balancer", "flat_rho", "seed", "selection", "status",
        "delta_m", "delta_p", "val_delta_m", "selected_step", "wall_time_s", "cpu_time_s",
        "test/t1_mse", "test/t2_acc", "git_commit", "config_hash", "cell_key", "error",
    ]  # fmt: skip
    assert len(rows) == len(on_disk) == 15 + 3
    assert [r["cell_key"] for r in on_disk[:15]] == [c.key for c in plan.cells]
    statuses = [r["status"] for r in on_disk]
    assert statuses.count("ok") == 13 and statuses.count("failed") == 1
    assert statuses.count("missing") == 1 and statuses.count("skipped") == 3
    assert on_disk[0]["status"] == "missing" and on_disk[0]["delta_m"] == ""
    first_ok = on_disk[1]
    assert (first_ok["benchmark"], first_ok["weighting"], first_ok["balancer"]) == (
        "syn",
        "EW",
        "sum",
    )
    assert (first_ok["seed"], first_ok["selection"], first_ok["flat_rho"]) == ("1", "final", "")
    assert (first_ok["delta_m"], first_ok["delta_p"], first_ok["val_delta_m"]) == (
        "4.0",
        "-2.0",
        "5.0",
    )
    assert (first_ok["test/t1_mse"], first_ok["test/t2_acc"]) == ("0.5", "0.8")
    assert first_ok["git_commit"] == "0123456789abcdef0123" and first_ok["config_hash"] == "cafe"
    failed = next(r for r in on_disk if r["status"] == "failed")
    assert failed["error"] == "ValueError: boom | bar"  # the last line of the traceback
    assert (failed["weighting"], failed["balancer"], failed["seed"]) == ("SI", "DB-MTL", "2")
    skipped = [r for r in on_disk if r["status"] == "skipped"]
    assert [(r["weighting"], r["balancer"], r["seed"]) for r in skipped] == [
        ("EW", "DB-MTL", "0"), ("EW", "DB-MTL", "1"), ("EW", "DB-MTL", "2"),
    ]  # fmt: skip
    assert all(r["error"].startswith("transform conflict") for r in skipped)


def test_csv_flat_rho_column(tmp_path: Path) -> None:
    config = _records.experiment(weightings=["ew"], balancers=[{"name": "mgda", "flat_rho": 0.5}])
    rows = report.write_csv(plan_grid(config), {}, tmp_path / "results.csv")
    assert [r["flat_rho"] for r in rows] == [0.5, 0.5, 0.5]
    assert [r["balancer"] for r in rows] == ["F-MGDA"] * 3
    with (tmp_path / "results.csv").open() as fh:
        assert [r["flat_rho"] for r in csv.DictReader(fh)] == ["0.5"] * 3


def test_write_report_writes_csv_markdown_and_plots(tmp_path: Path) -> None:
    config, plan, records = _records.setup()
    paths = report.write_report(config, plan, records, tmp_path, _records.PROVENANCE)
    names = [p.name for p in paths]
    assert names[:2] == [report.CSV_NAME, report.MD_NAME]
    assert "delta_m_syn.png" in names and "performance_profile_syn.png" in names
    assert all(p.is_file() for p in paths)
    assert "![delta_m_syn](delta_m_syn.png)" in (tmp_path / report.MD_NAME).read_text()
