"""``igb compare``: the smoke grid end to end, resume, a crashing cell, and the Ray backend."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.cli import compare as compare_command
from agents.experiments.backends import MissingExtraError
from agents.experiments.config import ExperimentConfig, experiment_from_dict
from agents.experiments.grid import plan_grid
from agents.experiments.runner import CompareSummary, compare
from mtl_backends.registry import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "experiments" / "smoke.yaml"
MAIN = ROOT / "configs" / "experiments" / "igb_vs_rl.yaml"


def _smoke_dict(stl: Path) -> dict[str, Any]:
    data = yaml.safe_load(SMOKE.read_text())
    data["stl_cache"] = str(stl)
    return data


def _tiny(stl: Path, **changes: Any) -> ExperimentConfig:
    """One tiny benchmark of the smoke experiment, one seed, EW and IGBv1 with sum."""
    data = _smoke_dict(stl)
    data["benchmarks"] = data["benchmarks"][:1]
    data.update(weightings=["ew", "igbv1"], balancers=["sum"], seeds=[0])
    data.update(changes)
    return experiment_from_dict(data)


def _numbers(out: Path) -> dict[str, tuple[str, str, str]]:
    with (out / "results.csv").open() as fh:
        return {
            r["cell_key"]: (r["status"], r["delta_m"], r["delta_p"]) for r in csv.DictReader(fh)
        }


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """The smoke experiment run once through the command line (2 workers)."""
    tmp = tmp_path_factory.mktemp("smoke")
    config = tmp / "smoke.yaml"
    config.write_text(yaml.safe_dump(_smoke_dict(tmp / "stl")))
    parser = argparse.ArgumentParser()
    compare_command.register(parser.add_subparsers())
    out = tmp / "out"
    args = parser.parse_args(
        ["compare", str(config), "--out", str(out), "--workers", "2", "--no-progress"]
    )
    code = args.func(args)
    return out, tmp / "stl", code


@pytest.mark.slow
def test_smoke_end_to_end_writes_table_csv_and_plots(smoke: tuple[Path, Path, int]) -> None:
    out, _, code = smoke
    assert code == 0
    md = (out / "results.md").read_text()
    assert "## synthetic-tiny" in md and "## synthetic-tiny-T2" in md
    assert " ± " in md and "**" in md
    assert "best validation Δm" in md and "final model" in md  # the selection rule is stated
    assert "transform conflict" in md  # ew + db_mtl skipped with its reason
    assert "CPU vs EW" in md and "| EW | 2 |" in md
    # One plot of each kind per benchmark, named after the benchmark's label.
    for kind in ("delta_m", "weights", "gaps"):
        assert (out / f"{kind}_synthetic-tiny.png").is_file(), kind
    assert (out / "delta_m_synthetic-tiny-T2.png").is_file()
    assert (out / "performance_profile_synthetic-tiny.png").is_file()
    assert {p.name for p in out.glob("*.png")} <= {
        f"{k}_{b}.png"
        for k in ("delta_m", "weights", "gaps", "performance_profile")
        for b in ("synthetic-tiny", "synthetic-tiny-T2")
    }
    rows = list(csv.DictReader((out / "results.csv").open()))
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 20 and sum(r["status"] == "skipped" for r in rows) == 4
    assert all(math.isfinite(float(r["delta_m"])) for r in ok)
    cell = json.loads(next((out / "cells").glob("*.json")).read_text())
    prov = cell["provenance"]
    assert prov["config_hash"] and prov["git"]["commit"] and prov["seed"] in (0, 1)
    assert set(prov["versions"]) == {"python", "torch", "numpy", "igb-rl"}
    assert cell["cpu_time_s"] > 0 and cell["wall_time_s"] > 0
    assert cell["trajectories"]["weights"] and cell["metrics"]["test"]


def test_resume_skips_finished_cells_and_reproduces_numbers(
    smoke: tuple[Path, Path, int],
) -> None:
    out, stl, _ = smoke
    before = _numbers(out)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    (out / "results.md").unlink()
    config = experiment_from_dict(_smoke_dict(stl))
    peek = compare(config, out, progress_bar=False, report_only=True)
    assert peek.computed == 0 and (out / "results.md").is_file()
    (out / "results.md").unlink()
    summary = compare(config, out, workers=2, progress_bar=False)
    assert summary.computed == 0 and summary.reused == 20 and summary.failed == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == mtimes
    assert (out / "results.md").is_file()
    assert _numbers(out) == before


def test_edited_swapped_or_truncated_cells_are_recomputed_not_trusted(
    smoke: tuple[Path, Path, int], tmp_path: Path
) -> None:
    """A record is used only when it is its cell's (key) and has its fields (issue 18)."""
    out, stl, _ = smoke
    before = _numbers(out)
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    config = experiment_from_dict(_smoke_dict(stl))
    ok = [
        c
        for c in plan_grid(config).cells
        if json.loads((copy / "cells" / f"{c.key}.json").read_text())["status"] == "ok"
    ]
    a, b, c, d = (copy / "cells" / f"{cell.key}.json" for cell in ok[:4])
    a_text, b_text = a.read_text(), b.read_text()
    a.write_text(b_text)  # two records swapped: each names the other's key
    b.write_text(a_text)
    c.write_text(json.dumps({"status": "ok"}))  # edited down to a bare status
    d.write_text(d.read_text()[:100])  # truncated
    peek = compare(config, copy, progress_bar=False, report_only=True)
    assert peek.invalid == 4 and peek.reused == 16
    rows = {k: v for k, v in _numbers(copy).items() if v[0] == "ok"}
    assert len(rows) == 16 and all(before[k] == v for k, v in rows.items())
    summary = compare(config, copy, workers=1, progress_bar=False)
    assert (summary.computed, summary.reused, summary.invalid) == (4, 16, 4)
    assert _numbers(copy) == before  # every row back under its own key, same numbers
    assert compare(config, copy, progress_bar=False, report_only=True).invalid == 0


