"""Several seeds of one agent config as separate jobs (``igb train-agent CONFIG --seeds 0 1 2``).

Each seed is an ordinary agent run (``agents.train.train_agent``) in its own folder, with its own
checkpoints, so anything that works on one run folder (``igb export``, ``igb evaluate``,
``igb train-agent --resume DIR/s0``) works on a seed's folder::

    DIR/seeds.json     the multi-seed manifest: the agent config (without its seed) and the seeds
    DIR/s0/            the run folder of seed 0 (``agents.train``: config.yaml, model.zip, ...)
    DIR/s1/error.txt   the traceback of a seed whose last attempt failed (removed once it finishes)

The folder names follow the ``_s0`` / ``-s0`` suffixes of the agent seeds in ``policies/README.md``
and ``docs/experiments/``.

Where the seeds run (``agents.experiments.backends``): ``local`` with one worker runs them one
after the other in this process; ``local`` with more workers in a pool of worker processes; ``ray``
as Ray tasks of one CPU each (a local instance, or a cluster whose nodes share DIR). At most
``workers`` seeds are handed out at a time, so a seed's "started" line means a worker took it.
Every job trains with one torch thread (``train_agent`` sets it), so a seed gives the same model
bit for bit on every backend on CPU.

Resuming is the rule, not an option: a seed whose folder holds ``training.json`` is finished and
is never trained again; one with a checkpoint continues from it (``agents.train.resume_agent``);
any other starts afresh. Rerunning the same command, or ``resume_seeds(DIR)``, therefore finishes
what a killed or failed run left. A seed that fails is reported by name with its error; the
others go on and keep their results.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias

import torch

from agents.build import check_hyperparameters
from agents.checkpoint import POINTER, latest_checkpoint, load_state
from agents.config import AgentConfig
from agents.experiments.backends import BACKENDS, Backend, LocalBackend, make_backend
from agents.train import resume_agent, train_agent
from mtl_backends.atomic import write_json_atomic
from mtl_backends.config import check_seed, from_dict, to_dict
from mtl_backends.fileio import FileFormatError, check_writable_dir, read_json
from mtl_backends.lifetime import exit_with_parent
from mtl_backends.registry import ConfigError

MANIFEST = "seeds.json"
MANIFEST_FORMAT = 1
ERROR_FILE = "error.txt"
FINISHED_FILE = "training.json"

Action = Literal["train", "resume"]
Status = Literal["trained", "resumed", "skipped", "failed"]
STATUSES: tuple[Status, ...] = ("trained", "resumed", "skipped", "failed")


def seed_folder(out_dir: str | Path, seed: int) -> Path:
    """The run folder of ``seed`` inside the multi-seed folder ``out_dir`` (``DIR/s<seed>``)."""
    return Path(out_dir) / f"s{seed}"


def check_seeds(seeds: Sequence[int], setting: str = "seeds") -> tuple[int, ...]:
    """The seeds as a tuple, refused when empty, negative or repeated.

    Args:
        seeds: Agent seeds.
        setting: The option or key that named them, for messages (e.g. ``"--seeds"``).

    Raises:
        ConfigError: No seed, a negative seed, or a seed given twice (one folder per seed).
    """
    if not seeds:
        raise ConfigError(f"{setting}: give at least one seed")
    for seed in seeds:
        check_seed(int(seed), setting)
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ConfigError(
            f"{setting} repeats {', '.join(map(str, repeated))}; each seed is one run folder, "
            "give every seed once"
        )
    return tuple(int(s) for s in seeds)


def processes_per_seed(config: AgentConfig) -> int:
    """Processes one run of ``config`` keeps busy: its env workers, else its own process."""
    groups = max(1, len(config.env_groups))
    if config.vec_env == "subproc":
        return config.n_envs * groups
    if config.group_processes:
        return groups
    return 1


def default_workers(config: AgentConfig, n_seeds: int, cpus: int | None = None) -> int:
    """Seeds to run at once when ``--workers`` is not given: as many as the cores hold.

    A seed with ``vec_env: subproc`` already occupies ``n_envs`` cores, so running one seed per
    core on top of that would oversubscribe the machine.

    Args:
        config: The agent config.
        n_seeds: Seeds to run.
        cpus: Cores of this machine (default ``os.cpu_count()``).
    """
    cores = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(n_seeds, cores // processes_per_seed(config)))


# --- the manifest ------------------------------------------------------------------------------


def _plain_config(config: AgentConfig) -> dict[str, Any]:
    """The config as JSON values (tuples as lists), without its seed: what every seed shares."""
    data: dict[str, Any] = json.loads(json.dumps(to_dict(config)))
    data.pop("seed", None)
    return data


def is_multi_seed_folder(path: str | Path) -> bool:
    """Whether ``path`` holds a multi-seed manifest (``seeds.json``)."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(out_dir: str | Path) -> tuple[AgentConfig, tuple[int, ...]]:
    """The agent config (seed 0) and the seeds recorded in a multi-seed folder.

    Raises:
        FileNotFoundError: ``out_dir`` is not a multi-seed folder.
        FileFormatError: The manifest is malformed (naming the file).
        ConfigError: The recorded config is not a valid agent config.
    """
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(out_dir)!r} is not a multi-seed folder: it has no {MANIFEST} (written by "
            "`igb train-agent CONFIG --seeds ... --out DIR`)"
        )
    data = read_json(path, "multi-seed manifest")
    seeds = data.get("seeds")
    if (
        data.get("format") != MANIFEST_FORMAT
        or not isinstance(data.get("config"), dict)
        or not isinstance(seeds, list)
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise FileFormatError(
            f"multi-seed manifest {str(path)!r} must hold format {MANIFEST_FORMAT}, an agent "
            "'config' object and a list of integer 'seeds'; the folder is damaged"
        )
    try:
        seeds_ok = check_seeds(seeds, f"{path}: seeds")
    except ConfigError as err:
        raise FileFormatError(f"{err}; the folder is damaged") from None
    config = from_dict(AgentConfig, {**data["config"], "seed": 0}, where=str(path))
    return config, seeds_ok


def _write_manifest(out: Path, config: AgentConfig, seeds: Sequence[int]) -> None:
    write_json_atomic(
        {"format": MANIFEST_FORMAT, "config": _plain_config(config), "seeds": list(seeds)},
        out / MANIFEST,
    )


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in {*old, *new} if old.get(k) != new.get(k))


