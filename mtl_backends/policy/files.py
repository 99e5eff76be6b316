"""Writing and reading exported-policy folders (``policy.pt`` + ``policy.json``, atomically).

Loading trusts nothing in the folder: the sidecar is parsed as JSON and validated, the weights are
read with ``torch.load(weights_only=True)`` (tensors and plain containers only, no stored code
runs), and every tensor is checked by name, shape, dtype and finiteness against the network the
sidecar describes before it is used. An exported policy folder therefore need not be trusted.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtl_backends.atomic import atomic_torch_save, write_text_atomic
from mtl_backends.fileio import FileFormatError, read_json
from mtl_backends.packaged import builtin_policies, is_name
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


def _named_policies() -> dict[str, Path]:
    """Every policy addressable by name: the repository's ``policies/`` and ``SHIPPED_DIR``."""
    named = dict(builtin_policies())  # the checkout's policies/, or the wheel's copy
    if SHIPPED_DIR.is_dir():
        named.update(
            (p.name, p) for p in sorted(SHIPPED_DIR.iterdir()) if (p / SIDECAR_FILE).is_file()
        )
    return named


def shipped_policies() -> list[str]:
    """Names of the policies that come with igb-rl (``policies/`` and the package's ``shipped``)."""
    return sorted(_named_policies())


def shipped_policy(name: str = DEFAULT_SHIPPED) -> Path:
    """The folder of the shipped policy ``name`` (no download: it is package data).

    Raises:
        ValueError: No shipped policy has that name (the valid names are listed).
    """
    named = _named_policies()
    if name not in named:
        listed = ", ".join(sorted(named)) or "(none installed)"
        raise ValueError(f"no shipped policy {name!r}; valid choices: {listed}")
    return named[name]


def resolve_policy(path: str | Path) -> Path:
    """A policy folder: ``path`` when it exists or is a path, else the shipped policy of that name.

    ``PolicyWeighting.load("synthetic-ppo-residual")`` and
    ``PolicyWeighting.load("policies/synthetic-ppo-residual")`` (in a checkout) load the same
    folder. A name that is no shipped policy is returned unchanged, for ``load_policy`` to report.
    """
    folder = Path(path)
    if folder.exists() or not is_name(path):
        return folder
    return _named_policies().get(str(path), folder)


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

    Args:
        path: The folder, or the name of a shipped policy (``resolve_policy``).

    Raises:
        FileNotFoundError: The folder or a file is missing (the shipped names are listed).
        ValueError: An unsupported format, an inconsistent or malformed sidecar (not JSON, not an
            object), an unreadable weights file, or tensors whose names, shapes, dtypes or values
            (NaN, infinite) do not fit the sidecar's network (``FileFormatError``, naming the
            file).
    """
    folder = resolve_policy(path)
    if not folder.is_dir():
        names = ", ".join(shipped_policies()) or "(none installed)"
        raise FileNotFoundError(
            f"policy folder {str(folder)!r} does not exist; give a folder written by `igb export` "
            f"or the name of a shipped policy: {names}"
        )
    side_path, weights_path = folder / SIDECAR_FILE, folder / POLICY_FILE
    for p in (side_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"policy file {str(p)!r} does not exist")
    sidecar = read_json(side_path, "policy sidecar")
    validate_sidecar(sidecar, str(side_path))
    tensors = read_tensors(weights_path)
    obs_mean, obs_var = tensors.pop("obs_mean", None), tensors.pop("obs_var", None)
    if (sidecar.get("obs_normalization") is not None) != (
        obs_mean is not None and obs_var is not None
    ):
        raise ValueError(
            f"{folder}: obs_normalization in the sidecar and obs_mean/obs_var tensors disagree"
        )
    try:
        network = network_from_spec(sidecar["network"])
    except (KeyError, TypeError, ValueError) as err:
        raise FileFormatError(
            f"{side_path}: network {sidecar['network']} cannot be built ({err})"
        ) from None
    problems = _tensor_problems(network.state_dict(), tensors)
    if problems:
        raise FileFormatError(
            f"{weights_path}: the tensors do not fit the sidecar's network {sidecar['network']}: "
            + "; ".join(problems)
        )
    if obs_mean is not None and obs_var is not None:
        _check_normalisation(weights_path, obs_mean, obs_var, sidecar["obs_dim"])
    _check_finite(weights_path, tensors)
    network.load_state_dict(tensors, strict=True)
    network.eval()
    return Policy(network, sidecar, obs_mean, obs_var)


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """The flat dict of tensors in a ``policy.pt``, read without running stored code.

    Raises:
        FileFormatError: Empty, truncated or damaged; holds objects other than tensors (a
            pickled object or code, refused by ``weights_only=True``); or not a dict of named
            tensors.
    """
    path = Path(path)
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        if "weights only load failed" in str(err).lower():
            # torch refused the pickle (a global other than a tensor's, or an opcode it does not
            # read): damaged, or carrying objects or code. Its message advises retrying with
            # weights_only=False, which would run that code; the advice is not passed on.
            raise FileFormatError(
                f"policy weights {str(path)!r} are not a tensors-only torch file: damaged, or "
                "holding pickled objects or code, which are never loaded; export the policy "
                "again with `igb export` (and never load this file with weights_only=False)"
            ) from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FileFormatError(
            f"policy weights {str(path)!r} are not a readable torch tensor file ({reason}); the "
            "file is empty, truncated or damaged: export the policy again"
        ) from None
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in tensors.items()
    ):
        raise FileFormatError(
            f"policy weights {str(path)!r} must hold a dict of named tensors, got "
            f"{type(tensors).__name__}"
        )
    return dict(tensors)


def _tensor_problems(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> list[str]:
    """Differences of names, shapes and dtypes between a network's state and the file's tensors."""
    problems: list[str] = []
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing:
        problems.append(f"Missing key(s) {', '.join(missing)}")
    if unexpected:
        problems.append(f"Unexpected key(s) {', '.join(unexpected)}")
    for name, ref in expected.items():
        value = given.get(name)
        if value is None:
            continue
        if value.shape != ref.shape:
            problems.append(
                f"size mismatch for {name}: shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
            )
        elif value.dtype != ref.dtype:
            problems.append(f"dtype mismatch for {name}: {value.dtype}, expected {ref.dtype}")
    return problems


def _check_finite(path: Path, tensors: Mapping[str, Tensor]) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise FileFormatError(
            f"{path}: tensor(s) {', '.join(bad)} hold NaN or infinite values; the policy is "
            "damaged (or its training diverged): export it again"
        )


def _check_normalisation(path: Path, mean: Tensor, var: Tensor, obs_dim: Any) -> None:
    problems = []
    for name, value in (("obs_mean", mean), ("obs_var", var)):
        if value.dtype != torch.float64:
            problems.append(f"{name} has dtype {value.dtype}, expected torch.float64")
        elif obs_dim is not None and value.shape != (int(obs_dim),):
            problems.append(f"{name} has shape {tuple(value.shape)}, expected ({int(obs_dim)},)")
        elif not bool(value.isfinite().all()):
            problems.append(f"{name} holds NaN or infinite values")
    if not problems and bool((var < 0).any()):
        problems.append("obs_var has negative entries")
    if problems:
        raise FileFormatError(f"{path}: {'; '.join(problems)}: export the policy again")


__all__ = [
    "DEFAULT_SHIPPED",
    "SHIPPED_DIR",
    "load_policy",
    "read_tensors",
    "resolve_policy",
    "save_policy",
    "shipped_policies",
    "shipped_policy",
]