def test_a_negative_seed_or_unusable_folders_fail_before_any_worker_starts(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"seeds must be >= 0 .*got -1"):
        compare(_tiny(tmp_path / "stl", seeds=[0, -1]), tmp_path / "out", progress_bar=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError, match=r"the output folder .* is a file"):
        compare(_tiny(tmp_path / "stl"), blocker, progress_bar=False)
    with pytest.raises(NotADirectoryError, match=r"stl_cache .*cannot be created"):
        compare(_tiny(blocker / "stl"), tmp_path / "out2", progress_bar=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_benchmarks_filter_trains_only_the_named_tables(tmp_path: Path) -> None:
    """``benchmarks=`` trains one table; the report still lists every finished cell on disk."""
    data = _smoke_dict(tmp_path / "stl")
    data.update(weightings=["ew", "igbv1"], balancers=["sum"], seeds=[0])
    config = experiment_from_dict(data)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"unknown benchmark label.*'nope'.*synthetic-tiny-T2"):
        compare(config, out, workers=1, progress_bar=False, benchmarks=["nope"])
    first = compare(config, out, workers=1, progress_bar=False, benchmarks=["synthetic-tiny-T2"])
    assert first.computed == 2 and first.reused == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["benchmark"] for r in rows if r["status"] == "ok"} == {"synthetic-tiny-T2"}
    second = compare(config, out, workers=1, progress_bar=False)
    assert second.computed == 2 and second.reused == 2 and second.failed == 0


def _random_policy(folder: Path) -> Path:
    """A random exported policy of the tiny env's format (T = 3), like `igb export` writes."""
    from igb_env import make_env
    from mtl_backends.policy import PolicyNetwork, save_policy

    env = make_env({"preset": "tiny"})
    env.reset(seed=0)
    obs_dim = int(env.observation_space.shape[0])  # type: ignore[index]
    return save_policy(folder, PolicyNetwork([obs_dim, 8, 3]), env.policy_sidecar("random"))


