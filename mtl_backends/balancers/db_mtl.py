"""DB-MTL: dual balancing (log losses, EMA gradients rescaled to the largest norm)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mtl_backends.balancers.base import GradientBalancer


class DBMTL(GradientBalancer):
    """Dual-balancing: log losses, and every task's EMA gradient rescaled to the largest norm.

    Paper: Lin, Ye, Xu, Shi, Zhang, Kwok, "Dual-Balancing for Multi-Task Learning", Neural Networks
    2025, https://arxiv.org/abs/2308.12029.

    Formula: on the log-transformed losses (``requires_transform = "log"``), at step
    ``k = 1, 2, ...``: ``β_k = beta / k**beta_sigma``,
    ``ĝ_{t,k} = β_k ĝ_{t,k-1} + (1 - β_k) g_{t,k}`` (``ĝ_{t,0} = 0``, no bias correction);
    contribution ``max_s‖ĝ_{s,k}‖ · ĝ_{t,k} / (‖ĝ_{t,k}‖ + 1e-8)``, so with unit weights
    ``d = α_k Σ_t ĝ_t/‖ĝ_t‖`` with ``α_k = max_t‖ĝ_t‖`` (sum scale, as in the paper).

    Defaults: ``beta = 0.9, beta_sigma = 0.5`` (``β_k = 0.9/√k``), the paper's best ``c/√k`` family
    (any ``c/√k`` is good on Office-31; constant β = 0.9, LibMTL's default ``DB_beta_sigma = 0``, is
    the worst setting of the paper's sweep).

    Args:
        beta: EMA coefficient numerator ``c``.
        beta_sigma: Decay exponent ``σ`` of ``β_k = beta / k**σ`` (0: constant ``beta``).
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only; the max-norm
            rescaling then erases the weights).

    State: ``step`` (``k`` of the last update) and ``ema`` (``[T, P]`` EMA gradients, on the
    Jacobian's device), both in ``state_dict``.
    """

    label = "DB-MTL"

    requires_transform = "log"

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.5, weights: str = "after") -> None:
        super().__init__(weights)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"DB-MTL beta must be in [0, 1], got {beta}")
        if beta_sigma < 0:
            raise ValueError(f"DB-MTL beta_sigma must be >= 0, got {beta_sigma}")
        self.beta = float(beta)
        self.beta_sigma = float(beta_sigma)
        self.step = 0
        self.ema: Tensor | None = None

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Clear the EMA for a new run."""
        super().reset(n_tasks, generator)
        self.step = 0
        self.ema = None

    def beta_k(self, k: int) -> float:
        """The EMA coefficient ``β_k`` of step ``k`` (1-based)."""
        return self.beta / float(k) ** self.beta_sigma

    def contributions(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """Update the EMA with ``jacobian`` and return the max-norm-rescaled EMA gradients."""
        self.step += 1
        beta = self.beta_k(self.step)
        if self.ema is None or self.ema.shape != jacobian.shape:
            self.ema = torch.zeros_like(jacobian)
        self.ema = beta * self.ema + (1.0 - beta) * jacobian.detach()
        norms = torch.linalg.vector_norm(self.ema, dim=1)
        scale = norms.max() / (norms + 1e-8)
        return scale[:, None] * self.ema

    def state_dict(self) -> dict[str, Any]:
        """``step`` and the EMA gradients (``None`` before the first step)."""
        return {"step": self.step, "ema": None if self.ema is None else self.ema.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``step`` and the EMA."""
        self.step = int(state["step"])
        ema = state["ema"]
        self.ema = None if ema is None else ema.clone()

    def __repr__(self) -> str:
        return (
            f"DBMTL(beta={self.beta}, beta_sigma={self.beta_sigma}, weights={self.weights_mode!r})"
        )
