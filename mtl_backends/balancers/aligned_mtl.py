"""Aligned-MTL (TorchJD): task gradients made orthogonal with equal norms before averaging."""

from __future__ import annotations

from typing import Any

from mtl_backends.balancers._torchjd import TorchJDBalancer

ALIGNED_MTL_SCALES: tuple[str, ...] = ("min", "median", "rmse")


class AlignedMTL(TorchJDBalancer):
    """Aligned-MTL: the mean of the task gradients after aligning their principal components.

    Paper: Senushkin, Patakin, Kuznetsov, Konushin, "Independent Component Alignment for
    Multi-Task Learning", CVPR 2023, https://arxiv.org/abs/2305.19000, Alg. 1 (TorchJD's
    ``AlignedMTLWeighting``).

    Formula: ``G = V Λ Vᵀ`` (rank ``r``, eigenvalues above ``λ_max · T · eps``),
    ``B = √σ V Λ^{-1/2} Vᵀ`` with ``σ = λ_min`` (``scale_mode="min"``, the paper's Algorithm 1),
    the median, or the mean (``"rmse"``, the authors' released code); ``α = B 1/T``,
    ``d = Σ_t α_t g_t``. The aligned gradients ``ĝ_t = Σ_s B_st g_s`` are orthogonal with equal norm
    ``√σ`` (condition number 1) when ``J`` has full rank. TorchJD's mean preference ``1/T``; here
    multiplied by ``T`` (sum scale). ``d(sJ) = s d(J)``.

    Args:
        scale_mode: ``"min"`` (default, the paper), ``"median"`` or ``"rmse"`` (released code).
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none.
    """

    label = "Aligned-MTL"

    def __init__(self, scale_mode: str = "min", weights: str = "after") -> None:
        super().__init__(weights)
        if scale_mode not in ALIGNED_MTL_SCALES:
            raise ValueError(
                f"unknown Aligned-MTL scale_mode {scale_mode!r}; "
                f"valid choices: {', '.join(ALIGNED_MTL_SCALES)}"
            )
        self.scale_mode = scale_mode

    def build(self, n_tasks: int) -> Any:
        """TorchJD's ``AlignedMTLWeighting`` (mean preference)."""
        from torchjd.aggregation import AlignedMTLWeighting

        return AlignedMTLWeighting(scale_mode=self.scale_mode)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"AlignedMTL(scale_mode={self.scale_mode!r}, weights={self.weights_mode!r})"


__all__ = ["ALIGNED_MTL_SCALES", "AlignedMTL"]
