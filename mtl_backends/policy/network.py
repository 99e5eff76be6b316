"""``PolicyNetwork``: the plain MLP of an exported policy (no SB3, no gymnasium)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
"""Hidden activations an exported network can use (and an exporter can copy)."""
OUTPUTS: tuple[str, ...] = ("tanh", "clip")


class PolicyNetwork(nn.Module):
    """A plain MLP from the observation to a deterministic action in ``[-1, 1]^A``.

    ``layers`` are ``nn.Linear`` modules with ``activation`` between them; the output is squashed
    with ``tanh`` (SAC's deterministic actor) or clipped to ``[-1, 1]`` (PPO's mean action, which
    SB3 clips to the action space).

    Args:
        sizes: ``[obs_dim, h1, ..., action_dim]``.
        activation: Hidden activation, ``tanh`` or ``relu``.
        output: ``tanh`` or ``clip``.
    """

    def __init__(
        self, sizes: Sequence[int], activation: str = "tanh", output: str = "clip"
    ) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(
                f"network sizes must be [obs_dim, ..., T] with positive entries, got {sizes}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; "
                f"valid choices: {', '.join(sorted(ACTIVATIONS))}"
            )
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; valid choices: {', '.join(OUTPUTS)}")
        self.sizes = sizes
        self.activation = activation
        self.output = output
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self._act = ACTIVATIONS[activation]()

    def spec(self) -> dict[str, Any]:
        """The sidecar's ``network`` entry."""
        return {"sizes": list(self.sizes), "activation": self.activation, "output": self.output}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> PolicyNetwork:
        """Rebuild from a sidecar's ``network`` entry."""
        return cls(spec["sizes"], spec.get("activation", "tanh"), spec.get("output", "clip"))

    def forward(self, obs: Tensor) -> Tensor:
        """Actions ``[..., A]`` in ``[-1, 1]`` for observations ``[..., obs_dim]`` (float32)."""
        x = obs
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self._act(x)
        return torch.tanh(x) if self.output == "tanh" else x.clamp(-1.0, 1.0)


__all__ = ["ACTIVATIONS", "OUTPUTS", "PolicyNetwork"]
