"""UW: uncertainty weighting with learnable log-variances."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtl_backends.weightings._learned import LearnedPerTask
from mtl_backends.weightings.base import StepContext


class UW(LearnedPerTask):
    """Uncertainty weighting: each task's loss divided by a learned (homoscedastic) variance.

    Paper: Kendall, Gal, Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
    Geometry and Semantics", CVPR 2018, https://arxiv.org/abs/1705.07115, Eq. 7.

    Formula: with learnable ``s_t = log σ_t²`` (initialised at 0), the objective is
    ``Σ_t ½ e^{-s_t} L_t + ½ s_t`` (the paper's regression form for every task, as LibMTL and the
    Nash-MTL code), i.e. weights ``w_t = ½ e^{-s_t}`` on the raw losses (sum ``T/2`` at the start)
    and ``extra_loss = Σ_t ½ (e^{-s_t} L_t.detach() + s_t)``. The detached ``L_t`` is why the model
    gets each task's gradient once: ``w`` is detached in the weighted sum, so the model sees
    ``Σ_t w_t ∇L_t`` from it alone, and the extra term only moves ``s`` (its gradient
    ``½ (1 − e^{-s_t} L_t)`` vanishes at ``s_t = log L_t``). Together they are exactly the
    gradient of the paper's joint objective. ``s`` is optimised by the run's optimizer (a parameter
    group without weight decay).

    State: ``s`` (a parameter: saved by ``state_dict`` here and by the trainer's optimizer state).
    """

    label = "UW"

    transform = "identity"

    parameter_name = "log_vars"

    log_vars: nn.Parameter

    def __call__(self, context: StepContext) -> Tensor:
        """``½ e^{-s}`` (detached)."""
        return (0.5 * torch.exp(-self.log_vars)).detach().clone()

    def extra_loss(self, losses: Tensor) -> Tensor:
        """``Σ_t ½ (e^{-s_t} L_t.detach() + s_t)``: gradients for ``s`` only."""
        s = self.log_vars
        return (0.5 * (torch.exp(-s) * losses.detach().to(s) + s)).sum()


__all__ = ["UW"]
