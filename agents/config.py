"""Agent configuration: ``AgentConfig`` (rl-zoo3 style, plain values) and the algorithm registry.

``igb train-agent CONFIG`` reads one of these from YAML (``configs/agents/``); unknown keys are
errors that list the valid ones. The activation names are those an export can rebuild
(``mtl_backends.policy.network.ACTIVATIONS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stable_baselines3 import A2C, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from igb_env.config import load_env_config
from mtl_backends.config import from_dict, load_yaml
from mtl_backends.policy.network import ACTIVATIONS
from mtl_backends.registry import ConfigError

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3, "a2c": A2C}
# Algorithms of sb3-contrib (the `contrib` extra): name -> class name in sb3_contrib.
CONTRIB_ALGORITHMS: dict[str, str] = {"tqc": "TQC"}
ALGORITHM_NAMES: tuple[str, ...] = (*ALGORITHMS, *CONTRIB_ALGORITHMS)
# Off-policy algorithms keep a replay buffer (saved in checkpoints) and have no log_std_init.
OFF_POLICY: tuple[str, ...] = ("sac", "td3", "tqc")
VEC_ENVS: tuple[str, ...] = ("dummy", "subproc", "batched")
POLICIES: tuple[str, ...] = ("mlp", "set")
# The set policy is an actor-critic (agents.set_policy); its policy_kwargs.
SET_POLICY_ALGORITHMS: tuple[str, ...] = ("ppo", "a2c")
SET_POLICY_KWARGS: tuple[str, ...] = ("hidden", "activation_fn", "log_std_init", "ortho_init")


def get_algorithm(name: str) -> type[BaseAlgorithm]:
    """The SB3 (or sb3-contrib) algorithm class of ``name``.

    Raises:
        ConfigError: An unknown name, or a contrib algorithm without sb3-contrib installed.
    """
    if name in ALGORITHMS:
        return ALGORITHMS[name]
    if name in CONTRIB_ALGORITHMS:
        try:
            import sb3_contrib
        except ImportError:
            raise ConfigError(
                f"algorithm {name!r} needs sb3-contrib: pip install 'igb-rl[contrib]'"
            ) from None
        cls: type[BaseAlgorithm] = getattr(sb3_contrib, CONTRIB_ALGORITHMS[name])
        return cls
    raise ConfigError(f"unknown algorithm {name!r}; valid choices: {', '.join(ALGORITHM_NAMES)}")


def _default_policy_kwargs() -> dict[str, Any]:
    return {"net_arch": [64, 64], "log_std_init": -1.0}


def _default_set_policy_kwargs() -> dict[str, Any]:
    return {"hidden": 64, "log_std_init": -1.0}


def _default_hyperparameters() -> dict[str, Any]:
    # The prototype's PPO: n_steps = 4 episodes of 36 decisions over 2 envs, batch 64, 10 epochs.
    return {
        "n_steps": 72,
        "batch_size": 64,
        "n_epochs": 10,
        "gamma": 0.99,
        "learning_rate": 3e-4,
        "ent_coef": 0.0,
    }


@dataclass(frozen=True)
class AgentConfig:
    """One agent training run (rl-zoo3-style; plain values only, nothing is evaluated).

    The defaults are the prototype's best design (``docs/architecture.md``, "Defaults"): PPO on
    the residual action (``a = 0`` is IGBv1) with the validation log-loss reward, (64, 64) networks
    and small initial action noise.

    Attributes:
        policy: ``mlp`` (SB3's MLP policy, for runs of one T) or ``set`` (``agents.set_policy``:
            one shared per-task network and a context pooled over the tasks, for runs of any T;
            PPO or A2C).
        env_groups: Env settings merged over ``env`` (nested mappings key by key), one group of
            ``n_envs`` sub-envs each, e.g. ``[{benchmark: {n_tasks: 2}}, {benchmark: {n_tasks:
            6}}]``: a set policy trains on runs of several T at once (``policy: set``); empty:
            one group, ``env`` itself.
        algorithm: ``ppo`` (default: it learned best in the prototype), ``sac``, ``td3``,
            ``a2c``, or ``tqc`` (needs the ``contrib`` extra).
        policy_kwargs: SB3 ``policy_kwargs``; ``activation_fn`` is a name (``tanh`` or ``relu``, the
            ones an export can rebuild), everything else goes to SB3 unchanged (``net_arch``,
            ``log_std_init``, ...). The set policy takes ``hidden`` (width of every layer),
            ``activation_fn``, ``log_std_init`` and ``ortho_init`` (default ``{hidden: 64,
            log_std_init: -1.0}``).
        hyperparameters: Keyword arguments of the SB3 algorithm (``n_steps``, ``batch_size``, ...);
            the default is the prototype's PPO setting, which other algorithms replace by SB3's
            own defaults. ``action_noise_std`` (off-policy) adds Gaussian exploration noise of
            that standard deviation (TD3 defaults to 0.1, as in rl-zoo3; SB3's TD3 has none).
        total_timesteps: Timestep cap (env steps over all sub-envs).
        time_budget_s: Wall-clock budget in seconds (``None``: none); training stops at whichever
            of the two limits comes first. Wall-clock stopping depends on the machine, so the
            timesteps actually done are recorded in ``training.json``.
        n_envs: Number of parallel envs (per env group).
        group_processes: Run each env group of a set policy in its own worker process (one
            torch thread each), so that the groups step in parallel; the results are the same
            as in one process (``vec_env: batched`` only).
        vec_env: ``dummy`` (one process), ``subproc`` (one process per env) or ``batched`` (all
            envs' MTL runs trained together in one process by ``igb_env.vector.BatchedIGBEnv``;
            several times more env steps per CPU-second; ``sum`` balancer only).
        paired_baseline: Train on rewards relative to a zero-action twin of every sub-env's run
            (the same instance in lockstep; IGBv1 under the ``interp`` map): a control variate
            that removes the instance-to-instance spread of returns at twice the env cost
            (``igb_env.vector``; ``vec_env: batched`` only). Evaluation and the reference returns
            keep the env's own reward.
        seed: Seed of the agent (torch, numpy) and, through ``SeedSequence``, of the sub-envs.
        env: Env configuration passed to ``igb_env.make_env`` (see ``igb_env.EnvConfig``; a
            ``preset`` key names one of ``igb_env.config.PRESETS``); empty: the env defaults.
        checkpoint_every: Timesteps between checkpoints (``None``: only the final model).
        reference_instances: Training instances on which the EW and IGBv1 reference returns are
            measured before training (0: no reference lines).
        eval_every: Timesteps between evaluations on the env's held-out ``test_set`` (every
            instance once, deterministic actions; the best model is kept as ``best_model.zip``);
            ``None`` or no ``test_set``: no evaluation.
    """

    algorithm: str = "ppo"
    policy: str = "mlp"
    env_groups: tuple[Mapping[str, Any], ...] = ()
    policy_kwargs: Mapping[str, Any] = field(default_factory=_default_policy_kwargs)
    hyperparameters: Mapping[str, Any] = field(default_factory=_default_hyperparameters)
    total_timesteps: int = 100_000
    time_budget_s: float | None = None
    n_envs: int = 2
    group_processes: bool = False
    vec_env: str = "subproc"
    paired_baseline: bool = False
    seed: int = 0
    env: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_every: int | None = 2000
    reference_instances: int = 2
    eval_every: int | None = 5000

    def __post_init__(self) -> None:
        get_algorithm(self.algorithm)
        if self.algorithm != "ppo" and dict(self.hyperparameters) == _default_hyperparameters():
            # PPO's rollout settings mean nothing to the other algorithms: use SB3's defaults.
            object.__setattr__(self, "hyperparameters", {})
        if "action_noise_std" in self.hyperparameters and self.algorithm not in OFF_POLICY:
            raise ConfigError("action_noise_std applies to off-policy algorithms (sac, td3, tqc)")
        if self.eval_every is not None and self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1 or null, got {self.eval_every}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1 or null, got {self.checkpoint_every}")
        if self.vec_env not in VEC_ENVS:
            raise ConfigError(
                f"unknown vec_env {self.vec_env!r}; valid choices: {', '.join(VEC_ENVS)}"
            )
        if self.n_envs < 1:
            raise ConfigError(f"n_envs must be >= 1, got {self.n_envs}")
        if self.total_timesteps < 1:
            raise ConfigError(f"total_timesteps must be >= 1, got {self.total_timesteps}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError(f"time_budget_s must be positive or null, got {self.time_budget_s}")
        self._check_policy()
        activation = self.policy_kwargs.get("activation_fn")
        if activation is not None and activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown policy_kwargs.activation_fn {activation!r}; "
                f"valid choices: {', '.join(ACTIVATIONS)}"
            )

    def _check_policy(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(
                f"unknown policy {self.policy!r}; valid choices: {', '.join(POLICIES)}"
            )
        if self.paired_baseline and self.vec_env != "batched":
            raise ConfigError(
                f"paired_baseline needs vec_env: batched (the twins run in the stacked trainer), "
                f"got vec_env: {self.vec_env}"
            )
        if self.group_processes and (self.policy != "set" or self.vec_env != "batched"):
            raise ConfigError("group_processes applies to policy: set with vec_env: batched")
        if self.policy == "mlp":
            if self.env_groups:
                raise ConfigError(
                    "env_groups need policy: set (runs of different T share one agent only "
                    "through the set policy)"
                )
            return
        if self.algorithm not in SET_POLICY_ALGORITHMS:
            raise ConfigError(
                f"policy 'set' trains with {' or '.join(SET_POLICY_ALGORITHMS)}, "
                f"not {self.algorithm!r}"
            )
        if dict(self.policy_kwargs) == _default_policy_kwargs():
            object.__setattr__(self, "policy_kwargs", _default_set_policy_kwargs())
        unknown = sorted(set(self.policy_kwargs) - set(SET_POLICY_KWARGS))
        if unknown:
            raise ConfigError(
                f"policy 'set' does not take policy_kwargs {', '.join(unknown)}; valid keys: "
                f"{', '.join(SET_POLICY_KWARGS)}"
            )
        for i, group in enumerate(self.env_groups):
            if not isinstance(group, Mapping):
                raise ConfigError(f"env_groups[{i}] must be a mapping of env settings")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``; mappings in both are merged key by key, recursively."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def group_env_configs(config: AgentConfig) -> list[dict[str, Any]]:
    """The resolved env configuration of every env group (``[env]`` without ``env_groups``).

    Raises:
        ConfigError: A group's settings are invalid (the message names the group).
    """
    base = resolve_env_config(config.env)
    if not config.env_groups:
        return [base]
    out = []
    for i, group in enumerate(config.env_groups):
        try:
            out.append(resolve_env_config(deep_merge(base, group)))
        except ConfigError as err:
            raise ConfigError(f"env_groups[{i}]: {err}") from None
    return out


def load_agent_config(path: str | Path) -> AgentConfig:
    """Load an ``AgentConfig`` from YAML (unknown keys are errors that list the valid ones)."""
    return from_dict(AgentConfig, load_yaml(path), where=str(path))


def resolve_env_config(env: Mapping[str, Any]) -> dict[str, Any]:
    """The env config with every default filled in (what the run actually used)."""
    return load_env_config(dict(env)).to_dict()


__all__ = [
    "ALGORITHMS",
    "ALGORITHM_NAMES",
    "CONTRIB_ALGORITHMS",
    "OFF_POLICY",
    "POLICIES",
    "VEC_ENVS",
    "AgentConfig",
    "deep_merge",
    "get_algorithm",
    "group_env_configs",
    "load_agent_config",
    "resolve_env_config",
]
