"""What an agent's training is measured against: reference returns and held-out evaluation.

``reference_returns``: the EW and IGBv1 returns on a few training instances (TensorBoard reference
lines); ``held_out_eval_env`` / ``eval_callback``: SB3's ``EvalCallback`` on the env's held-out
``test_set`` (every instance once per evaluation, deterministic actions, best model kept).
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

from agents.checkpoint import (
    SaveBestCallback,
)
from agents.config import (
    AgentConfig,
    group_env_configs,
)
from agents.padded_vec_env import PaddedVecEnv
from agents.vec_env import make_worker_env, padded_layout
from agents.worker_vec_env import preload_workers
from igb_env import rollout_baseline
from igb_env.config import EnvConfig, held_out_config, load_env_config
from mtl_backends.build import transform_conflict
from mtl_backends.lifetime import exit_with_parent
from mtl_backends.registry import ConfigError

REFERENCE_BASELINES: tuple[str, ...] = ("ew", "igbv1")
#: The unit-weight reference on log losses, in EW's place where the env's balancer requires the
#: ``log`` transform (e.g. ``db_mtl``, which EW's raw losses cannot run under).
LOG_UNIT_BASELINE = "si"


def reference_baselines(env_config: EnvConfig | Mapping[str, Any]) -> tuple[str, ...]:
    """``REFERENCE_BASELINES`` that can run under the env's balancer (SI in EW's place if not).

    A balancer that requires a loss transform refuses weightings declaring another one
    (``mtl_backends.build.transform_conflict``); the reference lines then use the unit weighting
    on the log transform, so an agent trained with ``db_mtl`` underneath still has two lines.
    """
    balancer = load_env_config(env_config).balancer.name
    names = (
        LOG_UNIT_BASELINE if transform_conflict(name, balancer) else name
        for name in REFERENCE_BASELINES
    )
    return tuple(dict.fromkeys(names))


def _rollout_return(env_config: dict[str, Any], weighting: str, instance: int) -> float:
    torch.set_num_threads(1)
    exit_with_parent()  # a pool worker: do not outlive a killed `igb train-agent`
    return rollout_baseline(env_config, weighting, instance).total_reward


def reference_returns(
    env_config: Mapping[str, Any],
    n_instances: int,
    seed: int,
    workers: int = 1,
    executor: Executor | None = None,
) -> dict[str, float]:
    """Mean episode return of EW and IGBv1 (``reference_baselines``) on a few training instances.

    The instances are drawn from the env's training range with ``numpy.random.default_rng(seed)``;
    both baselines run on the same ones (``igb_env.rollout_baseline``: the env's trainer, decision
    points and reward, so the returns compare with the agent's ``rollout/ep_rew_mean``).

    Args:
        env_config: Env configuration.
        n_instances: Number of instances (0: none).
        seed: Seed of the instance draw.
        workers: Processes to spread the rollouts over (when no ``executor`` is given).
        executor: Where to run the rollouts (e.g. a caller's process pool).
    """
    if n_instances < 1:
        return {}
    cfg = load_env_config(dict(env_config))
    train_set = cfg.train_instances
    picks = np.random.default_rng(seed).integers(0, len(train_set), n_instances)
    instances = [int(train_set[int(i)]) for i in picks]
    names = reference_baselines(cfg)
    jobs = [(dict(env_config), name, inst) for name in names for inst in instances]
    if executor is not None:
        returns = list(executor.map(_rollout_return, *zip(*jobs, strict=True)))
    elif workers > 1:
        preload_workers()
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            returns = list(pool.map(_rollout_return, *zip(*jobs, strict=True)))
    else:
        returns = [_rollout_return(*job) for job in jobs]
    per = {
        name: [r for (_, n, _), r in zip(jobs, returns, strict=True) if n == name] for name in names
    }
    return {name: float(np.mean(values)) for name, values in per.items()}


def group_reference_returns(
    config: AgentConfig, workers: int = 1, executor: Executor | None = None
) -> dict[str, float]:
    """``reference_returns`` of every env group, averaged over the groups."""
    per_group = [
        reference_returns(c, config.reference_instances, config.seed, workers, executor)
        for c in group_env_configs(config)
    ]
    return (
        {name: float(np.mean([r[name] for r in per_group])) for name in per_group[0]}
        if per_group[0]
        else {}
    )


def held_out_episodes(config: AgentConfig) -> int | None:
    """Episodes per held-out evaluation (``None``: no ``test_set`` or no ``eval_every``).

    Checks the settings without building an env: every group's ``test_set`` must have one size,
    since SB3's ``evaluate_policy`` splits the episodes evenly over the groups' envs.
    """
    resolved = [load_env_config(c) for c in group_env_configs(config)]
    if any(c.test_set is None for c in resolved) or not config.eval_every:
        return None
    sizes = {len(c.test_instances) for c in resolved}
    if len(sizes) > 1:
        raise ConfigError(f"the env groups' test sets must have one size, got {sorted(sizes)}")
    return sizes.pop() * len(resolved)


def held_out_eval_env(config: AgentConfig) -> tuple[VecEnv, int] | None:
    """The held-out evaluation env and its episodes per evaluation (``None``: no test_set).

    One env per group walks that group's ``test_set`` round-robin (``held_out_episodes``).
    """
    episodes = held_out_episodes(config)
    if episodes is None:
        return None
    configs = group_env_configs(config)
    resolved = [load_env_config(c) for c in configs]
    groups = [
        DummyVecEnv([functools.partial(make_worker_env, held_out_config(c))]) for c in resolved
    ]
    venv: VecEnv = groups[0]
    if config.policy == "set":
        tasks = [int(g.get_attr("n_tasks", indices=[0])[0]) for g in groups]
        layout = padded_layout(configs, tasks)
        space = layout.observation_space(resolved[0].feature_spec)
        venv = PaddedVecEnv(groups, tasks, layout, space)
    return VecMonitor(venv), episodes


def eval_callback(
    config: AgentConfig, out: Path, after_eval: BaseCallback | None = None
) -> EvalCallback | None:
    """``EvalCallback`` on the held-out ``test_set`` (``None`` without one or ``eval_every``).

    ``after_eval`` runs after every evaluation (its ``parent`` is the ``EvalCallback``; returning
    ``False`` stops training), as rl-zoo3's trial callbacks do.
    """
    made = held_out_eval_env(config)
    if made is None:
        return None
    eval_env, episodes = made
    return EvalCallback(
        eval_env,
        callback_on_new_best=SaveBestCallback(out / "best_model.zip"),
        callback_after_eval=after_eval,
        # Every held-out instance once per evaluation: the eval env walks the set round-robin.
        n_eval_episodes=episodes,
        # EvalCallback counts calls, one per vectorised step of all training sub-envs.
        eval_freq=max(
            int(config.eval_every or 1) // (config.n_envs * max(len(config.env_groups), 1)), 1
        ),
        log_path=str(out / "eval"),
        best_model_save_path=None,
        deterministic=True,
        verbose=0,
        warn=False,
    )


__all__ = [
    "REFERENCE_BASELINES",
    "eval_callback",
    "group_reference_returns",
    "held_out_episodes",
    "held_out_eval_env",
    "reference_returns",
]