@pytest.mark.slow
def test_a_crashing_cell_is_recorded_and_the_grid_completes(
    smoke: tuple[Path, Path, int], tmp_path: Path
) -> None:
    # beta = 5 passes config loading (a valid argument name) but DB-MTL's constructor rejects it
    # inside the worker. STL references come from the smoke run's cache; no plots. The grid also
    # runs an exported policy (`policy` with a path).
    policy = _random_policy(tmp_path / "policy")
    config = _tiny(
        smoke[1],
        weightings=["igbv1", {"name": "policy", "path": str(policy), "label": "learned"}],
        balancers=["sum", {"name": "db_mtl", "beta": 5.0, "label": "DB-MTL-bad"}],
        plots={"delta_m_bars": False, "trajectory_points": 0},
    )
    summary = compare(config, tmp_path / "out", workers=1, progress_bar=False)
    assert isinstance(summary, CompareSummary)
    assert summary.computed == 4 and summary.failed == 2
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "cells").glob("*.json")]
    failed = [r for r in records if r["status"] == "failed"]
    ok = [r for r in records if r["status"] == "ok"]
    assert len(failed) == 2 and {r["cell"]["row"] for r in ok} == {"IGBv1", "learned"}
    assert all("DB-MTL beta must be in [0, 1]" in r["error"] for r in failed)
    assert all("Traceback" in r["error"] for r in failed)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## Failed cells" in md and "IGBv1 + DB-MTL-bad" in md and "| learned | 1 |" in md
    # A rerun keeps the failures (no recomputation) unless asked to retry.
    again = compare(config, tmp_path / "out", workers=1, progress_bar=False)
    assert again.computed == 0 and again.failed == 2


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        experiment_from_dict({**_smoke_dict(tmp_path), "bogus": 1})
    with pytest.raises(ConfigError, match="unknown loss weighting 'nope'"):
        _tiny(tmp_path, weightings=["nope"])
    with pytest.raises(ConfigError, match="got unknown argument"):
        _tiny(tmp_path, balancers=[{"name": "db_mtl", "betta": 0.5}])
    with pytest.raises(ConfigError, match="needs eval_every"):
        _tiny(tmp_path, selection="best_val")
    with pytest.raises(ConfigError, match="does not exist"):
        _tiny(tmp_path, weightings=[{"name": "policy", "path": str(tmp_path / "nope")}])
    flat = plan_grid(_tiny(tmp_path, balancers=[{"name": "mgda", "flat_rho": 2.0}])).cells
    assert flat[0].train.flat_rho == 2.0 and flat[0].row == "EW + F-MGDA"
    assert flat[0].key != plan_grid(_tiny(tmp_path, balancers=["mgda"])).cells[0].key
    excluded = _tiny(tmp_path, exclude=[{"weighting": "EW"}])
    plan = plan_grid(excluded)
    assert [c.weighting.name for c in plan.cells] == ["igbv1"]
    assert plan.skipped[0][1] == "excluded by the experiment config"


def test_main_experiment_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # its policy path is relative to the repository root
    config = experiment_from_dict(yaml.safe_load(MAIN.read_text()))
    assert len(config.seeds) >= 5
    assert {"ew", "si", "igbv1"} <= {w.name for w in config.weightings}
    assert {"sum", "db_mtl", "imgrad"} <= {b.name for b in config.balancers}


def test_ray_backend_without_ray_names_the_extra(tmp_path: Path) -> None:
    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed")
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[ray\]"'):
        compare(_tiny(tmp_path / "stl"), tmp_path / "ray", backend="ray")


@pytest.mark.slow
def test_ray_backend_matches_local(
    smoke: tuple[Path, Path, int], tmp_path: Path, ray_backend: Any
) -> None:
    out, stl, _ = smoke
    config = _tiny(stl)  # the same cells as in the smoke grid (same keys)
    summary = compare(
        config, tmp_path / "ray", backend="ray", progress_bar=False, runner=ray_backend
    )
    assert summary.computed == 2 and summary.failed == 0
    local = _numbers(out)
    ray_numbers = _numbers(tmp_path / "ray")
    assert ray_numbers and all(local[k] == v for k, v in ray_numbers.items())
