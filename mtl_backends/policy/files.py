"""Writing and reading exported-policy folders (``policy.pt`` + ``policy.json``, atomically)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtl_backends.atomic import atomic_torch_save, write_text_atomic
from mtl_backends.policy.format import (
    FORMAT,
    POLICY_FILE,
    SIDECAR_FILE,
    validate_sidecar,
    versions,
)
from mtl_backends.policy.network import PolicyNetwork, SetPolicyNetwork, network_from_spec
from mtl_backends.policy.runtime import Policy

SHIPPED_DIR = Path(__file__).with_name("shipped")
"""Policies shipped inside the package (``mtl_backends/policy/shipped/<name>/``)."""
DEFAULT_SHIPPED = "generalist"
"""The shipped policy ``PolicyWeighting`` loads when no path is given."""


def shipped_policies() -> list[str]:
    """Names of the policies shipped inside the package."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / SIDECAR_FILE).is_file())


def shipped_policy(name: str = DEFAULT_SHIPPED) -> Path:
    """The folder of the shipped policy ``name`` (no download: it is package data).

    Raises:
        ValueError: No shipped policy has that name (the valid names are listed).
    """
    names = shipped_policies()
    if name not in names:
        raise ValueError(
            f"no shipped policy {name!r}; valid choices: {', '.join(names) or '(none installed)'}"
        )
    return SHIPPED_DIR / name


def save_policy(
    path: str | Path,
    network: PolicyNetwork | SetPolicyNetwork,
    sidecar: Mapping[str, Any],
    obs_mean: Tensor | np.ndarray | None = None,
    obs_var: Tensor | np.ndarray | None = None,
) -> Path:
    """Write a policy folder (``policy.pt`` + ``policy.json``), each file atomically.

    Args:
        path: Folder (created if missing).
        network: The deterministic actor (an MLP of one ``T`` or a set network of any ``T``).
        sidecar: From ``build_sidecar`` (or ``IGBEnv.policy_sidecar``); ``network`` and ``versions``
            are filled in here.
        obs_mean: Observation running mean (with ``obs_var``: enables normalisation; the sidecar's
            ``obs_normalization`` defaults to ``{"clip_obs": 10.0, "epsilon": 1e-8}``, SB3's).
        obs_var: Observation running variance.

    Returns:
        The folder.

    Raises:
        ValueError: An inconsistent sidecar, network or normalisation.
    """
    folder = Path(path)
    out = dict(sidecar)
    out.setdefault("format", FORMAT)
    # Set networks exist from format version 2 on; MLP sidecars keep version 1.
    out.setdefault("format_version", 2 if isinstance(network, SetPolicyNetwork) else 1)
    out.setdefault("versions", versions())
    out["network"] = network.spec()
    if (obs_mean is None) != (obs_var is None):
        raise ValueError("obs_mean and obs_var must be given together")
    tensors: dict[str, Tensor] = {
        k: v.detach().cpu().clone() for k, v in network.state_dict().items()
    }
    if obs_mean is not None and obs_var is not None:
        mean = torch.as_tensor(np.asarray(obs_mean, dtype=np.float64)).reshape(-1)
        var = torch.as_tensor(np.asarray(obs_var, dtype=np.float64)).reshape(-1)
        if isinstance(network, SetPolicyNetwork):
            raise ValueError(
                "set networks take unnormalised observations (their input scales are part of "
                "the weights); obs_mean/obs_var cannot be given"
            )
        if mean.shape != (network.sizes[0],) or var.shape != mean.shape:
            raise ValueError(f"obs_mean/obs_var must have {network.sizes[0]} entries")
        tensors["obs_mean"], tensors["obs_var"] = mean, var
        if out.get("obs_normalization") is None:
            out["obs_normalization"] = {"clip_obs": 10.0, "epsilon": 1e-8}
    elif out.get("obs_normalization") is not None:
        raise ValueError("the sidecar sets obs_normalization but no obs_mean/obs_var were given")
    else:
        out["obs_normalization"] = None
    validate_sidecar(out, str(folder))
    text = json.dumps(out, indent=2, sort_keys=True)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(tensors, folder / POLICY_FILE)
    write_text_atomic(text + "\n", folder / SIDECAR_FILE)
    return folder


def load_policy(path: str | Path) -> Policy:
    """Load a policy folder written by ``save_policy`` (tensors only; no stored code runs).

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: An unsupported format, an inconsistent sidecar or unexpected tensors.
    """
    folder = Path(path)
    side_path, weights_path = folder / SIDECAR_FILE, folder / POLICY_FILE
    for p in (side_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"policy file {str(p)!r} does not exist")
    sidecar = json.loads(side_path.read_text())
    validate_sidecar(sidecar, str(side_path))
    tensors = torch.load(weights_path, map_location="cpu", weights_only=True)
    if not isinstance(tensors, dict) or not all(isinstance(v, Tensor) for v in tensors.values()):
        raise ValueError(f"{weights_path}: expected a dict of tensors")
    obs_mean, obs_var = tensors.pop("obs_mean", None), tensors.pop("obs_var", None)
    if (sidecar.get("obs_normalization") is not None) != (
        obs_mean is not None and obs_var is not None
    ):
        raise ValueError(
            f"{folder}: obs_normalization in the sidecar and obs_mean/obs_var tensors disagree"
        )
    network = network_from_spec(sidecar["network"])
    try:
        network.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{weights_path}: the tensors do not fit the sidecar's network {sidecar['network']}: "
            f"{err}"
        ) from None
    network.eval()
    return Policy(network, sidecar, obs_mean, obs_var)


__all__ = [
    "DEFAULT_SHIPPED",
    "SHIPPED_DIR",
    "load_policy",
    "save_policy",
    "shipped_policies",
    "shipped_policy",
]
