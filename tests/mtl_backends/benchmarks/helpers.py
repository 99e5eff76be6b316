"""Shared checks for benchmark tests: build, train a few steps, evaluate with directions."""

from __future__ import annotations

import math

from mtl_backends.balancers import Sum, make_balancer
from mtl_backends.benchmarks import Benchmark
from mtl_backends.config import TrainConfig
from mtl_backends.trainer import EvalResult, MTLTrainer
from mtl_backends.weightings import make_weighting


class JacobianSum(Sum):
    """``Sum`` forced through the per-task Jacobian path of the trainer."""

    needs_jacobian = True


def train_briefly(
    bench: Benchmark, steps: int = 5, batch_size: int = 32, jacobian: bool = False
) -> tuple[MTLTrainer, EvalResult]:
    """Train ``steps`` EW steps and evaluate on ``test``; check losses and metrics."""
    balancer = JacobianSum() if jacobian else make_balancer("sum")
    # The base window must end before the budget (steps >= 2 here); EW ignores the gaps anyway.
    config = TrainConfig(steps=steps, batch_size=batch_size, base_window=(0, 1))
    trainer = MTLTrainer(bench, make_weighting("ew"), balancer, config, seed=0)
    history = trainer.fit()
    assert len(history.losses) == steps
    assert all(math.isfinite(v) for row in history.losses for v in row)
    result = trainer.evaluate("test")
    names = [m.name for m in bench.metric_specs]
    assert set(names) <= set(result.metrics)
    assert all(math.isfinite(result.metrics[n]) for n in names)
    assert len(result.losses) == bench.n_tasks
    assert bench.lower_bounds.shape == (bench.n_tasks,)
    assert all(0 <= m.task < bench.n_tasks for m in bench.metric_specs)
    return trainer, result
