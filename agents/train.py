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

import json
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents.build import build_model, check_hyperparameters, model_template
from agents.callbacks import (
    BudgetCallback,
    TaskMetricsCallback,
    TqdmCallback,
    save_model_atomic,
)
from agents.checkpoint import (
    ResumableCheckpointCallback,
    latest_checkpoint,
    load_rng_states,
    load_state,
    restore_episode_buffers,
    restore_evaluations,
    save_checkpoint,
)
from agents.config import (
    OFF_POLICY,
    AgentConfig,
    get_algorithm,
    load_agent_config,
    resolve_env_config,
)
from agents.references import eval_callback, group_reference_returns
from agents.rng_state import set_rng_states
from agents.sb3_files import load_sb3_model
from agents.vec_env import make_vec_env
from mtl_backends.config import from_dict, to_dict
from mtl_backends.fileio import check_writable_dir


def _learn(
    config: AgentConfig,
    out: Path,
    model: BaseAlgorithm,
    venv: VecEnv,
    references: Mapping[str, float],
    task_names: list[str] | None,
    progress_bar: bool,
    resumed: Mapping[str, Any] | None = None,
    after_eval: BaseCallback | None = None,
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
    progress = TqdmCallback(
        config.total_timesteps, disable=not progress_bar, time_budget_s=remaining_budget
    )
    progress.episodes = int(prior.get("episodes", 0))
    callbacks: list[BaseCallback] = [TaskMetricsCallback(task_names, references), budget, progress]
    evaluation = eval_callback(config, out, after_eval)
    if evaluation is not None:
        best = prior.get("best_mean_reward")
        if best is not None:
            evaluation.best_mean_reward = float(best)
        if resumed is not None:
            restore_evaluations(evaluation, done)
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
    after_eval: BaseCallback | None = None,
) -> Path:
    """Train an agent and write its run folder.

    Args:
        config: An ``AgentConfig``, its mapping form, or a YAML path.
        out_dir: Run folder (created).
        progress_bar: Show progress (a bar on a terminal, plain lines in a log).
        executor: Where to run the EW/IGBv1 reference rollouts (default: a process pool of
            ``n_envs`` workers with ``subproc``, else in-process).
        after_eval: A callback run after every held-out evaluation (its ``parent`` is SB3's
            ``EvalCallback``; returning ``False`` stops training): ``igb tune-agent`` reports
            to Optuna's pruner with it.

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
        summary = _learn(
            config, out, model, venv, references, task_names, progress_bar, after_eval=after_eval
        )
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
