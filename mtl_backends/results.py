"""What training produces: one step's result, one split's evaluation, a fit's history."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


class DivergenceError(FloatingPointError):
    """A task loss became NaN or infinite."""


@dataclass(frozen=True)
class StepResult:
    """What one training step did.

    Attributes:
        step: Index of the step (0-based).
        losses: Raw batch losses ``[T]``.
        weights: Weights used ``[T]``.
        lr: Learning rate of the step.
    """

    step: int
    losses: Tensor
    weights: Tensor
    lr: float


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one split.

    Attributes:
        split: ``train``, ``val`` or ``test``.
        step: Training steps taken when evaluated.
        metrics: Metric name -> value.
        losses: Per-task loss on the whole split.
        delta_m: Δm (%) against the STL reference, if one is set.
        delta_p: Δp (%) against the STL reference, if one is set.
    """

    split: str
    step: int
    metrics: dict[str, float]
    losses: list[float]
    delta_m: float | None = None
    delta_p: float | None = None


@dataclass
class FitHistory:
    """Per-step raw losses and weights of a ``fit`` call, and its evaluations."""

    losses: list[list[float]] = field(default_factory=list)
    weights: list[list[float]] = field(default_factory=list)
    evals: list[EvalResult] = field(default_factory=list)


Reference = dict[str, dict[str, float]]
"""STL reference metrics: split -> metric name -> value."""


__all__ = ["DivergenceError", "EvalResult", "FitHistory", "Reference", "StepResult"]
