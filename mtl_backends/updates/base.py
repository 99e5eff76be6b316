"""The update-rule contract: how one training step's weighted losses become parameter gradients.

The trainer chooses a rule once, when it is built (``make_update_rule``): ``sum`` (one backward
pass of ``Σ_t w_t l_t``) for balancers that need no per-task gradients, ``jacobian`` (per-task
gradients of the shared parameters combined by the balancer) otherwise, and ``flat``
(the sharpness-aware wrapper of Phan et al. around the balancer) when ``TrainConfig.flat_rho`` is
set. A rule writes ``.grad`` of the model's parameters (and of a weighting's own learnable
parameters); the trainer then clips and takes the optimizer step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from mtl_backends.balancers.base import GradientBalancer
from mtl_backends.models.hps import HardParameterSharing

LossFn = Callable[[Any, Tensor], Tensor]
"""``(model outputs, targets) -> transformed task losses [T]`` (for rules that re-run forwards)."""


@dataclass(frozen=True)
class Parameters:
    """The parameter groups an update rule writes gradients to.

    Attributes:
        model: The hard-parameter-sharing model.
        shared: Shared parameters (the Jacobian's columns).
        task: Parameters of the task heads.
        extra: A weighting's own learnable parameters (UW's log-variances, FAMO's logits).
    """

    model: HardParameterSharing
    shared: list[nn.Parameter]
    task: list[nn.Parameter]
    extra: list[nn.Parameter]


@dataclass(frozen=True)
class StepInputs:
    """What one step gives its update rule.

    Attributes:
        transformed: Transformed task losses ``[T]`` (with their graph).
        weights: Loss weights ``[T]``.
        losses: Raw task losses ``[T]`` (detached; some balancers look at them).
        extra: A weighting's extra objective term (``None``: none).
        inputs: The batch's inputs.
        targets: The batch's targets.
    """

    transformed: Tensor
    weights: Tensor
    losses: Tensor
    extra: Tensor | None
    inputs: Tensor
    targets: Tensor


class UpdateRule(ABC):
    """Writes one step's gradients into ``.grad`` (the optimizer step is the trainer's).

    Args:
        params: The parameter groups.
        balancer: The run's gradient balancer.
    """

    name: str

    def __init__(self, params: Parameters, balancer: GradientBalancer) -> None:
        self.params = params
        self.balancer = balancer

    @abstractmethod
    def backward(self, step: StepInputs) -> None:
        """Set ``.grad`` of every parameter that the step updates."""

    def state_dict(self) -> dict[str, Any]:
        """State to resume exactly (default: none; the balancer's own state is the trainer's)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.balancer!r})"


__all__ = ["LossFn", "Parameters", "StepInputs", "UpdateRule"]
