"""Random exported policies and gap trackers in a given state, shared by the policy tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtl_backends.features import FeatureSpec, FeatureTable
from mtl_backends.gaps import GapTracker
from mtl_backends.policy import PolicyNetwork, build_sidecar, save_policy

T = 3
SPEC = FeatureSpec(history=3, stride=5, ema=0.9)


def sidecar(spec: FeatureSpec = SPEC, mode: str = "residual", **kw):
    args: dict[str, Any] = {
        "n_tasks": T,
        "features": spec,
        "action_mode": mode,
        "tau": 1.0,
        "steps_per_action": spec.stride,
        "balancer": "sum",
        "base_window": (5, 10),
        "total_steps": 60,
        "algorithm": "test",
    }
    args.update(kw)
    return build_sidecar(**args)


def random_policy(
    path: Path, seed: int = 0, spec: FeatureSpec = SPEC, zero: bool = False, **kw
) -> Path:
    torch.manual_seed(seed)
    net = PolicyNetwork([FeatureTable(spec).dim(T), 16, 16, T], "tanh", "clip")
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.0 if zero else 3.0)  # large weights: actions far from 0 and varied
    return save_policy(path, net, sidecar(spec, **kw))


def tracker_with_gaps(gaps: list[float]) -> GapTracker:
    """A tracker whose base losses are 1, after absorbing ``gaps`` as the current losses."""
    tracker = GapTracker(len(gaps), (0, 1))
    tracker.update(torch.ones(len(gaps), dtype=torch.float64), 0, 1e-3)
    tracker.update(torch.tensor(gaps, dtype=torch.float64), 1, 1e-3)
    return tracker
