"""Gradient balancers: the ``GRADIENT_BALANCERS`` registry and ``make_balancer``."""

from __future__ import annotations

from typing import Any

from mtl_backends.balancers.base import WEIGHT_MODES, GradientBalancer
from mtl_backends.balancers.sum import Sum
from mtl_backends.registry import build

GRADIENT_BALANCERS: dict[str, type[GradientBalancer]] = {
    "sum": Sum,
}


def make_balancer(name: str, **kwargs: Any) -> GradientBalancer:
    """Build the gradient balancer registered as ``name`` with constructor arguments ``kwargs``."""
    return build(GRADIENT_BALANCERS, "gradient balancer", name, kwargs)


__all__ = ["GRADIENT_BALANCERS", "WEIGHT_MODES", "GradientBalancer", "Sum", "make_balancer"]
