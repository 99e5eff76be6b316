"""Hard parameter sharing: one shared encoder, one head per task."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn


class HardParameterSharing(nn.Module):
    """A shared encoder followed by ``T`` task heads.

    The trainer needs to tell shared parameters (whose per-task gradients balancers combine) from
    task parameters (which get the weighted gradient of their own task); this class is where that
    split is defined.

    Args:
        encoder: Maps an input batch to a shared representation.
        heads: One module per task, mapping the representation to that task's output.
    """

    def __init__(self, encoder: nn.Module, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleList(heads)

    def forward(self, x: Tensor) -> list[Tensor]:
        """One output per task."""
        z = self.encoder(x)
        return [head(z) for head in self.heads]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the shared encoder that require gradients."""
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def task_parameters(self) -> list[nn.Parameter]:
        """Parameters of all heads that require gradients."""
        return [p for p in self.heads.parameters() if p.requires_grad]


def mlp(
    sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU, last_activation: bool = True
) -> nn.Sequential:
    """A fully connected network ``sizes[0] -> ... -> sizes[-1]``.

    Args:
        sizes: Layer widths, input first.
        activation: Activation class placed after each linear layer.
        last_activation: Whether the last linear layer is followed by the activation too.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)
