"""Tuned static weighting: constant weights searched on training instances, then frozen.

``TunedStatic(weights)`` is the frozen weighting (registry name ``tuned_static``); the search
(``mtl_backends.tuning.tune_static_weights``) trains one run per candidate and training seed and
keeps the candidate with the best mean validation Δm. It is the fair control for a learned
weighting policy: part of what a policy gains can be a static bias, which a constant-weight
baseline tuned on the same training instances also captures.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtl_backends.weightings.base import LossWeighting, StepContext


class TunedStatic(LossWeighting):
    """Constant weights on the log losses, chosen beforehand (e.g. by ``mtl_backends.tuning``).

    Formula: ``w = T · c / Σ_t c_t`` for the given positive constants ``c`` at every step (base
    window included); the objective is ``Σ_t w_t log(L_t − L*_t + eps)``. Weights sum to ``T``
    (given weights are rescaled to that sum).

    Args:
        weights: One positive, finite constant per task.

    Raises:
        ValueError: Empty, non-positive or non-finite weights, or a task count that differs from
            the run's at ``reset``.
    """

    label = "tuned static"

    transform = "log"

    def __init__(self, weights: Sequence[float]) -> None:
        w = torch.as_tensor([float(v) for v in weights], dtype=torch.float64)
        if w.numel() == 0 or not bool(torch.isfinite(w).all()) or not bool((w > 0).all()):
            raise ValueError(f"tuned_static weights must be positive and finite, got {w.tolist()}")
        self.weights = (w.numel() * w / w.sum()).to(torch.float32)

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Check that the weights match the run's ``n_tasks``."""
        if n_tasks != self.weights.numel():
            raise ValueError(
                f"tuned_static has {self.weights.numel()} weights but the run has {n_tasks} tasks"
            )
        super().reset(n_tasks, generator)

    def __call__(self, context: StepContext) -> Tensor:
        """The frozen weights."""
        return self.weights.clone()

    def __repr__(self) -> str:
        return f"TunedStatic(weights={[round(v, 6) for v in self.weights.tolist()]})"


__all__ = ["TunedStatic"]
