"""``tuned_static``: frozen constant weights on the log losses."""

from __future__ import annotations

import pytest

from mtl_backends.balancers import Sum
from mtl_backends.benchmarks import Synthetic
from mtl_backends.config import TrainConfig
from mtl_backends.trainer import MTLTrainer
from mtl_backends.weightings import LOSS_WEIGHTINGS, make_weighting
from mtl_backends.weightings.tuned_static import TunedStatic

TRAIN = TrainConfig(steps=20, batch_size=20, base_window=(4, 8))


def test_frozen_weights_every_step_sum_to_t(tiny_benchmark: Synthetic) -> None:
    assert LOSS_WEIGHTINGS["tuned_static"] is TunedStatic
    weighting = make_weighting("tuned_static", weights=[1.0, 2.0, 3.0])
    assert isinstance(weighting, TunedStatic)
    trainer = MTLTrainer(tiny_benchmark, weighting, Sum(), TRAIN, seed=0)
    history = trainer.fit()
    expected = [0.5, 1.0, 1.5]
    for w in history.weights:
        assert w == pytest.approx(expected)
    assert weighting.transform == "log"
    assert float(weighting.weights.sum()) == pytest.approx(3.0)


def test_bad_weights_are_clear_errors(tiny_benchmark: Synthetic) -> None:
    for bad in ([], [1.0, 0.0, 1.0], [1.0, float("nan"), 1.0], [-1.0, 1.0, 1.0]):
        with pytest.raises(ValueError, match="positive and finite"):
            TunedStatic(bad)
    with pytest.raises(ValueError, match="2 weights but the run has 3 tasks"):
        MTLTrainer(tiny_benchmark, TunedStatic([1.0, 1.0]), Sum(), TRAIN)
