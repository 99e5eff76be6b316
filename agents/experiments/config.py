"""Comparison experiments as configuration: ``ExperimentConfig`` and its entries, from YAML.

A comparison is declared by an ``ExperimentConfig`` (YAML under ``configs/experiments/``):
benchmarks (each with its own training budget and model-selection rule) x loss weightings x
gradient balancers x seeds. ``agents.experiments.grid`` expands it into cells; ``igb quickstart``
and ``igb evaluate`` generate one in code. Unknown keys, names and arguments are errors that list
the valid choices.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import agents.online  # noqa: F401  (registers the igbv2 weighting; light, SB3 loads on use)
from mtl_backends.balancers import GRADIENT_BALANCERS
from mtl_backends.benchmarks import BENCHMARKS, instance_kwargs
from mtl_backends.config import MethodSpec, TrainConfig, from_dict, load_yaml, to_dict
from mtl_backends.registry import ConfigError, valid_arguments
from mtl_backends.run import MEAN_LAST, SELECTIONS
from mtl_backends.weightings import LOSS_WEIGHTINGS

if TYPE_CHECKING:
    from agents.experiments.grid import Cell


def method_label(name: str) -> str:
    """Display name of a registered weighting or balancer (its ``label``, else its name)."""
    cls = LOSS_WEIGHTINGS.get(name) or GRADIENT_BALANCERS.get(name)
    label = getattr(cls, "label", None)
    return label if isinstance(label, str) else name


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
        eval_every: Evaluation interval (steps) of ``best_val`` and ``mean_last_10`` (``None``:
            the experiment's).
        instances: Each seed is an *instance* (as in the env): it also seeds the benchmark's data
            (``mtl_backends.benchmarks.instance_kwargs``), so every seed is a different problem.
            ``False``: the benchmark's arguments are fixed and the seed drives the run only.
        variation: With ``instances``, each seed also draws the benchmark's variation (e.g.
            synthetic task scales and noise floors) with ``sample_variation``.
        reference: What Δm and Δp are taken against: ``stl`` (our own single-task runs at the
            same budget, cached in ``stl_cache``) or ``published`` (the benchmark's
            ``published_reference()``: the papers' single-task numbers, for NYUv2, Cityscapes
            and QM9 as graphs; nothing is trained for it).
    """

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    label: str | None = None
    selection: str | None = None
    eval_every: int | None = None
    instances: bool = False
    variation: bool | str = False
    reference: str = "stl"

    @property
    def spec(self) -> MethodSpec:
        """The benchmark as a ``MethodSpec`` (its fixed arguments)."""
        return MethodSpec(self.name, dict(self.kwargs))

    def spec_for(self, seed: int) -> MethodSpec:
        """The benchmark that seed ``seed`` trains on (its instance with ``instances``)."""
        if not self.instances:
            return self.spec
        kwargs = instance_kwargs(BENCHMARKS[self.name], self.spec, seed, self.variation)
        return MethodSpec(self.name, kwargs)

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
        base = method_label(self.name)
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
        eval_every: Evaluation interval (steps) of ``best_val`` and ``mean_last_10``.
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
        return rule, (every if rule != "final" else None)


REFERENCES: tuple[str, ...] = ("stl", "published")
"""What a benchmark's Δm is taken against: our own STL runs, or the papers' published numbers."""

_BENCHMARK_FIELDS = (
    "name",
    "label",
    "train",
    "selection",
    "eval_every",
    "instances",
    "variation",
    "reference",
)
# ``flat_rho`` is a balancer setting; weightings accept the key only to refuse a value other than
# null (``validate_experiment``), so that ``to_dict`` of a config loads back.
_WEIGHTING_FIELDS = ("name", "label", "flat_rho")
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


def _check_method(registry: Mapping[str, type], kind: str, entry: Any, where: str) -> None:
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
        if b.reference not in REFERENCES:
            raise ConfigError(
                f"{where}.benchmarks[{i}]: unknown reference {b.reference!r}; valid choices: "
                f"{', '.join(REFERENCES)}"
            )
        if b.reference == "published" and not hasattr(BENCHMARKS[b.name], "published_reference"):
            have = sorted(n for n, c in BENCHMARKS.items() if hasattr(c, "published_reference"))
            raise ConfigError(
                f"{where}.benchmarks[{i}]: {b.name} has no published single-task reference; "
                f"reference: published is for {', '.join(have)} (use reference: stl)"
            )
        if b.variation and not b.instances:
            raise ConfigError(
                f"{where}.benchmarks[{i}]: variation draws a problem per instance; set "
                "instances: true as well"
            )
        if rule != "final" and (every is None or every < 1):
            raise ConfigError(
                f"{where}.benchmarks[{i}]: selection {rule!r} needs eval_every >= 1 "
                "(steps between validation evaluations)"
            )
        if rule == "mean_last_10" and every is not None and every * MEAN_LAST > b.train.steps:
            raise ConfigError(
                f"{where}.benchmarks[{i}]: selection 'mean_last_10' averages the last "
                f"{MEAN_LAST} evaluations; eval_every {every} gives fewer in "
                f"{b.train.steps} steps (at most {b.train.steps // MEAN_LAST})"
            )
    for i, w in enumerate(config.weightings):
        _check_method(LOSS_WEIGHTINGS, "loss weighting", w, f"{where}.weightings[{i}]")
        path = w.kwargs.get("path")
        cls = LOSS_WEIGHTINGS.get(w.name)
        # A weighting may resolve a name (a shipped policy) to its folder.
        resolved = cls.data_path(w.kwargs) if cls is not None else path
        if isinstance(path, str) and not Path(str(resolved)).expanduser().exists():
            raise ConfigError(
                f"{where}.weightings[{i}]: {w.name} path {path!r} does not exist "
                "(export a policy with `igb export RUN`, name a shipped policy, or comment the "
                "entry out)"
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
    return digest(to_dict(config))[:16]


def digest(obj: Any) -> str:
    """SHA-256 hex digest of a JSON-friendly object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


__all__ = [
    "BenchmarkEntry",
    "CellSelector",
    "ExperimentConfig",
    "MethodEntry",
    "PlotConfig",
    "config_hash",
    "digest",
    "experiment_from_dict",
    "load_experiment",
    "method_label",
    "validate_experiment",
]
