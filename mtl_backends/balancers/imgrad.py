"""IMGrad: CAGrad with an adaptive, imbalance-sensitive min-norm term."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from mtl_backends.balancers._coefficient import CoefficientBalancer
from mtl_backends.balancers._solvers import min_norm_simplex
from mtl_backends.balancers.cagrad import cagrad_objective, conflict_averse_coefficients

IMGRAD_VARIANTS: tuple[str, ...] = ("paper", "released")


def mgda_cosine(m: np.ndarray) -> float:
    """``cos(g_0, g_m)`` with ``g_m`` the MGDA min-norm direction, clipped to [0, 1].

    0 when ``g_m`` (or ``g_0``) vanishes relative to the largest task gradient.
    """
    lam = min_norm_simplex(m)
    gm_sq = float(lam @ m @ lam)
    g0_sq = float(m.mean())
    g0_gm = float(lam @ m.mean(axis=1))
    scale = max(float(np.max(np.abs(np.diag(m)))), 1e-300)
    if gm_sq <= 1e-20 * scale or g0_sq <= 1e-20 * scale:
        return 0.0
    return float(np.clip(g0_gm / np.sqrt(gm_sq * g0_sq), 0.0, 1.0))


class IMGrad(CoefficientBalancer):
    """Imbalance-sensitive gradient: CAGrad's dual plus an adaptive MGDA-like min-norm term.

    The extra term is weighted by how well the mean gradient agrees with the min-norm direction.

    Paper: Zhou, Liu, Zhao, Gong, "Injecting Imbalance Sensitivity for Multi-Task Learning", IJCAI
    2025, https://arxiv.org/abs/2503.08006.

    Formula (``variant="paper"``, the pinned dual): ``μ = cos(g_0, g_m)`` clipped to [0, 1]
    (``g_m``: the exact MGDA min-norm direction, ``_solvers.min_norm_simplex``; ``μ = 0`` when
    ``g_m`` vanishes);
    ``w = argmin_{w ∈ Δ} (1 - μ)(g_w·g_0 + c‖g_0‖‖g_w‖) + μ‖g_w‖²`` (Gram form, SLSQP with a
    projected-gradient fallback); ``d = g_0 + (c‖g_0‖/‖g_w‖) g_w``, i.e. coefficients
    ``1/T + (c‖g_0‖/‖g_w‖) w_t``, times ``T`` (sum-scale convention of ``CoefficientBalancer``).
    ``d(sJ) = s d(J)``.

    ``variant="released"`` reproduces the authors' NYUv2 code instead: objective
    ``(1.5 - μ) g_w·g_0 + μ c‖g_0‖‖g_w‖`` (constant 1.5, unsquared norm, no clipping of ``μ``
    needed since ``cos(g_0, g_m) >= 0``), then ``d`` divided by ``1 + c²``; the code's final ``× T``
    is our common convention. (The released 2-task CityScapes code applies ``1.5 - μ`` to only one
    term of ``g_w·g_0``, an operator-precedence slip we do not reproduce.)

    Args:
        c: Radius factor (default 0.8, the authors' run scripts).
        variant: ``"paper"`` (default) or ``"released"``.
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none (``last_mu`` holds the last ``μ``; ``solver_failures`` counts SLSQP failures).
    """

    label = "IMGrad"

    def __init__(self, c: float = 0.8, variant: str = "paper", weights: str = "after") -> None:
        super().__init__(weights)
        if c < 0:
            raise ValueError(f"IMGrad c must be >= 0, got {c}")
        if variant not in IMGRAD_VARIANTS:
            raise ValueError(
                f"unknown IMGrad variant {variant!r}; valid choices: {', '.join(IMGRAD_VARIANTS)}"
            )
        self.c = float(c)
        self.variant = variant
        self.last_mu = 0.0
        self.solver_failures = 0

    def coefficients(self, m: np.ndarray, losses: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Dual weights on the simplex and the coefficients of ``T d`` on the task gradients."""
        n = m.shape[0]
        mu = mgda_cosine(m)
        self.last_mu = mu
        if self.variant == "paper":
            w, ok = cagrad_objective(m, self.c, mu=mu, squared=True)
            coef = n * conflict_averse_coefficients(m, w, self.c)
        else:
            # (1.5 - μ) g_w·g_0 + μ c‖g_0‖‖g_w‖ = (1 - μ') (g_w·g_0 + c'‖g_0‖‖g_w‖) with
            # 1 - μ' = 1.5 - μ and c' = μ c / (1.5 - μ); μ' = 0 leaves no extra term.
            c_eff = mu * self.c / (1.5 - mu)
            w, ok = cagrad_objective(m, c_eff)
            coef = n * conflict_averse_coefficients(m, w, self.c) / (1.0 + self.c**2)
        self.solver_failures += int(not ok)
        return w, coef

    def diagnostics(self) -> dict[str, float]:
        """``solver_failures``: steps whose SLSQP solve fell back to projected gradient descent."""
        return {"solver_failures": float(self.solver_failures)}

    def __repr__(self) -> str:
        return f"IMGrad(c={self.c}, variant={self.variant!r}, weights={self.weights_mode!r})"
