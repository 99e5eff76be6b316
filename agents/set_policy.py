"""The set policy: SB3's actor-critic for runs with any number of tasks (``policy: set``).

Runs with different T share one agent through a padded observation (``PaddedLayout``): the
per-task features of up to ``max_tasks`` tasks (zeros after the run's T), the global features, and
a mask that marks the real tasks. ``SetActorCriticPolicy`` reads that layout:

* the actor is ``mtl_backends.policy.network.SetPolicyNetwork``: one shared per-task network and a
  context pooled over the real tasks (mean, max, globals), giving a per-task action entry and the
  action map's global entries (``interp``'s ``p``, ``q``). It is the network that ``igb export``
  writes, so the exported policy is this actor, unchanged, and runs at any T without padding;
* the critic pools the same kind of per-task embeddings (its own weights) into the value;
* the Gaussian's log-std is shared by the task entries (one parameter) and separate for each
  global entry, and the log-probability and entropy sum over the real tasks only
  (``MaskedDiagGaussianDistribution``), so padding never enters the policy gradient.

Permuting the tasks of an observation permutes the action's task entries and leaves its global
entries, the value and the log-probability unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import Tensor, nn

from mtl_backends.features import FeatureSpec, FeatureTable
from mtl_backends.policy.action_maps import make_action_map
from mtl_backends.policy.network import ACTIVATIONS, SetEncoder, SetPolicyNetwork


@dataclass(frozen=True)
class PaddedLayout:
    """The padded observation and action of runs with up to ``max_tasks`` tasks.

    Observation: ``[x_1 .. x_Tmax (F each, zeros after T), u (G), mask (Tmax)]``; action:
    ``[a_1 .. a_Tmax, globals (A)]``, of which a run with T tasks uses ``a_1..a_T`` and the globals.

    Attributes:
        max_tasks: ``Tmax``.
        task_features: ``F``.
        global_features: ``G``.
        global_actions: ``A`` (the action map's entries after the per-task ones).
        task_scale: Input scale of each task feature (``1 / max(|low|, |high|, 1)`` of its bounds).
        global_scale: Input scale of each global feature.
    """

    max_tasks: int
    task_features: int
    global_features: int
    global_actions: int
    task_scale: tuple[float, ...]
    global_scale: tuple[float, ...]

    @classmethod
    def build(cls, spec: FeatureSpec, action_mode: str, max_tasks: int) -> PaddedLayout:
        """The layout of the feature table ``spec`` and the action map ``action_mode``."""
        table = FeatureTable(spec)

        def scale(rows: Sequence[Any]) -> tuple[float, ...]:
            return tuple(1.0 / max(abs(f.low), abs(f.high), 1.0) for f in rows)

        amap = make_action_map(action_mode, 1.0)
        return cls(
            max_tasks=int(max_tasks),
            task_features=len(table.per_task),
            global_features=len(table.global_),
            global_actions=amap.action_dim(1) - 1,
            task_scale=scale(table.per_task),
            global_scale=scale(table.global_),
        )

    @property
    def obs_dim(self) -> int:
        """``Tmax · F + G + Tmax``."""
        return self.max_tasks * (self.task_features + 1) + self.global_features

    @property
    def action_dim(self) -> int:
        """``Tmax + A``."""
        return self.max_tasks + self.global_actions

    def observation_space(self, spec: FeatureSpec) -> spaces.Box:
        """The padded observation space (the table's bounds; the mask in ``[0, 1]``)."""
        table = FeatureTable(spec)
        low, high = table.bounds(self.max_tasks)
        ones = np.ones(self.max_tasks, dtype=np.float32)
        return spaces.Box(
            np.concatenate([low, 0.0 * ones]), np.concatenate([high, ones]), dtype=np.float32
        )

    def action_space(self) -> spaces.Box:
        """``[-1, 1]^(Tmax + A)``."""
        return spaces.Box(-1.0, 1.0, (self.action_dim,), dtype=np.float32)

    def _check_tasks(self, n_tasks: int) -> None:
        if not 1 <= n_tasks <= self.max_tasks:
            raise ValueError(
                f"runs with T={n_tasks} do not fit a layout of max_tasks {self.max_tasks}"
            )

    def pad(self, obs: np.ndarray, n_tasks: int) -> np.ndarray:
        """Padded observations ``[B, obs_dim]`` of a run's observations ``[B, F·T + G]``."""
        self._check_tasks(n_tasks)
        obs = np.asarray(obs, dtype=np.float32)
        f, g = self.task_features, self.global_features
        if obs.shape[-1] != n_tasks * f + g:
            raise ValueError(
                f"observations of T={n_tasks} tasks have {n_tasks * f + g} entries, got "
                f"{obs.shape[-1]}"
            )
        out = np.zeros((*obs.shape[:-1], self.obs_dim), dtype=np.float32)
        out[..., : n_tasks * f] = obs[..., : n_tasks * f]
        tmax_f = self.max_tasks * f
        out[..., tmax_f : tmax_f + g] = obs[..., n_tasks * f :]
        out[..., tmax_f + g : tmax_f + g + n_tasks] = 1.0
        return out

    def unpad_action(self, actions: np.ndarray, n_tasks: int) -> np.ndarray:
        """A run's actions ``[B, T + A]`` from padded ones ``[B, Tmax + A]``."""
        self._check_tasks(n_tasks)
        actions = np.asarray(actions)
        return np.concatenate([actions[..., :n_tasks], actions[..., self.max_tasks :]], axis=-1)

    def split(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-task ``[B, Tmax, F]``, global ``[B, G]`` features and the task mask ``[B, Tmax]``."""
        f, g, t = self.task_features, self.global_features, self.max_tasks
        tasks = obs[..., : t * f].reshape(*obs.shape[:-1], t, f)
        return tasks, obs[..., t * f : t * f + g], obs[..., t * f + g :] > 0.5

    def action_mask(self, obs: Tensor) -> Tensor:
        """``[B, Tmax + A]``: 1 for the real tasks' entries and the global entries, else 0."""
        _, _, mask = self.split(obs)
        ones = torch.ones(*mask.shape[:-1], self.global_actions, dtype=mask.dtype)
        return torch.cat([mask, ones.to(mask.device)], dim=-1)


class MaskedDiagGaussianDistribution(DiagGaussianDistribution):
    """SB3's diagonal Gaussian whose log-probability and entropy sum over unmasked entries only.

    ``mask`` (``[B, A]``, set after ``proba_distribution``) marks the entries that act: padding
    entries are sampled (the action keeps its fixed width) but neither their log-probability nor
    their entropy counts.
    """

    mask: Tensor | None = None

    def with_mask(self, mask: Tensor) -> MaskedDiagGaussianDistribution:
        """Set the mask; returns ``self``."""
        self.mask = mask
        return self

    def log_prob(self, actions: Tensor) -> Tensor:
        """Sum of the unmasked entries' log-densities ``[B]``."""
        per_entry = self.distribution.log_prob(actions)
        if self.mask is None:
            return per_entry.sum(dim=-1)
        return (per_entry * self.mask.to(per_entry.dtype)).sum(dim=-1)

    def entropy(self) -> Tensor:
        """Sum of the unmasked entries' entropies ``[B]``."""
        per_entry = self.distribution.entropy()
        if self.mask is None:
            return per_entry.sum(dim=-1)
        return (per_entry * self.mask.to(per_entry.dtype)).sum(dim=-1)


class SetExtractor(nn.Module):
    """The actor (a ``SetPolicyNetwork``'s raw output) and the critic's pooled latent.

    SB3 calls it the ``mlp_extractor``: ``latent_pi`` is already the Gaussian's mean (the
    policy's ``action_net`` is the identity), ``latent_vf`` the critic's last hidden layer.
    """

    def __init__(self, layout: PaddedLayout, hidden: int, activation: str) -> None:
        super().__init__()
        self.layout = layout
        self.actor = SetPolicyNetwork(
            layout.task_features,
            layout.global_features,
            layout.global_actions,
            hidden=hidden,
            activation=activation,
            output="clip",
            task_scale=layout.task_scale,
            global_scale=layout.global_scale,
        )
        self.critic_encoder = SetEncoder(
            layout.task_features,
            layout.global_features,
            hidden,
            activation,
            layout.task_scale,
            layout.global_scale,
        )
        self.critic_head = nn.Sequential(
            nn.Linear(self.critic_encoder.context_dim, hidden), ACTIVATIONS[activation]()
        )
        self.latent_dim_pi = layout.action_dim
        self.latent_dim_vf = hidden

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``(latent_pi, latent_vf)`` of padded observations."""
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: Tensor) -> Tensor:
        """The Gaussian's mean ``[B, Tmax + A]`` (padding entries are computed but masked)."""
        tasks, globals_, mask = self.layout.split(features)
        return self.actor.raw(tasks, globals_, mask)

    def forward_critic(self, features: Tensor) -> Tensor:
        """The critic's latent ``[B, H]``."""
        tasks, globals_, mask = self.layout.split(features)
        _, context = self.critic_encoder(tasks, globals_, mask)
        out: Tensor = self.critic_head(context)
        return out


class SetActorCriticPolicy(ActorCriticPolicy):
    """SB3's actor-critic with set networks over a ``PaddedLayout`` (PPO, A2C).

    Args:
        observation_space: The padded observation space (``PaddedLayout.observation_space``).
        action_space: ``[-1, 1]^(Tmax + A)``.
        lr_schedule: SB3's learning-rate schedule.
        layout: ``PaddedLayout`` fields (a mapping, so that SB3 can save it with the model).
        hidden: Width of every hidden layer.
        activation_fn: Hidden activation (``nn.Tanh`` or ``nn.ReLU``).
        log_std_init: Initial log-std of every action entry.
        ortho_init: Orthogonal initialisation (SB3's gains; the action heads' last layers 0.01,
            so that the initial mean action is near 0, i.e. the map's named heuristic).
        kwargs: Further ``ActorCriticPolicy`` arguments (``optimizer_class``, ...).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        layout: dict[str, Any] | None = None,
        hidden: int = 64,
        activation_fn: type[nn.Module] = nn.Tanh,
        log_std_init: float = 0.0,
        ortho_init: bool = True,
        **kwargs: Any,
    ) -> None:
        if layout is None:
            raise ValueError("SetActorCriticPolicy needs the padded layout (policy_kwargs.layout)")
        for key in ("net_arch", "use_sde", "share_features_extractor"):
            if kwargs.get(key):
                raise ValueError(f"SetActorCriticPolicy does not take {key}")
            kwargs.pop(key, None)
        self.layout = PaddedLayout(
            **{
                **layout,
                "task_scale": tuple(layout["task_scale"]),
                "global_scale": tuple(layout["global_scale"]),
            }
        )
        self.hidden = int(hidden)
        if not isinstance(action_space, spaces.Box) or action_space.shape != (
            self.layout.action_dim,
        ):
            raise ValueError(
                f"the action space must be a Box of shape ({self.layout.action_dim},) for the "
                f"layout, got {action_space}"
            )
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[],
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            log_std_init=log_std_init,
            **kwargs,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.pop("net_arch", None)
        data.update(layout=asdict(self.layout), hidden=self.hidden)
        return data

    def _activation_name(self) -> str:
        names = [name for name, cls in ACTIVATIONS.items() if cls is self.activation_fn]
        if not names:
            raise ValueError(
                f"activation_fn {self.activation_fn} is not one of {', '.join(ACTIVATIONS)}"
            )
        return names[0]

    def _build_mlp_extractor(self) -> None:
        # SB3 types mlp_extractor as its MlpExtractor; any module with the same interface works.
        self.mlp_extractor = SetExtractor(  # type: ignore[assignment]
            self.layout, self.hidden, self._activation_name()
        )

    def _build(self, lr_schedule: Schedule) -> None:
        self.action_dist = MaskedDiagGaussianDistribution(self.layout.action_dim)
        self._build_mlp_extractor()
        extractor = self.mlp_extractor
        assert isinstance(extractor, SetExtractor)
        self.action_net = nn.Identity()
        # One log-std for every task entry (permutation invariance), one per global entry.
        self.log_std = nn.Parameter(
            torch.full((1 + self.layout.global_actions,), float(self.log_std_init))
        )
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:
            actor = extractor.actor
            heads = [actor.task_head[-1]]
            if actor.global_head is not None:
                heads.append(actor.global_head[-1])
            gains: list[tuple[nn.Module, float]] = [
                (extractor, float(np.sqrt(2))),
                *[(head, 0.01) for head in heads],
                (self.value_net, 1.0),
            ]
            for module, gain in gains:
                module.apply(partial(self.init_weights, gain=gain))
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _full_log_std(self) -> Tensor:
        return torch.cat([self.log_std[:1].expand(self.layout.max_tasks), self.log_std[1:]], dim=0)

    def _get_action_dist_from_latent(self, latent_pi: Tensor) -> Distribution:
        assert isinstance(self.action_dist, MaskedDiagGaussianDistribution)
        return self.action_dist.proba_distribution(latent_pi, self._full_log_std())

    def _masked(self, latent_pi: Tensor, features: Tensor) -> MaskedDiagGaussianDistribution:
        dist = self._get_action_dist_from_latent(latent_pi)
        assert isinstance(dist, MaskedDiagGaussianDistribution)
        return dist.with_mask(self.layout.action_mask(features))

    def _features(self, obs: PyTorchObs) -> Tensor:
        features = self.extract_features(obs)
        assert isinstance(features, Tensor)
        return features

    def forward(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Actions, values and log-probabilities (over the real tasks) of padded observations."""
        features = self._features(obs)
        latent_pi, latent_vf = self.mlp_extractor(features)
        values = self.value_net(latent_vf)
        distribution = self._masked(latent_pi, features)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        return actions.reshape((-1, self.layout.action_dim)), values, log_prob

    def evaluate_actions(
        self, obs: PyTorchObs, actions: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Values, log-probabilities and entropies over the real tasks."""
        features = self._features(obs)
        latent_pi, latent_vf = self.mlp_extractor(features)
        distribution = self._masked(latent_pi, features)
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs) -> Distribution:
        """The masked action distribution of padded observations."""
        features = self._features(obs)
        return self._masked(self.mlp_extractor.forward_actor(features), features)

    @property
    def actor(self) -> SetPolicyNetwork:
        """The deterministic actor (what ``igb export`` writes)."""
        extractor = self.mlp_extractor
        assert isinstance(extractor, SetExtractor)
        return extractor.actor


__all__ = [
    "MaskedDiagGaussianDistribution",
    "PaddedLayout",
    "SetActorCriticPolicy",
    "SetExtractor",
]
