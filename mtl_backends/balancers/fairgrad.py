"""FairGrad (TorchJD): α-fair allocation of the update among the tasks."""

from __future__ import annotations

import math
from typing import Any

from mtl_backends.balancers._torchjd import TorchJDBalancer


class FairGrad(TorchJDBalancer):
    """Fair resource allocation: each task's first-order progress is an α-fair share.

    Paper: Ban, Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024,
    https://arxiv.org/abs/2402.15638, Eq. 4 (TorchJD's ``FairGradWeighting``, adapted from the
    authors' code).

    Formula: ``x >= 0`` solves ``G x = x^{-1/α}`` elementwise (least squares with
    ``scipy.optimize.least_squares``), ``d = Σ_t x_t g_t``; then every task's progress
    ``g_t · d = x_t^{-1/α} > 0`` (no conflict). ``α = 0`` gives uniform ``x = 1/T``; ``α = 1`` is
    proportional fairness. The scale of ``x`` is part of the method (not rescaled here), so ``d`` is
    not positively homogeneous: ``d(sJ) = s^{(1-α)/(1+α)} d(J)``.

    Args:
        alpha: Fairness parameter ``α >= 0`` (default 1, LibMTL's; the paper tunes it per
            benchmark).
        max_iters: ``least_squares`` evaluations (``None``: scipy's default ``100 T``).
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none.
    """

    label = "FairGrad"

    sum_scale = False

    def __init__(
        self, alpha: float = 1.0, max_iters: int | None = None, weights: str = "after"
    ) -> None:
        super().__init__(weights)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"FairGrad alpha must be finite and >= 0, got {alpha}")
        if max_iters is not None and max_iters < 1:
            raise ValueError(f"FairGrad max_iters must be >= 1 or None, got {max_iters}")
        self.alpha = float(alpha)
        self.max_iters = max_iters

    def build(self, n_tasks: int) -> Any:
        """TorchJD's ``FairGradWeighting``."""
        from torchjd.aggregation import FairGradWeighting

        return FairGradWeighting(alpha=self.alpha, max_iters=self.max_iters)

    def __repr__(self) -> str:
        return f"FairGrad(alpha={self.alpha}, weights={self.weights_mode!r})"


__all__ = ["FairGrad"]
