"""GLS: the geometric mean of the task losses."""

from __future__ import annotations

import torch
from torch import Tensor

from mtl_backends.weightings.base import LossWeighting, StepContext


class GLS(LossWeighting):
    """Geometric loss strategy: minimise the geometric mean of the task losses.

    Paper: Chennupati, Sistu, Yogamani, Rawashdeh, "MultiNet++: Multi-Stream Feature Aggregation and
    Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019,
    https://arxiv.org/abs/1904.08492, Eq. 4.

    Formula: objective ``G = (Π_t (L_t − L*_t))^{1/T}`` (``L* = 0`` for MSE and cross-entropy), as
    weights on the log transform: ``∇G = (G/T) Σ_t ∇ log(L_t − L*_t)``, so ``w_t = G/T`` for every
    task (detached; ``G`` of the current batch from the transformed losses ``log(L − L* + eps)``).
    The weights are equal, so GLS is SI (equal weights on log losses) with the step scaled by
    ``G/T``: the paper's mean-scale objective, as LibMTL (not multiplied by ``T``).
    """

    label = "GLS"

    transform = "log"

    def __call__(self, context: StepContext) -> Tensor:
        """``G/T`` for every task."""
        margins = context.losses.to(torch.float64) - context.progress.lower_bounds.to(torch.float64)
        # The same margin the log transform uses (its eps keeps a loss at its bound finite).
        g = torch.exp(torch.log(margins.clamp_min(0.0) + 1e-8).mean())
        return torch.full((context.n_tasks,), float(g) / context.n_tasks)


__all__ = ["GLS"]
