"""Building the SB3 algorithm of an agent config: checked hyperparameters, spaces, the model.

``build_model`` is what ``agents.train`` trains; ``model_template`` rebuilds, from the run's config
alone, every value an SB3 archive would otherwise unpickle (``agents.sb3_files``).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import VecEnv

from agents.callbacks import (
    null_logger,
)
from agents.config import (
    OFF_POLICY,
    AgentConfig,
    get_algorithm,
    group_env_configs,
)
from agents.padded_vec_env import PaddedVecEnv
from agents.set_policy import SetActorCriticPolicy
from agents.vec_env import padded_layout
from igb_env import make_env
from igb_env.config import load_env_config
from mtl_backends.policy.network import ACTIVATIONS
from mtl_backends.registry import ConfigError, valid_arguments

# Arguments igb-rl passes to the SB3 algorithm itself; a config's hyperparameters cannot set them.
_OWN_ARGUMENTS: tuple[str, ...] = (
    "policy",
    "env",
    "policy_kwargs",
    "seed",
    "tensorboard_log",
    "device",
    "verbose",
    "_init_setup_model",
)


def check_hyperparameters(config: AgentConfig) -> None:
    """Refuse hyperparameters the SB3 algorithm does not take, before anything is created.

    Raises:
        ConfigError: An unknown name (the message lists close matches and the valid names).
    """
    algo = get_algorithm(config.algorithm)
    valid = [a for a in valid_arguments(algo) if a not in _OWN_ARGUMENTS]
    if config.algorithm in OFF_POLICY:
        valid.append("action_noise_std")
    unknown = [k for k in config.hyperparameters if k not in valid]
    if unknown:
        hints = [
            f"{k!r} -> {close[0]!r}"
            for k in unknown
            if (close := difflib.get_close_matches(k, valid, n=1))
        ]
        raise ConfigError(
            f"hyperparameters: {algo.__name__} does not take {', '.join(map(repr, unknown))}"
            + (f" (did you mean {', '.join(hints)}?)" if hints else "")
            + f"; valid names: {', '.join(sorted(valid))}"
        )


def _algorithm_arguments(
    config: AgentConfig, action_space: spaces.Space[Any], layout: Mapping[str, Any] | None
) -> tuple[str | type[SetActorCriticPolicy], dict[str, Any], dict[str, Any]]:
    """The policy, ``policy_kwargs`` and hyperparameters of ``config``'s SB3 algorithm.

    ``layout`` is the padded layout of a set policy (``None``: the MLP policy).
    """
    policy_kwargs = dict(config.policy_kwargs)
    if "activation_fn" in policy_kwargs:
        policy_kwargs["activation_fn"] = ACTIVATIONS[policy_kwargs["activation_fn"]]
    policy: str | type[SetActorCriticPolicy] = "MlpPolicy"
    if layout is not None:
        policy, policy_kwargs["layout"] = SetActorCriticPolicy, dict(layout)
    if config.algorithm in OFF_POLICY:
        # SAC's and TQC's Gaussian log-std is state-dependent (log_std_init only applies to gSDE);
        # TD3 is deterministic.
        policy_kwargs.pop("log_std_init", None)
    hyperparameters = dict(config.hyperparameters)
    noise_std = hyperparameters.pop("action_noise_std", 0.1 if config.algorithm == "td3" else None)
    if noise_std:
        n = int(np.prod(action_space.shape or (1,)))
        hyperparameters["action_noise"] = NormalActionNoise(
            np.zeros(n), float(noise_std) * np.ones(n)
        )
    return policy, policy_kwargs, hyperparameters


def _construct(
    config: AgentConfig,
    venv: VecEnv | None,
    action_space: spaces.Space[Any],
    layout: Mapping[str, Any] | None,
    **extra: Any,
) -> BaseAlgorithm:
    """``config``'s SB3 algorithm on ``venv`` (CPU, silent), plus ``extra`` constructor args."""
    policy, policy_kwargs, hyperparameters = _algorithm_arguments(config, action_space, layout)
    # Every SB3 algorithm takes `_init_setup_model`; BaseAlgorithm's signature does not show it.
    algo: Any = get_algorithm(config.algorithm)
    with warnings.catch_warnings():
        # The prototype's minibatch of 64 does not divide its 144-step rollout; SB3 then warns
        # about the last, truncated minibatch, which is harmless.
        warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
        model: BaseAlgorithm = algo(
            policy,
            venv,
            policy_kwargs=policy_kwargs,
            seed=config.seed,
            device="cpu",
            verbose=0,
            **extra,
            **hyperparameters,
        )
    return model


def build_model(config: AgentConfig, venv: VecEnv, tensorboard_log: str | None) -> BaseAlgorithm:
    """The SB3 algorithm of ``config`` on ``venv`` (CPU; nothing is evaluated from strings).

    ``tensorboard_log=None`` logs nothing (``null_logger``).
    """
    layout = None
    if config.policy == "set":
        inner = venv.unwrapped
        if not isinstance(inner, PaddedVecEnv):
            raise ValueError("a set policy trains on a PaddedVecEnv (agents.vec_env.make_vec_env)")
        layout = asdict(inner.layout)
    model = _construct(config, venv, venv.action_space, layout, tensorboard_log=tensorboard_log)
    if tensorboard_log is None:
        model.set_logger(null_logger())
    return model


def model_template(config: AgentConfig, venv: VecEnv | None = None) -> dict[str, Any]:
    """Trusted values for the cloudpickled entries of the run's SB3 archives.

    Built from the run's config alone: the algorithm is constructed without setting up its
    networks (``_init_setup_model=False``), so its policy class, ``policy_kwargs``, schedules'
    plain values, ``train_freq`` and action noise are what training used; the spaces come from
    ``venv`` or, without one, from one env per env group. ``agents.sb3_files.load_sb3_model``
    gives these to SB3 instead of unpickling the archive's copies.
    """
    if venv is not None:
        obs_space, act_space = venv.observation_space, venv.action_space
        inner = venv.unwrapped
        layout = asdict(inner.layout) if isinstance(inner, PaddedVecEnv) else None
    else:
        obs_space, act_space, layout = _config_spaces(config)
    template = _construct(config, None, act_space, layout, _init_setup_model=False)
    values = dict(vars(template))
    values.update(observation_space=obs_space, action_space=act_space)
    if values.get("target_entropy") == "auto":
        # TQC stores its automatic target entropy as a numpy scalar (so cloudpickled) and cannot
        # recompute it on load without an env: the value it computed, by its own formula.
        values["target_entropy"] = -np.prod(act_space.shape or (1,)).astype(np.float32)
    return values


def _config_spaces(
    config: AgentConfig,
) -> tuple[spaces.Space[Any], spaces.Space[Any], dict[str, Any] | None]:
    """Observation and action spaces (and a set policy's layout) of ``config``'s envs."""
    configs = group_env_configs(config)
    envs = [make_env(c) for c in configs]
    try:
        if config.policy != "set":
            return envs[0].observation_space, envs[0].action_space, None
        layout = padded_layout(configs, [int(e.n_tasks) for e in envs])
        space = layout.observation_space(load_env_config(configs[0]).feature_spec)
        return space, layout.action_space(), asdict(layout)
    finally:
        for env in envs:
            env.close()


__all__ = ["build_model", "check_hyperparameters", "model_template"]
