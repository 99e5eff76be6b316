"""DualProj (TorchJD): the mean gradient projected onto the dual cone of the task gradients."""

from __future__ import annotations

from typing import Any

from mtl_backends.balancers._torchjd import TorchJDBalancer


class DualProj(TorchJDBalancer):
    """Dual-cone projection of the mean gradient (GEM's projection applied to multi-task learning).

    Paper: Lopez-Paz, Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017,
    https://arxiv.org/abs/1706.08840, Eq. 11; as a multi-task aggregator in Quinton, Rey,
    https://arxiv.org/abs/2406.16232 (TorchJD's ``DualProjWeighting``).

    Formula: ``d = π_J(g_0)`` with ``g_0 = (1/T) Σ_t g_t`` and ``π_J`` the projection onto the dual
    cone ``{x : J x >= 0}`` (Gram form, TorchJD's quadprog projector); here multiplied by ``T``
    (sum scale). With unit weights ``J d >= 0`` and ``d(sJ) = s d(J)``.

    Args:
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none.
    """

    label = "DualProj"

    def build(self, n_tasks: int) -> Any:
        """TorchJD's ``DualProjWeighting`` (mean preference)."""
        from torchjd.aggregation import DualProjWeighting

        return DualProjWeighting()


__all__ = ["DualProj"]
