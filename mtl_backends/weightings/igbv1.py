"""IGBv1: the improvable-gap heuristic."""

from __future__ import annotations

import torch
from torch import Tensor

from mtl_backends.simplex import scaled_softmax
from mtl_backends.weightings.base import LossWeighting, StepContext


def igbv1_weights(gaps: Tensor) -> Tensor:
    """``T * softmax(gaps)``: IGBv1's map from improvable gaps to weights (float64, sums to T)."""
    return scaled_softmax(gaps)


class IGBv1(LossWeighting):
    """Improvable Gap Balancing v1: weight each task by how far it still is from its desired loss.

    Paper: Dai, Fei, Lu, "Improvable Gap Balancing for Multi-Task Learning" (UAI 2023);
    https://arxiv.org/abs/2307.15429, Alg. 1.

    Formula: before the base losses exist, ``w = 1``; afterwards
    ``w = T · softmax((L - L*) / (L_base - L*))`` of the *raw* current-batch losses (no EMA, no log;
    with ``L* = 0`` this is the paper's ``T · softmax(L / L_base)``). The objective is
    ``Σ_t w_t log(L_t - L*_t + eps)`` with ``w`` detached. Weights sum to T.
    """

    label = "IGBv1"

    transform = "log"

    def __call__(self, context: StepContext) -> Tensor:
        """IGBv1 weights of the current batch."""
        gaps = context.progress.gaps
        if not context.progress.has_base or gaps is None:
            return torch.ones(context.n_tasks)
        return igbv1_weights(gaps).to(torch.float32)
