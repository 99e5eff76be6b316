from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_backends.benchmarks import make_benchmark
from mtl_backends.benchmarks.toy import (
    PARETO_X2,
    TOY_STARTS,
    Toy,
    TrajectoryRecorder,
    pareto_distance,
    plot_toy_trajectories,
    toy_losses,
)
from mtl_backends.config import TrainConfig
from mtl_backends.trainer import MTLTrainer
from mtl_backends.weightings import make_weighting
from tests.mtl_backends.benchmarks.helpers import JacobianSum, train_briefly


@pytest.mark.parametrize("start", range(5))
def test_builds_trains_and_evaluates(start: int) -> None:
    bench = make_benchmark("toy", start=start, n_rows=64)
    trainer, result = train_briefly(bench, steps=5, batch_size=8)
    assert [m.name for m in bench.metric_specs] == ["l1", "l2"]
    assert all(not m.higher_is_better for m in bench.metric_specs)
    assert Toy.DIAGNOSTICS == {"pareto_dist": False}
    assert result.metrics["pareto_dist"] >= 0
    # The point moved away from its start, by about lr per step (Adam).
    moved = np.hypot(
        result.metrics["x1"] - TOY_STARTS[start][0], result.metrics["x2"] - TOY_STARTS[start][1]
    )
    assert 0 < moved < 5 * 1e-3 * 1.5
    assert trainer.model.task_parameters() and not any(
        p.grad is not None and p.numel() for p in trainer.model.task_parameters()
    )


def test_jacobian_path_matches_single_backward() -> None:
    results = []
    for jac in (False, True):
        _, res = train_briefly(Toy(start=1, n_rows=64), steps=20, batch_size=8, jacobian=jac)
        results.append((res.metrics["x1"], res.metrics["x2"]))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5)


def test_losses_by_hand() -> None:
    # At x = (7, -8): c1 = 0, c2 = tanh(4), f1_sq = -20 -> L1 = 0.1 · tanh(4) · (-20).
    x = torch.tensor([7.0, -8.0])
    l1, l2 = toy_losses(x, scale=0.1).tolist()
    assert l1 == pytest.approx(0.1 * np.tanh(4.0) * -20.0, rel=1e-5)
    assert l2 == pytest.approx(np.tanh(4.0) * ((14.0**2) / 10 - 20), rel=1e-5)
    # At x2 = 0 both gates are 0: both losses vanish.
    assert toy_losses(torch.tensor([3.0, 0.0])).tolist() == [0.0, 0.0]


def test_lower_bounds_lie_below_the_landscape() -> None:
    bench = Toy(scale=0.1)
    torch.testing.assert_close(bench.lower_bounds, torch.tensor([-2.1, -21.0]))
    grid = torch.linspace(-12, 12, 241)
    pts = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1)
    losses = toy_losses(pts, 0.1)
    assert float(losses[..., 0].min()) > -2.1
    assert float(losses[..., 1].min()) > -21.0


def test_pareto_distance() -> None:
    assert pareto_distance([0.0, PARETO_X2]) == 0.0
    assert pareto_distance([0.0, PARETO_X2 + 1]) == pytest.approx(1.0)
    assert pareto_distance([10.0, PARETO_X2 - 4]) == pytest.approx(5.0)


def test_invalid_start() -> None:
    with pytest.raises(ValueError, match=r"0\.\.4"):
        Toy(start=5)


def test_trajectory_plot(tmp_path: Path) -> None:
    trajectories = []
    for start in (0, 4):
        trainer = MTLTrainer(
            Toy(start=start, n_rows=10),
            make_weighting("ew"),
            JacobianSum(),
            TrainConfig(steps=30, batch_size=1, base_window=(1, 2)),
        )
        recorder = TrajectoryRecorder()
        trainer.fit(callbacks=[recorder])
        trajectories.append(recorder.array())
    assert trajectories[0].shape == (30, 2)
    path = plot_toy_trajectories(
        {"EW": trajectories, "EW again": trajectories}, tmp_path / "p" / "toy.png"
    )
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"
