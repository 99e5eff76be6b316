"""Equal weighting."""

from __future__ import annotations

import torch
from torch import Tensor

from mtl_backends.weightings.base import LossWeighting, StepContext


class EW(LossWeighting):
    """Equal weighting of the raw losses: the plain multi-task baseline.

    Formula: ``w_t = 1``, objective ``Σ_t L_t`` (weights sum to T; LibMTL's docstring says 1/T
    but its code uses 1, as we do).
    """

    label = "EW"

    transform = "identity"

    def __call__(self, context: StepContext) -> Tensor:
        """Unit weights."""
        return torch.ones(context.n_tasks)
