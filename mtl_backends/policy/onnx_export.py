"""An exported policy as ONNX (``policy.onnx``), to run without PyTorch (``igb export --onnx``).

The ONNX graph is ``Policy.act`` for a batch: input ``obs`` (float32 ``[batch, obs_dim]``, the
features ``GapTracker.features()`` gives), output ``action`` (float32 ``[batch, action_dim]``, in
``[-1, 1]``), with the observation normalisation of the sidecar, if any, inside the graph. The
batch is dynamic; so is ``obs_dim`` for a set policy (``n_tasks`` null: ``obs_dim = F·T + G``
and ``action_dim = T + global actions`` for any T), while an MLP policy has the one ``obs_dim``
it was trained with. The sidecar (``policy.json``) is stored in the model's metadata under
``igb_policy``; turning the action into weights is the action map's formula (the sidecar's
``action_map``; the own-loop guide, ``docs/site/guide/own-loop.md``).

Writing needs the ``onnx`` extra (``pip install "igb-rl[onnx]"``: onnx and onnxruntime);
``onnxruntime`` alone runs the file.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from mtl_backends.atomic import atomic_open
from mtl_backends.policy.files import load_policy, resolve_policy
from mtl_backends.policy.network import SetPolicyNetwork
from mtl_backends.policy.runtime import Policy

ONNX_FILE = "policy.onnx"
"""File name of the ONNX model inside a policy folder."""
OPSET = 17
"""ONNX opset of the written models (onnxruntime 1.14 and later run it)."""
METADATA_KEY = "igb_policy"
"""Metadata entry of the ONNX model that holds the sidecar (``policy.json``) as JSON text."""


class _BatchPolicy(nn.Module):
    """``Policy.act`` over a batch: normalisation (float64, as ``Policy.normalize``), network."""

    obs_mean: Tensor
    obs_scale: Tensor

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.network = policy.network
        norm = policy.sidecar.get("obs_normalization")
        self.normalized = norm is not None and policy.obs_mean is not None
        if self.normalized:
            assert norm is not None and policy.obs_mean is not None and policy.obs_var is not None
            self.register_buffer("obs_mean", policy.obs_mean.to(torch.float64).clone())
            self.register_buffer(
                "obs_scale", torch.sqrt(policy.obs_var.to(torch.float64) + float(norm["epsilon"]))
            )
            self.clip = float(norm["clip_obs"])

    def forward(self, obs: Tensor) -> Tensor:
        """Actions ``[B, action_dim]`` of observations ``[B, obs_dim]``."""
        x = obs
        if self.normalized:
            x = ((obs.to(torch.float64) - self.obs_mean) / self.obs_scale).clamp(
                -self.clip, self.clip
            )
            x = x.to(torch.float32)
        out: Tensor = self.network(x)
        return out


def require_onnx() -> None:
    """Check that ONNX models can be written.

    Raises:
        ImportError: The ``onnx`` package is missing (the extra to install is named).
    """
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError(
            'writing policy.onnx needs the onnx extra: pip install "igb-rl[onnx]" (or '
            'pip install -e ".[onnx]" in a checkout)'
        ) from None


def write_onnx(policy: str | Path | Policy, out: str | Path | None = None) -> Path:
    """Write a policy as ONNX (atomically): ``policy.onnx`` beside its ``policy.pt`` by default.

    Args:
        policy: A policy folder, a shipped policy's name, or a loaded ``Policy``.
        out: The ``.onnx`` file (default ``<policy folder>/policy.onnx``; required for a
            ``Policy`` object or a shipped policy's name).

    Returns:
        The file written.

    Raises:
        ImportError: The ``onnx`` package is missing (the extra to install is named).
        ValueError: ``out`` is missing for a ``Policy`` object or a shipped policy's name.
    """
    require_onnx()
    import onnx

    if isinstance(policy, Policy):
        if out is None:
            raise ValueError("write_onnx(Policy) needs out: the .onnx file to write")
        loaded = policy
        target = Path(out)
    else:
        folder = resolve_policy(policy)
        if out is None and folder != Path(policy):
            raise ValueError(
                f"{str(policy)!r} names a shipped policy, whose folder is package data; give out, "
                "the .onnx file to write"
            )
        loaded = load_policy(folder)
        target = Path(out) if out is not None else folder / ONNX_FILE
    module = _BatchPolicy(loaded).eval()
    network = loaded.network
    if isinstance(network, SetPolicyNetwork):
        # Any T: traced at T = 3, the task axis of the input and the output stays symbolic.
        example_dim = 3 * network.encoder.task_features + network.encoder.global_features
        axes = {"obs": {0: "batch", 1: "obs_dim"}, "action": {0: "batch", 1: "action_dim"}}
    else:
        example_dim = network.sizes[0]
        axes = {"obs": {0: "batch"}, "action": {0: "batch"}}
    example = torch.zeros(2, example_dim, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The TorchScript-based exporter: it needs no onnxscript and supports dynamic axes; its
        # deprecation notice and the tracer's notes about Python shape arithmetic (T = (D - G) /
        # F, traced as graph ops) are not for the user. Parity is tested with onnxruntime.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            Path(tmp) / ONNX_FILE,
            input_names=["obs"],
            output_names=["action"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
        model = onnx.load(str(Path(tmp) / ONNX_FILE))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(loaded.sidecar, sort_keys=True)
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target, "wb") as fh:
        fh.write(model.SerializeToString())
    return target


__all__ = ["METADATA_KEY", "ONNX_FILE", "OPSET", "require_onnx", "write_onnx"]
