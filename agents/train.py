"""Train an SB3 agent that sets task loss weights, from an rl-zoo3-style YAML (``igb train-agent``).

Read top to bottom, cleanrl style:

1. ``AgentConfig``: a frozen dataclass of plain values (algorithm, policy and algorithm
   hyperparameters, timestep cap, wall budget, vectorisation, seed, and the env config passed
   unchanged to ``igb_env.make_env``).
2. ``make_vec_env``: ``n_envs`` copies of the env in a ``DummyVecEnv`` or ``SubprocVecEnv``, one
   torch thread per worker, seeded from ``numpy.random.SeedSequence(seed).spawn(n_envs)`` (SB3's own
   ``seed + i`` would make neighbouring runs share sub-env seeds, SB3 issue #2268), under
   ``VecMonitor``.
3. ``train_agent``: builds ``PPO`` or ``SAC``, measures the EW and IGBv1 reference returns on a few
   training instances (TensorBoard reference lines), learns with the callbacks of
   ``agents.callbacks`` (per-task weights/gaps/reward, wall budget, atomic checkpoints, progress
   bar), and writes the run folder::

       RUN/config.yaml      the resolved configuration (env config included)
       RUN/model.zip        the final model (written atomically)
       RUN/checkpoint.zip   the latest periodic checkpoint
       RUN/training.json    timesteps actually done, episodes, wall time, throughput, references
       RUN/tb/              TensorBoard event files
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecEnvWrapper,
    VecMonitor,
)
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn
from torch import nn

from agents.callbacks import (
    BudgetCallback,
    CheckpointCallback,
    TaskMetricsCallback,
    TqdmCallback,
    save_model_atomic,
)
from igb_env.config import load_env_config
from mtl_backends.config import from_dict, load_yaml, to_dict
from mtl_backends.registry import ConfigError

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}
# The activations the standalone PolicyNetwork can rebuild (mtl_backends.weightings.policy).
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
VEC_ENVS: tuple[str, ...] = ("dummy", "subproc")
REFERENCE_BASELINES: tuple[str, ...] = ("ew", "igbv1")


def _default_policy_kwargs() -> dict[str, Any]:
    return {"net_arch": [64, 64], "log_std_init": -1.0}


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

    The defaults are the prototype's best design (``research/prototype.md``): PPO on the residual
    action (``a = 0`` is IGBv1) with the validation log-loss reward, (64, 64) networks and small
    initial action noise.

    Attributes:
        algorithm: ``ppo`` or ``sac``.
        policy_kwargs: SB3 ``policy_kwargs``; ``activation_fn`` is a name (``tanh`` or ``relu``, the
            ones an export can rebuild), everything else goes to SB3 unchanged (``net_arch``,
            ``log_std_init``, ...).
        hyperparameters: Keyword arguments of the SB3 algorithm (``n_steps``, ``batch_size``, ...).
        total_timesteps: Timestep cap (env steps over all sub-envs).
        time_budget_s: Wall-clock budget in seconds (``None``: none); training stops at whichever
            of the two limits comes first. Wall-clock stopping depends on the machine, so the
            timesteps actually done are recorded in ``training.json``.
        n_envs: Number of parallel envs.
        vec_env: ``dummy`` (one process) or ``subproc`` (one process per env).
        seed: Seed of the agent (torch, numpy) and, through ``SeedSequence``, of the sub-envs.
        env: Env configuration passed to ``igb_env.make_env`` (see ``igb_env.EnvConfig``; a
            ``preset`` key names one of ``igb_env.config.PRESETS``); empty: the env defaults.
        checkpoint_every: Timesteps between checkpoints (``None``: only the final model).
        reference_instances: Training instances on which the EW and IGBv1 reference returns are
            measured before training (0: no reference lines).
    """

    algorithm: str = "ppo"
    policy_kwargs: Mapping[str, Any] = field(default_factory=_default_policy_kwargs)
    hyperparameters: Mapping[str, Any] = field(default_factory=_default_hyperparameters)
    total_timesteps: int = 100_000
    time_budget_s: float | None = None
    n_envs: int = 2
    vec_env: str = "subproc"
    seed: int = 0
    env: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_every: int | None = 2000
    reference_instances: int = 2

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"unknown algorithm {self.algorithm!r}; valid choices: {', '.join(ALGORITHMS)}"
            )
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
        activation = self.policy_kwargs.get("activation_fn")
        if activation is not None and activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown policy_kwargs.activation_fn {activation!r}; "
                f"valid choices: {', '.join(ACTIVATIONS)}"
            )


