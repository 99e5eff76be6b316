"""Where the cells of a comparison run: local worker processes or Ray tasks.

Both backends run the same picklable functions (``agents.experiments.cells``) and yield
``(index, result or exception)`` as jobs finish.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TypeVar

import torch

from agents.worker_vec_env import preload_workers

BACKENDS: tuple[str, ...] = ("local", "ray")
RAY_INSTALL_HINT = 'pip install -e ".[ray]"'

R = TypeVar("R")
I = TypeVar("I")  # noqa: E741


class MissingExtraError(ImportError):
    """An optional dependency (extra) the chosen feature needs is not installed."""


def init_worker() -> None:
    """Process-pool initializer: one torch thread per worker."""
    torch.set_num_threads(1)


class LocalBackend:
    """A ``ProcessPoolExecutor`` of worker processes (one torch thread each) on this machine.

    Args:
        workers: Processes.
        start_method: ``spawn`` (a fresh interpreter per worker) or ``forkserver`` (workers
            forked from a server that has imported torch, SB3 and the env once: they start in a
            blink, which matters for short experiments such as ``igb quickstart``).
    """

    def __init__(self, workers: int, start_method: str = "spawn") -> None:
        self.workers = max(1, int(workers))
        self.start_method = start_method
        self._pool: ProcessPoolExecutor | None = None

    @property
    def executor(self) -> ProcessPoolExecutor:
        """The running pool (for other jobs, e.g. an agent's reference rollouts)."""
        assert self._pool is not None, "use the backend as a context manager"
        return self._pool

    def __enter__(self) -> LocalBackend:
        if self.start_method == "forkserver":
            preload_workers()
        ctx = multiprocessing.get_context(self.start_method)
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=ctx, initializer=init_worker
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            # Every job has been collected (or the run is being abandoned): let the idle workers
            # exit in the background instead of waiting for their interpreters to tear down.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def map_unordered(
        self, fn: Callable[[I], R], items: Sequence[I]
    ) -> Iterator[tuple[int, R | BaseException]]:
        """Yield ``(index, result or exception)`` as the jobs finish."""
        assert self._pool is not None, "use the backend as a context manager"
        futures: dict[Future[R], int] = {
            self._pool.submit(fn, item): i for i, item in enumerate(items)
        }
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    exc = fut.exception()
                    yield futures[fut], (exc if exc is not None else fut.result())
        finally:
            for fut in pending:
                fut.cancel()


class RayBackend:
    """Ray tasks (one CPU each) on a local instance or an existing cluster.

    Args:
        workers: CPUs of a local instance (``ray.init(num_cpus=workers)``).
        address: Address of an existing cluster (``None``: start a local instance).

    Raises:
        MissingExtraError: Ray is not installed.
    """

    def __init__(self, workers: int, address: str | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise MissingExtraError(
                f"--backend ray needs the optional extra 'ray': {RAY_INSTALL_HINT}"
            ) from exc
        self._ray = ray
        self.workers = max(1, int(workers))
        self.address = address
        self._started = False

    def __enter__(self) -> RayBackend:
        ray = self._ray
        if not ray.is_initialized():
            if self.address is None:
                ray.init(
                    num_cpus=self.workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            else:
                ray.init(address=self.address, log_to_driver=False)
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def map_unordered(
        self, fn: Callable[[I], R], items: Sequence[I]
    ) -> Iterator[tuple[int, R | BaseException]]:
        """Yield ``(index, result or exception)`` as the tasks finish."""
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        refs = {remote.remote(item): i for i, item in enumerate(items)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        yield refs[ref], ray.get(ref)
                    except Exception as exc:
                        yield refs[ref], exc
        finally:
            for ref in pending:
                ray.cancel(ref)


Backend = LocalBackend | RayBackend


def make_backend(name: str, workers: int, address: str | None = None) -> Backend:
    """The backend called ``name`` (``local`` or ``ray``)."""
    if name == "local":
        return LocalBackend(workers)
    if name == "ray":
        return RayBackend(workers, address)
    raise ValueError(f"unknown backend {name!r}; valid choices: {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Backend",
    "LocalBackend",
    "MissingExtraError",
    "RayBackend",
    "init_worker",
    "make_backend",
]
