"""Scale-invariant weighting (equal weights on log losses)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtl_backends.weightings.base import LossWeighting, StepContext


class SI(LossWeighting):
    """Scale-invariant loss: equal weights on log losses, so a task's gradient is ``∇L_t / L_t``.

    Paper: Navon et al., "Multi-Task Learning as a Bargaining Game" (ICML 2022), baseline "SI";
    https://arxiv.org/abs/2202.01017. Formula: ``w_t = 1``, objective ``Σ_t log(L_t - L*_t + eps)``.
    """

    label = "SI"

    transform = "log"

    def __call__(self, context: StepContext) -> Tensor:
        """Unit weights (on the log transform)."""
        return torch.ones(context.n_tasks)