def load_agent_config(path: str | Path) -> AgentConfig:
    """Load an ``AgentConfig`` from YAML (unknown keys are errors that list the valid ones)."""
    return from_dict(AgentConfig, load_yaml(path), where=str(path))


def resolve_env_config(env: Mapping[str, Any]) -> dict[str, Any]:
    """The env config with every default filled in (what the run actually used)."""
    return load_env_config(dict(env)).to_dict()


def spawn_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 32-bit seeds from ``numpy.random.SeedSequence(seed).spawn(n)``."""
    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(n)]


class SeedSequenceVecEnv(VecEnvWrapper):
    """Seeds sub-env ``i`` with the ``i``-th ``SeedSequence`` child instead of SB3's ``seed + i``.

    SB3 calls ``env.seed(seed)`` when a model is built with ``seed=...``; this wrapper intercepts
    that call. With ``seed + i``, runs with seeds 0 and 1 would share a sub-env seed
    (SB3 issue #2268).
    """

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Set the seeds the sub-envs get at their next reset."""
        if seed is None:
            return list(self.venv.seed(None))
        seeds: list[int | None] = list(spawn_seeds(seed, self.num_envs))
        # SB3's VecEnv applies `_seeds` at the next reset(), then clears it (base_vec_env.py).
        self.venv._seeds = seeds
        return seeds

    def reset(self) -> Any:
        """Reset every sub-env."""
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        """Wait for the step started by ``step_async``."""
        return self.venv.step_wait()


def _make_worker_env(env_config: dict[str, Any]) -> Any:
    # Module-level (picklable) factory; one torch thread per worker so n_envs workers share the
    # cores instead of oversubscribing them (SB3 issue #90).
    torch.set_num_threads(1)
    from igb_env import make_env

    return make_env(env_config)


def preload_workers() -> None:
    """Have the forkserver import torch, SB3 and the env once, so each worker starts in a blink.

    ``SubprocVecEnv`` and the process pools here start their workers through the one forkserver
    of this process; without a preload every worker re-imports torch (seconds each). No effect once
    the forkserver runs.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "stable_baselines3", "igb_env", "agents.train"])


def make_vec_env(config: AgentConfig) -> VecEnv:
    """``config.n_envs`` envs, vectorised, seeded by ``SeedSequence``, under ``VecMonitor``.

    The sub-env seeds are applied when SB3 seeds the model (``seed=config.seed``) or when
    ``venv.seed(seed)`` is called.
    """
    fns = [functools.partial(_make_worker_env, dict(config.env)) for _ in range(config.n_envs)]
    if config.vec_env == "subproc":
        preload_workers()
    venv: VecEnv = SubprocVecEnv(fns) if config.vec_env == "subproc" else DummyVecEnv(fns)  # type: ignore[arg-type]
    venv = SeedSequenceVecEnv(venv)
    venv.seed(config.seed)
    return VecMonitor(venv)


def build_model(config: AgentConfig, venv: VecEnv, tensorboard_log: str | None) -> BaseAlgorithm:
    """The SB3 algorithm of ``config`` on ``venv`` (CPU; nothing is evaluated from strings)."""
    policy_kwargs = dict(config.policy_kwargs)
    if "activation_fn" in policy_kwargs:
        policy_kwargs["activation_fn"] = ACTIVATIONS[policy_kwargs["activation_fn"]]
    if config.algorithm == "sac":
        # SAC's Gaussian log-std is state-dependent; log_std_init only applies to gSDE.
        policy_kwargs.pop("log_std_init", None)
    algo = ALGORITHMS[config.algorithm]
    with warnings.catch_warnings():
        # The prototype's minibatch of 64 does not divide its 144-step rollout; SB3 then warns
        # about the last, truncated minibatch, which is harmless (research/prototype.md).
        warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
        return algo(
            "MlpPolicy",
            venv,
            policy_kwargs=policy_kwargs,
            seed=config.seed,
            tensorboard_log=tensorboard_log,
            device="cpu",
            verbose=0,
            **dict(config.hyperparameters),
        )


def _rollout_return(env_config: dict[str, Any], weighting: str, instance: int) -> float:
    torch.set_num_threads(1)
    from igb_env import rollout_baseline

    return rollout_baseline(env_config, weighting, instance).total_reward


def reference_returns(
    env_config: Mapping[str, Any],
    n_instances: int,
    seed: int,
    workers: int = 1,
    executor: Executor | None = None,
) -> dict[str, float]:
    """Mean episode return of EW and IGBv1 on ``n_instances`` training instances.

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
    low, high = load_env_config(dict(env_config)).instances
    instances = [int(i) for i in np.random.default_rng(seed).integers(low, high, n_instances)]
    jobs = [(dict(env_config), name, inst) for name in REFERENCE_BASELINES for inst in instances]
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
        name: [r for (_, n, _), r in zip(jobs, returns, strict=True) if n == name]
        for name in REFERENCE_BASELINES
    }
    return {name: float(np.mean(values)) for name, values in per.items()}


