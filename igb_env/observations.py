"""The observation space of ``IGBEnv``, generated from the gap tracker's feature table.

``mtl_backends.features.FeatureTable`` is the one definition of the features: their values, the
space's bounds, the entry names and the docstring table all come from its rows.
"""

from __future__ import annotations

from gymnasium import spaces

from mtl_backends.features import FeatureTable


def observation_space(table: FeatureTable, n_tasks: int) -> spaces.Box:
    """``Box(low, high, float32)`` with the table's finite bounds for ``n_tasks`` tasks."""
    low, high = table.bounds(n_tasks)
    return spaces.Box(low=low, high=high, dtype=low.dtype)


__all__ = ["observation_space"]
