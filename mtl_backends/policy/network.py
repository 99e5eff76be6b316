"""The networks of exported policies (no SB3, no gymnasium).

* ``PolicyNetwork`` (kind ``mlp``): a plain MLP from the flat observation of a fixed ``T``;
* ``SetPolicyNetwork`` (kind ``set``): one shared per-task network and a context pooled over the
  tasks (Deep Sets, Zaheer et al. 2017, https://arxiv.org/abs/1703.06114), so one set of weights
  runs at any ``T`` and permuting the tasks permutes the action.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
"""Hidden activations an exported network can use (and an exporter can copy)."""
OUTPUTS: tuple[str, ...] = ("tanh", "clip")


class PolicyNetwork(nn.Module):
    """A plain MLP from the observation to a deterministic action in ``[-1, 1]^A``.

    ``layers`` are ``nn.Linear`` modules with ``activation`` between them; the output is squashed
    with ``tanh`` (SAC's deterministic actor) or clipped to ``[-1, 1]`` (PPO's mean action, which
    SB3 clips to the action space).

    Args:
        sizes: ``[obs_dim, h1, ..., action_dim]``.
        activation: Hidden activation, ``tanh`` or ``relu``.
        output: ``tanh`` or ``clip``.
    """

    def __init__(
        self, sizes: Sequence[int], activation: str = "tanh", output: str = "clip"
    ) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(
                f"network sizes must be [obs_dim, ..., T] with positive entries, got {sizes}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; "
                f"valid choices: {', '.join(sorted(ACTIVATIONS))}"
            )
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; valid choices: {', '.join(OUTPUTS)}")
        self.sizes = sizes
        self.activation = activation
        self.output = output
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self._act = ACTIVATIONS[activation]()

    def spec(self) -> dict[str, Any]:
        """The sidecar's ``network`` entry."""
        return {"sizes": list(self.sizes), "activation": self.activation, "output": self.output}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> PolicyNetwork:
        """Rebuild from a sidecar's ``network`` entry."""
        return cls(spec["sizes"], spec.get("activation", "tanh"), spec.get("output", "clip"))

    def forward(self, obs: Tensor) -> Tensor:
        """Actions ``[..., A]`` in ``[-1, 1]`` for observations ``[..., obs_dim]`` (float32)."""
        x = obs
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self._act(x)
        return torch.tanh(x) if self.output == "tanh" else x.clamp(-1.0, 1.0)


def _mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        if i:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def _check_choices(activation: str, output: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; valid choices: {', '.join(sorted(ACTIVATIONS))}"
        )
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; valid choices: {', '.join(OUTPUTS)}")


