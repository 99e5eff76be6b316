"""IMTL-L: learnable loss scales that drive every scaled loss to 1."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mtl_backends.weightings.base import LossWeighting, StepContext


class IMTLL(LossWeighting):
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

    def __init__(self) -> None:
        self.log_scales = nn.Parameter(torch.zeros(0))

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """``s = 0`` for ``n_tasks`` tasks (a new parameter: build the optimizer after this)."""
        super().reset(n_tasks, generator)
        self.log_scales = nn.Parameter(torch.zeros(n_tasks))

    def parameters(self) -> list[nn.Parameter]:
        """The log-scales ``s``."""
        return [self.log_scales]

    def __call__(self, context: StepContext) -> Tensor:
        """``e^{s}`` (detached)."""
        return torch.exp(self.log_scales).detach().clone()

    def extra_loss(self, losses: Tensor) -> Tensor:
        """``Σ_t (e^{s_t} L_t.detach() − s_t)``: gradients for ``s`` only."""
        s = self.log_scales
        return (torch.exp(s) * losses.detach().to(s) - s).sum()

    def state_dict(self) -> dict[str, Any]:
        """``s``."""
        return {"log_scales": self.log_scales.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``s`` in place."""
        with torch.no_grad():
            self.log_scales.copy_(state["log_scales"])


__all__ = ["IMTLL"]
