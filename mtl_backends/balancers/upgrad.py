"""UPGrad (TorchJD): every task gradient projected onto the dual cone of all of them, averaged."""

from __future__ import annotations

from typing import Any

from mtl_backends.balancers._torchjd import TorchJDBalancer


class UPGrad(TorchJDBalancer):
    """Unconflicting projection of gradients: the mean of each gradient's projection onto the cone.

    Paper: Quinton, Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
    https://arxiv.org/abs/2406.16232 (TorchJD's ``UPGradWeighting``).

    Formula: ``d = (1/T) Σ_i π_J(g_i)``, with ``π_J(g)`` the projection of ``g`` onto the dual cone
    ``{x : J x >= 0}``, computed in Gram form (``π_J(Jᵀe_i) = Jᵀv_i``,
    ``v_i = argmin_{v >= e_i} vᵀGv``, TorchJD's quadprog projector on ``G`` normalised by its trace
    plus ``1e-4 I``); here multiplied by ``T`` (sum scale). With unit weights ``J d >= 0`` (no task
    gets worse to first order) and ``d(sJ) = s d(J)``.

    Args:
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none.
    """

    label = "UPGrad"

    def build(self, n_tasks: int) -> Any:
        """TorchJD's ``UPGradWeighting`` (mean preference)."""
        from torchjd.aggregation import UPGradWeighting

        return UPGradWeighting()


__all__ = ["UPGrad"]
