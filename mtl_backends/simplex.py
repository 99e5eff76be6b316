"""The map from logits to weights on the scaled simplex, shared by IGBv1 and the action maps."""

from __future__ import annotations

import torch
from torch import Tensor


def scaled_softmax(logits: Tensor) -> Tensor:
    """``T · softmax(z)`` over the last dimension in float64: positive weights that sum to ``T``.

    IGBv1 applies it to the improvable gaps, the action maps of exported policies to their logits
    (``mtl_backends.policy.action_maps``); sharing one function keeps a policy's zero action equal
    to IGBv1 bit for bit. Leading dimensions are independent rows (the batched env maps the
    actions of all its runs at once; each row equals the 1-D result bit for bit).
    """
    return logits.shape[-1] * torch.softmax(logits.to(torch.float64), dim=-1)


__all__ = ["scaled_softmax"]
