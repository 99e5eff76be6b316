"""``igb compare``: a grid of plain MTL runs under one protocol, resumable, local or on Ray.

A comparison is declared by an ``ExperimentConfig`` (YAML under ``configs/experiments/``):
benchmarks (each with its own training budget and model-selection rule) x loss weightings x
gradient balancers x seeds. One *cell* = (benchmark, weighting, balancer, seed) is one plain
``MTLTrainer`` run; its Δm and Δp are taken against single-task (STL) references trained with the
same budget and seed (``mtl_backends.stl``: cached on disk, trained when missing, once per
(benchmark, seed), before the grid).

Each finished cell is written atomically to ``DIR/cells/<key>.json`` with its provenance (git
commit, config hash, seed, library versions, wall and CPU time). Rerunning skips the cells already
on disk, so a killed comparison resumes where it stopped; a cell that raises is recorded as failed
with its traceback and the grid goes on. Invalid combinations (a transform conflict such as
``db_mtl`` with ``ew``) and user exclusions are skipped with a stated reason. The report
(``results.csv``, ``results.md``, PNG plots) is rebuilt from the cell files at the end of every
run (``agents.compare_report``).

Two backends run the same cell function: ``local`` (a ``ProcessPoolExecutor`` over spawned
processes, one torch thread each) and ``ray`` (Ray tasks; the optional extra ``ray``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import multiprocessing
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mtl_backends.config import MethodSpec, TrainConfig, from_dict, load_yaml, to_dict
from mtl_backends.registry import ConfigError

CELL_FORMAT_VERSION = 1
SELECTIONS: tuple[str, ...] = ("final", "best_val")
BACKENDS: tuple[str, ...] = ("local", "ray")
RAY_INSTALL_HINT = 'pip install -e ".[ray]"'

DEFAULT_LABELS: dict[str, str] = {
    "ew": "EW",
    "si": "SI",
    "uw": "UW",
    "dwa": "DWA",
    "rlw": "RLW",
    "gls": "GLS",
    "famo": "FAMO",
    "igbv1": "IGBv1",
    "igbv2": "IGBv2",
    "policy": "learned policy",
    "tuned_static": "tuned static",
    "sum": "sum",
    "db_mtl": "DB-MTL",
    "imgrad": "IMGrad",
    "mgda": "MGDA",
    "pcgrad": "PCGrad",
    "cagrad": "CAGrad",
    "imtl_g": "IMTL-G",
    "nash_mtl": "Nash-MTL",
    "aligned_mtl": "Aligned-MTL",
    "upgrad": "UPGrad",
}
"""Display names of registry names (anything else is shown as its name)."""

R = TypeVar("R")
I = TypeVar("I")  # noqa: E741


class MissingExtraError(ImportError):
    """An optional dependency (extra) the chosen feature needs is not installed."""


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchmarkEntry:
    """One benchmark of the grid (one table of the report).

    In YAML a benchmark is a registry name or a mapping ``{name, label?, train?, selection?,
    eval_every?, **constructor arguments}``.

    Attributes:
        name: Benchmark registry name.
        kwargs: Benchmark constructor arguments.
        train: Training settings (budget, optimizer, base window) of every cell of this benchmark.
        label: Table title (default: the name; must be unique).
        selection: Model-selection rule of this table (``None``: the experiment's default).
        eval_every: Validation interval (steps) of ``best_val`` (``None``: the experiment's).
    """

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    label: str | None = None
    selection: str | None = None
    eval_every: int | None = None

    @property
    def spec(self) -> MethodSpec:
        """The benchmark as a ``MethodSpec``."""
        return MethodSpec(self.name, dict(self.kwargs))

    @property
    def display(self) -> str:
        """The label shown in tables and file names."""
        return self.label or self.name


@dataclass(frozen=True)
class MethodEntry:
    """One loss weighting or gradient balancer of the grid.

    In YAML a method is a registry name or a mapping ``{name, label?, flat_rho?, **constructor
    arguments}`` (``flat_rho`` only for balancers: the sharpness-aware flat variant, e.g. F-MGDA).

    Attributes:
        name: Registry name.
        kwargs: Constructor arguments (e.g. ``path`` of an exported policy).
        label: Row name (default: a display name of the registry name; must be unique).
        flat_rho: Radius of the flat wrapper around a balancer (``TrainConfig.flat_rho``).
    """

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None
    flat_rho: float | None = None

    @property
    def spec(self) -> MethodSpec:
        """The method as a ``MethodSpec``."""
        return MethodSpec(self.name, dict(self.kwargs))

    @property
    def display(self) -> str:
        """The label shown in tables."""
        if self.label:
            return self.label
        base = DEFAULT_LABELS.get(self.name, self.name)
        return base if self.flat_rho is None else f"F-{base}"


@dataclass(frozen=True)
class CellSelector:
    """Matches cells by benchmark, weighting and balancer (label or registry name) and seed.

    A field left ``None`` matches everything.

    Attributes:
        benchmark: Benchmark label or name.
        weighting: Weighting label or name.
        balancer: Balancer label or name.
        seed: Seed.
    """

    benchmark: str | None = None
    weighting: str | None = None
    balancer: str | None = None
    seed: int | None = None

    def matches(self, cell: Cell) -> bool:
        """Whether ``cell`` is selected."""
        pairs = (
            (self.benchmark, cell.benchmark.display, cell.benchmark.name),
            (self.weighting, cell.weighting.display, cell.weighting.name),
            (self.balancer, cell.balancer.display, cell.balancer.name),
        )
        if any(want is not None and want not in (label, name) for want, label, name in pairs):
            return False
        return self.seed is None or self.seed == cell.seed


@dataclass(frozen=True)
class PlotConfig:
    """Which plots the report draws.

    Attributes:
        delta_m_bars: One bar chart of Δm (mean ± std over seeds) per benchmark.
        trajectories: Cells whose weight and gap trajectories are drawn (empty: every weighting
            with the ``sum`` balancer at the first seed).
        trajectory_points: Steps kept (evenly subsampled) of each cell's trajectories; 0: none.
    """

    delta_m_bars: bool = True
    trajectories: tuple[CellSelector, ...] = ()
    trajectory_points: int = 100


@dataclass(frozen=True)
class ExperimentConfig:
    """A comparison grid (``igb compare``).

    Attributes:
        benchmarks: Benchmarks, each with its own budget and selection rule (one table each).
        weightings: Loss weightings (rows).
        balancers: Gradient balancers (rows are weighting x balancer).
        seeds: Seeds; each seed is paired across methods (same data order and initialisation).
        selection: Default model-selection rule: ``final`` (the model after the budget) or
            ``best_val`` (test metrics at the evaluation with the best validation Δm; never
            selection on test).
        eval_every: Validation interval (steps) of ``best_val``.
        baseline: Weighting (label or name) of the paired-difference columns.
        stl_cache: Folder of cached STL references (``None``: trained for this run only).
        exclude: Cells not to run (recorded as excluded).
        plots: Plot settings.
    """

    benchmarks: tuple[BenchmarkEntry, ...]
    weightings: tuple[MethodEntry, ...]
    balancers: tuple[MethodEntry, ...] = (MethodEntry("sum"),)
    seeds: tuple[int, ...] = (0, 1, 2)
    selection: str = "final"
    eval_every: int | None = None
    baseline: str = "igbv1"
    stl_cache: str | None = ".igb-cache/stl"
    exclude: tuple[CellSelector, ...] = ()
    plots: PlotConfig = field(default_factory=PlotConfig)

    @property
    def baseline_label(self) -> str:
        """Display label of the baseline weighting (the configured string if none matches)."""
        for w in self.weightings:
            if self.baseline in (w.label, w.name):
                return w.display
        return self.baseline

    def selection_of(self, benchmark: BenchmarkEntry) -> tuple[str, int | None]:
        """The selection rule and validation interval of ``benchmark``'s table."""
        rule = benchmark.selection or self.selection
        every = benchmark.eval_every if benchmark.eval_every is not None else self.eval_every
        return rule, (every if rule == "best_val" else None)


_BENCHMARK_FIELDS = ("name", "label", "train", "selection", "eval_every")
_WEIGHTING_FIELDS = ("name", "label")
_BALANCER_FIELDS = ("name", "label", "flat_rho")


def _normalise_entry(value: Any, fields: Sequence[str], where: str) -> dict[str, Any]:
    """``"name"`` or ``{name, <fields>, **kwargs}`` -> ``{name, <fields>, kwargs}``."""
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a name or a mapping with 'name', got {value!r}")
    if "name" not in value:
        raise ConfigError(f"{where}: a mapping needs a 'name' key, got {dict(value)}")
    out: dict[str, Any] = {k: v for k, v in value.items() if k in fields}
    kwargs = {k: v for k, v in value.items() if k not in fields}
    if "kwargs" in kwargs and len(kwargs) == 1 and isinstance(kwargs["kwargs"], Mapping):
        kwargs = dict(kwargs["kwargs"])  # the to_dict() form written to cell files
    out["kwargs"] = kwargs
    return out


def register_agent_methods(names: Sequence[str] | None = None) -> None:
    """Import the ``agents`` modules that register methods (``igbv2``) if they exist.

    Args:
        names: Weighting names needed; the (SB3-loading) import is skipped when all are
            registered already. ``None``: import unconditionally.
    """
    from mtl_backends.weightings import LOSS_WEIGHTINGS

    if names is not None and all(n in LOSS_WEIGHTINGS for n in names):
        return
    try:
        importlib.import_module("agents.online")
    except ModuleNotFoundError as exc:
        if exc.name != "agents.online":
            raise


def _check_method(registry: Mapping[str, type], kind: str, entry: Any, where: str) -> None:
    from mtl_backends.registry import valid_arguments

    if entry.name not in registry:
        raise ConfigError(
            f"{where}: unknown {kind} {entry.name!r}; valid choices: {', '.join(sorted(registry))}"
        )
    cls = registry[entry.name]
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = valid_arguments(cls)
    unknown = [k for k in entry.kwargs if k not in accepted]
    if unknown:
        raise ConfigError(
            f"{where}: {kind} {entry.name!r} got unknown argument(s) "
            f"{', '.join(map(repr, unknown))}; valid arguments: {', '.join(accepted) or '(none)'}"
        )


def _check_unique(labels: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ConfigError(f"two {what} share the label {label!r}; give one a distinct 'label'")
        seen.add(label)


def validate_experiment(config: ExperimentConfig, where: str = "experiment") -> None:
    """Check names, constructor arguments, selection rules and labels against the registries.

    Raises:
        ConfigError: Naming the offending entry and the valid choices.
    """
    from mtl_backends.balancers import GRADIENT_BALANCERS
    from mtl_backends.benchmarks import BENCHMARKS
    from mtl_backends.weightings import LOSS_WEIGHTINGS

    register_agent_methods([w.name for w in config.weightings])
    if not config.benchmarks:
        raise ConfigError(f"{where}.benchmarks: give at least one benchmark")
    if not config.weightings:
        raise ConfigError(f"{where}.weightings: give at least one weighting")
    if not config.balancers:
        raise ConfigError(f"{where}.balancers: give at least one balancer")
    if not config.seeds:
        raise ConfigError(f"{where}.seeds: give at least one seed")
    if len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"{where}.seeds: duplicate seeds in {list(config.seeds)}")
    for i, b in enumerate(config.benchmarks):
        _check_method(BENCHMARKS, "benchmark", b, f"{where}.benchmarks[{i}]")
        rule, every = config.selection_of(b)
        if rule not in SELECTIONS:
            raise ConfigError(
                f"{where}.benchmarks[{i}]: unknown selection {rule!r}; "
                f"valid choices: {', '.join(SELECTIONS)}"
            )
        if rule == "best_val" and (every is None or every < 1):
            raise ConfigError(
                f"{where}.benchmarks[{i}]: selection 'best_val' needs eval_every >= 1 "
                "(steps between validation evaluations)"
            )
    for i, w in enumerate(config.weightings):
        _check_method(LOSS_WEIGHTINGS, "loss weighting", w, f"{where}.weightings[{i}]")
        path = w.kwargs.get("path")
        if isinstance(path, str) and not Path(path).expanduser().exists():
            raise ConfigError(
                f"{where}.weightings[{i}]: {w.name} path {path!r} does not exist "
                "(export a policy with `igb export RUN`, or comment the entry out)"
            )
        if w.flat_rho is not None:
            raise ConfigError(f"{where}.weightings[{i}]: flat_rho belongs to a balancer entry")
    for i, g in enumerate(config.balancers):
        _check_method(GRADIENT_BALANCERS, "gradient balancer", g, f"{where}.balancers[{i}]")
        if g.flat_rho is not None and g.flat_rho < 0:
            raise ConfigError(f"{where}.balancers[{i}]: flat_rho must be >= 0, got {g.flat_rho}")
    if config.selection not in SELECTIONS:
        raise ConfigError(
            f"{where}.selection: unknown {config.selection!r}; valid choices: "
            f"{', '.join(SELECTIONS)}"
        )
    if config.plots.trajectory_points < 0:
        raise ConfigError(f"{where}.plots.trajectory_points must be >= 0")
    _check_unique([b.display for b in config.benchmarks], "benchmarks")
    _check_unique([w.display for w in config.weightings], "weightings")
    _check_unique([g.display for g in config.balancers], "balancers")


def experiment_from_dict(data: Any, where: str = "experiment") -> ExperimentConfig:
    """Build and validate an ``ExperimentConfig`` from a mapping (unknown keys are errors)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    data = dict(data)
    for key, fields in (
        ("benchmarks", _BENCHMARK_FIELDS),
        ("weightings", _WEIGHTING_FIELDS),
        ("balancers", _BALANCER_FIELDS),
    ):
        if key in data:
            if not isinstance(data[key], list | tuple):
                raise ConfigError(f"{where}.{key}: expected a list, got {data[key]!r}")
            data[key] = [
                _normalise_entry(v, fields, f"{where}.{key}[{i}]") for i, v in enumerate(data[key])
            ]
    config = from_dict(ExperimentConfig, data, where)
    validate_experiment(config, where)
    return config


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Load and validate an experiment YAML file."""
    return experiment_from_dict(load_yaml(path), where=str(path))


def config_hash(config: ExperimentConfig) -> str:
    """Short hex digest of the whole experiment configuration (provenance of every cell)."""
    return _digest(to_dict(config))[:16]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One run of the grid.

    Attributes:
        benchmark: Benchmark entry (with its training settings).
        weighting: Loss weighting entry.
        balancer: Gradient balancer entry (with its optional flat radius).
        seed: Seed of the run (and of its STL references).
        selection: ``final`` or ``best_val``.
        eval_every: Validation interval of ``best_val``.
    """

    benchmark: BenchmarkEntry
    weighting: MethodEntry
    balancer: MethodEntry
    seed: int
    selection: str = "final"
    eval_every: int | None = None

    @property
    def train(self) -> TrainConfig:
        """The training settings of the run (the balancer's flat radius included)."""
        return dataclasses.replace(self.benchmark.train, flat_rho=self.balancer.flat_rho)

    def identity(self) -> dict[str, Any]:
        """Everything that changes the cell's result (labels excluded)."""
        return {
            "version": CELL_FORMAT_VERSION,
            "benchmark": self.benchmark.spec.to_dict(),
            "train": to_dict(self.train),
            "weighting": self.weighting.spec.to_dict(),
            "weighting_files": _path_digests(self.weighting.kwargs),
            "balancer": self.balancer.spec.to_dict(),
            "seed": self.seed,
            "selection": self.selection,
            "eval_every": self.eval_every,
        }

    @property
    def key(self) -> str:
        """File name stem of the cell (a hash of ``identity()``)."""
        return _digest(self.identity())[:24]

    @property
    def row(self) -> str:
        """Table row: the weighting, plus the balancer unless it is plain ``sum``."""
        if self.balancer.name == "sum" and self.balancer.flat_rho is None:
            return self.weighting.display
        return f"{self.weighting.display} + {self.balancer.display}"


def _path_digests(kwargs: Mapping[str, Any]) -> dict[str, str]:
    """Content digests of files named by a method's ``path`` argument (e.g. exported policies).

    A policy re-exported to the same folder then gives a new cell key instead of a stale result.
    """
    out: dict[str, str] = {}
    value = kwargs.get("path")
    if not isinstance(value, str):
        return out
    path = Path(value).expanduser()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    out["path"] = h.hexdigest()[:16]
    return out


def transform_conflict(weighting: MethodEntry, balancer: MethodEntry) -> str | None:
    """The reason a (weighting, balancer) pair cannot run, from the declared transforms, or None."""
    from mtl_backends.balancers import GRADIENT_BALANCERS
    from mtl_backends.weightings import LOSS_WEIGHTINGS

    declared = getattr(LOSS_WEIGHTINGS.get(weighting.name), "transform", None)
    required = getattr(GRADIENT_BALANCERS.get(balancer.name), "requires_transform", None)
    if isinstance(declared, str) and isinstance(required, str) and declared != required:
        return (
            f"transform conflict: balancer {balancer.name!r} requires the {required!r} transform "
            f"but weighting {weighting.name!r} declares {declared!r}"
        )
    return None


@dataclass(frozen=True)
class GridPlan:
    """The cells of an experiment, and those that will not run.

    Attributes:
        cells: Runnable cells, in table order.
        skipped: ``(cell, reason)`` of invalid combinations and excluded cells.
    """

    cells: tuple[Cell, ...]
    skipped: tuple[tuple[Cell, str], ...]


def plan_grid(config: ExperimentConfig) -> GridPlan:
    """Expand the experiment into cells (benchmark, balancer, weighting, seed order)."""
    cells: list[Cell] = []
    skipped: list[tuple[Cell, str]] = []
    for bench in config.benchmarks:
        rule, every = config.selection_of(bench)
        for balancer in config.balancers:
            for weighting in config.weightings:
                for seed in config.seeds:
                    cell = Cell(bench, weighting, balancer, seed, rule, every)
                    reason = transform_conflict(weighting, balancer)
                    if reason is None and any(s.matches(cell) for s in config.exclude):
                        reason = "excluded by the experiment config"
                    if reason is None:
                        cells.append(cell)
                    else:
                        skipped.append((cell, reason))
    return GridPlan(tuple(cells), tuple(skipped))


# ---------------------------------------------------------------------------------------------
# Running one cell (in a worker process)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell (picklable; no open files or tensors).

    Attributes:
        cell: The cell.
        reference: STL reference metrics (split -> metric -> value).
        provenance: Commit and config hash of the comparison.
        trajectory_points: Steps of weights and gaps kept for plots (0: none).
    """

    cell: Cell
    reference: dict[str, dict[str, float]]
    provenance: Mapping[str, Any]
    trajectory_points: int = 100


def library_versions() -> dict[str, str]:
    """Versions of python, torch, numpy and igb-rl in this process."""
    import numpy as np
    import torch

    try:
        ours = importlib.metadata.version("igb-rl")
    except importlib.metadata.PackageNotFoundError:
        ours = "unknown"
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "igb-rl": ours,
    }


def git_commit(where: Path | None = None) -> dict[str, Any]:
    """``{"commit": HEAD or "unknown", "dirty": bool | None}`` of the checkout holding the code."""
    cwd = where or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return {"commit": "unknown", "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def _subsample(n: int, points: int) -> set[int]:
    if points <= 0 or n <= 0:
        return set()
    if n <= points:
        return set(range(n))
    return {round(i * (n - 1) / (points - 1)) for i in range(points)} if points > 1 else {n - 1}


def _finite(x: float | None) -> float | None:
    import math

    return None if x is None or not math.isfinite(x) else float(x)


def run_cell(task: CellTask) -> dict[str, Any]:
    """Train and evaluate one cell; never raises (a failure is returned as a failed record).

    Runs with one torch thread; measures wall and CPU time (``time.process_time``) of the whole
    cell (building, training, evaluating).

    Returns:
        The JSON-ready cell record (``status`` ``ok``, ``failed`` or ``skipped``).
    """
    import torch

    torch.set_num_threads(1)
    cell = task.cell
    record: dict[str, Any] = {
        "format": CELL_FORMAT_VERSION,
        "key": cell.key,
        "cell": {
            **cell.identity(),
            "benchmark_label": cell.benchmark.display,
            "weighting_label": cell.weighting.display,
            "balancer_label": cell.balancer.display,
            "row": cell.row,
        },
        "provenance": {
            **dict(task.provenance),
            "seed": cell.seed,
            "versions": library_versions(),
            "host": platform.node(),
            "pid": os.getpid(),
            "torch_threads": torch.get_num_threads(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        record.update(_train_cell(task))
        record["status"] = "ok"
    except ConfigError as exc:
        if "transform conflict" not in str(exc):
            record.update(status="failed", error=traceback.format_exc())
        else:
            record.update(status="skipped", reason=str(exc))
    except Exception:
        record.update(status="failed", error=traceback.format_exc())
    record["wall_time_s"] = time.perf_counter() - wall0
    record["cpu_time_s"] = time.process_time() - cpu0
    return record


def _train_cell(task: CellTask) -> dict[str, Any]:
    from mtl_backends.balancers import make_balancer
    from mtl_backends.benchmarks import make_benchmark
    from mtl_backends.trainer import EvalResult, MTLTrainer, StepResult
    from mtl_backends.weightings import make_weighting

    cell = task.cell
    register_agent_methods([cell.weighting.name])
    train = cell.train
    benchmark = make_benchmark(cell.benchmark.name, **dict(cell.benchmark.kwargs))
    weighting = make_weighting(cell.weighting.name, **dict(cell.weighting.kwargs))
    balancer = make_balancer(cell.balancer.name, **dict(cell.balancer.kwargs))
    trainer = MTLTrainer(
        benchmark, weighting, balancer, train, seed=cell.seed, reference=task.reference
    )
    keep = _subsample(train.steps, task.trajectory_points)
    steps: list[int] = []
    weights: list[list[float]] = []
    gap_steps: list[int] = []
    gaps: list[list[float]] = []
    evals: list[tuple[EvalResult, EvalResult]] = []

    def observe(tr: MTLTrainer, result: StepResult) -> None:
        if result.step in keep:
            steps.append(result.step)
            weights.append([float(v) for v in result.weights])
            if tr.progress.gaps is not None:
                gap_steps.append(result.step)
                gaps.append([float(v) for v in tr.progress.gaps])
        every = cell.eval_every
        if every and (tr.step_count % every == 0) and not tr.done:
            evals.append((tr.evaluate("val"), tr.evaluate("test")))

    start = time.perf_counter()
    trainer.fit(callbacks=[observe], record=False)
    train_wall = time.perf_counter() - start
    evals.append((trainer.evaluate("val"), trainer.evaluate("test")))
    if cell.selection == "best_val":
        # Selection on validation Δm only (first best on ties); test is never looked at here.
        scores = [v.delta_m if v.delta_m is not None else float("inf") for v, _ in evals]
        chosen = min(range(len(evals)), key=lambda i: (scores[i], i))
    else:
        chosen = len(evals) - 1
    val, test = evals[chosen]
    specs = [
        {"name": m.name, "task": m.task, "higher_is_better": m.higher_is_better}
        for m in benchmark.metric_specs
    ]
    out: dict[str, Any] = {
        "selected_step": test.step,
        "train_wall_time_s": train_wall,
        "task_names": list(benchmark.task_names),
        "metric_specs": specs,
        "metrics": {"val": val.metrics, "test": test.metrics},
        "losses": {"val": val.losses, "test": test.losses},
        "delta_m": _finite(test.delta_m),
        "delta_p": _finite(test.delta_p),
        "val_delta_m": _finite(val.delta_m),
        "val_delta_p": _finite(val.delta_p),
        "reference": task.reference,
        "val_curve": [{"step": v.step, "val_delta_m": _finite(v.delta_m)} for v, _ in evals]
        if cell.selection == "best_val"
        else [],
    }
    if task.trajectory_points > 0:
        out["trajectories"] = {
            "steps": steps,
            "weights": weights,
            "gap_steps": gap_steps,
            "gaps": gaps,
        }
    return out


@dataclass(frozen=True)
class StlTask:
    """One STL reference job: (benchmark, seed) with the benchmark's training settings.

    Attributes:
        benchmark: Benchmark entry.
        seed: Seed.
        cache: STL cache folder (``None``: no cache).
    """

    benchmark: BenchmarkEntry
    seed: int
    cache: str | None


def run_stl(task: StlTask) -> dict[str, Any]:
    """STL references of one (benchmark, seed), from the cache or trained; never raises.

    Returns:
        ``{"reference": ...}`` or ``{"error": traceback}``.
    """
    import torch

    from mtl_backends.stl import stl_reference

    torch.set_num_threads(1)
    try:
        ref = stl_reference(task.benchmark.spec, task.benchmark.train, task.seed, task.cache)
        return {"reference": ref}
    except Exception:
        return {"error": traceback.format_exc()}


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------
def _init_local_worker() -> None:
    import torch

    torch.set_num_threads(1)


class LocalBackend:
    """A ``ProcessPoolExecutor`` over spawned processes (one torch thread each).

    Args:
        workers: Processes.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> LocalBackend:
        ctx = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=ctx, initializer=_init_local_worker
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


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompareSummary:
    """What one ``compare`` call did.

    Attributes:
        out_dir: Output folder.
        computed: Cells run in this call.
        reused: Cells found on disk and not rerun.
        failed: Cells recorded as failed (in this call or before).
        skipped: Invalid or excluded cells.
        lost: Cells whose worker died (not recorded; rerun to retry).
        wall_time_s: Wall time of the call.
        report: Paths of the written report files.
    """

    out_dir: Path
    computed: int
    reused: int
    failed: int
    skipped: int
    lost: int
    wall_time_s: float
    report: tuple[Path, ...]


def cell_path(out_dir: Path, cell: Cell) -> Path:
    """Where the record of ``cell`` lives."""
    return out_dir / "cells" / f"{cell.key}.json"


def load_record(path: Path) -> dict[str, Any] | None:
    """A cell record from disk, or ``None`` if missing or unreadable (e.g. a partial write)."""
    try:
        with path.open() as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def compare(
    config: ExperimentConfig,
    out_dir: str | Path,
    workers: int = 2,
    backend: str = "local",
    retry_failed: bool = False,
    progress_bar: bool = True,
    ray_address: str | None = None,
    config_path: str | Path | None = None,
    report_only: bool = False,
    benchmarks: Sequence[str] | None = None,
) -> CompareSummary:
    """Run (or resume) the grid of ``config`` and write the report to ``out_dir``.

    Args:
        config: The experiment.
        out_dir: Output folder (cells, CSV, Markdown, PNGs).
        workers: Parallel processes (local) or CPUs of a local Ray instance.
        backend: ``local`` or ``ray``.
        retry_failed: Rerun cells recorded as failed (default: keep their records).
        progress_bar: Show a tqdm bar over cells.
        ray_address: Existing Ray cluster (``None``: a local instance).
        config_path: Where the config came from (stated in the report).
        report_only: Only rebuild the report from the cells on disk (e.g. to look at a grid
            another process is still running); nothing is trained.
        benchmarks: Train only the cells of these benchmark labels (``None``: all); the report
            still covers every finished cell of the grid on disk.

    Returns:
        Counts of computed, reused, failed and skipped cells, and the report files.

    Raises:
        ConfigError: A label of ``benchmarks`` that the grid does not have.
    """
    from tqdm.auto import tqdm

    from agents.compare_report import write_report
    from mtl_backends.atomic import write_json_atomic

    start = time.perf_counter()
    labels = [b.display for b in config.benchmarks]
    unknown = sorted(set(benchmarks or ()) - set(labels))
    if unknown:
        raise ConfigError(
            f"unknown benchmark label(s) {', '.join(map(repr, unknown))}; "
            f"this grid has: {', '.join(labels)}"
        )
    # Fails early (before any file is written) when the backend's extra is missing.
    runner = None if report_only else make_backend(backend, workers, ray_address)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_grid(config)
    records: dict[str, dict[str, Any]] = {}
    todo: list[Cell] = []
    for cell in plan.cells:
        rec = load_record(cell_path(out, cell))
        if rec is not None and (rec.get("status") != "failed" or not retry_failed):
            records[cell.key] = rec
        else:
            todo.append(cell)
    reused = len(records)
    provenance = {
        "git": git_commit(),
        "config_hash": config_hash(config),
        "config_path": None if config_path is None else str(config_path),
        "backend": backend,
    }
    lost = 0
    if report_only:
        todo = []
    else:
        if benchmarks is not None:
            todo = [c for c in todo if c.benchmark.display in benchmarks]
        write_json_atomic(
            {"config": to_dict(config), "provenance": provenance}, out / "experiment.json"
        )
    if todo and runner is not None:
        with runner:
            bar = tqdm(total=len(todo), desc="compare", unit="cell", disable=not progress_bar)
            try:
                # One benchmark at a time (its STL references, then its cells), so that each table
                # fills up completely while later benchmarks wait; the report is refreshed after
                # each benchmark.
                for bench in config.benchmarks:
                    pending = [c for c in todo if c.benchmark.display == bench.display]
                    if not pending:
                        continue
                    lost += _run_benchmark(
                        runner, config, pending, provenance, out, records, bar, progress_bar
                    )
                    if bench is not config.benchmarks[-1]:
                        write_report(config, plan, records, out, provenance)
            finally:
                bar.close()
    report = write_report(config, plan, records, out, provenance)
    statuses = [records[c.key].get("status") for c in plan.cells if c.key in records]
    return CompareSummary(
        out_dir=out,
        computed=len(todo) - lost,
        reused=reused,
        failed=sum(s == "failed" for s in statuses),
        skipped=len(plan.skipped) + sum(s == "skipped" for s in statuses),
        lost=lost,
        wall_time_s=time.perf_counter() - start,
        report=tuple(report),
    )


def _run_benchmark(
    runner: Backend,
    config: ExperimentConfig,
    pending: Sequence[Cell],
    provenance: Mapping[str, Any],
    out: Path,
    records: dict[str, dict[str, Any]],
    bar: Any,
    progress_bar: bool,
) -> int:
    """STL references, then the cells, of one benchmark; returns the number of lost cells."""
    from mtl_backends.atomic import write_json_atomic

    lost = 0
    references = _stl_stage(runner, config, pending, progress_bar)
    tasks: list[CellTask] = []
    for cell in pending:
        ref = references.get((cell.benchmark.display, cell.seed))
        if ref is None:  # the STL worker died: not recorded, retried on the next run
            lost += 1
            bar.update(1)
            continue
        if isinstance(ref, str):
            rec = _failed_record(cell, provenance, f"STL reference failed:\n{ref}")
            write_json_atomic(rec, cell_path(out, cell))
            records[cell.key] = rec
            bar.update(1)
            continue
        tasks.append(CellTask(cell, ref, provenance, config.plots.trajectory_points))
    for i, result in runner.map_unordered(run_cell, tasks):
        cell = tasks[i].cell
        if isinstance(result, BaseException):
            lost += 1
            bar.write(f"cell {cell.row} seed {cell.seed} lost: {result!r}")
        else:
            write_json_atomic(result, cell_path(out, cell))
            records[cell.key] = result
            if result.get("status") == "failed":
                last = str(result.get("error", "")).strip().splitlines()[-1:]
                bar.write(f"cell {cell.row} seed {cell.seed} failed: {last}")
        bar.update(1)
    return lost


def _failed_record(cell: Cell, provenance: Mapping[str, Any], error: str) -> dict[str, Any]:
    return {
        "format": CELL_FORMAT_VERSION,
        "key": cell.key,
        "cell": {**cell.identity(), "row": cell.row},
        "provenance": {**dict(provenance), "seed": cell.seed},
        "status": "failed",
        "error": error,
        "wall_time_s": 0.0,
        "cpu_time_s": 0.0,
    }


def _stl_stage(
    runner: Backend, config: ExperimentConfig, todo: Sequence[Cell], progress_bar: bool
) -> dict[tuple[str, int], dict[str, dict[str, float]] | str]:
    """STL references of every (benchmark, seed) with pending cells.

    A failing STL run gives its traceback text; a pair whose worker died is left out.
    """
    from tqdm.auto import tqdm

    pairs: dict[tuple[str, int], StlTask] = {}
    for cell in todo:
        key = (cell.benchmark.display, cell.seed)
        if key not in pairs:
            pairs[key] = StlTask(cell.benchmark, cell.seed, config.stl_cache)
    keys = list(pairs)
    out: dict[tuple[str, int], dict[str, dict[str, float]] | str] = {}
    bar = tqdm(total=len(keys), desc="stl", unit="ref", disable=not progress_bar, leave=False)
    try:
        for i, result in runner.map_unordered(run_stl, [pairs[k] for k in keys]):
            if isinstance(result, BaseException):
                bar.write(f"STL {keys[i][0]} seed {keys[i][1]} lost: {result!r}")
            elif "error" in result:
                out[keys[i]] = str(result["error"])
            else:
                out[keys[i]] = result["reference"]
            bar.update(1)
    finally:
        bar.close()
    return out
