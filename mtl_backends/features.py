"""The feature table: what a weighting policy observes of the improvable-gap state.

One table, executed: every row names a feature, gives its finite bounds and description, and
computes its value from a ``GapTracker``. Everything else is generated from the rows — the
observation vector (``FeatureTable.compute``), its size and bounds (the env's observation space),
the flat entry names, the Markdown table of the env's docstring and the ``features`` entry of an
exported policy's sidecar — so none of them can drift from the others.

Layout (``docs/architecture.md``, "The feature table"): task-major, every per-task feature of task
1, then of task 2, ...; then the global features. Per-task features are 0 until the base losses
exist, except ``weight`` and, in table ``v2``, ``log_noise`` (its floor ``-LOG_CLIP`` until a noise
estimate exists).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from mtl_backends.gaps import GapTracker

LOG_CLIP = 10.0
"""Bound of every log-scale feature (log gaps and their changes are clipped to ±LOG_CLIP)."""
TABLES: tuple[str, ...] = ("v1", "v2")
MAX_TASKS = 32
"""The T of the ``n_tasks`` feature's upper bound (``log T / log MAX_TASKS``, clipped to 1)."""
LOSS_EPS = 1e-8
"""Added to ``L - L*`` inside the log of ``rel_log_loss`` (the log transform's default)."""


