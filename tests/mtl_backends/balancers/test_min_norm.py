"""The exact min-norm solver (MGDA, IMGrad's μ, F-MGDA): against an enumeration of every support."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.balancers import MGDA, TorchJDMGDA
from mtl_backends.balancers._solvers import min_norm_simplex, normalised_gram

from . import _asserts as A
from ._inputs import FAMILIES, losses_for

# The property-test families on which the issue asks for a direction error <= 1e-6 (T up to 10).
SOLVER_FAMILIES = ("generic", "conflicting", "zero_rows", "colinear", "opposite", "scale_1e-6")


def enumerate_min_norm(m: np.ndarray) -> np.ndarray:
    """The min-norm simplex point by brute force: the KKT system on every support, best feasible.

    On a support ``S`` the minimiser of ``wᵀMw`` with ``Σ w = 1`` solves
    ``[M_SS 1; 1ᵀ 0] [w; ν] = [0; 1]`` (least squares when singular); the best feasible (``w >= 0``)
    candidate over all ``2^T - 1`` supports is the global minimiser.
    """
    n = m.shape[0]
    mn, _ = normalised_gram(m)
    best, best_w = np.inf, np.full(n, 1.0 / n)
    for k in range(1, n + 1):
        for support in itertools.combinations(range(n), k):
            s = list(support)
            kkt = np.zeros((k + 1, k + 1))
            kkt[:k, :k] = mn[np.ix_(s, s)]
            kkt[:k, k] = 1.0
            kkt[k, :k] = 1.0
            rhs = np.zeros(k + 1)
            rhs[k] = 1.0
            sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
            w = np.zeros(n)
            w[s] = sol[:k]
            if (w < -1e-12).any() or abs(w.sum() - 1.0) > 1e-9:
                continue
            value = float(w @ mn @ w)
            if value < best - 1e-15:
                best, best_w = value, w
    return best_w


def direction_error(m: np.ndarray, w: np.ndarray, reference: np.ndarray) -> float:
    """``‖Jᵀ(w − w*)‖ / max_t ‖g_t‖`` from the Gram matrix alone (0 for an all-zero ``M``)."""
    scale = float(np.max(np.diag(m)))
    if scale <= 0.0:
        return 0.0
    diff = w - reference
    return float(np.sqrt(max(float(diff @ m @ diff), 0.0) / scale))


@pytest.mark.parametrize("family", SOLVER_FAMILIES)
@pytest.mark.parametrize("n_tasks", [3, 5, 10])
def test_direction_error_below_1e_6_against_enumeration(family: str, n_tasks: int) -> None:
    for seed in range(3):
        jac = FAMILIES[family](n_tasks, 30, seed).numpy()
        m = jac @ jac.T
        w = min_norm_simplex(m)
        A.assert_on_simplex(torch.from_numpy(w), atol=1e-12)
        assert direction_error(m, w, enumerate_min_norm(m)) <= 1e-6


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n_tasks=st.integers(2, 10),
    family=st.sampled_from(["generic", "conflicting", "colinear", "opposite", "scale_1e6"]),
)
def test_kkt_conditions_hold(seed: int, n_tasks: int, family: str) -> None:
    # Optimality on the simplex: every (Mw)_t >= wᵀMw, with equality where w_t > 0; the duality gap
    # bounds the squared direction error: ‖d − d*‖² <= 2 (wᵀMw − min_t (Mw)_t).
    jac = FAMILIES[family](n_tasks, 25, seed).numpy()
    m = jac @ jac.T
    w = min_norm_simplex(m)
    mn, _ = normalised_gram(m)
    mw = mn @ w
    value = float(w @ mw)
    gap = value - float(mw.min())
    assert gap <= 1e-12
    assert np.sqrt(2 * max(gap, 0.0)) <= 1e-6
    support = w > 1e-9
    assert np.all(np.abs(mw[support] - value) <= 1e-10)


def test_two_tasks_and_degenerate_inputs() -> None:
    # Orthogonal gradients of norms 1 and 2: w = (4/5, 1/5) by hand (w1 = |g2|² / (|g1|² + |g2|²)).
    m = np.diag([1.0, 4.0])
    np.testing.assert_allclose(min_norm_simplex(m), [0.8, 0.2], atol=1e-15)
    # Three orthogonal gradients of norms 1, 2, 4: w_t ∝ 1 / |g_t|², i.e. (16, 4, 1) / 21.
    np.testing.assert_allclose(
        min_norm_simplex(np.diag([1.0, 4.0, 16.0])), np.array([16.0, 4.0, 1.0]) / 21, atol=1e-14
    )
    np.testing.assert_allclose(min_norm_simplex(np.zeros((4, 4))), np.full(4, 0.25))
    assert min_norm_simplex(np.ones((1, 1))).tolist() == [1.0]


def test_mgda_is_at_least_as_good_as_torchjd_frank_wolfe() -> None:
    # TorchJD's MGDA is Frank–Wolfe with a stopping threshold (1e-3): its point is never closer to
    # the origin than the exact one, and within the threshold's reach of it.
    for seed in range(5):
        jac = FAMILIES["conflicting"](6, 20, seed)
        ones = torch.ones(6, dtype=torch.float64)
        exact = A.direction(MGDA, jac, ones, losses_for(6))
        frank_wolfe = A.direction(TorchJDMGDA, jac, ones, losses_for(6))
        assert float(exact.norm()) <= float(frank_wolfe.norm()) * (1 + 1e-12)
        assert float((exact - frank_wolfe).norm()) <= 0.05 * float(jac.norm(dim=1).max()) * 6


def test_mgda_normalisations_do_not_conflict() -> None:
    # d = T Σ λ_t ĝ_t with ĝ the normalised gradients: ĝ_t · d >= ‖d‖²/T, so J d >= 0 for all of
    # them (the FS-MTL NYUv2 release's F-MGDA uses "l2" on g and on h).
    jac = FAMILIES["conflicting"](5, 20, 3)
    for normalize in ("none", "l2", "loss", "loss+"):
        factory = functools.partial(MGDA, normalize=normalize)
        d = A.direction(factory, jac, torch.ones(5, dtype=torch.float64), losses_for(5))
        A.assert_non_conflicting(jac, d, rtol=1e-9)
