"""Exported weighting policies: the standalone format, ``PolicyNetwork`` and ``PolicyWeighting``.

A policy is a folder with two files:

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

The policy maps the observation (``GapTracker.features()``; normalised as SB3's ``VecNormalize``
does when ``obs_normalization`` is set) to a deterministic action in ``[-1, 1]^T``, which
``mtl_backends.action_map`` turns into weights. Nothing here imports gymnasium or
stable_baselines3.
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from mtl_backends.action_map import HeldAction, get_action_map
from mtl_backends.progress import FeatureSpec, GapTracker, feature_table
from mtl_backends.registry import ConfigError
from mtl_backends.weightings.base import LossWeighting, StepContext

if TYPE_CHECKING:
    from mtl_backends.trainer import MTLTrainer

FORMAT = "igb-policy"
FORMAT_VERSION = 1
POLICY_FILE = "policy.pt"
SIDECAR_FILE = "policy.json"
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
OUTPUTS: tuple[str, ...] = ("tanh", "clip")
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


class PolicyMismatchError(ConfigError):
    """A policy does not fit the run it is asked to weight (T, features, transform or K)."""


class PolicyNetwork(nn.Module):
    """A plain MLP from the observation to a deterministic action in ``[-1, 1]^T``.

    ``layers`` are ``nn.Linear`` modules with ``activation`` between them; the output is squashed
    with ``tanh`` (SAC's deterministic actor) or clipped to ``[-1, 1]`` (PPO's mean action, which
    SB3 clips to the action space).

    Args:
        sizes: ``[obs_dim, h1, ..., T]``.
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
        """Actions ``[..., T]`` in ``[-1, 1]`` for observations ``[..., obs_dim]`` (float32)."""
        x = obs
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self._act(x)
        return torch.tanh(x) if self.output == "tanh" else x.clamp(-1.0, 1.0)


@dataclass
class Policy:
    """A loaded policy: network, observation normalisation and sidecar.

    Attributes:
        network: The MLP.
        sidecar: The parsed ``policy.json``.
        obs_mean: Running mean of the observations (float64), or ``None``.
        obs_var: Running variance of the observations (float64), or ``None``.
    """

    network: PolicyNetwork
    sidecar: dict[str, Any]
    obs_mean: Tensor | None = None
    obs_var: Tensor | None = None

    @property
    def n_tasks(self) -> int:
        """Number of tasks ``T``."""
        return int(self.sidecar["n_tasks"])

    @property
    def obs_dim(self) -> int:
        """Length of the observation."""
        return int(self.sidecar["obs_dim"])

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
        """Deterministic action ``[T]`` (float32, in ``[-1, 1]``) for one observation."""
        x = torch.as_tensor(obs).detach().to("cpu").reshape(-1)
        if x.shape != (self.obs_dim,):
            raise ValueError(
                f"observation must have {self.obs_dim} entries, got shape {tuple(x.shape)}"
            )
        with torch.no_grad():
            return self.network(self.normalize(x).unsqueeze(0))[0].detach()


def features_description(
    spec: FeatureSpec, n_tasks: int, base_window: Sequence[int] | None
) -> dict[str, Any]:
    """``GapTracker.describe()``-style dict (spec, table, T, base window) for a sidecar."""
    return {
        "spec": asdict(spec),
        "table": [asdict(f) for f in feature_table(spec)],
        "n_tasks": int(n_tasks),
        "base_window": None if base_window is None else [int(b) for b in base_window],
    }


def observation_dim(spec: FeatureSpec, n_tasks: int) -> int:
    """Length of ``GapTracker.features()`` for ``T`` tasks."""
    table = feature_table(spec)
    return n_tasks * sum(f.per_task for f in table) + sum(not f.per_task for f in table)


def versions() -> dict[str, str]:
    """Library versions recorded in a sidecar."""
    import platform

    from mtl_backends import __version__

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
    sidecar: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_tasks": int(n_tasks),
        "obs_dim": observation_dim(features, n_tasks),
        "features": features_description(features, n_tasks, base_window),
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


