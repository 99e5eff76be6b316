"""Streamed benchmarks: splits read item by item through ``torch.utils.data``.

A ``StreamedBenchmark`` gives a ``Dataset`` per split instead of in-memory tensors, and a metric
accumulator that sees one batch at a time (a split of NYUv2's outputs does not fit in memory).
The trainer draws its batches through ``StreamedBatches``: the epoch's permutation comes from the
run's data generator exactly as in memory (same generator, same ``randperm``), a batch sampler
serves it from any position, and the DataLoader only reads and collates; so the batch order is
seeded, workers change nothing, and a run resumes mid-epoch bit for bit from ``perm`` and
``step_count`` in the trainer's ``state_dict``. ``StreamedView`` serves an in-memory benchmark
through this path (the two give the same run, tested).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from mtl_backends.benchmarks.base import Benchmark, SplitData
from mtl_backends.models.hps import HardParameterSharing

Item = tuple[Tensor, Tensor]


class MetricAccumulator(Protocol):
    """Metrics of a split computed batch by batch."""

    def update(self, outputs: list[Tensor], targets: Tensor) -> None:
        """Absorb one batch's outputs (one tensor per task) and targets."""

    def compute(self) -> dict[str, float]:
        """Every metric of the benchmark's ``metric_specs`` over the batches absorbed."""


class StreamedBenchmark(Benchmark):
    """A benchmark whose splits are ``torch.utils.data`` datasets of ``(input, target)`` items.

    Subclasses implement ``dataset`` and ``metric_accumulator`` (and, as every benchmark,
    ``build_model`` and ``losses``). ``metrics`` on whole-split tensors is one accumulator pass.
    """

    @abstractmethod
    def dataset(self, name: str) -> Dataset[Item]:
        """The items of split ``name`` (one of ``SPLITS``): an input and its packed target."""

    @abstractmethod
    def metric_accumulator(self) -> MetricAccumulator:
        """A fresh accumulator of this benchmark's metrics."""

    def metrics(self, outputs: list[Tensor], targets: Tensor) -> dict[str, float]:
        """Every metric on the given outputs and targets (one accumulator pass)."""
        acc = self.metric_accumulator()
        acc.update(outputs, targets)
        return acc.compute()

    def split(self, name: str) -> SplitData:
        """Refused: a streamed benchmark is not held in memory.

        Raises:
            NotImplementedError: Always; names what needs in-memory splits.
        """
        raise NotImplementedError(
            f"benchmark {self.name!r} streams its data from disk and has no in-memory split "
            f"{name!r}: train it with MTLTrainer (igb train, igb stl, igb compare); the env, the "
            "batched env and igb perf need an in-memory benchmark"
        )


