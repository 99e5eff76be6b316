"""Random exported policies and gap trackers in a given state, shared by the policy tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtl_backends.features import FeatureSpec, FeatureTable
from mtl_backends.gaps import GapTracker
from mtl_backends.policy import PolicyNetwork, build_sidecar, save_policy
from mtl_backends.policy.action_maps import make_action_map
from mtl_backends.policy.network import SetPolicyNetwork

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


# -- set policies (format version 2: any T) -------------------------------------------------------
SPEC_V2 = FeatureSpec(history=3, stride=5, ema=0.9, table="v2")
"""Feature table v2 (9 per-task, 3 global features) with K = 5."""


def set_sidecar(spec: FeatureSpec = SPEC_V2, mode: str = "interp", **kw: Any) -> dict[str, Any]:
    """A sidecar of a policy for any T (``n_tasks=None``)."""
    return sidecar(spec, mode, n_tasks=None, **kw)


def set_network(
    spec: FeatureSpec = SPEC_V2, mode: str = "interp", seed: int = 0, gain: float = 3.0, **kw: Any
) -> SetPolicyNetwork:
    """A random set network fitting ``spec`` and ``mode``; ``gain`` scales every parameter (large
    weights: actions far from 0 and varied), ``kw`` go to ``SetPolicyNetwork``."""
    table = FeatureTable(spec)
    global_actions = make_action_map(mode, 1.0).action_dim(1) - 1
    torch.manual_seed(seed)
    kw.setdefault("hidden", 16)
    net = SetPolicyNetwork(len(table.per_task), len(table.global_), global_actions, **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(gain)
    return net


def random_set_policy(
    path: Path, seed: int = 0, spec: FeatureSpec = SPEC_V2, mode: str = "interp", **kw: Any
) -> Path:
    """A saved random set policy (``kw`` go to the sidecar)."""
    return save_policy(path, set_network(spec, mode, seed), set_sidecar(spec, mode, **kw))
