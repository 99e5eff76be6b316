"""Benchmarks: the ``BENCHMARKS`` registry and ``make_benchmark``."""

from __future__ import annotations

from typing import Any

from mtl_backends.benchmarks.base import SPLITS, Benchmark, MetricSpec, SplitData, predict
from mtl_backends.benchmarks.cityscapes import Cityscapes
from mtl_backends.benchmarks.instances import instance_kwargs, instance_seeded
from mtl_backends.benchmarks.multi_digits import MultiDigits
from mtl_backends.benchmarks.nyuv2 import NYUv2
from mtl_backends.benchmarks.qm9 import QM9
from mtl_backends.benchmarks.qm9_graph import QM9Graph
from mtl_backends.benchmarks.streamed import StreamedBenchmark, StreamedView
from mtl_backends.benchmarks.synthetic import Synthetic
from mtl_backends.benchmarks.toy import Toy
from mtl_backends.registry import build

BENCHMARKS: dict[str, type[Benchmark]] = {
    "cityscapes": Cityscapes,
    "multi_digits": MultiDigits,
    "nyuv2": NYUv2,
    "qm9": QM9,
    "qm9_graph": QM9Graph,
    "synthetic": Synthetic,
    "toy": Toy,
}


def make_benchmark(name: str, **kwargs: Any) -> Benchmark:
    """Build the benchmark registered as ``name`` with constructor arguments ``kwargs``."""
    return build(BENCHMARKS, "benchmark", name, kwargs)


__all__ = [
    "BENCHMARKS",
    "QM9",
    "SPLITS",
    "Benchmark",
    "Cityscapes",
    "MetricSpec",
    "MultiDigits",
    "NYUv2",
    "SplitData",
    "StreamedBenchmark",
    "StreamedView",
    "Synthetic",
    "Toy",
    "instance_kwargs",
    "instance_seeded",
    "make_benchmark",
    "predict",
]
