"""MGDA: two-task closed form, non-conflict with unit weights, normalisations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.balancers import MGDA
from mtl_backends.balancers._solvers import min_norm_simplex, project_simplex

from . import _asserts as A
from ._inputs import FAMILIES, generic, losses_for


def test_two_tasks_closed_form() -> None:
    g1 = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    g2 = torch.tensor([-1.0, 3.0, 0.5], dtype=torch.float64)
    gamma = float((g2 @ g2 - g1 @ g2) / ((g1 - g2) @ (g1 - g2)))
    assert 0.0 < gamma < 1.0
    expected = 2 * (gamma * g1 + (1 - gamma) * g2)
    d = A.direction(MGDA, torch.stack([g1, g2]), torch.ones(2, dtype=torch.float64), losses_for(2))
    torch.testing.assert_close(d, expected)
    # The min-norm point is orthogonal to g1 - g2 (equal progress on both tasks).
    assert abs(float(d @ g1 - d @ g2)) < 1e-12


def test_two_tasks_dominated_gradient_is_a_vertex() -> None:
    # g1 . g2 > |g1|^2: the min-norm point is g1 itself.
    g1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    g2 = torch.tensor([3.0, 1.0], dtype=torch.float64)
    balancer = MGDA()
    balancer.reset(2)
    d = balancer(torch.stack([g1, g2]), torch.ones(2, dtype=torch.float64), losses_for(2))
    torch.testing.assert_close(d, 2 * g1)
    assert balancer.last_simplex is not None
    torch.testing.assert_close(balancer.last_simplex, torch.tensor([1.0, 0.0], dtype=torch.float64))


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_tasks=st.integers(2, 6),
    family=st.sampled_from(["generic", "conflicting"]),
)
def test_unit_weights_do_not_conflict(seed: int, n_tasks: int, family: str) -> None:
    jac = FAMILIES[family](n_tasks, 20, seed)
    d = A.direction(MGDA, jac, torch.ones(n_tasks, dtype=torch.float64), losses_for(n_tasks))
    A.assert_non_conflicting(jac, d, rtol=1e-5)


def test_min_norm_matches_brute_force_grid() -> None:
    jac = generic(3, 6, 11).numpy()
    m = jac @ jac.T
    w = min_norm_simplex(m)
    grid = np.linspace(0, 1, 401)
    best = min(
        float(v @ m @ v)
        for a in grid
        for b in grid
        if a + b <= 1
        for v in [np.array([a, b, 1 - a - b])]
    )
    assert float(w @ m @ w) <= best * (1 + 1e-6) + 1e-12


@pytest.mark.parametrize("normalize", ["none", "l2", "loss", "loss+"])
def test_normalisations_give_simplex_weights(normalize: str) -> None:
    balancer = MGDA(normalize=normalize)
    balancer.reset(3)
    jac = generic(3, 8, 2)
    d = balancer(jac, torch.ones(3, dtype=torch.float64), losses_for(3))
    A.assert_finite(d)
    assert balancer.last_simplex is not None
    A.assert_on_simplex(balancer.last_simplex)


def test_l2_normalisation_ignores_gradient_scales() -> None:
    jac = generic(3, 8, 2)
    rescaled = jac * torch.tensor([[1e-3], [1.0], [1e3]], dtype=torch.float64)
    a, b = MGDA(normalize="l2"), MGDA(normalize="l2")
    a.reset(3)
    b.reset(3)
    ones = torch.ones(3, dtype=torch.float64)
    a(jac, ones, losses_for(3))
    b(rescaled, ones, losses_for(3))
    assert a.last_simplex is not None and b.last_simplex is not None
    torch.testing.assert_close(a.last_simplex, b.last_simplex, rtol=1e-5, atol=1e-7)


def test_project_simplex() -> None:
    v = np.array([0.5, 2.0, -1.0])
    p = project_simplex(v)
    assert abs(p.sum() - 1.0) < 1e-12 and (p >= 0).all()
    np.testing.assert_allclose(p, [0.0, 1.0, 0.0])
