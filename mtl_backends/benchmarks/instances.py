"""Seeded problem instances: the benchmark arguments of instance ``s`` of a benchmark spec.

An *instance* is a seed that fixes a benchmark's data (and, with ``variation``, its sampled
variation, e.g. synthetic task scales and noise floors) as well as the run's initialisation and
batch order (the trainer's seed). The env's instance sets, held-out evaluations and instance-seeded
comparison benchmarks all derive a benchmark's arguments here, so the same instance is the same
problem everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtl_backends.benchmarks.base import Benchmark
from mtl_backends.config import MethodSpec
from mtl_backends.registry import valid_arguments


def instance_seeded(
    benchmark: type[Benchmark] | None, spec: MethodSpec, variation: bool | str
) -> bool:
    """Whether the instance seed changes the benchmark's arguments.

    True with ``variation``, or when the benchmark takes a ``seed`` that ``spec`` does not fix.
    """
    if variation:
        return True
    return (
        benchmark is not None and "seed" in valid_arguments(benchmark) and "seed" not in spec.kwargs
    )


def instance_kwargs(
    benchmark: type[Benchmark], spec: MethodSpec, instance: int, variation: bool | str
) -> dict[str, Any]:
    """Constructor arguments of ``instance`` of ``spec``.

    With ``variation`` the arguments are drawn by ``benchmark.sample_variation`` from a generator
    seeded by the instance (the arguments in ``spec`` stay fixed; a string names the family of
    variations, ``True`` is ``default``); otherwise the instance becomes the data ``seed`` when
    the benchmark takes one and ``spec`` does not fix it.

    Raises:
        NotImplementedError: ``variation`` for a benchmark that defines no variations.
    """
    kwargs = dict(spec.kwargs)
    if variation:
        rng = np.random.default_rng(np.random.SeedSequence(int(instance)))
        family = variation if isinstance(variation, str) else "default"
        return benchmark.sample_variation(rng, family=family, **kwargs)
    if instance_seeded(benchmark, spec, variation):
        kwargs["seed"] = int(instance)
    return kwargs


__all__ = ["instance_kwargs", "instance_seeded"]
