from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.transforms import apply_transform


def test_identity_returns_input() -> None:
    x = torch.tensor([1.0, -2.0])
    assert apply_transform("identity", x, torch.zeros(2)) is x


def test_log_subtracts_lower_bound() -> None:
    out = apply_transform("log", torch.tensor([3.0, 1.0]), torch.tensor([1.0, -1.0]), eps=0.0)
    torch.testing.assert_close(out, torch.log(torch.tensor([2.0, 2.0])))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("value", [-1e-6, -1.0, float("nan"), float("inf"), float("-inf")])
def test_log_rejects_loss_below_bound_naming_task(value: float, dtype: torch.dtype) -> None:
    """Every dtype a trainer can produce (bfloat16 under autocast takes the torch check, the
    others a numpy view), the loss the second of two."""
    with pytest.raises(ValueError, match=r"task 'depth'.*lower bound"):
        apply_transform(
            "log",
            torch.tensor([1.0, value], dtype=dtype),
            torch.zeros(2),
            task_names=("seg", "depth"),
        )


def test_unknown_transform() -> None:
    with pytest.raises(ValueError, match="valid choices: identity, log"):
        apply_transform("sqrt", torch.ones(1), torch.zeros(1))


@settings(max_examples=30, deadline=None)
@given(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3))
def test_log_gradient_is_scale_invariant(loss: float, scale: float) -> None:
    # d/dθ log(s·L(θ)) = d/dθ log L(θ): the property SI and IGB rely on.
    theta = torch.tensor(1.0, requires_grad=True, dtype=torch.float64)
    zeros = torch.zeros(1, dtype=torch.float64)
    (g1,) = torch.autograd.grad(
        apply_transform("log", (loss * theta**2).reshape(1), zeros, eps=0.0).sum(), theta
    )
    (g2,) = torch.autograd.grad(
        apply_transform("log", (scale * loss * theta**2).reshape(1), zeros, eps=0.0).sum(), theta
    )
    torch.testing.assert_close(g1, g2)


def test_log_accepts_a_loss_exactly_at_its_bound() -> None:
    # Cross-entropy reaches exactly 0 in float32 once a batch is classified with certainty.
    out = apply_transform("log", torch.tensor([0.0, 2.5]), torch.tensor([0.0, 2.5]), eps=1e-8)
    torch.testing.assert_close(out, torch.log(torch.tensor([1e-8, 1e-8])))