class StreamedView(StreamedBenchmark):
    """An in-memory benchmark served through the streamed path (tests, and measuring the path).

    Args:
        inner: The in-memory benchmark; model, losses, metrics and bounds are its own.
    """

    def __init__(self, inner: Benchmark) -> None:
        self.inner = inner
        self.name = inner.name
        self.task_names = inner.task_names
        self.metric_specs = inner.metric_specs
        self.lower_bounds = inner.lower_bounds

    def dataset(self, name: str) -> Dataset[Item]:
        """The inner split as a ``TensorDataset``."""
        data = self.inner.split(name)
        dataset: Dataset[Item] = TensorDataset(data.inputs, data.targets)  # type: ignore[assignment]
        return dataset

    def metric_accumulator(self) -> MetricAccumulator:
        """Concatenates the batches, then the inner benchmark's whole-split metrics."""
        return _Concatenated(self.inner)

    def build_model(self) -> HardParameterSharing:
        """The inner benchmark's model."""
        return self.inner.build_model()

    def losses(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        """The inner benchmark's losses."""
        return self.inner.losses(outputs, targets)

    def config(self) -> dict[str, Any]:
        """The inner benchmark's arguments."""
        return self.inner.config()


class _Concatenated:
    def __init__(self, inner: Benchmark) -> None:
        self.inner = inner
        self.outputs: list[list[Tensor]] = []
        self.targets: list[Tensor] = []

    def update(self, outputs: list[Tensor], targets: Tensor) -> None:
        self.outputs.append([o.detach() for o in outputs])
        self.targets.append(targets)

    def compute(self) -> dict[str, float]:
        outputs = [torch.cat([b[t] for b in self.outputs]) for t in range(len(self.outputs[0]))]
        return self.inner.metrics(outputs, torch.cat(self.targets))


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of one epoch's permutation from a given batch position (the last partial dropped).

    The permutation and the start are set before each iterator (``start``); the indices are made
    in the main process, so loader workers never touch the order.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.perm: Tensor | None = None
        self.position = 0

    def start(self, perm: Tensor, position: int) -> None:
        """Serve ``perm`` from batch ``position`` on the next iterator."""
        self.perm, self.position = perm, position

    def __iter__(self) -> Iterator[list[int]]:
        if self.perm is None:
            raise RuntimeError("EpochBatchSampler.start() was not called")
        order = self.perm.tolist()
        bs = self.batch_size
        for b in range(self.position, len(order) // bs):
            yield order[b * bs : (b + 1) * bs]

    def __len__(self) -> int:
        n = 0 if self.perm is None else int(self.perm.numel())
        return max(n // self.batch_size - self.position, 0)


class StreamedBatches:
    """The training batches of a streamed benchmark, in the trainer's seeded order.

    Args:
        dataset: The training split.
        batch_size: Batch size (an epoch is ``len(dataset) // batch_size`` batches).
        device: Where batches go (pinned host memory and non-blocking copies on CUDA).
        num_workers: DataLoader worker processes (0: read in the main process).
        seed: Seeds the loader's own generator per epoch (worker base seeds), never the order.
    """

    def __init__(
        self,
        dataset: Dataset[Item],
        batch_size: int,
        device: torch.device,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        self.device = device
        self.sampler = EpochBatchSampler(batch_size)
        self._seed = seed
        self._generator = torch.Generator()
        self.loader: DataLoader[Item] = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            generator=self._generator,
        )
        self._iter: Iterator[Any] | None = None
        self._served: tuple[Tensor, int] | None = None

    def batch(self, perm: Tensor, position: int, epoch: int) -> Item:
        """Batch ``position`` of the epoch ordered by ``perm`` (on the device).

        Consecutive calls stream from one iterator; a new permutation, or a position that does
        not follow the last (a resumed run), starts a new iterator there.
        """
        served = self._served
        if self._iter is None or served is None or served[0] is not perm or served[1] != position:
            self._generator.manual_seed(self._seed + epoch)
            self.sampler.start(perm, position)
            self._iter = iter(self.loader)
        x, y = next(self._iter)
        self._served = (perm, position + 1)
        blocking = self.device.type != "cuda"
        return x.to(self.device, non_blocking=not blocking), y.to(
            self.device, non_blocking=not blocking
        )


def evaluate_streamed(
    model: nn.Module,
    benchmark: StreamedBenchmark,
    split: str,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
) -> tuple[dict[str, float], list[float]]:
    """Metrics and mean per-task losses of a whole split, batch by batch, in eval mode.

    The losses are the batch means weighted by batch size (equal to the whole-split mean for
    per-item losses; to float rounding).

    Returns:
        The metrics and one loss per task.
    """
    benchmark.check_split(split)
    loader: DataLoader[Item] = DataLoader(
        benchmark.dataset(split),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        # Its own generator: the loader's worker seed is never drawn from the run's torch stream.
        generator=torch.Generator().manual_seed(0),
    )
    acc = benchmark.metric_accumulator()
    total = torch.zeros(benchmark.n_tasks, dtype=torch.float64)
    count = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            outputs = list(model(x))
            acc.update(outputs, y)
            n = int(x.shape[0])
            total += benchmark.losses(outputs, y).detach().to("cpu", torch.float64) * n
            count += n
    model.train(was_training)
    if count == 0:
        raise ValueError(f"split {split!r} of benchmark {benchmark.name!r} is empty")
    return acc.compute(), (total / count).tolist()


__all__ = [
    "EpochBatchSampler",
    "MetricAccumulator",
    "StreamedBatches",
    "StreamedBenchmark",
    "StreamedView",
    "evaluate_streamed",
]
