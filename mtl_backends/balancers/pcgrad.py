"""PCGrad: projecting conflicting gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from mtl_backends.balancers.base import GradientBalancer
from mtl_backends.rng import method_generator


class PCGrad(GradientBalancer):
    """Gradient surgery: each task gradient drops its components along conflicting task gradients.

    The other tasks are visited in a random order.

    Paper: Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task Learning",
    NeurIPS 2020, https://arxiv.org/abs/2001.06782.

    Formula: for each task ``i``, start from ``g̃_i = g_i`` and, for ``j ≠ i`` in a random order,
    if ``g̃_i·g_j < 0`` set ``g̃_i ← g̃_i - (g̃_i·g_j / ‖g_j‖²) g_j`` (projections onto the *original*
    ``g_j``, as in the paper). Contribution of task ``i``: ``g̃_i``; with unit weights
    ``d = Σ_i g̃_i``. Computed in coefficient space on the Gram matrix: ``g̃_i = Σ_k A_ik g_k`` and
    the contributions are ``A J``, so the cost beyond the Jacobian is ``O(T³)``. Zero gradients are
    never projected onto.

    Args:
        weights: ``"after"`` (default) or ``"before"`` (IGB paper reproduction only).

    State: the ``torch.Generator`` given to ``reset`` (the trainer saves its state); without one, a
    generator seeded with 0 is used. One permutation of the other tasks per task per step.
    """

    label = "PCGrad"

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Prepare for ``n_tasks`` tasks; the projection orders are drawn from ``generator``."""
        super().reset(
            n_tasks, generator if generator is not None else torch.Generator().manual_seed(0)
        )

    def contributions(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """The projected gradients ``g̃_i`` ``[T, P]``."""
        n = jacobian.shape[0]
        j64 = jacobian.to(torch.float64)
        m = (j64 @ j64.T).cpu()
        diag = torch.diagonal(m)
        tiny = 1e-30 * max(float(diag.max()), 1e-300) if n else 0.0
        gen = method_generator(self)
        a = torch.eye(n, dtype=torch.float64)
        for i in range(n):
            order = torch.randperm(n, generator=gen).tolist()
            for j in order:
                if j == i or float(diag[j]) <= tiny:
                    continue
                dot = float(a[i] @ m[:, j])
                if dot < 0.0:
                    a[i, j] -= dot / float(diag[j])
        self.last_matrix = a
        return a.to(jacobian) @ jacobian
