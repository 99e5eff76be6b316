"""``reference: published`` in ``igb compare``: Δm against the papers' single-task numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.experiments.cells import StlTask, run_stl
from agents.experiments.config import experiment_from_dict
from agents.experiments.grid import plan_grid
from agents.experiments.runner import compare
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.registry import ConfigError
from tests.mtl_backends.benchmarks.test_dense import NYU_KINDS, write_tree

TRAIN = {"steps": 4, "batch_size": 2, "base_window": [0, 2], "eval_batch_size": 2}


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(tmp_path_factory.mktemp("nyuv2"), NYU_KINDS, 13)


def _experiment(root: Path, stl: Path, reference: str = "published") -> dict[str, Any]:
    # val_images 0: the test folder is the validation split too, as in the papers' protocol.
    bench = {"name": "nyuv2", "path": str(root), "width": 2, "val_images": 0, "train": TRAIN}
    return {
        "benchmarks": [{**bench, "reference": reference}],
        "weightings": ["ew"],
        "balancers": ["sum"],
        "seeds": [0],
        "stl_cache": str(stl),
    }


def test_the_reference_is_the_benchmark_s_published_one(nyu_root: Path, tmp_path: Path) -> None:
    config = experiment_from_dict(_experiment(nyu_root, tmp_path / "stl"))
    (bench,) = config.benchmarks
    result = run_stl(StlTask(bench, 0, str(tmp_path / "stl")))
    published = make_benchmark("nyuv2", path=str(nyu_root), width=2, val_images=0)
    assert result == {"reference": published.published_reference()}  # type: ignore[attr-defined]
    assert not (tmp_path / "stl").exists()  # nothing was trained or cached


def test_a_published_reference_changes_the_cell_key_and_stl_keeps_the_old_one(
    nyu_root: Path, tmp_path: Path
) -> None:
    published = plan_grid(experiment_from_dict(_experiment(nyu_root, tmp_path)))
    own = plan_grid(experiment_from_dict(_experiment(nyu_root, tmp_path, "stl")))
    (a,), (b,) = published.cells, own.cells
    assert a.key != b.key
    assert a.identity()["reference"] == "published" and "reference" not in b.identity()


def test_compare_reports_delta_m_against_the_published_numbers(
    nyu_root: Path, tmp_path: Path
) -> None:
    config = experiment_from_dict(_experiment(nyu_root, tmp_path / "stl"))
    summary = compare(config, tmp_path / "out", workers=1, progress_bar=False)
    assert summary.computed == 1 and summary.failed == 0
    (cell,) = (tmp_path / "out" / "cells").glob("*.json")
    record = json.loads(cell.read_text())
    reference = record["reference"]["test"]
    test = record["metrics"]["test"]
    # Δm by hand against the published numbers, with each metric's direction.
    signs = {s["name"]: (-1.0 if s["higher_is_better"] else 1.0) for s in record["metric_specs"]}
    by_hand = sum(signs[m] * (test[m] - reference[m]) / reference[m] for m in test) / len(test)
    assert record["delta_m"] == pytest.approx(100.0 * by_hand, rel=1e-9)
    report = (tmp_path / "out" / "results.md").read_text()
    assert "against the published single-task numbers" in report


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reference": "papers"}, "unknown reference 'papers'; valid choices: stl, published"),
        (
            {"name": "synthetic", "reference": "published"},
            "synthetic has no published single-task reference; reference: published is for "
            "cityscapes, nyuv2, qm9_graph",
        ),
    ],
)
def test_bad_references_are_named(change: dict[str, Any], message: str) -> None:
    bench = {"name": "synthetic", **change}
    data = {"benchmarks": [bench], "weightings": ["ew"], "balancers": ["sum"], "seeds": [0]}
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict(data)
