"""The action space of ``IGBEnv`` and the action map it shares with exported policies.

The map itself lives in ``mtl_backends.action_map`` (exported policies run without gymnasium);
this module re-exports it and builds the ``Box(-1, 1, (T,), float32)`` space.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from mtl_backends.action_map import (
    ACTION_MAPS,
    ActionMap,
    HeldAction,
    action_to_weights,
    check_action,
    get_action_map,
    held_action_weights,
)


def action_space(n_tasks: int) -> spaces.Box:
    """``Box(-1, 1, (T,), float32)``: one action entry per task."""
    return spaces.Box(low=-1.0, high=1.0, shape=(n_tasks,), dtype=np.float32)


__all__ = [
    "ACTION_MAPS",
    "ActionMap",
    "HeldAction",
    "action_space",
    "action_to_weights",
    "check_action",
    "get_action_map",
    "held_action_weights",
]
