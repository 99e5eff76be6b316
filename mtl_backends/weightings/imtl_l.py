"""IMTL-L: learnable loss scales that drive every scaled loss to 1."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtl_backends.weightings._learned import LearnedPerTask
from mtl_backends.weightings.base import StepContext


class IMTLL(LearnedPerTask):
    """Impartial MTL, loss part: learnable scales ``e^{s_t}`` balance the scaled losses.

    Paper: Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial Multi-task Learning",
    ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr, §3.2 (IMTL-L; the gradient part
    IMTL-G is the ``imtl_g`` balancer).

    Formula: with learnable ``s_t`` (initialised at 0) the objective is
    ``Σ_t e^{s_t} L_t − s_t``: weights ``w_t = e^{s_t}`` on the raw losses (1 at the start) and
    ``extra_loss = Σ_t (e^{s_t} L_t.detach() − s_t)``, whose gradient ``e^{s_t} L_t − 1`` moves
    ``s_t`` only (the model gets ``Σ_t w_t ∇L_t`` once, see ``LossWeighting``) and vanishes when the
    scaled loss ``e^{s_t} L_t`` is 1. ``s`` is optimised by the run's optimizer (no weight decay).

    State: ``s`` (a parameter: saved by ``state_dict`` here and by the trainer's optimizer state).
    """

    label = "IMTL-L"

    transform = "identity"

    parameter_name = "log_scales"

    log_scales: nn.Parameter

    def __call__(self, context: StepContext) -> Tensor:
        """``e^{s}`` (detached)."""
        return torch.exp(self.log_scales).detach().clone()

    def extra_loss(self, losses: Tensor) -> Tensor:
        """``Σ_t (e^{s_t} L_t.detach() − s_t)``: gradients for ``s`` only."""
        s = self.log_scales
        return (torch.exp(s) * losses.detach().to(s) - s).sum()


__all__ = ["IMTLL"]
