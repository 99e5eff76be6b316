"""No balancing: the weighted sum of task gradients."""

from __future__ import annotations

from torch import Tensor

from mtl_backends.balancers.base import GradientBalancer


class Sum(GradientBalancer):
    """The null balancer: ``d = Σ_t w_t g_t``, computed by one backward pass of ``Σ_t w_t l_t``.

    ``needs_jacobian`` is False, so loss-only weightings cost one backward pass. Called with an
    explicit Jacobian it returns the same direction (each task contributes its own gradient).
    """

    label = "sum"

    needs_jacobian = False

    def contributions(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """Each task contributes its own gradient."""
        return jacobian
