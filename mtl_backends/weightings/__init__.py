"""Loss weightings: the ``LOSS_WEIGHTINGS`` registry and ``make_weighting``."""

from __future__ import annotations

from typing import Any

from mtl_backends.registry import build
from mtl_backends.weightings.base import LossWeighting, StepContext
from mtl_backends.weightings.dwa import DWA
from mtl_backends.weightings.ew import EW
from mtl_backends.weightings.famo import FAMO
from mtl_backends.weightings.gls import GLS
from mtl_backends.weightings.gradnorm import GradNorm
from mtl_backends.weightings.igbv1 import IGBv1, igbv1_weights
from mtl_backends.weightings.imtl_l import IMTLL
from mtl_backends.weightings.policy import PolicyWeighting
from mtl_backends.weightings.rlw import RLW
from mtl_backends.weightings.si import SI
from mtl_backends.weightings.single_task import SingleTask
from mtl_backends.weightings.tuned_static import TunedStatic
from mtl_backends.weightings.uw import UW

LOSS_WEIGHTINGS: dict[str, type[LossWeighting]] = {
    "ew": EW,
    "si": SI,
    "igbv1": IGBv1,
    "tuned_static": TunedStatic,
    "policy": PolicyWeighting,
    "uw": UW,
    "dwa": DWA,
    "rlw": RLW,
    "gls": GLS,
    "gradnorm": GradNorm,
    "famo": FAMO,
    "imtl_l": IMTLL,
}


def make_weighting(name: str, **kwargs: Any) -> LossWeighting:
    """Build the loss weighting registered as ``name`` with constructor arguments ``kwargs``."""
    return build(LOSS_WEIGHTINGS, "loss weighting", name, kwargs)


__all__ = [
    "DWA",
    "EW",
    "FAMO",
    "GLS",
    "IMTLL",
    "LOSS_WEIGHTINGS",
    "RLW",
    "SI",
    "UW",
    "GradNorm",
    "IGBv1",
    "LossWeighting",
    "PolicyWeighting",
    "SingleTask",
    "StepContext",
    "TunedStatic",
    "igbv1_weights",
    "make_weighting",
]
