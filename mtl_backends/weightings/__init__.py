"""Loss weightings: the ``LOSS_WEIGHTINGS`` registry and ``make_weighting``."""

from __future__ import annotations

from typing import Any

from mtl_backends.registry import build
from mtl_backends.weightings.base import LossWeighting, StepContext
from mtl_backends.weightings.ew import EW
from mtl_backends.weightings.igbv1 import IGBv1, igbv1_weights
from mtl_backends.weightings.policy import PolicyWeighting
from mtl_backends.weightings.si import SI
from mtl_backends.weightings.single_task import SingleTask
from mtl_backends.weightings.tuned_static import TunedStatic

LOSS_WEIGHTINGS: dict[str, type[LossWeighting]] = {
    "ew": EW,
    "si": SI,
    "igbv1": IGBv1,
    "tuned_static": TunedStatic,
    "policy": PolicyWeighting,
}


def make_weighting(name: str, **kwargs: Any) -> LossWeighting:
    """Build the loss weighting registered as ``name`` with constructor arguments ``kwargs``."""
    return build(LOSS_WEIGHTINGS, "loss weighting", name, kwargs)


__all__ = [
    "EW",
    "LOSS_WEIGHTINGS",
    "SI",
    "IGBv1",
    "LossWeighting",
    "PolicyWeighting",
    "SingleTask",
    "StepContext",
    "TunedStatic",
    "igbv1_weights",
    "make_weighting",
]