class SetEncoder(nn.Module):
    """One shared network per task, then a context pooled over the tasks.

    Each task's features ``x_t`` (scaled by ``task_scale``) and the global features ``u`` (scaled
    by ``global_scale``) go through the same MLP ``φ``, giving embeddings ``e_t``; the context is
    ``[mean_t e_t, max_t e_t, u]`` over the unmasked tasks. Permuting the tasks permutes the
    embeddings and leaves the context unchanged; nothing depends on ``T``.

    Args:
        task_features: ``F``, features per task.
        global_features: ``G``, global features.
        hidden: Width ``H`` of ``φ``'s layers (two layers).
        activation: ``tanh`` or ``relu``.
        task_scale: Multiplies each task feature (default ones); a buffer, saved with the weights.
        global_scale: Multiplies each global feature (default ones).
    """

    task_scale: Tensor
    global_scale: Tensor

    def __init__(
        self,
        task_features: int,
        global_features: int,
        hidden: int = 64,
        activation: str = "tanh",
        task_scale: Sequence[float] | None = None,
        global_scale: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if task_features < 1 or global_features < 0 or hidden < 1:
            raise ValueError(
                "a set network needs task_features >= 1, global_features >= 0 and hidden >= 1, "
                f"got {task_features}, {global_features}, {hidden}"
            )
        self.task_features, self.global_features, self.hidden = (
            int(task_features),
            int(global_features),
            int(hidden),
        )
        self.activation = activation
        self.register_buffer("task_scale", _scale(task_scale, self.task_features))
        self.register_buffer("global_scale", _scale(global_scale, self.global_features))
        self.phi = _mlp([self.task_features + self.global_features, hidden, hidden], activation)
        self._act = ACTIVATIONS[activation]()

    @property
    def context_dim(self) -> int:
        """Length of the pooled context: ``2H + G``."""
        return 2 * self.hidden + self.global_features

    def split(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Per-task ``[B, T, F]`` and global ``[B, G]`` features of flat observations ``[B, D]``.

        Raises:
            ValueError: ``D - G`` is not a positive multiple of ``F``.
        """
        per_task = obs.shape[-1] - self.global_features
        if per_task < self.task_features or per_task % self.task_features:
            raise ValueError(
                f"observation of {obs.shape[-1]} entries is not T * {self.task_features} task "
                f"features + {self.global_features} global features for any T >= 1"
            )
        n_tasks = per_task // self.task_features
        tasks = obs[..., :per_task].reshape(*obs.shape[:-1], n_tasks, self.task_features)
        return tasks, obs[..., per_task:]

    def forward(
        self, tasks: Tensor, globals_: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Embeddings ``[B, T, H]`` and context ``[B, 2H + G]``.

        Args:
            tasks: Per-task features ``[B, T, F]``.
            globals_: Global features ``[B, G]``.
            mask: ``[B, T]``, true for real tasks (padding rows are left out of the pooling);
                ``None``: every row is a task.
        """
        u = globals_ * self.global_scale
        x = tasks * self.task_scale
        inputs = torch.cat([x, u.unsqueeze(-2).expand(*x.shape[:-1], u.shape[-1])], dim=-1)
        emb = self._act(self.phi(inputs))
        if mask is None:
            mean, top = emb.mean(dim=-2), emb.amax(dim=-2)
        else:
            keep = mask.to(emb.dtype).unsqueeze(-1)
            count = keep.sum(dim=-2).clamp_min(1.0)
            mean = (emb * keep).sum(dim=-2) / count
            top = emb.masked_fill(keep == 0, float("-inf")).amax(dim=-2)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        return emb, torch.cat([mean, top, u], dim=-1)


def _scale(values: Sequence[float] | None, n: int) -> Tensor:
    if values is None:
        return torch.ones(n)
    out = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    if out.shape != (n,):
        raise ValueError(f"expected {n} scale entries, got {tuple(out.shape)}")
    return out


class SetPolicyNetwork(nn.Module):
    """A permutation-equivariant policy for any number of tasks (Deep Sets).

    ``SetEncoder`` embeds every task with one shared network and pools a context over the tasks;
    a shared per-task head maps ``[e_t, context]`` to the task's action entry and a global head
    maps the context to ``global_actions`` entries (the action map's global entries, e.g. the
    ``p``, ``q`` of ``interp``). The action is ``[a_1..a_T, globals]``, squashed by ``tanh`` or
    clipped to ``[-1, 1]``. Permuting the tasks permutes ``a_1..a_T`` and leaves the global
    entries unchanged; the same weights run at any ``T``.

    Args:
        task_features: ``F``.
        global_features: ``G``.
        global_actions: Action entries after the per-task ones (``action_dim(T) - T``).
        hidden: Width ``H`` of every hidden layer.
        activation: ``tanh`` or ``relu``.
        output: ``tanh`` or ``clip``.
        task_scale: Multiplies each task feature (e.g. ``1 / bound``).
        global_scale: Multiplies each global feature.
    """

    kind = "set"

    def __init__(
        self,
        task_features: int,
        global_features: int,
        global_actions: int,
        hidden: int = 64,
        activation: str = "tanh",
        output: str = "clip",
        task_scale: Sequence[float] | None = None,
        global_scale: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        _check_choices(activation, output)
        if global_actions < 0:
            raise ValueError(f"global_actions must be >= 0, got {global_actions}")
        self.encoder = SetEncoder(
            task_features, global_features, hidden, activation, task_scale, global_scale
        )
        self.global_actions = int(global_actions)
        self.output = output
        context = self.encoder.context_dim
        self.task_head = _mlp([hidden + context, hidden, 1], activation)
        self.global_head = (
            _mlp([context, hidden, self.global_actions], activation)
            if self.global_actions
            else None
        )

    def spec(self) -> dict[str, Any]:
        """The sidecar's ``network`` entry."""
        enc = self.encoder
        return {
            "kind": self.kind,
            "task_features": enc.task_features,
            "global_features": enc.global_features,
            "global_actions": self.global_actions,
            "hidden": enc.hidden,
            "activation": enc.activation,
            "output": self.output,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> SetPolicyNetwork:
        """Rebuild from a sidecar's ``network`` entry (the scales come with the weights)."""
        return cls(
            int(spec["task_features"]),
            int(spec["global_features"]),
            int(spec["global_actions"]),
            int(spec.get("hidden", 64)),
            str(spec.get("activation", "tanh")),
            str(spec.get("output", "clip")),
        )

    def raw(self, tasks: Tensor, globals_: Tensor, mask: Tensor | None = None) -> Tensor:
        """Unsquashed actions ``[B, T + global_actions]`` (SB3's Gaussian mean in training)."""
        emb, context = self.encoder(tasks, globals_, mask)
        expanded = context.unsqueeze(-2).expand(*emb.shape[:-1], context.shape[-1])
        per_task = self.task_head(torch.cat([emb, expanded], dim=-1)).squeeze(-1)
        if self.global_head is None:
            return per_task
        return torch.cat([per_task, self.global_head(context)], dim=-1)

    def squash(self, raw: Tensor) -> Tensor:
        """``tanh`` or clip to ``[-1, 1]``."""
        return torch.tanh(raw) if self.output == "tanh" else raw.clamp(-1.0, 1.0)

    def forward(self, obs: Tensor) -> Tensor:
        """Actions ``[B, T + global_actions]`` in ``[-1, 1]`` of observations ``[B, F·T + G]``."""
        tasks, globals_ = self.encoder.split(obs)
        return self.squash(self.raw(tasks, globals_))

    def action_dim(self, n_tasks: int) -> int:
        """Length of the action for ``n_tasks`` tasks."""
        return int(n_tasks) + self.global_actions


NETWORKS: dict[str, type[PolicyNetwork] | type[SetPolicyNetwork]] = {
    "mlp": PolicyNetwork,
    "set": SetPolicyNetwork,
}
"""Network kinds an exported policy can use (the sidecar's ``network.kind``; default ``mlp``)."""


def network_from_spec(spec: Mapping[str, Any]) -> PolicyNetwork | SetPolicyNetwork:
    """The network a sidecar's ``network`` entry describes.

    Raises:
        ValueError: An unknown kind.
    """
    kind = str(spec.get("kind", "mlp"))
    if kind not in NETWORKS:
        raise ValueError(f"unknown network kind {kind!r}; valid choices: {', '.join(NETWORKS)}")
    return NETWORKS[kind].from_spec(spec)


__all__ = [
    "ACTIVATIONS",
    "NETWORKS",
    "OUTPUTS",
    "PolicyNetwork",
    "SetEncoder",
    "SetPolicyNetwork",
    "network_from_spec",
]
