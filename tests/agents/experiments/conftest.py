"""A local Ray instance shared by the Ray tests of the experiment harness."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from agents.experiments.backends import RayBackend


@pytest.fixture(scope="package")
def ray_backend() -> Iterator[RayBackend]:
    """One local Ray instance of 2 CPUs for this package's tests (its start-up takes seconds,
    up to a minute on a loaded machine); shut down when the package's tests end."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    with RayBackend(2) as backend:
        yield backend