@dataclass(frozen=True)
class FeatureSpec:
    """Settings of the feature table.

    Attributes:
        history: Number of past log-gap snapshots whose change is a feature.
        stride: Steps between snapshots (the env's steps per action, so decisions see fresh ones).
        ema: EMA coefficient of the smoothed gap (0 = no smoothing).
        table: ``v1`` (the first table: per-task features and the weight divided by T) or ``v2``
            (the table of task-count-agnostic policies: the same gap features, the task's gap
            and log loss relative to the other tasks', the relative noise of its batch losses,
            its weight, and T among the global features).
    """

    history: int = 3
    stride: int = 25
    ema: float = 0.9
    table: str = "v1"

    def __post_init__(self) -> None:
        if self.history < 0:
            raise ValueError(f"history must be >= 0, got {self.history}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if self.table not in TABLES:
            raise ValueError(
                f"unknown feature table {self.table!r}; valid choices: {', '.join(TABLES)}"
            )


Compute = Callable[["GapTracker"], "np.ndarray | float"]
"""A row's value: ``[T]`` float64 for a per-task feature, a float for a global one."""


@dataclass(frozen=True)
class Feature:
    """One row of the feature table.

    Attributes:
        name: Feature name (per-task features are prefixed with the task name in the layout).
        low: Lower bound (values are clipped to it).
        high: Upper bound.
        per_task: Whether the feature is repeated for every task.
        description: What it measures.
        compute: Its value from a gap tracker (not part of the row's description).
    """

    name: str
    low: float
    high: float
    per_task: bool
    description: str
    compute: Compute = field(compare=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """The row as plain values (name, bounds, per_task, description), as sidecars store it."""
        out = asdict(self)
        del out["compute"]
        return out


# -- row values -------------------------------------------------------------------------------
def _log_gap(tracker: GapTracker) -> np.ndarray:
    if not tracker.has_base:
        return np.zeros(tracker.n_tasks)
    return tracker.log_gap().numpy()


def _raw_log_gap(tracker: GapTracker) -> np.ndarray:
    if not tracker.has_base or tracker.gaps is None:
        return np.zeros(tracker.n_tasks)
    return torch.log(tracker.gaps.clamp_min(1e-30)).clamp(-LOG_CLIP, LOG_CLIP).numpy()


def _log_gap_change(j: int, tracker: GapTracker) -> np.ndarray:
    past = tracker.past_log_gaps() if tracker.has_base else []
    if len(past) < j:
        return np.zeros(tracker.n_tasks)
    return (10.0 * (tracker.log_gap() - past[-j])).clamp(-LOG_CLIP, LOG_CLIP).numpy()


def _weight(tracker: GapTracker) -> np.ndarray:
    return (tracker.last_weights / tracker.n_tasks).clamp(0.0, 1.0).numpy()


def _centered(values: np.ndarray) -> np.ndarray:
    return np.clip(values - values.mean(), -LOG_CLIP, LOG_CLIP)


def _centered_log_gap(tracker: GapTracker) -> np.ndarray:
    if not tracker.has_base:
        return np.zeros(tracker.n_tasks)
    return _centered(tracker.log_gap().numpy())


def _rel_log_loss(tracker: GapTracker) -> np.ndarray:
    if tracker.losses is None or not tracker.has_base:
        return np.zeros(tracker.n_tasks)
    margin = (tracker.losses - tracker.lower_bounds).clamp_min(0.0).numpy()
    return _centered(np.log(margin + LOSS_EPS))


def _log_noise(tracker: GapTracker) -> np.ndarray:
    if tracker.noise is None:
        return np.full(tracker.n_tasks, -LOG_CLIP)
    return np.clip(np.log(np.maximum(tracker.noise.numpy(), 1e-30)), -LOG_CLIP, LOG_CLIP)


def _raw_weight(tracker: GapTracker) -> np.ndarray:
    return (tracker.last_weights).clamp(0.0, float(MAX_TASKS)).numpy()


def _log_n_tasks(tracker: GapTracker) -> float:
    return min(float(np.log(tracker.n_tasks) / np.log(MAX_TASKS)), 1.0)


def _progress(tracker: GapTracker) -> float:
    return tracker.progress


def _lr_ratio(tracker: GapTracker) -> float:
    return tracker.lr_ratio


def _rows(spec: FeatureSpec) -> tuple[Feature, ...]:
    rows = [
        Feature(
            "log_gap", -LOG_CLIP, LOG_CLIP, True, "log of the EMA-smoothed improvable gap", _log_gap
        ),
        Feature(
            "raw_log_gap", -LOG_CLIP, LOG_CLIP, True, "log of the current batch's gap", _raw_log_gap
        ),
    ]
    rows += [
        Feature(
            f"log_gap_change_{j}",
            -LOG_CLIP,
            LOG_CLIP,
            True,
            f"10 x (log_gap now - log_gap {j} snapshot(s) ago); 0 until it exists",
            functools.partial(_log_gap_change, j),
        )
        for j in range(1, spec.history + 1)
    ]
    if spec.table == "v2":
        rows += [
            Feature(
                "centered_log_gap",
                -LOG_CLIP,
                LOG_CLIP,
                True,
                "log_gap minus its mean over the tasks",
                _centered_log_gap,
            ),
            Feature(
                "rel_log_loss",
                -LOG_CLIP,
                LOG_CLIP,
                True,
                "log(L - L* + 1e-8) of the batch minus its mean over the tasks",
                _rel_log_loss,
            ),
            Feature(
                "log_noise",
                -LOG_CLIP,
                LOG_CLIP,
                True,
                "log EMA of |log g - log EMA(g)|, unclipped: the batch losses' relative noise",
                _log_noise,
            ),
            Feature(
                "weight", 0.0, float(MAX_TASKS), True, "the task's last applied weight", _raw_weight
            ),
            Feature(
                "n_tasks", 0.0, 1.0, False, f"log T / log {MAX_TASKS}, clipped to 1", _log_n_tasks
            ),
        ]
    else:
        rows.append(
            Feature(
                "weight", 0.0, 1.0, True, "the task's last applied weight divided by T", _weight
            )
        )
    rows += [
        Feature("progress", 0.0, 1.0, False, "fraction of the step budget spent", _progress),
        Feature(
            "lr_ratio", 0.0, 1.0, False, "current learning rate / initial learning rate", _lr_ratio
        ),
    ]
    return tuple(rows)


class FeatureTable:
    """The rows for ``spec``, and everything generated from them.

    Args:
        spec: Feature settings.
    """

    def __init__(self, spec: FeatureSpec | None = None) -> None:
        self.spec = spec or FeatureSpec()
        self.rows = _rows(self.spec)
        self.per_task = tuple(f for f in self.rows if f.per_task)
        self.global_ = tuple(f for f in self.rows if not f.per_task)

    def dim(self, n_tasks: int) -> int:
        """Length of the observation for ``n_tasks`` tasks: ``F · T + G``."""
        return n_tasks * len(self.per_task) + len(self.global_)

    def layout(self, task_names: Sequence[str]) -> list[tuple[str, float, float]]:
        """``(name, low, high)`` of every entry, task-major, e.g. ``t1/log_gap``."""
        out = [(f"{t}/{f.name}", f.low, f.high) for t in task_names for f in self.per_task]
        return out + [(f.name, f.low, f.high) for f in self.global_]

    def names(self, task_names: Sequence[str]) -> list[str]:
        """Name of every entry of the observation."""
        return [name for name, _, _ in self.layout(task_names)]

    def bounds(self, n_tasks: int) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds (float32) of the observation."""
        entries = self.layout([str(t) for t in range(n_tasks)])
        low = np.asarray([lo for _, lo, _ in entries], dtype=np.float32)
        high = np.asarray([hi for _, _, hi in entries], dtype=np.float32)
        return low, high

    def compute(self, tracker: GapTracker) -> np.ndarray:
        """The observation (float32): every row's value, task-major, then the global rows."""
        per_task = np.stack([np.asarray(f.compute(tracker)) for f in self.per_task], axis=1)
        glob = [float(f.compute(tracker)) for f in self.global_]
        out = np.concatenate([per_task.reshape(-1), glob])
        return out.astype(np.float32)

    def describe(self, n_tasks: int | None, base_window: Sequence[int] | None) -> dict[str, Any]:
        """JSON-friendly description (the ``features`` entry of a policy sidecar).

        ``table`` is left out of the spec for ``v1`` (sidecars written before it existed).
        """
        spec = asdict(self.spec)
        if spec["table"] == "v1":
            del spec["table"]
        return {
            "spec": spec,
            "table": [f.describe() for f in self.rows],
            "n_tasks": None if n_tasks is None else int(n_tasks),
            "base_window": None if base_window is None else [int(b) for b in base_window],
        }

    def markdown(self) -> str:
        """A Markdown table of the observation for ``T`` tasks (``F`` features per task)."""
        n = len(self.per_task)
        rows = ["| Index | Feature | Min | Max | Description |", "|---|---|---|---|---|"]
        for i, f in enumerate(self.per_task):
            rows.append(
                f"| {n}·t + {i} | `{f.name}` (task t) | {f.low:g} | {f.high:g} | {f.description} |"
            )
        for j, f in enumerate(self.global_):
            rows.append(f"| {n}·T + {j} | `{f.name}` | {f.low:g} | {f.high:g} | {f.description} |")
        return "\n".join(rows)


__all__ = ["LOG_CLIP", "MAX_TASKS", "TABLES", "Feature", "FeatureSpec", "FeatureTable"]
