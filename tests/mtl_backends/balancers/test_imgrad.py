"""IMGrad: the pinned dual, μ, and the released-code variant."""

from __future__ import annotations

import numpy as np
import torch

from mtl_backends.balancers import CAGrad, IMGrad
from mtl_backends.balancers.imgrad import mgda_cosine

from . import _asserts as A
from ._inputs import FAMILIES, losses_for


def _pinned_dual_by_search(g1: np.ndarray, g2: np.ndarray, c: float, mu: float) -> np.ndarray:
    g0 = (g1 + g2) / 2
    xs = np.linspace(0.0, 1.0, 200_001)
    gw = xs[:, None] * g1 + (1 - xs[:, None]) * g2
    n_gw = np.linalg.norm(gw, axis=1)
    obj = (1 - mu) * (gw @ g0 + c * np.linalg.norm(g0) * n_gw) + mu * n_gw**2
    best = gw[int(np.argmin(obj))]
    return g0 + c * np.linalg.norm(g0) / np.linalg.norm(best) * best


def test_two_tasks_matches_one_dimensional_search() -> None:
    for seed in range(3):
        jac = FAMILIES["generic"](2, 6, seed)
        m = (jac @ jac.T).numpy()
        mu = mgda_cosine(m)
        assert 0.0 <= mu <= 1.0
        expected = 2 * _pinned_dual_by_search(jac[0].numpy(), jac[1].numpy(), 0.8, mu)
        d = A.direction(IMGrad, jac, torch.ones(2, dtype=torch.float64), losses_for(2))
        np.testing.assert_allclose(
            d.numpy(), expected, rtol=1e-4, atol=1e-4 * float(np.linalg.norm(expected))
        )


def test_mu_is_cosine_to_the_min_norm_direction() -> None:
    g1 = np.array([1.0, 0.0])
    g2 = np.array([0.0, 1.0])
    # Equal-norm orthogonal gradients: the min-norm point is along g0, so μ = 1.
    assert abs(mgda_cosine(np.stack([g1, g2]) @ np.stack([g1, g2]).T) - 1.0) < 1e-9
    # Opposite gradients: the min-norm direction vanishes, μ = 0.
    opp = np.stack([g1, -g1])
    assert mgda_cosine(opp @ opp.T) == 0.0


def test_mu_zero_reduces_to_cagrad() -> None:
    # Opposite gradients give μ = 0, where the pinned dual is CAGrad's.
    jac = FAMILIES["opposite"](2, 5, 0) * torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    w = torch.ones(2, dtype=torch.float64)
    im = A.direction(lambda: IMGrad(c=0.8), jac, w, losses_for(2))
    ca = A.direction(lambda: CAGrad(c=0.8), jac, w, losses_for(2))
    torch.testing.assert_close(im, ca, rtol=1e-5, atol=1e-8)


def test_released_variant_objective() -> None:
    jac = FAMILIES["conflicting"](2, 6, 4)
    g1, g2 = jac[0].numpy(), jac[1].numpy()
    mu = mgda_cosine((jac @ jac.T).numpy())
    c = 0.8
    g0 = (g1 + g2) / 2
    xs = np.linspace(0.0, 1.0, 200_001)
    gw = xs[:, None] * g1 + (1 - xs[:, None]) * g2
    n_gw = np.linalg.norm(gw, axis=1)
    obj = (1.5 - mu) * (gw @ g0) + mu * c * np.linalg.norm(g0) * n_gw
    best = gw[int(np.argmin(obj))]
    expected = 2 * (g0 + c * np.linalg.norm(g0) / np.linalg.norm(best) * best) / (1 + c**2)
    d = A.direction(
        lambda: IMGrad(variant="released"), jac, torch.ones(2, dtype=torch.float64), losses_for(2)
    )
    np.testing.assert_allclose(
        d.numpy(), expected, rtol=1e-4, atol=1e-4 * float(np.linalg.norm(expected))
    )