def train_agent(
    config: AgentConfig | Mapping[str, Any] | str | Path,
    out_dir: str | Path,
    progress_bar: bool = True,
    executor: Executor | None = None,
) -> Path:
    """Train an agent and write its run folder.

    Args:
        config: An ``AgentConfig``, its mapping form, or a YAML path.
        out_dir: Run folder (created).
        progress_bar: Show a tqdm bar.
        executor: Where to run the EW/IGBv1 reference rollouts (default: a process pool of
            ``n_envs`` workers with ``subproc``, else in-process).

    Returns:
        The run folder.
    """
    if isinstance(config, str | Path):
        config = load_agent_config(config)
    elif not isinstance(config, AgentConfig):
        config = from_dict(AgentConfig, dict(config))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Resolve and record the configuration before anything runs.
    config = replace(config, env=resolve_env_config(config.env))
    with (out / "config.yaml").open("w") as fh:
        yaml.safe_dump(to_dict(config), fh, sort_keys=False)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # 2. Reference lines: EW and IGBv1 on a few training instances (before the env workers
        # start, so the two do not compete for the cores).
        workers = config.n_envs if config.vec_env == "subproc" else 1
        references = reference_returns(
            config.env, config.reference_instances, config.seed, workers, executor
        )

        # 3. The envs, the agent and its callbacks.
        venv = make_vec_env(config)
        task_names = [str(t) for t in venv.get_attr("task_names", indices=[0])[0]]
        model = build_model(config, venv, tensorboard_log=str(out / "tb"))
        budget = BudgetCallback(config.time_budget_s)
        progress = TqdmCallback(config.total_timesteps, disable=not progress_bar)
        callbacks = [TaskMetricsCallback(task_names, references), budget, progress]
        if config.checkpoint_every:
            callbacks.append(CheckpointCallback(out / "checkpoint.zip", config.checkpoint_every))

        # 4. Learn until the timestep cap or the wall budget, then save.
        start = time.perf_counter()
        try:
            model.learn(
                total_timesteps=config.total_timesteps,
                callback=CallbackList(callbacks),
                tb_log_name="agent",
            )
        finally:
            venv.close()
        wall = time.perf_counter() - start
        save_model_atomic(model, out / "model.zip")
    finally:
        torch.set_num_threads(threads)
    summary = {
        "algorithm": config.algorithm,
        "timesteps": int(model.num_timesteps),
        "timestep_cap": config.total_timesteps,
        "time_budget_s": config.time_budget_s,
        "stopped_by_budget": budget.stopped_by_budget,
        "episodes": progress.episodes,
        "wall_time_s": wall,
        "env_steps_per_s": model.num_timesteps / wall if wall > 0 else 0.0,
        "references": references,
        "task_names": task_names,
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    return out


def load_model(run: str | Path) -> BaseAlgorithm:
    """The final model of a run folder (``RUN/model.zip``), on CPU, without an env."""
    run = Path(run)
    config = load_agent_config(run / "config.yaml")
    path = run / "model.zip"
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist; is {str(run)!r} a finished agent run?"
        )
    return ALGORITHMS[config.algorithm].load(path, device="cpu")
