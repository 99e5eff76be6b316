"""The action space of ``IGBEnv``.

What an action means is the action map's business (``mtl_backends.policy.action_maps``, shared
with exported policies, which run without gymnasium); here is only its ``Box``.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


def action_space(size: int) -> spaces.Box:
    """``Box(-1, 1, (size,), float32)``: the action of a map (one entry per task for v1 maps)."""
    return spaces.Box(low=-1.0, high=1.0, shape=(size,), dtype=np.float32)


__all__ = ["action_space"]
