from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from mtl_backends.benchmarks import make_benchmark
from mtl_backends.benchmarks.multi_digits import MultiDigits, compose_pairs, load_digit_images
from tests.mtl_backends.benchmarks.helpers import train_briefly

SMALL: dict[str, Any] = {"n_train": 256, "n_val": 64, "n_test": 64}


@pytest.fixture(scope="module")
def bench() -> MultiDigits:
    return MultiDigits(seed=3, **SMALL)


def test_builds_trains_and_evaluates(bench: MultiDigits) -> None:
    _, result = train_briefly(bench, steps=4, batch_size=32)
    directions = {m.name: m.higher_is_better for m in bench.metric_specs}
    assert directions == {"left_acc": True, "right_acc": True, "sum_mae": False, "sum_mse": False}
    assert [m.task for m in bench.metric_specs] == [0, 1, 2, 2]
    assert 0.0 <= result.metrics["left_acc"] <= 1.0
    assert result.metrics["sum_mse"] >= result.metrics["sum_mae"] ** 2 - 1e-4


def test_jacobian_path(bench: MultiDigits) -> None:
    train_briefly(bench, steps=2, batch_size=32, jacobian=True)


def test_source_images_are_disjoint_between_splits(bench: MultiDigits) -> None:
    pools = bench.pools
    assert sum(len(p) for p in pools.values()) == 1797
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        assert not set(pools[a]) & set(pools[b])
        assert not set(bench.sources[a].ravel()) & set(bench.sources[b].ravel())
    for split, pool in pools.items():
        assert set(bench.sources[split].ravel()) <= set(pool)


def test_targets_and_canvas(bench: MultiDigits) -> None:
    images, labels = load_digit_images()
    data = bench.split("val")
    assert data.inputs.shape == (64, 1, 12, 12)
    assert data.targets.shape == (64, 3)
    src = bench.sources["val"]
    np.testing.assert_array_equal(data.targets[:, 0].numpy(), labels[src[:, 0]])
    np.testing.assert_array_equal(data.targets[:, 1].numpy(), labels[src[:, 1]])
    np.testing.assert_array_equal(data.targets[:, 2].numpy(), labels[src[:, 0]] + labels[src[:, 1]])
    canvas = compose_pairs(images, np.array([0]), np.array([1]))[0]
    np.testing.assert_array_equal(canvas[0:4, 0:8], images[0][0:4])
    np.testing.assert_array_equal(canvas[8:12, 4:12], images[1][4:8])
    np.testing.assert_array_equal(
        canvas[4:8, 4:8], np.maximum(images[0][4:8, 4:8], images[1][0:4, 0:4])
    )
    assert float(data.inputs.max()) <= 1.0


def test_seeded() -> None:
    a = make_benchmark("multi_digits", seed=1, **SMALL)
    b = make_benchmark("multi_digits", seed=1, **SMALL)
    c = make_benchmark("multi_digits", seed=2, **SMALL)
    assert torch.equal(a.split("train").inputs, b.split("train").inputs)
    assert not torch.equal(a.split("train").inputs, c.split("train").inputs)


def test_metrics_by_hand(bench: MultiDigits) -> None:
    targets = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]])
    left = torch.nn.functional.one_hot(torch.tensor([1, 0]), 10).float()
    right = torch.nn.functional.one_hot(torch.tensor([2, 5]), 10).float()
    metrics = bench.metrics([left, right, torch.tensor([[4.0], [7.0]])], targets)
    assert metrics == pytest.approx(
        {"left_acc": 0.5, "right_acc": 1.0, "sum_mae": 1.5, "sum_mse": 2.5}
    )


def test_invalid_pools() -> None:
    with pytest.raises(ValueError, match="pool_fractions"):
        MultiDigits(pool_fractions=(0.7, 0.3))
