"""MGDA: the minimum-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from mtl_backends.balancers._coefficient import CoefficientBalancer
from mtl_backends.balancers._solvers import min_norm_simplex

MGDA_NORMALISATIONS: tuple[str, ...] = ("none", "l2", "loss", "loss+")


class MGDA(CoefficientBalancer):
    """Multiple-gradient descent: the min-norm convex combination of the task gradients.

    Paper: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018,
    https://arxiv.org/abs/1810.04650.

    Formula: with ``ĝ_t = g_t / n_t`` (``n_t``: 1, ``‖g_t‖``, ``L_t`` or ``L_t ‖g_t‖`` for
    ``normalize`` = ``none``, ``l2``, ``loss``, ``loss+``), ``λ = argmin_{λ ∈ Δ} ‖Σ_t λ_t ĝ_t‖²``
    solved exactly on the Gram matrix (``_solvers.min_norm_simplex``: closed form for two tasks,
    Lawson–Hanson active set otherwise); contribution ``c_t g_t`` with ``c_t = T λ_t / n_t``
    (sum-scale convention of ``CoefficientBalancer``), i.e. ``d = T Σ_t λ_t ĝ_t``. With unit
    weights the direction has ``ĝ_t · d >= ‖d‖² / T >= 0`` for every task, so ``J d >= 0`` (no task
    gets worse to first order) for every normalisation; weights applied after the balancer void
    that guarantee.

    F-MGDA (``{name: mgda, flat_rho: 2}``, ``mtl_backends.updates.flat``) runs two MGDA instances,
    one on the loss gradients ``g`` and one on the flat parts ``h = g^SAM − g``. The authors'
    releases (Phan et al., FS-MTL) differ here: the NYUv2 release L2-normalises every task's ``g``
    and ``h`` before each min-norm solve and returns ``T Σ_t (λ_t ĝ_t + λ'_t ĥ_t)``, which is
    ``{name: mgda, normalize: l2, flat_rho: 2}`` exactly; the Cityscapes release solves on the raw
    ``g`` and ``h``, which is the default ``normalize: none``.

    Args:
        normalize: Gradient normalisation before the min-norm solve: ``"none"`` (default, as
            LibMTL and the FS-MTL Cityscapes release), ``"l2"`` (the FS-MTL NYUv2 release),
            ``"loss"`` (raw loss) or ``"loss+"`` (raw loss times gradient norm).
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: none.
    """

    label = "MGDA"

    def __init__(self, normalize: str = "none", weights: str = "after") -> None:
        super().__init__(weights)
        if normalize not in MGDA_NORMALISATIONS:
            raise ValueError(
                f"unknown MGDA normalize {normalize!r}; "
                f"valid choices: {', '.join(MGDA_NORMALISATIONS)}"
            )
        self.normalize = normalize

    def _normalisers(self, m: np.ndarray, losses: Tensor) -> np.ndarray:
        n = m.shape[0]
        norms = np.sqrt(np.maximum(np.diag(m), 0.0))
        raw = losses.detach().double().cpu().numpy().reshape(-1)
        if self.normalize == "none":
            out = np.ones(n)
        elif self.normalize == "l2":
            out = norms
        elif self.normalize == "loss":
            out = np.abs(raw)
        else:
            out = np.abs(raw) * norms
        # A zero normaliser (zero gradient or zero loss) leaves that task unnormalised.
        return np.where(np.isfinite(out) & (out > 1e-30), out, 1.0)

    def coefficients(self, m: np.ndarray, losses: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Exact min-norm simplex weights ``λ`` and coefficients ``T λ_t / n_t``."""
        norm = self._normalisers(m, losses)
        lam = min_norm_simplex(m / np.outer(norm, norm))
        return lam, m.shape[0] * lam / norm

    def __repr__(self) -> str:
        return f"MGDA(normalize={self.normalize!r}, weights={self.weights_mode!r})"
