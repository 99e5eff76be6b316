"""The gradient-balancer contract: per-task contributions first, then the loss weights."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

WEIGHT_MODES: tuple[str, ...] = ("after", "before")


class GradientBalancer(ABC):
    """Combines per-task gradients of the shared parameters into one update direction.

    A balancer decides each task's *contribution* from the unweighted Jacobian (``contributions``);
    the loss weights then scale those contributions: ``d = Σ_t w_t · contrib_t``. With
    ``weights="before"`` the weights scale the Jacobian rows first and the contributions are summed
    (the IGB paper's combination; it erases or inverts the weights for min-norm balancers and exists
    only to reproduce that paper).

    Args:
        weights: ``"after"`` (default) or ``"before"``.

    Attributes:
        needs_jacobian: Whether the trainer must compute per-task gradients; if False, the trainer
            backpropagates ``Σ_t w_t l_t`` once and never calls the balancer.
        requires_transform: A loss transform the balancer needs (``None``: any).
        label: The name tables show (``None``: the registry name).
    """

    needs_jacobian: ClassVar[bool] = True
    requires_transform: ClassVar[str | None] = None
    label: ClassVar[str | None] = None

    def __init__(self, weights: str = "after") -> None:
        if weights not in WEIGHT_MODES:
            raise ValueError(
                f"unknown weights mode {weights!r}; valid choices: {', '.join(WEIGHT_MODES)}"
            )
        self.weights_mode = weights

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Prepare for a new run with ``n_tasks`` tasks; random draws come from ``generator``."""
        self.n_tasks = n_tasks
        self.generator = generator

    def __call__(self, jacobian: Tensor, weights: Tensor, losses: Tensor) -> Tensor:
        """The update direction ``[P]``.

        Args:
            jacobian: Per-task gradients of the (transformed) losses ``[T, P]``.
            weights: Loss weights ``[T]``.
            losses: Raw losses ``[T]`` (some balancers look at them).
        """
        weights = weights.to(jacobian)
        if self.weights_mode == "before":
            return self.contributions(weights[:, None] * jacobian, losses).sum(dim=0)
        return weights @ self.contributions(jacobian, losses)

    @abstractmethod
    def contributions(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """Each task's contribution ``[T, P]`` to the direction, from the unweighted Jacobian."""

    def head_scales(self) -> Tensor | None:
        """Per-task factors ``h_t`` of the heads' gradients (``None``: all 1); read after a call."""
        return None

    def diagnostics(self) -> dict[str, float]:
        """Counters a run reports with its results, e.g. solver failures (default: none).

        Experiment cells record them (``diagnostics`` in a cell record), so a method that falls
        back to an approximate solution says how often it did.
        """
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State needed to resume exactly (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights={self.weights_mode!r})"
