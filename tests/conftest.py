"""Shared fixtures: tiny benchmarks and configs so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

import compileall
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mtl_backends.benchmarks import Synthetic
from mtl_backends.config import TrainConfig
from tests._project import PACKAGES
from tests._tiny import TINY_SYNTHETIC

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
_PYCACHE = pytest.StashKey[str]()  # the session bytecode cache folder


def pytest_configure(config: pytest.Config) -> None:
    """Compile the project once into a session bytecode cache when bytecode writing is off.

    With ``PYTHONDONTWRITEBYTECODE`` set, the editable install leaves no ``.pyc`` behind, so every
    subprocess the suite starts (the ``igb`` command, Ray workers, one fork per module in
    ``test_imports``) recompiled the whole project: about a second each, minutes in all. The
    cache lives in a temporary folder (``PYTHONPYCACHEPREFIX``, inherited by every subprocess
    and xdist worker), so the checkout still gets no ``__pycache__``.
    """
    if not sys.dont_write_bytecode or "PYTEST_XDIST_WORKER" in os.environ:
        return
    prefix = tempfile.mkdtemp(prefix="igb-test-pycache-")
    config.stash[_PYCACHE] = prefix
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    sys.pycache_prefix = prefix
    for package in PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=1)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session bytecode cache of ``pytest_configure``."""
    prefix = config.stash.get(_PYCACHE, None)
    if prefix is not None:
        shutil.rmtree(prefix, ignore_errors=True)


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
