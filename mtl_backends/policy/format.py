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

Format version 2 adds policies for any number of tasks: ``"network": {"kind": "set",
"task_features": F, "global_features": G, "global_actions": A, "hidden": H, ...}``
(``mtl_backends.policy.network.SetPolicyNetwork``, whose input scales are tensors of
``policy.pt``), with ``"n_tasks": null`` and ``"obs_dim": null``. Version 1 files (MLP policies of
one ``T``) are read unchanged, and MLP policies are still written as version 1.

The feature table (``mtl_backends.features``) and the action map
(``mtl_backends.policy.action_maps``) recorded here must be the ones this library computes for the
same settings; a policy exported by an incompatible version is refused.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mtl_backends._version import __version__
from mtl_backends.features import FeatureSpec, FeatureTable
from mtl_backends.policy.action_maps import ActionMap, get_action_map
from mtl_backends.policy.network import NETWORKS

FORMAT = "igb-policy"
FORMAT_VERSION = 2
"""The newest format version (policies for any T); version 1 (one T) is still read and written."""
FORMAT_VERSIONS: tuple[int, ...] = (1, 2)
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
    n_tasks: int | None,
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
        n_tasks: ``T``, or ``None`` for a policy that runs at any ``T`` (a set network).
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
        "format_version": 1 if n_tasks is not None else FORMAT_VERSION,
        "n_tasks": None if n_tasks is None else int(n_tasks),
        "obs_dim": None if n_tasks is None else table.dim(n_tasks),
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
    if not isinstance(sidecar, Mapping):
        raise ValueError(
            f"{where}: a policy sidecar is a JSON object, got {type(sidecar).__name__}"
        )
    if sidecar.get("format") != FORMAT:
        raise ValueError(f"{where}: not an igb policy sidecar (format {sidecar.get('format')!r})")
    version = sidecar.get("format_version")
    if version not in FORMAT_VERSIONS:
        raise ValueError(
            f"{where}: policy format_version {version!r} is not supported "
            f"(this library reads versions {', '.join(map(str, FORMAT_VERSIONS))})"
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
    recorded = sidecar["features"].get("table")
    if not isinstance(recorded, list) or recorded != [f.describe() for f in table.rows]:
        raise ValueError(
            f"{where}: the policy's feature table differs from this library's for the settings "
            f"{dict(sidecar['features']['spec'])}; it was exported by an incompatible version"
        )
    network = sidecar["network"]
    kind = network.get("kind", "mlp") if isinstance(network, Mapping) else None
    if kind not in NETWORKS:
        raise ValueError(
            f"{where}: unknown network kind {kind!r}; valid choices: {', '.join(NETWORKS)}"
        )
    if kind == "set":
        _validate_set(sidecar, network, table, action_map, where)
    else:
        _validate_mlp(sidecar, network, table, action_map, where)
    if sidecar["transform"] != "log":
        raise ValueError(
            f"{where}: transform {sidecar['transform']!r}; policies work on the 'log' transform"
        )
    k = sidecar["steps_per_action"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{where}: steps_per_action must be an integer >= 1, got {k!r}")


def _validate_mlp(
    sidecar: Mapping[str, Any],
    network: Mapping[str, Any],
    table: FeatureTable,
    action_map: ActionMap,
    where: str,
) -> None:
    """An MLP policy of one ``T``: its sizes must be the table's and the map's for that ``T``."""
    try:
        n_tasks, obs_dim = int(sidecar["n_tasks"]), int(sidecar["obs_dim"])
        sizes = [int(s) for s in network["sizes"]]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{where}: an mlp policy needs integer n_tasks, obs_dim and network.sizes ({err})"
        ) from None
    if obs_dim != table.dim(n_tasks):
        raise ValueError(
            f"{where}: obs_dim {obs_dim} does not match the feature table "
            f"({table.dim(n_tasks)} for T={n_tasks})"
        )
    action_dim = action_map.action_dim(n_tasks)
    if not sizes or sizes[0] != obs_dim or sizes[-1] != action_dim:
        raise ValueError(
            f"{where}: network sizes {sizes} must start with obs_dim {obs_dim} "
            f"and end with the action size {action_dim} (T={n_tasks})"
        )


def _validate_set(
    sidecar: Mapping[str, Any],
    network: Mapping[str, Any],
    table: FeatureTable,
    action_map: ActionMap,
    where: str,
) -> None:
    """A set policy (any ``T``): its input and output widths must be the table's and the map's."""
    if sidecar.get("format_version") != 2:
        raise ValueError(f"{where}: set networks need format_version 2")
    if sidecar["n_tasks"] is not None or sidecar["obs_dim"] is not None:
        raise ValueError(
            f"{where}: a set policy runs at any T; its n_tasks and obs_dim must be null"
        )
    expected = {
        "task_features": len(table.per_task),
        "global_features": len(table.global_),
        "global_actions": action_map.action_dim(1) - 1,
    }
    for key, value in expected.items():
        if network.get(key) != value:
            raise ValueError(
                f"{where}: network.{key} is {network.get(key)!r} but the feature table and action "
                f"map {action_map.mode!r} need {value}"
            )
    if sidecar.get("obs_normalization") is not None:
        raise ValueError(
            f"{where}: set policies take unnormalised observations (their input scales are part "
            "of the weights); obs_normalization must be null"
        )


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "POLICY_FILE",
    "REQUIRED_KEYS",
    "SIDECAR_FILE",
    "build_sidecar",
    "validate_sidecar",
    "versions",
]
