"""FAMO: fast adaptive multitask optimization (loss-only weighting with its own logits)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mtl_backends.weightings.base import LossWeighting, StepContext


class FAMO(LossWeighting):
    """FAMO: weights that equalise the tasks' log-loss decrease, learned from loss changes only.

    Paper: Liu, Feng, Stone, Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023,
    https://arxiv.org/abs/2306.03792, Alg. 1; the authors' ``FAMO`` class (``famo.py``).

    Formula: logits ``ξ`` (initialised at 0), ``z = softmax(ξ)``; with
    ``D_t = L_t − L*_t + eps`` (the log transform's margin), ``c = Σ_t z_t / D_t`` and weights
    ``w_t = z_t / c`` on the log losses, so the step follows ``Σ_t (z_t/c) ∇ log D_t`` (weights on
    the authors' mean scale: with equal ``z`` and ``D`` the gradient is the mean of ``∇L_t``).
    After the optimizer step the same batch is evaluated again (``StepContext.batch_losses``: one
    forward pass without gradients, as the authors' training scripts do) and
    ``δ_t = log D_t(before) − log D_t(after)``; ``ξ`` takes one Adam step (learning rate
    ``w_lr``, weight decay ``gamma``) along ``∇_ξ softmax(ξ)ᵀ δ`` (``J_softmaxᵀ δ``), the authors'
    update. Outside ``MTLTrainer`` (no ``batch_losses``) the logits stay at 0 (equal shares ``z``).

    The authors' class also clips the shared gradient norm to ``max_norm = 1``; here clipping is
    the run's ``train.grad_clip`` (not set by a weighting).

    Args:
        w_lr: Adam learning rate of the logits (default 0.025, the authors').
        gamma: Adam weight decay of the logits (default 0.01, the authors' class default; the
            paper tunes it per benchmark).

    State: the logits, their Adam state and the last weighted step's losses, in ``state_dict``.
    """

    label = "FAMO"

    transform = "log"

    def __init__(self, w_lr: float = 0.025, gamma: float = 0.01) -> None:
        if not (math.isfinite(w_lr) and w_lr > 0):
            raise ValueError(f"FAMO w_lr must be positive and finite, got {w_lr}")
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"FAMO gamma must be >= 0 and finite, got {gamma}")
        self.w_lr = float(w_lr)
        self.gamma = float(gamma)
        self._init_logits(0)

    def _init_logits(self, n_tasks: int) -> None:
        self.logits = torch.zeros(n_tasks, dtype=torch.float64, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)
        self._pending: Tensor | None = None
        self.updates = 0

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Logits at 0 and a fresh Adam state."""
        super().reset(n_tasks, generator)
        self._init_logits(n_tasks)

    def _margins(self, context: StepContext, losses: Tensor) -> Tensor:
        lower = context.progress.lower_bounds.to(torch.float64)
        return (losses.detach().to("cpu", torch.float64) - lower).clamp_min(0.0) + 1e-8

    def __call__(self, context: StepContext) -> Tensor:
        """``z_t / Σ_s (z_s / D_s)`` of the current batch."""
        if self.logits.numel() != context.n_tasks:
            self._init_logits(context.n_tasks)
        z = torch.softmax(self.logits.detach(), dim=0)
        d = self._margins(context, context.losses)
        self._pending = d.clone()
        return (z / (z / d).sum()).to(torch.float32)

    def after_step(self, context: StepContext) -> None:
        """One Adam step of the logits from the log-loss decrease on this step's batch."""
        before, self._pending = self._pending, None
        if before is None or context.batch_losses is None:
            return  # weights given explicitly this step, or no trainer to re-evaluate the batch
        delta = torch.log(before) - torch.log(self._margins(context, context.batch_losses()))
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(
                torch.softmax(self.logits, dim=0), self.logits, grad_outputs=delta
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.logits.grad = grad
        self.optimizer.step()
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """Logits, their Adam state and the update counter."""
        return {
            "logits": self.logits.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self._init_logits(int(state["logits"].numel()))
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])

    def __repr__(self) -> str:
        return f"FAMO(w_lr={self.w_lr}, gamma={self.gamma})"


__all__ = ["FAMO"]
