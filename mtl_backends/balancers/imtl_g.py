"""IMTL-G (TorchJD): the update whose projections onto every unit task gradient are equal."""

from __future__ import annotations

from typing import Any

from mtl_backends.balancers._torchjd import TorchJDBalancer


class IMTLG(TorchJDBalancer):
    """Impartial MTL, gradient part: ``d`` makes the same projection onto every task's direction.

    Paper: Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial Multi-task Learning",
    ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr (TorchJD's ``IMTLGWeighting``, the
    generalisation to linearly dependent rows of Quinton & Rey, https://arxiv.org/abs/2406.16232).

    Formula: ``v = G⁺ (‖g_1‖, ..., ‖g_T‖)``, ``α = v / Σ_t v_t`` (0 if the sum vanishes),
    ``d = Σ_t α_t g_t``; then ``u_t · d`` is the same for every unit gradient ``u_t = g_t/‖g_t‖``
    (the paper's closed form, with ``G⁺`` the pseudo-inverse). Weights sum to 1 (the paper's); here
    multiplied by ``T`` (sum scale). ``d(sJ) = s d(J)``. No non-conflict guarantee: the common
    projection can be negative.

    Args:
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none.
    """

    label = "IMTL-G"

    def build(self, n_tasks: int) -> Any:
        """TorchJD's ``IMTLGWeighting``."""
        from torchjd.aggregation import IMTLGWeighting

        return IMTLGWeighting()


__all__ = ["IMTLG"]
