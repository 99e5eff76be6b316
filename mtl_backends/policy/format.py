"""The exported-policy file format: the ``policy.json`` sidecar, how it is built and checked.

A policy is a folder with two files (written and read by ``mtl_backends.policy.files``):

* ``policy.pt``: a flat dict of tensors only (the network's ``state_dict``: ``layers.{i}.weight`` /
  ``layers.{i}.bias``; plus ``obs_mean`` / ``obs_var`` when observations are normalised), loaded
  with ``torch.load(weights_only=True)``, so no stored code runs;
* ``policy.json``: the sidecar describing how to rebuild and run it::

    {"format": "igb-policy", "format_version": 1,
     "n_tasks": T, "obs_dim": D,
     "features": {"spec": {"history", "stride", "ema"}, "table": [...], "n_tasks", "base_window"},
     "action_map": {"mode": "residual", "version": 1, "tau": 1.0},
     "steps_per_action": K, "transform": "log", "balancer": "sum",
     "base_window": [start, end], "total_steps": N,
     "network": {"sizes": [D, h1, h2, T], "activation": "tanh" | "relu", "output": "tanh" | "clip"},
     "obs_normalization": null | {"clip_obs": c, "epsilon": e},
     "versions": {...}, "algorithm": "PPO", ...}

The feature table (``mtl_backends.features``) and the action map
(``mtl_backends.policy.action_maps``) recorded here must be the ones this library computes for the
same settings; a policy exported by an incompatible version is refused.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from mtl_backends._version import __version__
from mtl_backends.features import FeatureSpec, FeatureTable
from mtl_backends.policy.action_maps import get_action_map

FORMAT = "igb-policy"
FORMAT_VERSION = 1
POLICY_FILE = "policy.pt"
SIDECAR_FILE = "policy.json"
REQUIRED_KEYS: tuple[str, ...] = (
    "n_tasks",
    "obs_dim",
    "features",
    "action_map",
    "steps_per_action",
    "transform",
    "balancer",
    "base_window",
    "total_steps",
    "algorithm",
)


def versions() -> dict[str, str]:
    """Library versions recorded in a sidecar."""
    return {
        "igb_rl": __version__,
        "torch": torch.__version__.split("+")[0],
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def build_sidecar(
    n_tasks: int,
    features: FeatureSpec,
    action_mode: str,
    tau: float,
    steps_per_action: int,
    balancer: str,
    base_window: Sequence[int] | None,
    total_steps: int,
    algorithm: str,
    **extra: Any,
) -> dict[str, Any]:
    """A sidecar for a policy trained with these settings (``save_policy`` adds ``network``).

    Args:
        n_tasks: ``T``.
        features: Feature settings of the observation (``stride`` must equal ``steps_per_action``).
        action_mode: Action map name.
        tau: Action temperature.
        steps_per_action: ``K``.
        balancer: Registry name of the balancer the policy was trained with.
        base_window: Base window of the training runs (``None``: the second epoch).
        total_steps: Step budget of the training runs.
        algorithm: Training algorithm, e.g. ``"PPO"``.
        extra: Further JSON-friendly fields (e.g. ``task_names``, ``env_config``,
            ``obs_normalization``).
    """
    amap = get_action_map(action_mode)
    table = FeatureTable(features)
    sidecar: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_tasks": int(n_tasks),
        "obs_dim": table.dim(n_tasks),
        "features": table.describe(n_tasks, base_window),
        "action_map": {"mode": amap.mode, "version": amap.version, "tau": float(tau)},
        "steps_per_action": int(steps_per_action),
        "transform": "log",
        "balancer": str(balancer),
        "base_window": None if base_window is None else [int(b) for b in base_window],
        "total_steps": int(total_steps),
        "obs_normalization": None,
        "versions": versions(),
        "algorithm": str(algorithm),
    }
    sidecar.update(extra)
    return sidecar


def validate_sidecar(sidecar: Mapping[str, Any], where: str) -> None:
    """Refuse a sidecar this library cannot run exactly as it was trained.

    Raises:
        ValueError: Another format or version, missing keys, an unknown action map version, a
            feature table that differs from this library's, or inconsistent sizes.
    """
    if sidecar.get("format") != FORMAT:
        raise ValueError(f"{where}: not an igb policy sidecar (format {sidecar.get('format')!r})")
    if sidecar.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{where}: policy format_version {sidecar.get('format_version')!r} is not supported "
            f"(this library reads version {FORMAT_VERSION})"
        )
    missing = [k for k in (*REQUIRED_KEYS, "network") if k not in sidecar]
    if missing:
        raise ValueError(f"{where}: sidecar lacks key(s) {', '.join(missing)}")
    try:
        amap = sidecar["action_map"]
        action_map = get_action_map(str(amap["mode"]), int(amap["version"]))(float(amap["tau"]))
        spec = FeatureSpec(**sidecar["features"]["spec"])
    except (KeyError, TypeError, ValueError) as err:
        detail = f"missing entry {err}" if isinstance(err, KeyError) else str(err)
        raise ValueError(f"{where}: malformed action_map or features.spec: {detail}") from None
    table = FeatureTable(spec)
    if list(sidecar["features"]["table"]) != [f.describe() for f in table.rows]:
        raise ValueError(
            f"{where}: the policy's feature table differs from this library's for the settings "
            f"{asdict(spec)}; it was exported by an incompatible version"
        )
    n_tasks, obs_dim = int(sidecar["n_tasks"]), int(sidecar["obs_dim"])
    if obs_dim != table.dim(n_tasks):
        raise ValueError(
            f"{where}: obs_dim {obs_dim} does not match the feature table "
            f"({table.dim(n_tasks)} for T={n_tasks})"
        )
    sizes = list(sidecar["network"]["sizes"])
    action_dim = action_map.action_dim(n_tasks)
    if sizes[0] != obs_dim or sizes[-1] != action_dim:
        raise ValueError(
            f"{where}: network sizes {sizes} must start with obs_dim {obs_dim} "
            f"and end with the action size {action_dim} (T={n_tasks})"
        )
    if sidecar["transform"] != "log":
        raise ValueError(
            f"{where}: transform {sidecar['transform']!r}; policies work on the 'log' transform"
        )


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "POLICY_FILE",
    "REQUIRED_KEYS",
    "SIDECAR_FILE",
    "build_sidecar",
    "validate_sidecar",
    "versions",
]
