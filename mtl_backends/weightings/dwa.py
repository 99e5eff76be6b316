"""DWA: dynamic weight average of the epoch losses' rates of change."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mtl_backends.weightings.base import LossWeighting, StepContext


class DWA(LossWeighting):
    """Dynamic weight average: up-weight the tasks whose epoch loss fell least.

    Paper: Liu, Johns, Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019,
    https://arxiv.org/abs/1803.10704, Eq. 7.

    Formula: ``r_t = L̄_t(e−1) / L̄_t(e−2)`` with ``L̄_t(e)`` the mean raw training loss of task
    ``t`` over the steps of epoch ``e``; ``w_t(e) = T exp(r_t/τ) / Σ_s exp(r_s/τ)`` in epoch ``e``
    (weights sum to ``T``, as the paper's ``K``), ``w = 1`` in the first two epochs; ``τ = 2``.
    Objective ``Σ_t w_t L_t``. The epoch means include every step the weighting saw
    (``after_step``), whatever weights those steps used.

    Args:
        temperature: ``τ`` (default 2, the paper's).

    State: the running sums of the current epoch and the means of the last two finished epochs.
    """

    label = "DWA"

    transform = "identity"

    def __init__(self, temperature: float = 2.0) -> None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"DWA temperature must be positive and finite, got {temperature}")
        self.temperature = float(temperature)
        self._clear()

    def _clear(self) -> None:
        self.epoch = -1
        self.sums: Tensor | None = None
        self.count = 0
        # Epoch index -> mean losses of that (finished) epoch; the last two are kept.
        self.means: dict[int, Tensor] = {}

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Forget all epochs."""
        super().reset(n_tasks, generator)
        self._clear()

    def __call__(self, context: StepContext) -> Tensor:
        """``T softmax(r/τ)`` from the last two finished epochs, 1 before."""
        e = context.epoch
        before, last = self.means.get(e - 2), self.means.get(e - 1)
        if before is None or last is None:
            return torch.ones(context.n_tasks)
        # A task whose epoch loss was exactly 0 has no rate of change: ratio 1 (neutral).
        ratio = torch.where(before > 0, last / before.clamp_min(1e-300), torch.ones_like(last))
        return (context.n_tasks * torch.softmax(ratio / self.temperature, dim=0)).to(torch.float32)

    def after_step(self, context: StepContext) -> None:
        """Add this step's losses to its epoch's sums; finish the epoch on its last step."""
        if context.epoch != self.epoch:
            self.epoch, self.sums, self.count = context.epoch, None, 0
        losses = context.losses.detach().to("cpu", torch.float64)
        self.sums = losses.clone() if self.sums is None else self.sums + losses
        self.count += 1
        if (context.step + 1) % context.steps_per_epoch == 0:
            self.means[context.epoch] = self.sums / self.count
            self.means = {k: v for k, v in self.means.items() if k >= context.epoch - 1}

    def state_dict(self) -> dict[str, Any]:
        """Current epoch, its sums and count, and the finished epochs' means."""
        return {
            "epoch": self.epoch,
            "sums": None if self.sums is None else self.sums.clone(),
            "count": self.count,
            "means": {int(k): v.clone() for k, v in self.means.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.epoch = int(state["epoch"])
        self.sums = None if state["sums"] is None else state["sums"].clone()
        self.count = int(state["count"])
        self.means = {int(k): v.clone() for k, v in state["means"].items()}

    def __repr__(self) -> str:
        return f"DWA(temperature={self.temperature})"


__all__ = ["DWA"]
