"""The ``sum`` update: one backward pass of the weighted objective (no per-task gradients)."""

from __future__ import annotations

from mtl_backends.updates.base import StepInputs, UpdateRule


class SumUpdate(UpdateRule):
    """``∇ (Σ_t w_t l_t + extra)`` by one backward pass: what every loss weighting costs alone.

    Used when the balancer declares ``needs_jacobian = False`` (``sum``); the balancer is never
    called.
    """

    name = "sum"

    def backward(self, step: StepInputs) -> None:
        """Backpropagate the weighted objective to every parameter."""
        objective = (step.weights * step.transformed).sum()
        if step.extra is not None:
            objective = objective + step.extra
        objective.backward()


__all__ = ["SumUpdate"]
