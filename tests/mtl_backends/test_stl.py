from __future__ import annotations

import json
from pathlib import Path

import pytest

import mtl_backends.stl as stl
from mtl_backends.config import MethodSpec, TrainConfig

BENCH = MethodSpec(
    "synthetic",
    {"n_train": 100, "n_val": 20, "n_test": 20, "input_dim": 8, "output_dim": 3, "hidden": [8]},
)
TRAIN = TrainConfig(steps=6, batch_size=20)


def test_reference_has_every_metric_of_both_splits(tmp_path: Path) -> None:
    ref = stl.stl_reference(BENCH, TRAIN, 0, tmp_path)
    assert set(ref) == {"val", "test"}
    assert set(ref["test"]) == {"t1_mse", "t2_mse", "t3_mse"}


def test_cache_hits_and_invalidates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = stl.train_stl

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stl, "train_stl", counting)
    first = stl.stl_reference(BENCH, TRAIN, 0, tmp_path)
    again = stl.stl_reference(BENCH, TRAIN, 0, tmp_path)
    assert first == again and len(calls) == 1  # hit
    stl.stl_reference(BENCH, TRAIN, 1, tmp_path)  # another seed
    stl.stl_reference(BENCH, TrainConfig(steps=7, batch_size=20), 0, tmp_path)  # another budget
    other_bench = MethodSpec("synthetic", {**BENCH.kwargs, "scales": [1.0, 2.0, 3.0]})
    stl.stl_reference(other_bench, TRAIN, 0, tmp_path)  # another benchmark
    assert len(calls) == 4
    # Settings that cannot change single-task training share the entry.
    stl.stl_reference(BENCH, TrainConfig(steps=6, batch_size=20, base_window=(1, 2)), 0, tmp_path)
    assert len(calls) == 4
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 4
    assert json.loads(files[0].read_text())["version"] == stl.STL_FORMAT_VERSION


def test_stl_matches_training_one_task_alone(tmp_path: Path) -> None:
    # The task-1 reference equals an MTL run with one-hot weights on task 1.
    from mtl_backends import MTLTrainer, make_balancer, make_benchmark
    from mtl_backends.weightings import SingleTask

    ref = stl.stl_reference(BENCH, TRAIN, 3, None)
    bench = make_benchmark(BENCH.name, **dict(BENCH.kwargs))
    t = MTLTrainer(bench, SingleTask(1), make_balancer("sum"), TRAIN, seed=3)
    t.fit()
    assert ref["test"]["t2_mse"] == t.evaluate("test").metrics["t2_mse"]
