"""GradVac (TorchJD): pairwise gradient corrections toward an EMA target similarity."""

from __future__ import annotations

from typing import Any

import torch

from mtl_backends.balancers._torchjd import TorchJDBalancer


class GradVac(TorchJDBalancer):
    """Gradient vaccine: raise each pair's cosine similarity to its running target.

    Paper: Wang, Tsvetkov, Firat, Cao, "Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models", ICLR 2021, https://arxiv.org/abs/2010.05874
    (TorchJD's ``GradVacWeighting``, whole-model grouping).

    Formula: for each task ``i``, start from ``g̃_i = g_i`` and visit the other tasks ``j`` in a
    random order; with ``φ = cos(g̃_i, g_j)`` and its EMA target ``φ̂_ij``, if ``φ < φ̂_ij`` add
    ``‖g̃_i‖ (φ̂ √(1-φ²) - φ √(1-φ̂²)) / (‖g_j‖ √(1-φ̂²)) · g_j`` to ``g̃_i``; then
    ``φ̂_ij ← (1-β) φ̂_ij + β φ`` (targets start at 0). ``d = Σ_i g̃_i`` (sum scale, as published).
    Computed in Gram form; the visiting orders come from the balancer's generator (see
    ``_torchjd``).

    Args:
        beta: EMA coefficient ``β`` of the targets (default 0.5, TorchJD's and LibMTL's; the paper
            uses 0.01 for its translation models).
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: the targets ``φ̂`` ``[T, T]`` (``None`` before the first step), in ``state_dict``.
    """

    label = "GradVac"

    sum_scale = False
    uses_global_rng = True

    def __init__(self, beta: float = 0.5, weights: str = "after") -> None:
        super().__init__(weights)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"GradVac beta must be in [0, 1], got {beta}")
        self.beta = float(beta)

    def build(self, n_tasks: int) -> Any:
        """TorchJD's ``GradVacWeighting``."""
        from torchjd.aggregation import GradVacWeighting

        return GradVacWeighting(beta=self.beta)

    def state_dict(self) -> dict[str, Any]:
        """The EMA targets ``φ̂`` and the adapter's counter."""
        method = self._ensure_method(int(getattr(self, "n_tasks", 0) or 1))
        phi = method._phi_t
        return {**super().state_dict(), "phi": None if phi is None else phi.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the EMA targets."""
        super().load_state_dict(state)
        method = self._ensure_method(int(getattr(self, "n_tasks", 0) or 1))
        phi = state["phi"]
        if phi is None:
            method.reset()
        else:
            method._phi_t = phi.detach().clone().to(torch.float64)
            method._state_key = (int(phi.shape[0]), torch.float64)

    def __repr__(self) -> str:
        return f"GradVac(beta={self.beta}, weights={self.weights_mode!r})"


__all__ = ["GradVac"]
