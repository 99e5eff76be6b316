"""``build_trainer``: the one way every part of igb-rl assembles an ``MTLTrainer``.

Plain runs (``mtl_backends.run``), single-task references (``mtl_backends.stl``), the env's
episodes (``igb_env``) and the comparison cells (``agents.experiments``) all build their trainer
here, from registry specs or from objects they already hold.
"""

from __future__ import annotations

from typing import TypeVar

from mtl_backends.balancers import GRADIENT_BALANCERS, GradientBalancer
from mtl_backends.benchmarks import BENCHMARKS, Benchmark
from mtl_backends.config import MethodSpec, TrainConfig
from mtl_backends.features import FeatureSpec
from mtl_backends.registry import build
from mtl_backends.trainer import MTLTrainer, Reference
from mtl_backends.weightings import LOSS_WEIGHTINGS, LossWeighting

Built = TypeVar("Built")


def _built(value: Built | MethodSpec, registry: dict[str, type[Built]], kind: str) -> Built:
    if isinstance(value, MethodSpec):
        return build(registry, kind, value.name, value.kwargs)
    return value


def build_trainer(
    benchmark: Benchmark | MethodSpec,
    weighting: LossWeighting | MethodSpec,
    balancer: GradientBalancer | MethodSpec,
    train: TrainConfig,
    seed: int,
    reference: Reference | None = None,
    features: FeatureSpec | None = None,
) -> MTLTrainer:
    """A trainer from registry specs (``MethodSpec``) or ready objects.

    Args:
        benchmark: The benchmark, or its name and arguments.
        weighting: The loss weighting, or its name and arguments.
        balancer: The gradient balancer, or its name and arguments.
        train: Training settings.
        seed: Seed of model initialisation, batch order and the methods' randomness.
        reference: STL reference metrics for Δm and Δp.
        features: Feature settings of the gap tracker (default: the weighting's).

    Raises:
        ConfigError: An unknown name or argument, or a transform conflict.
    """
    return MTLTrainer(
        _built(benchmark, BENCHMARKS, "benchmark"),
        _built(weighting, LOSS_WEIGHTINGS, "loss weighting"),
        _built(balancer, GRADIENT_BALANCERS, "gradient balancer"),
        train,
        seed=seed,
        reference=reference,
        features=features,
    )


def transform_conflict(weighting: str, balancer: str) -> str | None:
    """Why ``weighting`` cannot run under ``balancer`` (their declared transforms differ), or None.

    Unknown names give ``None``: the registries report those, with the valid choices.
    """
    declared = getattr(LOSS_WEIGHTINGS.get(weighting), "transform", None)
    required = getattr(GRADIENT_BALANCERS.get(balancer), "requires_transform", None)
    if isinstance(declared, str) and isinstance(required, str) and declared != required:
        return (
            f"transform conflict: balancer {balancer!r} requires the {required!r} transform "
            f"but weighting {weighting!r} declares {declared!r}"
        )
    return None


__all__ = ["build_trainer", "transform_conflict"]
