"""The batched Jacobian equals the sequential reference."""

from __future__ import annotations

import pytest
import torch

from mtl_backends.benchmarks import Synthetic
from mtl_backends.updates.jacobian import DEFAULT_JACOBIAN_METHOD, JACOBIAN_METHODS, jacobian


@pytest.mark.parametrize("n_tasks", [1, 3, 6])
def test_batched_equals_sequential(n_tasks: int) -> None:
    bench = Synthetic(
        n_tasks=n_tasks, n_train=64, n_val=8, n_test=8, input_dim=12, output_dim=4, hidden=(10, 9)
    )
    torch.manual_seed(0)
    model = bench.build_model()
    data = bench.split("train")
    losses = bench.losses(model(data.inputs[:32]), data.targets[:32])
    params = model.shared_parameters()
    batched = jacobian(losses, params, method="batched")
    sequential = jacobian(losses, params, method="sequential")
    assert batched.shape == (n_tasks, sum(p.numel() for p in params))
    torch.testing.assert_close(batched, sequential, rtol=1e-5, atol=1e-7)
    # Each row is the gradient of its own loss.
    row = torch.autograd.grad(losses[-1], params, retain_graph=True)
    torch.testing.assert_close(sequential[-1], torch.cat([g.flatten() for g in row]))


def test_unused_parameters_give_zero_columns() -> None:
    a = torch.randn(3, requires_grad=True)
    unused = torch.randn(2, requires_grad=True)
    losses = torch.stack([(a**2).sum(), a.sum()])
    for method in JACOBIAN_METHODS:
        jac = jacobian(losses, [a, unused], method=method)
        assert torch.equal(jac[:, 3:], torch.zeros(2, 2))


def test_default_method_is_known() -> None:
    assert DEFAULT_JACOBIAN_METHOD in JACOBIAN_METHODS


def test_train_config_default_follows_the_measured_default() -> None:
    from mtl_backends.config import TrainConfig

    assert TrainConfig().jacobian == DEFAULT_JACOBIAN_METHOD
