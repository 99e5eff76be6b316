"""``Policy``: a loaded exported policy that maps one observation to its deterministic action."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtl_backends.features import FeatureSpec
from mtl_backends.policy.network import PolicyNetwork, SetPolicyNetwork


@dataclass
class Policy:
    """A loaded policy: network, observation normalisation and sidecar.

    Attributes:
        network: The MLP.
        sidecar: The parsed ``policy.json``.
        obs_mean: Running mean of the observations (float64), or ``None``.
        obs_var: Running variance of the observations (float64), or ``None``.
    """

    network: PolicyNetwork | SetPolicyNetwork
    sidecar: dict[str, Any]
    obs_mean: Tensor | None = None
    obs_var: Tensor | None = None

    @property
    def n_tasks(self) -> int | None:
        """Number of tasks ``T`` the policy runs at (``None``: any, a set network)."""
        value = self.sidecar["n_tasks"]
        return None if value is None else int(value)

    @property
    def obs_dim(self) -> int | None:
        """Length of the observation (``None``: ``F · T + G`` for any ``T``)."""
        value = self.sidecar["obs_dim"]
        return None if value is None else int(value)

    @property
    def feature_spec(self) -> FeatureSpec:
        """The gap tracker's feature settings the policy was trained with."""
        return FeatureSpec(**self.sidecar["features"]["spec"])

    @property
    def steps_per_action(self) -> int:
        """``K``: steps each action is held for."""
        return int(self.sidecar["steps_per_action"])

    @property
    def action_mode(self) -> str:
        """Action map name."""
        return str(self.sidecar["action_map"]["mode"])

    @property
    def tau(self) -> float:
        """Action temperature."""
        return float(self.sidecar["action_map"]["tau"])

    def normalize(self, obs: Tensor) -> Tensor:
        """The network's input, float32.

        ``clip((obs - mean) / sqrt(var + eps), ±clip_obs)`` computed in float64 as SB3's
        ``VecNormalize`` does, or ``obs`` itself without normalisation.
        """
        norm = self.sidecar.get("obs_normalization")
        if norm is None or self.obs_mean is None or self.obs_var is None:
            return obs.to(torch.float32)
        x = (obs.to(torch.float64) - self.obs_mean) / torch.sqrt(
            self.obs_var + float(norm["epsilon"])
        )
        clip = float(norm["clip_obs"])
        return x.clamp(-clip, clip).to(torch.float32)

    def act(self, obs: np.ndarray | Tensor) -> Tensor:
        """Deterministic action (float32, in ``[-1, 1]``) for one observation.

        Raises:
            ValueError: An observation of the wrong length (for a set network: not ``F · T + G``
                for any ``T``).
        """
        x = torch.as_tensor(obs).detach().to("cpu").reshape(-1)
        if self.obs_dim is not None and x.shape != (self.obs_dim,):
            raise ValueError(
                f"observation must have {self.obs_dim} entries, got shape {tuple(x.shape)}"
            )
        with torch.no_grad():
            return self.network(self.normalize(x).unsqueeze(0))[0].detach()


__all__ = ["Policy"]
