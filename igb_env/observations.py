"""The observation space of ``IGBEnv``, built from the gap tracker's feature table.

``mtl_backends.progress.feature_table`` is the one definition of the features; the space's bounds,
the flat layout names and the docstring table of ``IGBEnv`` are all generated from it here, so they
cannot drift apart.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from mtl_backends.progress import FeatureSpec, feature_layout, feature_table


def observation_bounds(n_tasks: int, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds (float32) of the flat, task-major observation."""
    table = feature_table(spec)
    per_task = [f for f in table if f.per_task]
    glob = [f for f in table if not f.per_task]
    low = [f.low for _ in range(n_tasks) for f in per_task] + [f.low for f in glob]
    high = [f.high for _ in range(n_tasks) for f in per_task] + [f.high for f in glob]
    return np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)


def observation_space(n_tasks: int, spec: FeatureSpec) -> spaces.Box:
    """``Box(low, high, float32)`` with the feature table's finite bounds."""
    low, high = observation_bounds(n_tasks, spec)
    return spaces.Box(low=low, high=high, dtype=np.float32)


def observation_names(task_names: tuple[str, ...], spec: FeatureSpec) -> list[str]:
    """Name of every observation entry, e.g. ``t1/log_gap``, then the global features."""
    return [name for name, _, _ in feature_layout(spec, task_names)]


def observation_table(spec: FeatureSpec) -> str:
    """A Markdown table of the observation for ``T`` tasks (``F`` features per task)."""
    table = feature_table(spec)
    per_task = [f for f in table if f.per_task]
    glob = [f for f in table if not f.per_task]
    n = len(per_task)
    rows = ["| Index | Feature | Min | Max | Description |", "|---|---|---|---|---|"]
    for i, f in enumerate(per_task):
        rows.append(
            f"| {n}·t + {i} | `{f.name}` (task t) | {f.low:g} | {f.high:g} | {f.description} |"
        )
    for j, f in enumerate(glob):
        rows.append(f"| {n}·T + {j} | `{f.name}` | {f.low:g} | {f.high:g} | {f.description} |")
    return "\n".join(rows)


__all__ = ["observation_bounds", "observation_names", "observation_space", "observation_table"]