def prepare_folder(out_dir: str | Path, config: AgentConfig, seeds: Sequence[int]) -> Path:
    """Create (or check and extend) the multi-seed folder ``out_dir`` for ``config`` and ``seeds``.

    A new folder gets the manifest; a multi-seed folder of the same config gets the new seeds
    added; anything else is refused before a file is written.

    Returns:
        The folder.

    Raises:
        ConfigError: ``out_dir`` was started with another config (the message names the settings
            that differ).
        FileExistsError: ``out_dir`` is a non-empty folder that is not a multi-seed folder (e.g.
            the run folder of a single agent).
    """
    out = check_writable_dir(out_dir, "the multi-seed folder")
    if is_multi_seed_folder(out):
        old_config, old_seeds = read_manifest(out)
        changed = _differences(_plain_config(old_config), _plain_config(config))
        if changed:
            raise ConfigError(
                f"{str(out)!r} was started with another agent config (it differs in "
                f"{', '.join(changed)}); resume it with `igb train-agent --resume {out}`, or give "
                "a new --out"
            )
        merged = [*old_seeds, *(s for s in seeds if s not in old_seeds)]
        if merged != list(old_seeds):
            _write_manifest(out, old_config, merged)
        return out
    if out.is_dir() and any(out.iterdir()):
        single = " (it is a single agent run)" if (out / "config.yaml").is_file() else ""
        raise FileExistsError(
            f"{str(out)!r} is not empty and is not a multi-seed folder (no {MANIFEST}){single}; "
            "give a new or empty --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, config, seeds)
    return out


# --- one seed (in a worker) --------------------------------------------------------------------


@dataclass(frozen=True)
class SeedTask:
    """What a worker needs to train or resume one seed (picklable: plain values only).

    Attributes:
        seed: The agent seed.
        folder: Its run folder (absolute, so that a worker with another working directory
            writes to the same place).
        config: The agent config with this seed, as ``to_dict`` gives it.
        action: ``train`` (a new run) or ``resume`` (from the folder's checkpoint).
        progress_bar: Show the run's own progress (only sensible in this process).
    """

    seed: int
    folder: str
    config: Mapping[str, Any]
    action: Action
    progress_bar: bool = False


@dataclass(frozen=True)
class SeedResult:
    """How one seed ended.

    Attributes:
        seed: The agent seed.
        folder: Its run folder.
        status: ``trained`` (a new run finished), ``resumed`` (finished from a checkpoint),
            ``skipped`` (finished before this call) or ``failed``.
        wall_time_s: Wall time of this attempt (0 when skipped).
        timesteps: Timesteps of the finished run (``None`` when failed).
        error: ``"ExceptionType: message"`` of a failure.
        traceback: The failure's traceback.
        torch_threads: Torch threads of the process that ran it (``None`` when skipped).
    """

    seed: int
    folder: str
    status: Status
    wall_time_s: float = 0.0
    timesteps: int | None = None
    error: str | None = None
    traceback: str | None = None
    torch_threads: int | None = None


Outcome: TypeAlias = SeedResult | BaseException
"""A job's result, or the exception of a worker that died or could not take it."""


def run_seed(task: SeedTask) -> SeedResult:
    """Train or resume one seed; a failure becomes a ``failed`` result, never an exception.

    Runs in a pool worker, a Ray task or this process; one torch thread, so that the result is
    the same bit for bit wherever it runs. A pool worker exits when the process that started it
    dies, so a killed command leaves no seed training behind.
    """
    exit_with_parent()
    torch.set_num_threads(1)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        if task.action == "resume":
            run = resume_agent(task.folder, progress_bar=task.progress_bar)
        else:
            config = from_dict(AgentConfig, dict(task.config), where=f"seed {task.seed}")
            run = train_agent(config, task.folder, progress_bar=task.progress_bar)
        summary = read_json(run / FINISHED_FILE, "training summary")
    except Exception as exc:
        return SeedResult(
            task.seed,
            task.folder,
            "failed",
            wall_time_s=time.perf_counter() - start,
            error=" ".join(f"{type(exc).__name__}: {exc}".split()),
            traceback=traceback.format_exc(),
            torch_threads=threads,
        )
    return SeedResult(
        task.seed,
        task.folder,
        "resumed" if task.action == "resume" else "trained",
        wall_time_s=time.perf_counter() - start,
        timesteps=int(summary["timesteps"]),
        torch_threads=threads,
    )


# --- running several -------------------------------------------------------------------------


class _Jobs(Protocol):
    """Submit jobs and collect them as they finish (a process pool or Ray)."""

    def submit(self, task: SeedTask) -> Hashable: ...

    def wait(self, pending: list[Hashable]) -> list[tuple[Hashable, Outcome]]: ...

    def cancel(self, pending: list[Hashable]) -> None: ...


class _PoolJobs:
    """Jobs of a ``concurrent.futures`` executor (the local backend's process pool)."""

    def __init__(self, executor: Executor, fn: Callable[[SeedTask], SeedResult]) -> None:
        self.executor = executor
        self.fn = fn

    def submit(self, task: SeedTask) -> Hashable:
        return self.executor.submit(self.fn, task)

    def wait(self, pending: list[Hashable]) -> list[tuple[Hashable, Outcome]]:
        futures: list[Future[SeedResult]] = pending  # type: ignore[assignment]
        done, _ = wait(futures, return_when=FIRST_COMPLETED)
        out: list[tuple[Hashable, Outcome]] = []
        for fut in done:
            exc = fut.exception()
            out.append((fut, exc if exc is not None else fut.result()))
        return out

    def cancel(self, pending: list[Hashable]) -> None:
        for fut in pending:
            fut.cancel()  # type: ignore[attr-defined]


class _RayJobs:
    """Ray tasks of one CPU, never retried (a retried seed would redo its work silently)."""

    def __init__(self, fn: Callable[[SeedTask], SeedResult]) -> None:
        import ray  # the backend has imported (and started) it already

        self.ray = ray
        self.remote = ray.remote(num_cpus=1, max_retries=0)(fn)

    def submit(self, task: SeedTask) -> Hashable:
        return self.remote.remote(task)

    def wait(self, pending: list[Hashable]) -> list[tuple[Hashable, Outcome]]:
        done, _ = self.ray.wait(pending, num_returns=1)
        out: list[tuple[Hashable, Outcome]] = []
        for ref in done:
            try:
                out.append((ref, self.ray.get(ref)))
            except Exception as exc:  # the worker died (a failing seed returns a result)
                out.append((ref, exc))
        return out

    def cancel(self, pending: list[Hashable]) -> None:
        for ref in pending:
            self.ray.cancel(ref)


def run_windowed(
    jobs: _Jobs, tasks: Sequence[SeedTask], window: int
) -> Iterator[tuple[str, int, Outcome | None]]:
    """Hand out at most ``window`` tasks at a time, yielding each task's start and end.

    Yields ``("start", i, None)`` when task ``i`` is handed out and ``("done", i, result or
    exception)`` when it ends. Submitting only what a worker can take at once makes "start" true
    (a queued task has not started) and keeps the order of the seeds.
    """
    todo = list(range(len(tasks)))
    running: dict[Hashable, int] = {}
    try:
        while todo or running:
            while todo and len(running) < max(1, window):
                i = todo.pop(0)
                try:
                    running[jobs.submit(tasks[i])] = i
                except Exception as exc:  # e.g. a broken process pool: this task cannot start
                    yield "done", i, exc
                    continue
                yield "start", i, None
            if not running:
                continue
            for handle, result in jobs.wait(list(running)):
                yield "done", running.pop(handle), result
    finally:
        jobs.cancel(list(running))


@dataclass(frozen=True)
class SeedsSummary:
    """What one multi-seed call did.

    Attributes:
        out_dir: The multi-seed folder.
        results: One result per seed, in the order of the seeds.
        wall_time_s: Wall time of the call.
    """

    out_dir: Path
    results: tuple[SeedResult, ...]
    wall_time_s: float

    def count(self, status: Status) -> int:
        """Seeds that ended with ``status``."""
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> tuple[SeedResult, ...]:
        """The seeds that failed."""
        return tuple(r for r in self.results if r.status == "failed")


def _plan(out: Path, config: AgentConfig, seeds: Sequence[int]) -> list[SeedTask | SeedResult]:
    """A task per seed to run, a ``skipped`` result per finished seed."""
    plan: list[SeedTask | SeedResult] = []
    for seed in seeds:
        folder = seed_folder(out, seed).resolve()
        if (folder / FINISHED_FILE).is_file():
            plan.append(SeedResult(seed, str(folder), "skipped"))
            continue
        action: Action = "resume" if (folder / POINTER).is_file() else "train"
        plan.append(SeedTask(seed, str(folder), to_dict(replace(config, seed=seed)), action))
    return plan


def _started(task: SeedTask) -> str:
    if task.action == "train":
        how = "new run"
    else:
        try:
            done = load_state(latest_checkpoint(task.folder)).get("timesteps")
            how = f"resuming from its checkpoint at {done} timesteps"
        except (OSError, ValueError):  # resume_agent reports a damaged checkpoint itself
            how = "resuming from its checkpoint"
    return f"seed {task.seed}: started ({how}) in {task.folder}"


def _ended(result: SeedResult) -> str:
    if result.status == "failed":
        return (
            f"seed {result.seed}: FAILED after {result.wall_time_s:.1f} s: {result.error} "
            f"(traceback in {Path(result.folder) / ERROR_FILE})"
        )
    if result.status == "skipped":
        return f"seed {result.seed}: finished before, skipped: {result.folder}"
    return (
        f"seed {result.seed}: {result.status} ({result.timesteps} timesteps, "
        f"{result.wall_time_s:.1f} s): {result.folder}"
    )


def _record(result: SeedResult) -> None:
    """Keep a failure's traceback in the seed's folder; clear it once the seed finishes."""
    error = Path(result.folder) / ERROR_FILE
    if result.status == "failed":
        error.parent.mkdir(parents=True, exist_ok=True)
        error.write_text(f"{result.error}\n\n{result.traceback or ''}")
    elif error.is_file():
        error.unlink()


def _lost(task: SeedTask, exc: BaseException) -> SeedResult:
    """The result of a seed whose worker died or could not take it."""
    text = "".join(traceback.format_exception(exc))
    message = " ".join(f"{type(exc).__name__}: {exc}".split())
    return SeedResult(
        task.seed, task.folder, "failed", error=f"worker lost: {message}", traceback=text
    )


def _open_backend(
    backend: str, workers: int, ray_address: str | None, runner: Backend | None
) -> Backend | None:
    """The backend to start for this call: none with a ``runner`` or for one local worker.

    Built before any folder is written, so an unknown backend or a missing extra fails first.
    """
    if ray_address is not None and backend != "ray":
        raise ConfigError(f"a Ray address ({ray_address!r}) needs backend 'ray', not {backend!r}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if runner is not None or (backend == "local" and workers == 1):
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; valid choices: {', '.join(BACKENDS)}")
        return None
    return make_backend(backend, workers, ray_address)


def _run(
    config: AgentConfig,
    seeds: Sequence[int],
    prepare: Callable[[], Path],
    backend: str,
    workers: int | None,
    ray_address: str | None,
    runner: Backend | None,
    progress_bar: bool,
    log: Callable[[str], None],
) -> SeedsSummary:
    """Open the backend, prepare the folder, skip the finished seeds and run the others.

    The backend is built before ``prepare`` writes anything, so that an unknown backend or a
    missing extra fails first; the seeds run on ``runner``, on the backend of this call, or in
    this process (one local worker).
    """
    if workers is None:
        workers = default_workers(config, len(seeds))
    owned = _open_backend(backend, workers, ray_address, runner)
    out = prepare()
    start = time.perf_counter()
    results: dict[int, SeedResult] = {}
    tasks: list[SeedTask] = []
    for item in _plan(out, config, seeds):
        if isinstance(item, SeedResult):
            results[item.seed] = item
            log(_ended(item))
        else:
            tasks.append(item)

    def finish(result: SeedResult) -> None:
        _record(result)
        results[result.seed] = result
        log(_ended(result))

    active = runner if runner is not None else owned
    if tasks and active is None:
        # One local worker: no pool to start, and the seed's own progress display is readable.
        for task in tasks:
            log(_started(task))
            finish(run_seed(replace(task, progress_bar=progress_bar)))
    elif tasks:
        assert active is not None
        # A runner the caller entered stays running; a backend of this call is entered here.
        with contextlib.nullcontext() if runner is not None else active:
            jobs: _Jobs = (
                _PoolJobs(active.executor, run_seed)
                if isinstance(active, LocalBackend)
                else _RayJobs(run_seed)
            )
            for event, i, outcome in run_windowed(jobs, tasks, active.workers):
                if event == "start":
                    log(_started(tasks[i]))
                elif isinstance(outcome, SeedResult):
                    finish(outcome)
                else:
                    assert isinstance(outcome, BaseException)
                    finish(_lost(tasks[i], outcome))
    ordered = tuple(results[s] for s in seeds)
    return SeedsSummary(out, ordered, time.perf_counter() - start)


def train_seeds(
    config: AgentConfig,
    seeds: Sequence[int],
    out_dir: str | Path,
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    progress_bar: bool = True,
    log: Callable[[str], None] = print,
    runner: Backend | None = None,
) -> SeedsSummary:
    """Train ``config`` once per seed, each in ``out_dir/s<seed>``; finish what a rerun finds.

    Args:
        config: The agent config (its own ``seed`` is replaced by each of ``seeds``).
        seeds: Agent seeds (distinct, non-negative).
        out_dir: The multi-seed folder: new, empty, or one started with the same config (its
            finished seeds are skipped, unfinished ones resumed, new seeds added).
        backend: ``local`` (one worker: in this process, one seed after the other; more: a pool
            of worker processes) or ``ray`` (Ray tasks).
        workers: Seeds trained at once (local processes, or CPUs of a local Ray instance; with
            a Ray cluster, the seeds handed out at a time); ``None``: ``default_workers``.
        ray_address: Address of an existing Ray cluster (``None``: a local instance); ``out_dir``
            must then be on a file system every node shares.
        progress_bar: Show each seed's own progress (one local worker only: in this process).
        log: Where the one line per seed start and end goes.
        runner: A backend that is already running (entered) to use instead of a new one; its
            ``workers`` bound the seeds handed out at a time.

    Returns:
        Every seed's result, in the order of ``seeds``; failures are in it, not raised.

    Raises:
        ConfigError: Bad seeds, workers or backend, bad hyperparameters, or ``out_dir`` was
            started with another config.
        MissingExtraError: ``backend="ray"`` without Ray installed.
        FileExistsError: ``out_dir`` is a non-empty folder that is not a multi-seed folder.
    """
    seeds = check_seeds(seeds)
    check_hyperparameters(config)
    return _run(
        config,
        seeds,
        lambda: prepare_folder(out_dir, config, seeds),
        backend,
        workers,
        ray_address,
        runner,
        progress_bar,
        log,
    )


def resume_seeds(
    out_dir: str | Path,
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    progress_bar: bool = True,
    log: Callable[[str], None] = print,
    runner: Backend | None = None,
) -> SeedsSummary:
    """Finish every seed of a multi-seed folder (``igb train-agent --resume DIR``).

    Finished seeds are skipped, seeds with a checkpoint resumed, the others trained afresh.
    Arguments as for ``train_seeds``; the config and the seeds are the folder's.

    Raises:
        FileNotFoundError: ``out_dir`` is not a multi-seed folder.
        FileFormatError: Its manifest is damaged.
    """
    config, seeds = read_manifest(out_dir)
    return _run(
        config,
        seeds,
        lambda: check_writable_dir(out_dir, "the multi-seed folder"),
        backend,
        workers,
        ray_address,
        runner,
        progress_bar,
        log,
    )


__all__ = [
    "ERROR_FILE",
    "MANIFEST",
    "STATUSES",
    "SeedResult",
    "SeedTask",
    "SeedsSummary",
    "check_seeds",
    "default_workers",
    "is_multi_seed_folder",
    "prepare_folder",
    "processes_per_seed",
    "read_manifest",
    "resume_seeds",
    "run_seed",
    "run_windowed",
    "seed_folder",
    "train_seeds",
]
