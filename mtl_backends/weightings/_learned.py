"""The shared part of weightings that learn one value per task with the run's optimizer."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from mtl_backends.weightings.base import LossWeighting


class LearnedPerTask(LossWeighting):
    """A loss weighting with one learnable parameter per task, named ``parameter_name``.

    The parameter starts at ``initial`` for every task at ``reset``; it is optimised by the run's
    optimizer (``parameters``) and saved under its name by ``state_dict``. Subclasses give the
    weights and the ``extra_loss`` that trains it.
    """

    parameter_name: ClassVar[str]
    initial: ClassVar[float] = 0.0

    def __init__(self) -> None:
        setattr(self, self.parameter_name, nn.Parameter(torch.zeros(0)))

    @property
    def learned(self) -> nn.Parameter:
        """The per-task parameter ``[T]``."""
        param: nn.Parameter = getattr(self, self.parameter_name)
        return param

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """A fresh parameter at ``initial`` for ``n_tasks`` tasks (build the optimizer after)."""
        super().reset(n_tasks, generator)
        setattr(self, self.parameter_name, nn.Parameter(torch.full((n_tasks,), self.initial)))

    def parameters(self) -> list[nn.Parameter]:
        """The per-task parameter."""
        return [self.learned]

    def state_dict(self) -> dict[str, Any]:
        """The parameter, under its name."""
        return {self.parameter_name: self.learned.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the parameter in place (the optimizer keeps referring to the same one)."""
        with torch.no_grad():
            self.learned.copy_(state[self.parameter_name])


__all__ = ["LearnedPerTask"]
