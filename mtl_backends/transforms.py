"""Loss transforms that a weighting or balancer declares (``docs/architecture.md``).

``identity`` leaves the raw losses alone. ``log`` maps ``L_t`` to ``log(L_t - L*_t + eps)``, where
``L*_t`` is the benchmark's declared lower bound for task ``t`` (0 for MSE and cross-entropy,
negative for the toy landscape). Its gradient ``∇L_t / (L_t - L*_t + eps)`` is invariant to a
rescaling of ``L_t - L*_t``, which is what makes SI, IGB and DB-MTL scale-invariant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

TRANSFORMS: tuple[str, ...] = ("identity", "log")


def check_transform(name: str) -> str:
    """Return ``name`` if it is a known transform, else raise a ``ValueError`` with the choices."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown loss transform {name!r}; valid choices: {', '.join(TRANSFORMS)}")
    return name


def apply_transform(
    name: str,
    losses: Tensor,
    lower_bounds: Tensor,
    eps: float = 1e-8,
    task_names: Sequence[str] | None = None,
) -> Tensor:
    """Transform a vector of task losses.

    Args:
        name: ``"identity"`` or ``"log"``.
        losses: Raw task losses ``[T]`` (may carry a graph).
        lower_bounds: Declared lower bounds ``L*`` ``[T]``.
        eps: Added inside the log so a loss that reaches its bound stays finite.
        task_names: Used to name the offending task in error messages.

    Returns:
        The transformed losses ``[T]``, differentiable where ``losses`` is.

    Raises:
        ValueError: Under ``log``, a loss below its lower bound, or a non-finite loss. A loss
            exactly at its bound is accepted (``eps`` keeps the log finite): cross-entropy
            reaches exactly 0 in float32 once a batch is classified with certainty.
    """
    check_transform(name)
    if name == "identity":
        return losses
    margin = losses - lower_bounds.to(losses)
    detached = margin.detach()
    if not _all_valid(detached):
        bad = ~(detached >= 0) | ~torch.isfinite(detached)
        idx = int(torch.nonzero(bad)[0])
        task = task_names[idx] if task_names is not None else f"#{idx}"
        raise ValueError(
            f"log transform: loss of task {task!r} is {float(losses[idx].detach()):.6g}, below "
            f"its lower bound L*={float(lower_bounds[idx]):.6g} (or not finite); the log "
            "transform needs L >= L*. Declare a lower bound at or below the reachable loss."
        )
    return torch.log(margin + eps)


def _all_valid(margin: Tensor) -> bool:
    """Whether every margin is finite and ``>= 0`` (NaN fails ``>= 0``).

    On CPU the check reads a numpy view: it runs at every training step, and torch's per-op
    dispatch of the four small ops cost several microseconds of a ~1 ms step.
    """
    if margin.device.type == "cpu" and margin.dtype in (torch.float32, torch.float64):
        values = margin.numpy()
        return bool(np.isfinite(values).all() and (values >= 0).all())
    return bool(((margin >= 0) & torch.isfinite(margin)).all())
