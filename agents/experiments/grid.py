"""The grid of a comparison: its cells (benchmark, weighting, balancer, seed) and their keys.

One *cell* is one plain MTL run. Its key hashes everything that changes its result (the
benchmark the seed trains on, training settings, methods and their arguments, the content of
files they read such as exported policies, the seed and the selection rule), so a changed config
or policy recomputes exactly the affected cells and everything else is reused from disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.experiments.config import (
    BenchmarkEntry,
    ExperimentConfig,
    MethodEntry,
    digest,
)
from mtl_backends.build import transform_conflict as build_transform_conflict
from mtl_backends.config import TrainConfig, key_dict
from mtl_backends.policy.onnx_export import ONNX_FILE
from mtl_backends.weightings import LOSS_WEIGHTINGS

CELL_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Cell:
    """One run of the grid.

    Attributes:
        benchmark: Benchmark entry (with its training settings).
        weighting: Loss weighting entry.
        balancer: Gradient balancer entry (with its optional flat radius).
        seed: Seed of the run (and of its STL references).
        selection: ``final``, ``best_val`` or ``mean_last_10``.
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
        """Everything that changes the cell's result (labels excluded).

        The training settings are ``config.key_dict``'s form: settings added later (e.g.
        ``divergence_factor``) are left out at their defaults, so existing keys stay valid; so
        is the Δm reference at its default (``stl``).
        """
        identity = {
            "version": CELL_FORMAT_VERSION,
            "benchmark": self.benchmark.spec_for(self.seed).to_dict(),
            "train": key_dict(self.train),
            "weighting": self.weighting.spec.to_dict(),
            "weighting_files": _path_digests(self.weighting.name, self.weighting.kwargs),
            "balancer": self.balancer.spec.to_dict(),
            "seed": self.seed,
            "selection": self.selection,
            "eval_every": self.eval_every,
        }
        if self.benchmark.reference != "stl":
            identity["reference"] = self.benchmark.reference
        return identity

    @property
    def key(self) -> str:
        """File name stem of the cell (a hash of ``identity()``)."""
        return digest(self.identity())[:24]

    @property
    def row(self) -> str:
        """Table row: the weighting, plus the balancer unless it is plain ``sum``."""
        if self.balancer.name == "sum" and self.balancer.flat_rho is None:
            return self.weighting.display
        return f"{self.weighting.display} + {self.balancer.display}"


def _path_digests(name: str, kwargs: Mapping[str, Any]) -> dict[str, str]:
    """Content digests of the files a weighting reads (``data_path``: e.g. exported policies).

    A policy re-exported to the same folder then gives a new cell key instead of a stale result.
    ``policy.onnx`` is left out: derived from ``policy.pt`` and never read by a run, writing it
    (``igb export --onnx``) keeps the keys.
    """
    out: dict[str, str] = {}
    cls = LOSS_WEIGHTINGS.get(name)
    value = cls.data_path(kwargs) if cls is not None else kwargs.get("path")
    if not isinstance(value, str):
        return out
    path = Path(value).expanduser()
    files = (
        sorted(p for p in path.rglob("*") if p.is_file() and p.name != ONNX_FILE)
        if path.is_dir()
        else [path]
    )
    h = hashlib.sha256()
    for p in files:
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    out["path"] = h.hexdigest()[:16]
    return out


def transform_conflict(weighting: MethodEntry, balancer: MethodEntry) -> str | None:
    """The reason a (weighting, balancer) pair cannot run, from the declared transforms, or None."""
    return build_transform_conflict(weighting.name, balancer.name)


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


__all__ = ["CELL_FORMAT_VERSION", "Cell", "GridPlan", "plan_grid", "transform_conflict"]
