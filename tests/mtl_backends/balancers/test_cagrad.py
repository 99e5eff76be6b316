"""CAGrad: two tasks against a 1-D search of the dual, and the rescale option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_backends.balancers import CAGrad

from . import _asserts as A
from ._inputs import FAMILIES, losses_for


def _dual_by_search(g1: np.ndarray, g2: np.ndarray, c: float) -> np.ndarray:
    """``d = g0 + c|g0|/|g_w| g_w`` with ``w = (x, 1 - x)`` minimising the dual on a fine grid."""
    g0 = (g1 + g2) / 2
    xs = np.linspace(0.0, 1.0, 200_001)
    gw = xs[:, None] * g1 + (1 - xs[:, None]) * g2
    obj = gw @ g0 + c * np.linalg.norm(g0) * np.linalg.norm(gw, axis=1)
    best = gw[int(np.argmin(obj))]
    return g0 + c * np.linalg.norm(g0) / np.linalg.norm(best) * best


@pytest.mark.parametrize("c", [0.4, 0.8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_tasks_matches_one_dimensional_search(c: float, seed: int) -> None:
    jac = FAMILIES["conflicting"](2, 6, seed)
    expected = 2 * _dual_by_search(jac[0].numpy(), jac[1].numpy(), c)
    d = A.direction(lambda: CAGrad(c=c), jac, torch.ones(2, dtype=torch.float64), losses_for(2))
    np.testing.assert_allclose(
        d.numpy(), expected, rtol=1e-4, atol=1e-4 * float(np.linalg.norm(expected))
    )


def test_c_zero_is_the_mean_gradient_times_t() -> None:
    jac = FAMILIES["generic"](3, 6, 0)
    d = A.direction(lambda: CAGrad(c=0.0), jac, torch.ones(3, dtype=torch.float64), losses_for(3))
    torch.testing.assert_close(d, jac.sum(dim=0))


def test_stays_in_the_ball_around_the_mean_gradient() -> None:
    jac = FAMILIES["conflicting"](4, 9, 7)
    c = 0.4
    d = A.direction(lambda: CAGrad(c=c), jac, torch.ones(4, dtype=torch.float64), losses_for(4)) / 4
    g0 = jac.mean(dim=0)
    assert float((d - g0).norm()) <= c * float(g0.norm()) * (1 + 1e-6)


def test_rescale_divides_by_one_plus_c_squared() -> None:
    jac = FAMILIES["conflicting"](3, 9, 1)
    w = torch.ones(3, dtype=torch.float64)
    plain = A.direction(lambda: CAGrad(c=0.5), jac, w, losses_for(3))
    rescaled = A.direction(lambda: CAGrad(c=0.5, rescale=True), jac, w, losses_for(3))
    torch.testing.assert_close(rescaled, plain / 1.25)
