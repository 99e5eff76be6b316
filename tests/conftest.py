"""Shared fixtures: tiny benchmarks and configs so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from mtl_backends.benchmarks import Synthetic
from mtl_backends.config import TrainConfig
from tests._tiny import TINY_SYNTHETIC

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Every test runs with one torch thread (bit-for-bit comparisons fix the thread count), and
    a test that changes it (``igb --torch-threads``, ``igb perf``) cannot leak the change."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_benchmark() -> Synthetic:
    """A 3-task synthetic problem small enough for sub-second runs."""
    return Synthetic(n_tasks=3, **TINY_SYNTHETIC)


@pytest.fixture
def tiny_config() -> TrainConfig:
    """20 steps, base window at steps 4..7."""
    return TrainConfig(steps=20, batch_size=20, base_window=(4, 8))
