"""Train an SB3 agent that sets task loss weights, from an rl-zoo3-style YAML (``igb train-agent``).

Read top to bottom, cleanrl style:

1. ``AgentConfig`` (``agents.config``): a frozen dataclass of plain values (algorithm, policy and
   algorithm hyperparameters, timestep cap, wall budget, vectorisation, seed, and the env config
   passed unchanged to ``igb_env.make_env``).
2. ``make_vec_env`` (``agents.vec_env``): ``n_envs`` copies of the env, seeded by ``SeedSequence``.
3. ``train_agent``: builds the algorithm (``PPO``, ``SAC``, ``TD3``, ``A2C``; ``TQC`` with the
   ``contrib`` extra), measures the EW and IGBv1 reference returns on a few training instances
   (TensorBoard reference lines), learns with the callbacks of ``agents.callbacks`` (per-task
   weights/gaps/reward, wall budget, progress bar), an ``EvalCallback`` on the env's held-out
   ``test_set`` (deterministic, every instance once per evaluation, best model kept) and resumable
   checkpoints (``agents.checkpoint``), and writes the run folder::

       RUN/config.yaml        the resolved configuration (env config included)
       RUN/model.zip          the final model (written atomically)
       RUN/best_model.zip     the best model on the held-out instances (with a test_set)
       RUN/eval/              EvalCallback's evaluations.npz
       RUN/checkpoint.json    pointer to the latest complete checkpoint folder
       RUN/checkpoint-N/      model, replay buffer, instance cursors, RNG states, timesteps
       RUN/checkpoint.zip     the latest checkpoint's model
       RUN/training.json      timesteps actually done, episodes, wall time, throughput, references
       RUN/tb/                TensorBoard event files
4. ``resume_agent`` (``igb train-agent --resume RUN``): continues a run from its last checkpoint
   (``reset_num_timesteps=False``) up to its ``total_timesteps``.
"""

from __future__ import annotations

import difflib
import functools
import json
import multiprocessing
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor, VecNormalize

from agents.callbacks import (
    BudgetCallback,
    TaskMetricsCallback,
    TqdmCallback,
    null_logger,
    save_model_atomic,
)
from agents.checkpoint import (
    ResumableCheckpointCallback,
    SaveBestCallback,
    latest_checkpoint,
    load_rng_states,
    load_state,
    restore_episode_buffers,
    save_checkpoint,
)
from agents.config import (
    OFF_POLICY,
    AgentConfig,
    get_algorithm,
    group_env_configs,
    load_agent_config,
    resolve_env_config,
)
from agents.padded_vec_env import PaddedVecEnv
from agents.rng_state import set_rng_states
from agents.sb3_files import load_sb3_model
from agents.set_policy import SetActorCriticPolicy
from agents.vec_env import make_vec_env, make_worker_env, padded_layout
from agents.worker_vec_env import preload_workers
from igb_env import make_env, rollout_baseline
from igb_env.config import held_out_config, load_env_config
from mtl_backends.config import from_dict, to_dict
from mtl_backends.fileio import check_writable_dir
from mtl_backends.lifetime import exit_with_parent
from mtl_backends.policy.network import ACTIVATIONS
from mtl_backends.registry import ConfigError, valid_arguments

REFERENCE_BASELINES: tuple[str, ...] = ("ew", "igbv1")


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
    policy, policy_kwargs, hyperparameters = _algorithm_arguments(config, venv.action_space, layout)
    algo = get_algorithm(config.algorithm)
    with warnings.catch_warnings():
        # The prototype's minibatch of 64 does not divide its 144-step rollout; SB3 then warns
        # about the last, truncated minibatch, which is harmless.
        warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
        model = algo(
            policy,
            venv,
            policy_kwargs=policy_kwargs,
            seed=config.seed,
            tensorboard_log=tensorboard_log,
            device="cpu",
            verbose=0,
            **hyperparameters,
        )
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
    policy, policy_kwargs, hyperparameters = _algorithm_arguments(config, act_space, layout)
    # Every SB3 algorithm takes `_init_setup_model`; BaseAlgorithm's signature does not show it.
    algo: Any = get_algorithm(config.algorithm)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
        template = algo(
            policy,
            None,
            policy_kwargs=policy_kwargs,
            seed=config.seed,
            device="cpu",
            verbose=0,
            _init_setup_model=False,
            **hyperparameters,
        )
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
    train_set = load_env_config(dict(env_config)).train_instances
    picks = np.random.default_rng(seed).integers(0, len(train_set), n_instances)
    instances = [int(train_set[int(i)]) for i in picks]
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


