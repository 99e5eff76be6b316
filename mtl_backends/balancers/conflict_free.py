"""ConFIG (TorchJD): the conflict-free update at equal angles to every task gradient."""

from __future__ import annotations

from typing import Any

from mtl_backends.balancers._torchjd import TorchJDBalancer


class ConFIG(TorchJDBalancer):
    """Conflict-free inverse gradients: ``d`` makes the same angle with every task gradient.

    Paper: Liu, Chu, Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks", ICLR 2025, https://arxiv.org/abs/2408.11104, Eq. 2 (TorchJD's ``ConFIG``,
    adapted from the authors' code). Registry name ``config``.

    Formula: unit rows ``u_t = g_t/‖g_t‖``, ``b = U⁺ 1`` (pseudo-inverse), ``e = b/‖b‖``,
    ``d = (Σ_t g_t · e) e``. When the rows are linearly independent ``u_t · e`` is the same
    positive number for every task (no conflict, equal angles). TorchJD returns the direction only;
    the coefficients are the least-squares solution of ``Jᵀc = d`` (exact: ``d`` lies in the row
    space). Sum scale as published (``d`` is the projection of ``Σ_t g_t`` on ``e``).
    ``d(sJ) = s d(J)``.

    Args:
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none.
    """

    label = "ConFIG"

    torchjd_input = "aggregator"
    sum_scale = False

    def build(self, n_tasks: int) -> Any:
        """TorchJD's ``ConFIG`` aggregator (unit preference)."""
        from torchjd.aggregation import ConFIG as TorchJDConFIG

        return TorchJDConFIG()


__all__ = ["ConFIG"]
