"""``agents.experiments.backends``: every job comes back once, with its result or its exception."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from agents.experiments.backends import (
    BACKENDS,
    LocalBackend,
    MissingExtraError,
    RayBackend,
    make_backend,
)
from tests.agents.experiments import _jobs


@pytest.fixture(scope="module")
def local() -> Iterator[LocalBackend]:
    with LocalBackend(2) as backend:
        yield backend


def _check(results: list[tuple[int, object]], items: list[int]) -> None:
    assert sorted(i for i, _ in results) == list(range(len(items)))  # each index exactly once
    for i, out in results:
        x = items[i]
        if x % 2:
            assert isinstance(out, ValueError) and str(out) == f"odd input {x}"
        else:
            assert out == x * x


def test_local_map_unordered_yields_every_index_once(local: LocalBackend) -> None:
    items = [4, 7, 0, 2, 9, 10, 3, 6]
    _check(list(local.map_unordered(_jobs.square_or_fail, items)), items)


def test_local_backend_is_reusable_and_empty_input_yields_nothing(local: LocalBackend) -> None:
    assert list(local.map_unordered(_jobs.square_or_fail, [])) == []
    _check(list(local.map_unordered(_jobs.square_or_fail, [5, 8])), [5, 8])


def test_local_workers_are_other_processes_with_one_torch_thread(local: LocalBackend) -> None:
    facts: list[tuple[int, int]] = []
    for _, out in local.map_unordered(_jobs.worker_facts, list(range(6))):
        assert isinstance(out, tuple), out
        facts.append(out)
    assert {threads for _, threads in facts} == {1}
    assert os.getpid() not in {pid for pid, _ in facts}
    assert local.executor is not None


def test_local_backend_outside_its_context() -> None:
    backend = LocalBackend(0)
    assert backend.workers == 1  # at least one worker
    with pytest.raises(AssertionError, match="context manager"):
        list(backend.map_unordered(_jobs.square_or_fail, [1]))
    with pytest.raises(AssertionError, match="context manager"):
        _ = backend.executor


def test_make_backend() -> None:
    assert BACKENDS == ("local", "ray")
    backend = make_backend("local", 3)
    assert isinstance(backend, LocalBackend) and backend.workers == 3
    with pytest.raises(ValueError, match="unknown backend 'dask'; valid choices: local, ray"):
        make_backend("dask", 2)


def test_ray_backend_without_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(
        MissingExtraError, match=r'optional extra .ray.: pip install -e "\.\[ray\]"'
    ):
        RayBackend(2)
    with pytest.raises(ImportError):
        make_backend("ray", 2)


def test_ray_map_unordered_yields_results_and_exceptions(ray_backend: RayBackend) -> None:
    items = [4, 7, 6]
    results = list(ray_backend.map_unordered(_jobs.square_or_fail, items))
    assert sorted(i for i, _ in results) == [0, 1, 2]
    out = dict(results)
    assert out[0] == 16 and out[2] == 36
    # Ray wraps the job's exception; its message still names the input.
    assert isinstance(out[1], Exception) and "odd input 7" in str(out[1])
