"""The benchmark contract: data, model, per-task losses and metrics of one MTL problem."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mtl_backends.models.hps import HardParameterSharing

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric.

    Attributes:
        name: Unique metric name, e.g. ``"t1_mse"``.
        task: Index of the task the metric belongs to (Δp averages within tasks first).
        higher_is_better: Direction of the metric.
    """

    name: str
    task: int
    higher_is_better: bool


@dataclass(frozen=True)
class SplitData:
    """One split held in memory: ``inputs[i]`` goes with ``targets[i]``."""

    inputs: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


class Benchmark(ABC):
    """An MTL problem: seeded in-memory splits, a hard-parameter-sharing model, losses and metrics.

    Subclasses set ``name``, ``task_names``, ``metric_specs`` and ``lower_bounds`` in ``__init__``
    and implement the abstract methods. The trainer never branches on a benchmark's name.

    Attributes:
        name: Registry name.
        task_names: One name per task; ``len(task_names)`` is ``T``.
        metric_specs: Every reported metric with its task and direction.
        lower_bounds: Declared loss lower bounds ``L*`` ``[T]`` (the log transform's zero).
    """

    name: str
    task_names: tuple[str, ...]
    metric_specs: tuple[MetricSpec, ...]
    lower_bounds: Tensor

    @property
    def n_tasks(self) -> int:
        """Number of tasks ``T``."""
        return len(self.task_names)

    @property
    def higher_is_better(self) -> tuple[bool, ...]:
        """Direction of each metric, in ``metric_specs`` order."""
        return tuple(m.higher_is_better for m in self.metric_specs)

    @property
    def metric_tasks(self) -> tuple[int, ...]:
        """Task index of each metric, in ``metric_specs`` order."""
        return tuple(m.task for m in self.metric_specs)

    @abstractmethod
    def split(self, name: str) -> SplitData:
        """The in-memory data of split ``name`` (one of ``SPLITS``)."""

    @abstractmethod
    def build_model(self) -> HardParameterSharing:
        """A freshly initialised model, drawn from the global torch RNG (the caller seeds it)."""

    @abstractmethod
    def losses(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        """Per-task training losses ``[T]`` of a batch (mean over the batch)."""

    @abstractmethod
    def metrics(self, outputs: list[Tensor], targets: Tensor) -> dict[str, float]:
        """Every metric of ``metric_specs`` on a whole split's outputs."""

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this benchmark (for cache keys and run folders)."""
        return {}

    @classmethod
    def sample_variation(
        cls, rng: np.random.Generator, family: str = "default", **fixed: Any
    ) -> dict[str, Any]:
        """Draw constructor arguments of one seeded problem variation (for instance sets).

        Args:
            rng: Source of all draws; the same generator state gives the same arguments.
            family: Which distribution of variations (``default``; benchmarks may offer more).
            **fixed: Arguments to set rather than draw (e.g. ``n_tasks``).

        Returns:
            Keyword arguments for ``cls(**kwargs)``.

        Raises:
            NotImplementedError: The benchmark has no variations.
        """
        raise NotImplementedError(f"benchmark {cls.__name__} defines no sample_variation")

    def check_split(self, name: str) -> None:
        """Raise a ``ValueError`` naming the valid splits if ``name`` is not one."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid choices: {', '.join(SPLITS)}")


def predict(model: nn.Module, inputs: Tensor, batch_size: int = 1024) -> list[Tensor]:
    """Model outputs for all ``inputs`` in eval mode, without gradients, in chunks.

    Args:
        model: A model returning one output tensor per task.
        inputs: Inputs ``[N, ...]``.
        batch_size: Chunk size.

    Returns:
        One tensor ``[N, ...]`` per task.
    """
    was_training = model.training
    model.eval()
    chunks: list[list[Tensor]] = []
    with torch.no_grad():
        for start in range(0, int(inputs.shape[0]), batch_size):
            chunks.append(list(model(inputs[start : start + batch_size])))
    model.train(was_training)
    return [torch.cat([c[t] for c in chunks]) for t in range(len(chunks[0]))]
