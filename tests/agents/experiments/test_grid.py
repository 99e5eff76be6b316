"""``agents.experiments.grid``: cell order, skip reasons and cell keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.experiments.config import BenchmarkEntry, MethodEntry, experiment_from_dict
from agents.experiments.grid import Cell, plan_grid, transform_conflict
from igb_env.instances import BenchmarkCache
from mtl_backends.config import MethodSpec, TrainConfig
from mtl_backends.registry import ConfigError

SMALL: dict[str, Any] = {"n_train": 200, "n_val": 50, "n_test": 50, "input_dim": 20}
TRAIN = TrainConfig(steps=30, batch_size=20, lr=0.01, base_window=(5, 10))


def _cell(**changes: Any) -> Cell:
    base = Cell(
        BenchmarkEntry("synthetic", dict(SMALL), TRAIN),
        MethodEntry("igbv1"),
        MethodEntry("sum"),
        seed=0,
    )
    return dataclasses.replace(base, **changes)


def test_plan_order_is_benchmark_balancer_weighting_seed_with_skip_reasons() -> None:
    config = experiment_from_dict(
        {
            "benchmarks": [
                {"name": "synthetic", "label": "b1", **SMALL},
                {"name": "synthetic", "label": "b2", "selection": "best_val", "eval_every": 5},
            ],
            "weightings": ["ew", "si"],
            "balancers": ["sum", "db_mtl"],
            "seeds": [0, 1],
            "exclude": [{"benchmark": "b2", "weighting": "SI", "seed": 1}],
        }
    )
    plan = plan_grid(config)
    got = [(c.benchmark.display, c.balancer.name, c.weighting.name, c.seed) for c in plan.cells]
    assert got == [
        ("b1", "sum", "ew", 0), ("b1", "sum", "ew", 1),
        ("b1", "sum", "si", 0), ("b1", "sum", "si", 1),
        ("b1", "db_mtl", "si", 0), ("b1", "db_mtl", "si", 1),
        ("b2", "sum", "ew", 0), ("b2", "sum", "ew", 1),
        ("b2", "sum", "si", 0),
        ("b2", "db_mtl", "si", 0),
    ]  # fmt: skip
    skipped = [
        (c.benchmark.display, c.balancer.name, c.weighting.name, c.seed, reason)
        for c, reason in plan.skipped
    ]
    conflict = (
        "transform conflict: balancer 'db_mtl' requires the 'log' transform but weighting 'ew' "
        "declares 'identity'"
    )
    excluded = "excluded by the experiment config"
    assert skipped == [
        ("b1", "db_mtl", "ew", 0, conflict), ("b1", "db_mtl", "ew", 1, conflict),
        ("b2", "sum", "si", 1, excluded),
        ("b2", "db_mtl", "ew", 0, conflict), ("b2", "db_mtl", "ew", 1, conflict),
        ("b2", "db_mtl", "si", 1, excluded),
    ]  # fmt: skip
    # Each table's selection rule; eval_every only where the rule uses it.
    assert {(c.benchmark.display, c.selection, c.eval_every) for c in plan.cells} == {
        ("b1", "final", None),
        ("b2", "best_val", 5),
    }
    assert len({c.key for c in plan.cells}) == len(plan.cells)


def test_transform_conflict_names_both_methods() -> None:
    reason = transform_conflict(MethodEntry("ew"), MethodEntry("db_mtl"))
    assert reason is not None
    assert "'db_mtl'" in reason and "'ew'" in reason and "'log'" in reason
    assert transform_conflict(MethodEntry("si"), MethodEntry("db_mtl")) is None
    assert transform_conflict(MethodEntry("ew"), MethodEntry("imgrad")) is None
    assert transform_conflict(MethodEntry("ew"), MethodEntry("sum")) is None
    assert transform_conflict(MethodEntry("nope"), MethodEntry("db_mtl")) is None


def test_cell_row_and_training_settings() -> None:
    assert _cell().row == "IGBv1"
    assert _cell(balancer=MethodEntry("db_mtl")).row == "IGBv1 + DB-MTL"
    flat = _cell(balancer=MethodEntry("mgda", flat_rho=2.0))
    assert flat.row == "IGBv1 + F-MGDA"
    assert flat.train.flat_rho == 2.0 and flat.train.steps == 30
    assert _cell(balancer=MethodEntry("sum", flat_rho=1.0)).row == "IGBv1 + F-sum"
    assert _cell(weighting=MethodEntry("igbv1", label="mine")).row == "mine"
    assert _cell().train == TRAIN


def test_key_is_a_24_hex_digest_equal_for_equal_cells() -> None:
    key = _cell().key
    assert len(key) == 24 and int(key, 16) >= 0
    assert _cell().key == key
    # A copy built from other (equal) objects.
    same = Cell(
        BenchmarkEntry("synthetic", {k: SMALL[k] for k in reversed(list(SMALL))}, TRAIN),
        MethodEntry("igbv1", {}),
        MethodEntry("sum", {}),
        0,
        "final",
        None,
    )
    assert same.key == key


@pytest.mark.parametrize(
    "changes",
    [
        {"benchmark": BenchmarkEntry("synthetic", {**SMALL, "n_train": 201}, TRAIN)},
        {
            "benchmark": BenchmarkEntry(
                "synthetic", dict(SMALL), dataclasses.replace(TRAIN, lr=0.02)
            )
        },
        {"benchmark": BenchmarkEntry("synthetic", dict(SMALL), TRAIN, instances=True)},
        {"weighting": MethodEntry("si")},
        {"weighting": MethodEntry("tuned_static", {"weights": [1.0, 1.0, 1.0]})},
        {"balancer": MethodEntry("imgrad")},
        {"balancer": MethodEntry("sum", flat_rho=0.5)},
        {"seed": 1},
        {"selection": "best_val", "eval_every": 10},
    ],
    ids=lambda c: "+".join(c),
)
def test_key_changes_with_every_identity_field(changes: dict[str, Any]) -> None:
    assert _cell(**changes).key != _cell().key


def test_labels_do_not_change_the_key() -> None:
    relabelled = _cell(
        benchmark=BenchmarkEntry("synthetic", dict(SMALL), TRAIN, label="table"),
        weighting=MethodEntry("igbv1", label="heuristic"),
        balancer=MethodEntry("sum", label="plain"),
    )
    assert relabelled.key == _cell().key


def test_the_content_of_a_policy_folder_is_part_of_the_key(tmp_path: Path) -> None:
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "policy.json").write_text('{"v": 1}')
    (folder / "policy.pt").write_bytes(b"\x00\x01")
    cell = _cell(weighting=MethodEntry("policy", {"path": str(folder)}))
    key = cell.key
    assert cell.identity()["weighting_files"]["path"]  # a digest is recorded
    (folder / "policy.pt").write_bytes(b"\x00\x02")  # re-exported to the same folder
    assert cell.key != key
    (folder / "policy.pt").write_bytes(b"\x00\x01")
    assert cell.key == key
    (folder / "policy.onnx").write_bytes(b"onnx")  # derived, never read by a run
    assert cell.key == key
    (folder / "extra.txt").write_text("x")
    assert cell.key != key


def test_a_policy_file_path_is_hashed_by_content(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a")
    cell = _cell(weighting=MethodEntry("policy", {"path": str(path)}))
    key = cell.key
    path.write_bytes(b"b")
    assert cell.key != key
    assert _cell().identity()["weighting_files"] == {}


def test_instances_make_each_seed_its_own_problem() -> None:
    fixed = BenchmarkEntry("synthetic", dict(SMALL), TRAIN)
    assert fixed.spec_for(0) == fixed.spec_for(7) == MethodSpec("synthetic", SMALL)
    seeded = BenchmarkEntry("synthetic", dict(SMALL), TRAIN, instances=True)
    assert seeded.spec_for(3).kwargs == {**SMALL, "seed": 3}
    assert seeded.spec_for(3) != seeded.spec_for(4)
    # Without instances a seed changes the run, not the data; with them, both.
    a = _cell(benchmark=seeded, seed=3).identity()["benchmark"]
    b = _cell(benchmark=seeded, seed=4).identity()["benchmark"]
    assert a != b
    assert _cell(seed=3).identity()["benchmark"] == _cell(seed=4).identity()["benchmark"]


@settings(deadline=None, max_examples=25)
@given(st.integers(min_value=0, max_value=2**31 - 1), st.booleans())
def test_spec_for_is_the_env_instance(seed: int, variation: bool) -> None:
    entry = BenchmarkEntry("synthetic", dict(SMALL), instances=True, variation=variation)
    cache = BenchmarkCache(MethodSpec("synthetic", dict(SMALL)), variation=variation)
    assert entry.spec_for(seed) == MethodSpec("synthetic", cache.kwargs_for(seed))
    assert entry.spec_for(seed) == cache.spec_for(seed)


def test_a_benchmark_that_fixes_its_seed_is_not_reseeded() -> None:
    entry = BenchmarkEntry("synthetic", {**SMALL, "seed": 11}, instances=True)
    cache = BenchmarkCache(MethodSpec("synthetic", {**SMALL, "seed": 11}))
    assert entry.spec_for(5).kwargs["seed"] == 11 == cache.kwargs_for(5)["seed"]


def test_variation_requires_instances() -> None:
    with pytest.raises(ConfigError, match=r"benchmarks\[0\].*set instances: true"):
        experiment_from_dict(
            {"benchmarks": [{"name": "synthetic", "variation": True}], "weightings": ["ew"]}
        )
    config = experiment_from_dict(
        {
            "benchmarks": [{"name": "synthetic", "variation": True, "instances": True}],
            "weightings": ["ew"],
        }
    )
    cells = plan_grid(config).cells
    assert cells[0].identity()["benchmark"] != cells[1].identity()["benchmark"]


def test_keys_are_the_ones_computed_before_divergence_factor_existed() -> None:
    """Adding ``train.divergence_factor`` kept every key at its default (issue 18).

    The keys were computed with the code before the field existed (commit 9149de9).
    """
    data: dict[str, Any] = {
        "benchmarks": [
            {
                "name": "synthetic",
                "label": "syn",
                "train": {"steps": 30, "batch_size": 50, "base_window": [5, 10]},
            }
        ],
        "weightings": ["ew", "igbv1"],
        "seeds": [0, 1],
    }
    keys = [c.key for c in plan_grid(experiment_from_dict(data, "x")).cells]
    assert keys == [
        "fd0819c37d02be806b58804b",
        "2f8d5708ffcd7865e05a8a2e",
        "291fe7ed1686c70b61a4ab93",
        "1e4285b0f58edb5c95e295cc",
    ]
    data["benchmarks"][0]["train"]["divergence_factor"] = 50.0
    changed = [c.key for c in plan_grid(experiment_from_dict(data, "x")).cells]
    assert not set(changed) & set(keys)  # a non-default value is a different result