def _validate_sidecar(sidecar: Mapping[str, Any], where: str) -> None:
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
    amap = sidecar["action_map"]
    get_action_map(str(amap["mode"]), int(amap["version"]))
    spec = FeatureSpec(**sidecar["features"]["spec"])
    table = [asdict(f) for f in feature_table(spec)]
    if list(sidecar["features"]["table"]) != table:
        raise ValueError(
            f"{where}: the policy's feature table differs from this library's for the settings "
            f"{asdict(spec)}; it was exported by an incompatible version"
        )
    n_tasks, obs_dim = int(sidecar["n_tasks"]), int(sidecar["obs_dim"])
    if obs_dim != observation_dim(spec, n_tasks):
        raise ValueError(
            f"{where}: obs_dim {obs_dim} does not match the feature table "
            f"({observation_dim(spec, n_tasks)} for T={n_tasks})"
        )
    sizes = list(sidecar["network"]["sizes"])
    if sizes[0] != obs_dim or sizes[-1] != n_tasks:
        raise ValueError(
            f"{where}: network sizes {sizes} must start with obs_dim {obs_dim} "
            f"and end with T={n_tasks}"
        )
    if sidecar["transform"] != "log":
        raise ValueError(
            f"{where}: transform {sidecar['transform']!r}; policies work on the 'log' transform"
        )


