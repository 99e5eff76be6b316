"""Export a trained SB3 agent as a standalone policy (``igb export RUN``).

The deterministic actor is copied, tensor by tensor, into ``mtl_backends``' plain
``PolicyNetwork`` and written with ``save_policy`` (``policy.pt`` tensors plus the ``policy.json``
sidecar: T, feature table, action map, K, transform, balancer, versions, algorithm). Loading it
needs neither SB3 nor gymnasium and executes no stored code.

What "the deterministic actor" is, per algorithm (SB3's ``docs/guide/export.md``, re-checked
against ``model.predict(obs, deterministic=True)`` in the tests to 1e-5):

* PPO, A2C: ``action_net(mlp_extractor.policy_net(obs))``, clipped to the action bounds
  ``[-1, 1]`` (SB3 clips unsquashed Gaussian actions in ``predict``).
* SAC, TQC: ``tanh(mu(latent_pi(obs)))`` (the squashed mean; unscaling from ``[-1, 1]`` to the
  action bounds is the identity here).
* TD3: ``mu(obs)``, an MLP ending in ``tanh``.
* Set policies (``policy: set``, PPO/A2C): the actor ``SetPolicyNetwork`` itself, whose output is
  the Gaussian mean clipped to ``[-1, 1]``; its sidecar has ``n_tasks: null`` (any T) and lists
  the training groups.

Observations enter unnormalised: agents here are trained without ``VecNormalize`` (the env's
features are already bounded and scaled), and the exporter refuses models whose feature extractor is
not a plain flatten.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import stable_baselines3
import torch
from stable_baselines3 import TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.torch_layers import FlattenExtractor
from torch import Tensor, nn

from agents.config import group_env_configs, load_agent_config
from agents.set_policy import SetActorCriticPolicy
from agents.train import load_model
from igb_env import make_env
from igb_env.config import config_sidecar, load_env_config
from mtl_backends.config import to_dict
from mtl_backends.policy import ACTIVATIONS, PolicyNetwork, save_policy
from mtl_backends.policy import versions as policy_versions
from mtl_backends.policy.onnx_export import require_onnx, write_onnx

_ACTIVATION_NAMES: dict[type[nn.Module], str] = {cls: name for name, cls in ACTIVATIONS.items()}


@dataclass(frozen=True)
class ActorSpec:
    """The deterministic actor of an SB3 model, as plain tensors.

    Attributes:
        weights: Weight ``[out, in]`` of every linear layer, input to output.
        biases: Bias ``[out]`` of every linear layer.
        activation: Hidden activation name (a key of ``mtl_backends.policy.ACTIVATIONS``).
        output: ``clip`` (PPO: clip to ``[-1, 1]``) or ``tanh`` (SAC: squash).
    """

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    activation: str
    output: str

    @property
    def sizes(self) -> list[int]:
        """Layer widths, input first: ``[obs_dim, *hidden, act_dim]``."""
        return [int(self.weights[0].shape[1])] + [int(w.shape[0]) for w in self.weights]


def _mlp_layers(*modules: nn.Module) -> tuple[list[nn.Linear], str]:
    """The linear layers of ``modules`` (in order) and the name of their one hidden activation."""
    linears: list[nn.Linear] = []
    activations: set[str] = set()
    for module in modules:
        for layer in module.modules() if not isinstance(module, nn.Linear) else [module]:
            if isinstance(layer, nn.Linear):
                linears.append(layer)
            elif type(layer) in _ACTIVATION_NAMES:
                activations.add(_ACTIVATION_NAMES[type(layer)])
            elif not isinstance(layer, nn.Sequential):
                raise ValueError(
                    f"cannot export layer {type(layer).__name__}: the standalone policy supports "
                    f"linear layers and the activations {', '.join(ACTIVATIONS)}"
                )
    if len(activations) > 1:
        raise ValueError(f"the actor mixes activations {sorted(activations)}; export needs one")
    return linears, activations.pop() if activations else "tanh"


def actor_spec(model: BaseAlgorithm) -> ActorSpec:
    """Copy the deterministic actor of a PPO, A2C, SAC, TD3 or TQC model.

    Raises:
        ValueError: Another algorithm, gSDE, a non-flatten feature extractor, or a layer the
            standalone network cannot represent.
    """
    policy: Any = model.policy
    if getattr(policy, "use_sde", False):
        raise ValueError("models trained with gSDE (use_sde=True) cannot be exported")
    actor: Any = getattr(policy, "actor", None)
    if isinstance(model, OnPolicyAlgorithm):  # PPO, A2C
        extractor, output = policy.pi_features_extractor, "clip"
        linears, activation = _mlp_layers(policy.mlp_extractor.policy_net, policy.action_net)
    elif actor is not None and hasattr(actor, "latent_pi"):  # SAC, TQC
        extractor, output = actor.features_extractor, "tanh"
        if not isinstance(actor.mu, nn.Linear):
            raise ValueError("SAC actors with a clipped mean (gSDE) cannot be exported")
        linears, activation = _mlp_layers(actor.latent_pi, actor.mu)
    elif isinstance(model, TD3):
        extractor, output = actor.features_extractor, "tanh"
        layers = list(actor.mu)
        if not layers or not isinstance(layers[-1], nn.Tanh):
            raise ValueError("TD3 actors must end with tanh (squashed actions) to be exported")
        linears, activation = _mlp_layers(*layers[:-1])
    else:
        raise ValueError(
            f"cannot export {type(model).__name__}; supported: PPO, A2C, SAC, TD3, TQC"
        )
    if not isinstance(extractor, FlattenExtractor):
        raise ValueError(
            f"cannot export feature extractor {type(extractor).__name__}; use the default"
        )
    return ActorSpec(
        weights=tuple(layer.weight.detach().cpu().clone() for layer in linears),
        biases=tuple(layer.bias.detach().cpu().clone() for layer in linears),
        activation=activation,
        output=output,
    )


def versions() -> dict[str, str]:
    """Library versions for the sidecar: the policy format's own plus SB3 and gymnasium."""
    return {
        **policy_versions(),
        "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gymnasium.__version__,
    }


