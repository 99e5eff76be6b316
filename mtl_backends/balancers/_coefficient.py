"""``CoefficientBalancer``: the base of the balancers whose contributions are ``c_t g_t``.

MGDA, CAGrad and IMGrad solve a small problem on the Gram matrix ``M = J Jᵀ``
(``mtl_backends.balancers._solvers``) for one coefficient per task.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtl_backends.balancers._solvers import gram
from mtl_backends.balancers.base import GradientBalancer


class CoefficientBalancer(GradientBalancer):
    """A balancer whose task contributions are ``c_t g_t``, coefficients from the Gram matrix.

    Subclasses implement ``coefficients``. After each call ``last_simplex`` holds the weights on the
    simplex the method solved for and ``last_coefficients`` the ``c_t`` applied to the unweighted
    gradients (both float64 ``[T]`` tensors on the host, for inspection and tests).

    Scale convention: every balancer in this package returns, with unit loss weights, a direction
    on the scale of the *sum* of the task gradients (what EW gives), i.e. the paper's direction
    ``d`` (mean scale) times ``T``, as the CAGrad, Nash-MTL and IMGrad code bases do ("to match the
    sum loss"). LibMTL does not multiply by ``T``; the factor is a learning-rate change of ``T``.

    Args:
        weights: ``"after"`` (default) or ``"before"``.
    """

    def __init__(self, weights: str = "after") -> None:
        super().__init__(weights)
        self.last_simplex: Tensor | None = None
        self.last_coefficients: Tensor | None = None

    @abstractmethod
    def coefficients(self, m: np.ndarray, losses: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The simplex weights and the coefficients ``c_t`` (float64 ``[T]``) from ``M``."""

    def contributions(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """``c_t g_t`` for every task."""
        simplex, coef = self.coefficients(gram(jacobian), losses)
        coef = np.where(np.isfinite(coef), coef, 0.0)
        self.last_simplex = torch.from_numpy(simplex)
        self.last_coefficients = torch.from_numpy(coef)
        return self.last_coefficients.to(jacobian)[:, None] * jacobian

    def state_dict(self) -> dict[str, Any]:
        """No state between steps (the last solution is for inspection only)."""
        return {}
