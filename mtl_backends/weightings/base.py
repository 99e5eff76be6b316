"""The loss-weighting contract (``docs/architecture.md``, "One training step")."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from mtl_backends.gaps import GapTracker


@dataclass(frozen=True)
class StepContext:
    """What a weighting sees when it decides the weights of the current batch.

    Attributes:
        losses: Raw losses of the current batch ``[T]`` (detached).
        progress: The gap tracker, which has already absorbed ``losses``.
        step: Index of the current training step (0-based).
        epoch: Index of the current epoch (0-based).
        steps_per_epoch: Training steps per epoch.
        lr_ratio: Current learning rate / initial learning rate, in [0, 1].
        shared_parameters: The model's shared parameters, in the encoder's order (what GradNorm
            differentiates; empty outside ``MTLTrainer``).
        batch_losses: Recomputes the raw losses ``[T]`` of the current batch at the parameters
            as they are when it is called: one forward pass without gradients (FAMO calls it in
            ``after_step`` for the losses after the update; ``None`` outside ``MTLTrainer``).
            Nothing else calls it, so it costs the other methods nothing.
    """

    losses: Tensor
    progress: GapTracker
    step: int
    epoch: int
    steps_per_epoch: int
    lr_ratio: float
    shared_parameters: Sequence[Tensor] = ()
    batch_losses: Callable[[], Tensor] | None = None

    @property
    def n_tasks(self) -> int:
        """Number of tasks ``T``."""
        return int(self.losses.shape[0])


class LossWeighting(ABC):
    """Decides per-task loss weights from the training state; costs no extra backward pass.

    Subclasses implement ``__call__`` and declare ``transform`` (the loss transform the weights are
    meant for) and ``label`` (the name tables show). Stateful methods override ``reset``,
    ``state_dict`` and ``load_state_dict``; methods with learnable parameters (UW) override
    ``parameters`` and ``extra_loss``; methods that look at the result of a step (FAMO) override
    ``after_step``.

    The training objective is ``Σ_t w_t l_t + extra_loss(L)`` with ``w`` detached. Learnable
    weights therefore reach the model only through the detached ``w``; ``extra_loss`` must give
    gradients to the method's own parameters only, so it uses the losses detached (UW's
    ``Σ_t ½ (e^{-s_t} L_t.detach() + s_t)``): the heads and the encoder receive each task's
    gradient once, through ``w_t l_t``, never a second time through the extra term.
    """

    transform: ClassVar[str] = "identity"
    label: ClassVar[str | None] = None

    @classmethod
    def data_path(cls, kwargs: Mapping[str, Any]) -> str | None:
        """The file or folder the method built with ``kwargs`` reads (``None``: none).

        Experiments hash its content into a run's key (a re-exported policy is a new result).
        The default is the ``path`` argument.
        """
        value = kwargs.get("path")
        return value if isinstance(value, str) else None

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Prepare for a new run with ``n_tasks`` tasks; random draws come from ``generator``."""
        self.n_tasks = n_tasks
        self.generator = generator

    @abstractmethod
    def __call__(self, context: StepContext) -> Tensor:
        """Weights ``[T]`` (float, detached) for the current batch."""

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learnable parameters, optimised together with the model (default: none)."""
        return []

    def extra_loss(self, losses: Tensor) -> Tensor | None:
        """A term added to the training objective, e.g. UW's regulariser (default: none)."""
        return None

    def after_step(self, context: StepContext) -> None:
        """Called after the optimizer step (default: nothing)."""

    def diagnostics(self) -> dict[str, float]:
        """Counters a run reports with its results (default: none)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State needed to resume exactly (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