def _eval_env(config: AgentConfig) -> tuple[VecEnv, int] | None:
    """The held-out evaluation env and its episodes per evaluation (``None``: no test_set).

    One env per group walks that group's ``test_set`` round-robin; SB3's ``evaluate_policy``
    splits the episodes evenly over the envs, so the groups' test sets must have one size.
    """
    configs = group_env_configs(config)
    resolved = [load_env_config(c) for c in configs]
    if any(c.test_set is None for c in resolved) or not config.eval_every:
        return None
    sizes = {len(c.test_instances) for c in resolved}
    if len(sizes) > 1:
        raise ConfigError(f"the env groups' test sets must have one size, got {sorted(sizes)}")
    groups = [
        DummyVecEnv([functools.partial(make_worker_env, held_out_config(c))]) for c in resolved
    ]
    venv: VecEnv = groups[0]
    if config.policy == "set":
        tasks = [int(g.get_attr("n_tasks", indices=[0])[0]) for g in groups]
        layout = padded_layout(configs, tasks)
        space = layout.observation_space(resolved[0].feature_spec)
        venv = PaddedVecEnv(groups, tasks, layout, space)
    return VecMonitor(venv), sizes.pop() * len(groups)


def _eval_callback(config: AgentConfig, out: Path) -> EvalCallback | None:
    """``EvalCallback`` on the held-out ``test_set`` (``None`` without one or ``eval_every``)."""
    made = _eval_env(config)
    if made is None:
        return None
    eval_env, episodes = made
    return EvalCallback(
        eval_env,
        callback_on_new_best=SaveBestCallback(out / "best_model.zip"),
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


def _learn(
    config: AgentConfig,
    out: Path,
    model: BaseAlgorithm,
    venv: VecEnv,
    references: Mapping[str, float],
    task_names: list[str] | None,
    progress_bar: bool,
    resumed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Learn until the timestep cap or the wall budget (from ``resumed`` state when resuming).

    Returns:
        The run summary written to ``training.json``.
    """
    prior = dict(resumed or {})
    done = int(model.num_timesteps)
    prior_wall = float(prior.get("wall_time_s", 0.0))
    remaining_budget = (
        None if config.time_budget_s is None else max(config.time_budget_s - prior_wall, 1e-3)
    )
    budget = BudgetCallback(remaining_budget)
    progress = TqdmCallback(config.total_timesteps, disable=not progress_bar)
    progress.episodes = int(prior.get("episodes", 0))
    callbacks: list[BaseCallback] = [TaskMetricsCallback(task_names, references), budget, progress]
    evaluation = _eval_callback(config, out)
    if evaluation is not None:
        best = prior.get("best_mean_reward")
        if best is not None:
            evaluation.best_mean_reward = float(best)
        callbacks.append(evaluation)

    def state() -> dict[str, Any]:
        return {
            "instance_states": venv.env_method("get_instance_state"),
            "episodes": progress.episodes,
            "wall_time_s": prior_wall + budget.elapsed,
            "best_mean_reward": None if evaluation is None else evaluation.best_mean_reward,
            "references": dict(references),
            "task_names": task_names,
            "resumed_from": prior.get("resumed_from"),
        }

    checkpoints = None
    if config.checkpoint_every:
        checkpoints = ResumableCheckpointCallback(out, config.checkpoint_every, state, start=done)
        callbacks.append(checkpoints)

    start = time.perf_counter()
    try:
        model.learn(
            total_timesteps=max(config.total_timesteps - done, 0),
            callback=CallbackList(callbacks),
            tb_log_name="agent",
            reset_num_timesteps=resumed is None,
        )
        wall = time.perf_counter() - start
        if checkpoints is not None:
            save_checkpoint(model, out, state())
    finally:
        venv.close()
        if evaluation is not None:
            evaluation.eval_env.close()
    save_model_atomic(model, out / "model.zip")
    steps = int(model.num_timesteps) - done
    return {
        "algorithm": config.algorithm,
        "timesteps": int(model.num_timesteps),
        "timestep_cap": config.total_timesteps,
        "time_budget_s": config.time_budget_s,
        "stopped_by_budget": budget.stopped_by_budget,
        "episodes": progress.episodes,
        "wall_time_s": prior_wall + wall,
        "env_steps_per_s": steps / wall if wall > 0 else 0.0,
        "references": dict(references),
        "task_names": task_names,
        "best_mean_reward": None if evaluation is None else evaluation.best_mean_reward,
        "resumed_from": prior.get("resumed_from"),
    }


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
        progress_bar: Show progress (a bar on a terminal, plain lines in a log).
        executor: Where to run the EW/IGBv1 reference rollouts (default: a process pool of
            ``n_envs`` workers with ``subproc``, else in-process).

    Returns:
        The run folder.
    """
    if isinstance(config, str | Path):
        config = load_agent_config(config)
    elif not isinstance(config, AgentConfig):
        config = from_dict(AgentConfig, dict(config))
    # Everything that can be checked without training is checked before the run folder exists.
    check_hyperparameters(config)
    out = check_writable_dir(out_dir, "the run folder")
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
        references = group_reference_returns(config, workers, executor)

        # 3. The envs, the agent and its callbacks; 4. learn, checkpoint, save.
        venv = make_vec_env(config)
        # Runs of several T (a set policy) have no common task names: the metrics pool the tasks.
        task_names = (
            [str(t) for t in venv.get_attr("task_names", indices=[0])[0]]
            if config.policy == "mlp"
            else None
        )
        model = build_model(config, venv, tensorboard_log=str(out / "tb"))
        summary = _learn(config, out, model, venv, references, task_names, progress_bar)
    finally:
        torch.set_num_threads(threads)
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    return out


def resume_agent(
    run: str | Path,
    progress_bar: bool = True,
    total_timesteps: int | None = None,
    time_budget_s: float | None = None,
) -> Path:
    """Continue an agent run from its last checkpoint (``igb train-agent --resume RUN``).

    Restores the model and its optimizer, the replay buffer (off-policy), VecNormalize statistics
    (if any), every sub-env's instance cursor and ``np_random`` state, and the main process's
    numpy/torch/``random`` RNG states, then learns with ``reset_num_timesteps=False`` up to the
    run's ``total_timesteps``. The episodes in progress at the checkpoint restart on new instances.

    Args:
        run: Run folder written by ``train_agent`` with ``checkpoint_every`` set.
        progress_bar: Show progress (a bar on a terminal, plain lines in a log).
        total_timesteps: A new timestep cap (to extend a finished run); recorded in
            ``config.yaml``.
        time_budget_s: A new total wall-clock budget, counting the time already spent (to extend
            a run stopped by its budget); recorded in ``config.yaml``.

    Returns:
        The run folder.
    """
    out = Path(run)
    folder = latest_checkpoint(out)
    config = load_agent_config(out / "config.yaml")
    check_hyperparameters(config)
    # Read (and check) the checkpoint files igb-rl wrote before anything is changed or started.
    state = load_state(folder)
    rngs = load_rng_states(folder)
    changes: dict[str, Any] = {}
    if total_timesteps is not None:
        changes["total_timesteps"] = total_timesteps
    if time_budget_s is not None:
        changes["time_budget_s"] = time_budget_s
    if changes:
        config = replace(config, **changes)
        with (out / "config.yaml").open("w") as fh:
            yaml.safe_dump(to_dict(config), fh, sort_keys=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        venv = make_vec_env(config)
        if (folder / "vecnormalize.pkl").is_file():
            venv = VecNormalize.load(str(folder / "vecnormalize.pkl"), venv)
        algo = get_algorithm(config.algorithm)
        model = load_sb3_model(
            algo,
            folder / "model.zip",
            model_template(config, venv),
            env=venv,
            device="cpu",
            tensorboard_log=str(out / "tb"),
        )
        if not restore_episode_buffers(model, folder):
            warnings.warn(
                f"{folder} predates episodes.json: the logged rolling episode means restart "
                "empty after this resume",
                stacklevel=2,
            )
        if config.algorithm in OFF_POLICY and (folder / "replay_buffer.pkl").is_file():
            model.load_replay_buffer(folder / "replay_buffer.pkl")  # type: ignore[attr-defined]
        # Loading seeds the sub-envs again (SB3 seeds the env when it sets the model up): drop
        # those pending seeds so that the restored instance cursors and np_random states count.
        venv.unwrapped._seeds = [None] * venv.num_envs
        for i, instance_state in enumerate(state["instance_states"]):
            venv.env_method("set_instance_state", instance_state, indices=[i])
        set_rng_states(rngs)
        resumed = {**state, "resumed_from": int(state["timesteps"])}
        summary = _learn(
            config,
            out,
            model,
            venv,
            state.get("references", {}),
            state["task_names"],
            progress_bar,
            resumed=resumed,
        )
    finally:
        torch.set_num_threads(threads)
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    return out


def load_model(run: str | Path, best: bool = False) -> BaseAlgorithm:
    """The final model of a run folder (``RUN/model.zip``), on CPU, without an env.

    Args:
        run: Run folder.
        best: Load ``RUN/best_model.zip`` (best on the held-out instances) instead.
    """
    run = Path(run)
    config = load_agent_config(run / "config.yaml")
    path = run / ("best_model.zip" if best else "model.zip")
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist; is {str(run)!r} a finished agent run?"
        )
    # No cloudpickled entry of the archive is unpickled (agents.sb3_files.load_sb3_model).
    return load_sb3_model(
        get_algorithm(config.algorithm), path, model_template(config), device="cpu"
    )
