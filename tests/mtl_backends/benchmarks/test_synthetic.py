from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from mtl_backends.benchmarks import BENCHMARKS, Benchmark, Synthetic, make_benchmark
from tests.mtl_backends.benchmarks.helpers import train_briefly

SMALL: dict[str, Any] = {
    "n_train": 300,
    "n_val": 60,
    "n_test": 60,
    "input_dim": 20,
    "output_dim": 5,
    "hidden": (16,),
}


def test_default_data_is_pinned() -> None:
    bench = Synthetic()
    assert bench.n_tasks == 3
    assert bench.config()["scales"] == pytest.approx([1.0, 10.0, 100.0])
    train = bench.split("train")
    assert train.inputs.shape == (4000, 250)
    assert train.targets.shape == (4000, 3, 100)
    assert len(bench.split("val")) == len(bench.split("test")) == 1000
    # Regenerating with the same seed gives the same data.
    again = Synthetic()
    assert torch.equal(again.split("test").targets, bench.split("test").targets)


def test_builds_trains_and_evaluates() -> None:
    bench = make_benchmark("synthetic", n_tasks=4, **SMALL)
    _, result = train_briefly(bench)
    assert all(not m.higher_is_better for m in bench.metric_specs)
    assert set(result.metrics) == {"t1_mse", "t2_mse", "t3_mse", "t4_mse"}


@pytest.mark.parametrize("n_tasks", [2, 10])
def test_task_count_range(n_tasks: int) -> None:
    bench = Synthetic(n_tasks=n_tasks, **SMALL)
    assert bench.split("train").targets.shape == (300, n_tasks, 5)
    train_briefly(bench, steps=2, jacobian=True)


def test_relatedness_extremes() -> None:
    same = Synthetic(n_tasks=2, scales=[1.0, 1.0], relatedness=1.0, **SMALL)
    y = same.split("train").targets
    torch.testing.assert_close(y[:, 0], y[:, 1])
    apart = Synthetic(n_tasks=2, scales=[1.0, 1.0], relatedness=0.0, **SMALL)
    y = apart.split("train").targets
    corr = np.corrcoef(y[:, 0].flatten().numpy(), y[:, 1].flatten().numpy())[0, 1]
    assert abs(corr) < 0.2
    assert Synthetic(**SMALL).relatedness == pytest.approx(100 / 112.25)


def test_noise_sets_a_floor() -> None:
    clean = Synthetic(n_tasks=2, scales=[1.0, 1.0], **SMALL)
    noisy = Synthetic(n_tasks=2, scales=[1.0, 1.0], noise=[0.0, 0.5], **SMALL)
    # The noise is drawn inline (after the clean targets of a split), so compare the first split.
    diff = noisy.split("train").targets - clean.split("train").targets
    assert float(diff[:, 0].abs().max()) == 0.0
    assert float(diff[:, 1].std()) == pytest.approx(0.5, rel=0.1)


def test_fractions_mask_training_rows_only() -> None:
    bench = Synthetic(n_tasks=3, fractions=[1.0, 0.5, 0.1], **SMALL)
    mask = bench.label_mask("train")
    assert mask.sum(0).tolist() == [300, 150, 30]
    assert bool((bench.label_mask("test") == 1).all())
    assert bench.split("train").targets.shape == (300, 3, 6)
    # The data itself equals the unmasked instance's.
    plain = Synthetic(n_tasks=3, **SMALL)
    torch.testing.assert_close(bench.split("train").targets[..., :-1], plain.split("train").targets)
    train_briefly(bench, steps=3, batch_size=16)


def test_masked_loss_uses_labelled_rows_and_never_empties() -> None:
    bench = Synthetic(n_tasks=2, fractions=[1.0, 0.1], **SMALL)
    train = bench.split("train")
    outputs = [torch.zeros(300, 5), torch.zeros(300, 5)]
    losses = bench.losses(outputs, train.targets)
    labelled = train.targets[:, 1, -1] == 1
    expected = (train.targets[labelled, 1, :-1] ** 2).mean()
    torch.testing.assert_close(losses[1], expected)
    # A batch without any labelled row for task 2 still gives a finite, positive loss.
    rows = torch.nonzero(~labelled).flatten()[:8]
    batch_losses = bench.losses([o[rows] for o in outputs], train.targets[rows])
    assert bool(torch.isfinite(batch_losses).all()) and float(batch_losses[1]) > 0


def test_variation_sampler_is_reproducible_and_covers_ranges() -> None:
    a = Synthetic.sample_variation(np.random.default_rng(7), n_tasks=5)
    b = Synthetic.sample_variation(np.random.default_rng(7), n_tasks=5)
    assert a == b
    assert a != Synthetic.sample_variation(np.random.default_rng(8), n_tasks=5)
    rng = np.random.default_rng(0)
    draws = [Synthetic.sample_variation(rng, n_tasks=4) for _ in range(300)]
    ranges = Synthetic.VARIATION_RANGES
    scales = np.array([d["scales"] for d in draws])
    assert scales.min() >= ranges["scales"][0] and scales.max() <= ranges["scales"][1]
    assert scales.min() < 1.5 and scales.max() > 70  # log-uniform reaches both ends
    rel_noise = np.array([d["noise"] for d in draws]) / scales
    assert rel_noise.min() == 0.0 and 0.18 < rel_noise.max() <= ranges["noise"][1]
    fractions = np.array([d["fractions"] for d in draws])
    assert (fractions == 1.0).any() and 0.1 <= fractions.min() < 0.15
    rel = np.array([d["relatedness"] for d in draws])
    assert ranges["relatedness"][0] <= rel.min() < 0.25 and 0.95 < rel.max() <= 1.0
    assert len({d["seed"] for d in draws}) == 300
    assert all(d["n_tasks"] == 4 for d in draws)


def test_variation_builds_with_fixed_arguments() -> None:
    kwargs = Synthetic.sample_variation(np.random.default_rng(3), n_tasks=6, **SMALL)
    bench = make_benchmark("synthetic", **kwargs)
    assert bench.n_tasks == 6
    assert bench.config()["fractions"] == pytest.approx(kwargs["fractions"])
    train_briefly(bench, steps=2, batch_size=50)


def test_base_class_has_no_variations() -> None:
    with pytest.raises(NotImplementedError, match="no sample_variation"):
        Benchmark.sample_variation(np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_tasks": 2, "fractions": [0.5]}, "fractions has 1 entries"),
        ({"n_tasks": 2, "fractions": [0.0, 1.0]}, r"\(0, 1\]"),
        ({"relatedness": 1.5}, r"\[0, 1\]"),
        ({"n_tasks": 0}, "n_tasks"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Synthetic(**kwargs)


def test_registry_lists_synthetic() -> None:
    assert BENCHMARKS["synthetic"] is Synthetic