def export_model(
    model: BaseAlgorithm,
    env_config: Mapping[str, Any],
    out: str | Path,
    groups: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``model``'s deterministic actor as a standalone policy folder.

    Args:
        model: A trained PPO, A2C, SAC, TD3 or TQC model (MLP), or a PPO/A2C set policy.
        env_config: The env configuration it was trained on (for the sidecar: T, features, action
            map, K, balancer, base window, budget).
        out: Policy folder (created).
        groups: The env groups' resolved configurations (set policies: recorded in the sidecar
            as ``training_groups``, T and budgets of each).

    Returns:
        The policy folder.
    """
    if isinstance(model.policy, SetActorCriticPolicy):
        return _export_set(model, env_config, out, groups or [env_config])
    spec = actor_spec(model)
    network = PolicyNetwork(spec.sizes, activation=spec.activation, output=spec.output)
    linears = [layer for layer in network.layers if isinstance(layer, nn.Linear)]
    with torch.no_grad():
        for layer, w, b in zip(linears, spec.weights, spec.biases, strict=True):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    env = make_env(dict(env_config))
    sidecar = env.policy_sidecar(type(model).__name__, versions=versions())
    env.close()
    return save_policy(out, network, sidecar)


def _export_set(
    model: BaseAlgorithm,
    env_config: Mapping[str, Any],
    out: str | Path,
    groups: Sequence[Mapping[str, Any]],
) -> Path:
    """A set policy's actor (the very network it trained, copied) with a sidecar for any T."""
    policy = model.policy
    assert isinstance(policy, SetActorCriticPolicy)
    network = copy.deepcopy(policy.actor).cpu().eval()
    cfg = load_env_config(dict(env_config))
    training_groups = []
    for group in groups:
        g = load_env_config(dict(group))
        training_groups.append(
            {
                "benchmark": to_dict(g.benchmark),
                "budgets": list(g.budgets) if g.budgets is not None else [g.train.steps],
                "variation": g.variation,
            }
        )
    sidecar = config_sidecar(
        cfg,
        type(model).__name__,
        versions=versions(),
        env_config=cfg.to_dict(),
        training_groups=training_groups,
    )
    return save_policy(out, network, sidecar)


def export_run(
    run: str | Path, out: str | Path | None = None, best: bool = False, onnx: bool = False
) -> Path:
    """Export the final model of an agent run folder (``igb export RUN``).

    Args:
        run: Run folder written by ``train_agent``.
        out: Policy folder (default ``RUN/policy``).
        best: Export ``RUN/best_model.zip`` (best on the held-out validation instances).
        onnx: Also write ``policy.onnx`` (``export_onnx``; needs the ``onnx`` extra, checked
            before anything is written).

    Returns:
        The policy folder.

    Raises:
        ImportError: ``onnx`` without the ``onnx`` extra installed.
    """
    run = Path(run)
    if onnx:
        require_onnx()
    config = load_agent_config(run / "config.yaml")
    folder = export_model(
        load_model(run, best=best),
        dict(config.env),
        out if out is not None else run / "policy",
        groups=group_env_configs(config),
    )
    if onnx:
        export_onnx(folder)
    return folder


def export_onnx(policy: str | Path) -> Path:
    """Write ``policy.onnx`` beside ``policy.pt`` / ``policy.json`` of an exported policy folder.

    Dynamic batch; dynamic T for a set policy (``policy: set``), the trained T for an MLP policy
    (``mtl_backends.policy.onnx_export``).

    Returns:
        The ``.onnx`` file.
    """
    return write_onnx(policy)
