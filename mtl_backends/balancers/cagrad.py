"""CAGrad: conflict-averse gradient descent."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from mtl_backends.balancers._coefficient import CoefficientBalancer
from mtl_backends.balancers._solvers import minimise_on_simplex, normalised_gram


def cagrad_objective(
    m: np.ndarray, c: float, mu: float = 0.0, squared: bool = False
) -> tuple[np.ndarray, float]:
    """Solve ``min_{w ∈ Δ} (1 - μ)(g_w·g_0 + c‖g_0‖‖g_w‖) + μ‖g_w‖^p`` in Gram form.

    ``g_w = Jᵀw``, ``g_0 = Jᵀ1/T``; ``p = 2`` if ``squared`` else 1. ``μ = 0`` is CAGrad's dual;
    IMGrad adds the ``μ`` term.

    Args:
        m: Gram matrix ``[T, T]`` (any positive scale: the minimiser is invariant to it).
        c: Radius factor ``c``.
        mu: Weight of the MGDA-like term.
        squared: Square ``‖g_w‖`` in the ``μ`` term.

    Returns:
        The minimiser ``w`` and whether the solver succeeded.
    """
    n = m.shape[0]
    mn, _ = normalised_gram(m)
    b = mn.mean(axis=1)  # g_w·g_0 = wᵀ b
    g0_norm = float(np.sqrt(max(b.mean(), 0.0)))
    k = c * g0_norm

    def norm_gw(w: np.ndarray) -> float:
        return float(np.sqrt(max(float(w @ mn @ w), 0.0) + 1e-20))

    def fun(w: np.ndarray) -> float:
        gw = norm_gw(w)
        extra = gw**2 if squared else gw
        return float((1.0 - mu) * (w @ b + k * gw) + mu * extra)

    def grad(w: np.ndarray) -> np.ndarray:
        gw = norm_gw(w)
        mw = mn @ w
        extra = 2.0 * mw if squared else mw / gw
        return (1.0 - mu) * (b + k * mw / gw) + mu * extra

    return minimise_on_simplex(fun, grad, n)


def conflict_averse_coefficients(m: np.ndarray, w: np.ndarray, c: float) -> np.ndarray:
    """Coefficients of ``d = g_0 + (c‖g_0‖/‖g_w‖) g_w`` on the rows of ``J`` (``1/T + λ w_t``).

    ``λ`` is 0 when ``g_0`` or ``g_w`` vanishes (then ``d = g_0``).
    """
    n = m.shape[0]
    g0_sq = float(m.mean())
    gw_sq = float(w @ m @ w)
    scale = max(float(np.max(np.abs(np.diag(m)))), 1e-300)
    if g0_sq <= 1e-24 * scale or gw_sq <= 1e-24 * scale:
        lam = 0.0
    else:
        lam = c * np.sqrt(g0_sq) / np.sqrt(gw_sq)
    return np.full(n, 1.0 / n) + lam * w


class CAGrad(CoefficientBalancer):
    """Conflict-averse gradient: the update near the mean gradient that helps the worst task most.

    Paper: Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task Learning",
    NeurIPS 2021, https://arxiv.org/abs/2110.14048.

    Formula: ``w = argmin_{w ∈ Δ} g_w·g_0 + c‖g_0‖‖g_w‖`` (``g_w = Σ w_t g_t``, ``g_0`` the mean
    gradient), solved in Gram form with SLSQP (projected-gradient fallback);
    ``d = g_0 + (c‖g_0‖/‖g_w‖) g_w``, i.e. coefficients ``1/T + (c‖g_0‖/‖g_w‖) w_t``, times ``T``
    (sum-scale convention of ``CoefficientBalancer``). ``d(sJ) = s d(J)``.

    The released CAGrad code (and LibMTL) divides ``d`` by ``1 + c²`` ("rescale=1"); the paper's
    Algorithm 1 does not. We follow the paper by default (so unit weights give the paper's ``d``
    up to the factor ``T``); ``rescale=True`` reproduces the code. It is a constant learning-rate
    factor (0.86 at ``c = 0.4``) that Adam ignores.

    Args:
        c: Radius factor (default 0.4, the CAGrad/Nash-MTL NYUv2 setting; LibMTL uses 0.5).
        rescale: Divide by ``1 + c²`` as the released code does.
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none (``solver_failures`` counts steps where SLSQP failed and projected gradient was
    used).
    """

    label = "CAGrad"

    def __init__(self, c: float = 0.4, rescale: bool = False, weights: str = "after") -> None:
        super().__init__(weights)
        if c < 0:
            raise ValueError(f"CAGrad c must be >= 0, got {c}")
        self.c = float(c)
        self.rescale = bool(rescale)
        self.solver_failures = 0

    def coefficients(self, m: np.ndarray, losses: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Dual weights ``w`` on the simplex and ``T (1/T + λ w_t)`` (``/(1 + c²)`` if asked)."""
        w, ok = cagrad_objective(m, self.c)
        self.solver_failures += int(not ok)
        coef = m.shape[0] * conflict_averse_coefficients(m, w, self.c)
        if self.rescale:
            coef = coef / (1.0 + self.c**2)
        return w, coef

    def diagnostics(self) -> dict[str, float]:
        """``solver_failures``: steps whose SLSQP solve fell back to projected gradient descent."""
        return {"solver_failures": float(self.solver_failures)}

    def __repr__(self) -> str:
        return f"CAGrad(c={self.c}, rescale={self.rescale}, weights={self.weights_mode!r})"
