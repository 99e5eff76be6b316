"""The map from logits to weights on the scaled simplex, shared by IGBv1 and the action maps."""

from __future__ import annotations

import torch
from torch import Tensor


def scaled_softmax(logits: Tensor) -> Tensor:
    """``T · softmax(z)`` in float64: positive weights that sum to ``T`` (the IGB convention).

    IGBv1 applies it to the improvable gaps, the action maps of exported policies to their logits
    (``mtl_backends.policy.action_maps``); sharing one function keeps a policy's zero action equal
    to IGBv1 bit for bit.
    """
    return logits.numel() * torch.softmax(logits.to(torch.float64), dim=0)


__all__ = ["scaled_softmax"]
