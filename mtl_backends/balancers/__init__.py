"""Gradient balancers: the ``GRADIENT_BALANCERS`` registry and ``make_balancer``."""

from __future__ import annotations

from typing import Any

from mtl_backends.balancers.base import WEIGHT_MODES, GradientBalancer
from mtl_backends.balancers.cagrad import CAGrad
from mtl_backends.balancers.db_mtl import DBMTL
from mtl_backends.balancers.imgrad import IMGrad
from mtl_backends.balancers.mgda import MGDA
from mtl_backends.balancers.pcgrad import PCGrad
from mtl_backends.balancers.sum import Sum
from mtl_backends.registry import build

GRADIENT_BALANCERS: dict[str, type[GradientBalancer]] = {
    "sum": Sum,
    "db_mtl": DBMTL,
    "imgrad": IMGrad,
    "mgda": MGDA,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
}


def make_balancer(name: str, **kwargs: Any) -> GradientBalancer:
    """Build the gradient balancer registered as ``name`` with constructor arguments ``kwargs``."""
    return build(GRADIENT_BALANCERS, "gradient balancer", name, kwargs)


__all__ = [
    "DBMTL",
    "GRADIENT_BALANCERS",
    "MGDA",
    "WEIGHT_MODES",
    "CAGrad",
    "GradientBalancer",
    "IMGrad",
    "PCGrad",
    "Sum",
    "make_balancer",
]