def save_policy(
    path: str | Path,
    network: PolicyNetwork,
    sidecar: Mapping[str, Any],
    obs_mean: Tensor | np.ndarray | None = None,
    obs_var: Tensor | np.ndarray | None = None,
) -> Path:
    """Write a policy folder (``policy.pt`` + ``policy.json``), each file atomically.

    Args:
        path: Folder (created if missing).
        network: The deterministic actor.
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
    from mtl_backends.atomic import atomic_torch_save, write_text_atomic

    folder = Path(path)
    out = dict(sidecar)
    out.setdefault("format", FORMAT)
    out.setdefault("format_version", FORMAT_VERSION)
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
        if mean.shape != (network.sizes[0],) or var.shape != mean.shape:
            raise ValueError(f"obs_mean/obs_var must have {network.sizes[0]} entries")
        tensors["obs_mean"], tensors["obs_var"] = mean, var
        if out.get("obs_normalization") is None:
            out["obs_normalization"] = {"clip_obs": 10.0, "epsilon": 1e-8}
    elif out.get("obs_normalization") is not None:
        raise ValueError("the sidecar sets obs_normalization but no obs_mean/obs_var were given")
    else:
        out["obs_normalization"] = None
    _validate_sidecar(out, str(folder))
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
    _validate_sidecar(sidecar, str(side_path))
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
    network = PolicyNetwork.from_spec(sidecar["network"])
    network.load_state_dict(tensors, strict=True)
    network.eval()
    return Policy(network, sidecar, obs_mean, obs_var)


class PolicyWeighting(LossWeighting):
    """Runs an exported policy as a loss weighting, in ``MTLTrainer`` or a user's own loop.

    It decides where the env decides: at the first step after the base window, then every
    ``K = steps_per_action`` steps, it maps the current features (``GapTracker.features()``) to an
    action, which it holds for K steps; every step maps the held action through the action map with
    the current gaps (``residual``) or alone (``absolute``). Before the base losses exist the
    weights are 1, and until the first decision the held action is 0. Transform ``log``; weights
    sum to T. An env episode replayed through it gives the same weights, bit for bit.

    In ``MTLTrainer`` the run's gap tracker must use the policy's feature settings
    (``feature_spec``; the trainer takes it from the weighting when ``features`` is not given).
    ``check_run(trainer)`` refuses a mismatched run and warns about a different balancer. In a
    user's loop, ``update(losses, lr=...)`` feeds its own ``GapTracker``.

    Args:
        path: Policy folder.
        base_window: Base window of ``update``'s tracker (default: the sidecar's).
        total_steps: Step budget of ``update``'s tracker (default: the sidecar's).
        lower_bounds: Loss lower bounds ``L*`` of ``update``'s tracker (default zeros).
    """

    transform = "log"

    def __init__(
        self,
        path: str | Path,
        base_window: Sequence[int] | None = None,
        total_steps: int | None = None,
        lower_bounds: Sequence[float] | Tensor | None = None,
    ) -> None:
        self.path = Path(path)
        self.policy = load_policy(self.path)
        self.n_tasks = self.policy.n_tasks
        self.feature_spec = self.policy.feature_spec
        self.steps_per_action = self.policy.steps_per_action
        self.action_mode = self.policy.action_mode
        self.tau = self.policy.tau
        bw = base_window if base_window is not None else self.policy.sidecar["base_window"]
        self._base_window = None if bw is None else (int(bw[0]), int(bw[1]))
        self._total_steps = int(
            total_steps if total_steps is not None else self.policy.sidecar["total_steps"]
        )
        self._lower_bounds = (
            None if lower_bounds is None else torch.as_tensor(lower_bounds, dtype=torch.float64)
        )
        self.generator: torch.Generator | None = None
        self._held = HeldAction(self.action_mode, self.tau)
        self._checked: int | None = None
        self.tracker: GapTracker | None = None
        self._step = 0

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> PolicyWeighting:
        """Load the policy folder ``path`` (see the class arguments)."""
        return cls(path, **kwargs)

    @property
    def balancer(self) -> str:
        """Registry name of the balancer the policy was trained with."""
        return str(self.policy.sidecar["balancer"])

    # -- LossWeighting --------------------------------------------------------------------------
    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Start a new run; refuses a run whose number of tasks differs from the policy's."""
        if n_tasks != self.policy.n_tasks:
            raise PolicyMismatchError(
                f"policy {str(self.path)!r} does not fit this run: n_tasks: the policy was trained "
                f"with T={self.policy.n_tasks}, the run has T={n_tasks}"
            )
        self.generator = generator
        self._held.hold(None, n_tasks)
        self._checked = None
        self.tracker = None
        self._step = 0

    def __call__(self, context: StepContext) -> Tensor:
        """Weights of the current batch (deciding a new action at decision points)."""
        progress = context.progress
        if self._checked != id(progress):
            problems = self._mismatches(progress.n_tasks, progress.spec, self.transform, None)
            if problems:
                raise self._error(problems)
            self._checked = id(progress)
        return self._weights(progress, context.step)

    def _weights(self, progress: GapTracker, step: int) -> Tensor:
        if progress.has_base and progress.gaps is not None:
            first = progress.base_window[1]
            if step >= first and (
                self._held.action is None or (step - first) % self.steps_per_action == 0
            ):
                self._held.hold(self.policy.act(progress.features()), self.n_tasks)
        return self._held.weights(progress)

    def state_dict(self) -> dict[str, Any]:
        """The held action and ``update``'s tracker and step."""
        return {
            "action": None if self._held.action is None else self._held.action.clone(),
            "step": self._step,
            "tracker": None if self.tracker is None else self.tracker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self._held.hold(state["action"], self.n_tasks)
        self._step = int(state["step"])
        if state["tracker"] is not None:
            self._ensure_tracker().load_state_dict(state["tracker"])

    # -- checks ---------------------------------------------------------------------------------
    def _mismatches(
        self,
        n_tasks: int | None,
        features: FeatureSpec | None,
        transform: str | None,
        steps_per_action: int | None,
    ) -> list[str]:
        problems = []
        side = self.policy.sidecar
        if n_tasks is not None and n_tasks != self.policy.n_tasks:
            problems.append(
                f"n_tasks: the policy was trained with T={self.policy.n_tasks}, "
                f"the run has T={n_tasks}"
            )
        if transform is not None and transform != side["transform"]:
            problems.append(
                f"transform: the policy needs {side['transform']!r}, the run uses {transform!r}"
            )
        if features is not None:
            mine = self.feature_spec
            for name in ("history", "ema"):
                if getattr(features, name) != getattr(mine, name):
                    problems.append(
                        f"features: {name} is {getattr(mine, name)!r} in the policy but "
                        f"{getattr(features, name)!r} in the run's gap tracker"
                    )
            if features.stride != self.steps_per_action:
                problems.append(
                    f"steps_per_action: the policy holds each action for K={self.steps_per_action} "
                    f"steps but the run's gap tracker snapshots every {features.stride} steps "
                    f"(FeatureSpec.stride must equal K)"
                )
        if steps_per_action is not None and steps_per_action != self.steps_per_action:
            problems.append(
                f"steps_per_action: the policy was trained with K={self.steps_per_action}, "
                f"the run asks for K={steps_per_action}"
            )
        return problems

    def _error(self, problems: list[str]) -> PolicyMismatchError:
        return PolicyMismatchError(
            f"policy {str(self.path)!r} does not fit this run: " + "; ".join(problems)
        )

    def check_run(
        self,
        trainer: MTLTrainer | None = None,
        *,
        n_tasks: int | None = None,
        features: FeatureSpec | None = None,
        transform: str | None = None,
        steps_per_action: int | None = None,
        balancer: str | None = None,
    ) -> None:
        """Refuse a run this policy does not fit; warn when its balancer differs from training.

        Args:
            trainer: A trainer to read everything from (its T, gap-tracker features, weighting
                transform and balancer).
            n_tasks: Number of tasks of the run.
            features: Feature settings of the run's gap tracker.
            transform: Loss transform of the run.
            steps_per_action: Steps each action is held.
            balancer: Registry name of the run's balancer.

        Raises:
            PolicyMismatchError: T, features, transform or K differ (all mismatches are named).
        """
        if trainer is not None:
            n_tasks = trainer.n_tasks if n_tasks is None else n_tasks
            features = trainer.progress.spec if features is None else features
            transform = trainer.weighting.transform if transform is None else transform
            if balancer is None:
                from mtl_backends.balancers import GRADIENT_BALANCERS

                names = [k for k, v in GRADIENT_BALANCERS.items() if type(trainer.balancer) is v]
                balancer = names[0] if names else type(trainer.balancer).__name__
        problems = self._mismatches(n_tasks, features, transform, steps_per_action)
        if problems:
            raise self._error(problems)
        if balancer is not None and balancer != self.balancer:
            warnings.warn(
                f"policy {str(self.path)!r} was trained with the {self.balancer!r} balancer but "
                f"the run uses {balancer!r}; its weights may not transfer",
                UserWarning,
                stacklevel=2,
            )

    # -- users' own loops -----------------------------------------------------------------------
    def _ensure_tracker(self) -> GapTracker:
        if self.tracker is None:
            if self._base_window is None:
                raise ValueError(
                    "the policy's base window is the second epoch of its training runs; pass "
                    "base_window=(start, end) to PolicyWeighting for update()"
                )
            self.tracker = GapTracker(
                self.n_tasks,
                base_window=self._base_window,
                lower_bounds=self._lower_bounds,
                total_steps=self._total_steps,
                spec=self.feature_spec,
            )
        return self.tracker

    def update(self, losses: Tensor | Sequence[float], lr: float | None = None) -> Tensor:
        """Absorb this step's raw task losses and return its weights (for a user's training loop).

        Call once per optimizer step, before the backward pass, and minimise
        ``(weights * log(losses - L* + eps)).sum()``.

        Args:
            losses: Raw (untransformed) task losses ``[T]`` of the current batch.
            lr: Current learning rate (for the LR-ratio feature; ``None``: constant).

        Returns:
            The weights ``[T]`` (float32, detached, on the device of ``losses``; sum ``T``).
        """
        tracker = self._ensure_tracker()
        given = torch.as_tensor(losses).detach()
        raw = given.to("cpu", torch.float64).reshape(-1)
        if raw.shape != (self.n_tasks,):
            raise PolicyMismatchError(
                f"policy {str(self.path)!r}: n_tasks: the policy was trained with "
                f"T={self.n_tasks}, "
                f"update() got {raw.numel()} losses"
            )
        tracker.update(raw, self._step, 1.0 if lr is None else float(lr))
        weights = self._weights(tracker, self._step)
        tracker.record_weights(weights)
        self._step += 1
        return weights.to(given.device)

    def __repr__(self) -> str:
        return (
            f"PolicyWeighting(path={str(self.path)!r}, mode={self.action_mode!r}, "
            f"K={self.steps_per_action})"
        )


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Policy",
    "PolicyMismatchError",
    "PolicyNetwork",
    "PolicyWeighting",
    "build_sidecar",
    "features_description",
    "load_policy",
    "observation_dim",
    "save_policy",
]
