"""Search an agent's hyperparameters with Optuna, the way rl-zoo3 does (``igb tune-agent``).

Each trial trains the config's agent with hyperparameters drawn by Optuna's TPE sampler from the
algorithm's search space (``SEARCH_SPACES``, after rl-zoo3's ``hyperparams_opt.py``), for a
timestep budget, in its own run folder ``OUT/trial-<n>``. The score is the agent's best mean
return on the env's held-out ``test_set`` (SB3's ``EvalCallback``, deterministic actions, every
held-out instance once per evaluation: the same model selection as ``igb train-agent``). After
every evaluation the trial reports its latest mean return to Optuna's median pruner, which may
stop it (``TrialPruningCallback``, rl-zoo3's ``TrialEvalCallback``). The best trial's full agent
config is written as ``OUT/best.yaml`` (``igb train-agent OUT/best.yaml`` trains it to the
config's own budget) and every trial as a row of ``OUT/trials.csv``.

The study can live in a local SQLite file (``mtl_backends.studies``): running again continues it
up to the trial budget; a study made with another base config or other search settings is
refused; each trial's sampler is seeded by the search seed and the trials before it, and every
trial trains with the config's agent seed, so the same command gives the same trials. A trial
killed midway was never recorded: its folder is cleared and it runs again.

Only the algorithm's hyperparameters are searched (not the policy network or the env): for the
set policy of ``policy: set`` as well as for the MLP policy.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

from agents.config import AgentConfig
from agents.references import held_out_episodes
from agents.train import train_agent
from mtl_backends import studies
from mtl_backends.atomic import atomic_open
from mtl_backends.config import to_dict
from mtl_backends.fileio import check_writable_dir, read_json
from mtl_backends.progress import Progress
from mtl_backends.registry import ConfigError

STUDY_NAME = "igb-tune-agent"
"""The name of the one study in a ``--study`` file."""

STUDY_FORMAT = 1
"""Part of a study's recorded settings: bumping it makes older study files refused."""

COMMAND = "igb tune-agent"

SEARCH_FILE = "search.json"
"""``OUT/search.json``: the study file and settings of the search whose trials ``OUT`` holds."""


GAMMAS = [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]
GAE_LAMBDAS = [0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0]
MAX_GRAD_NORMS = [0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.0, 5.0]


def _rollout_lengths(choices: list[int], rollout_envs: int, timesteps: int) -> list[int]:
    """The ``n_steps`` choices whose rollout fits in a trial (at least the shortest one)."""
    fitting = [n for n in choices if n * rollout_envs <= timesteps]
    return fitting or choices[:1]


def _sample_ppo(trial: Any, rollout_envs: int, timesteps: int) -> dict[str, Any]:
    """PPO: rl-zoo3's ``sample_ppo_params``, with the minibatch size a divisor of the rollout.

    ``batch_size`` is drawn as a number of minibatches per rollout (``n_steps · envs``), so every
    minibatch is full (SB3 warns on a partial one); rollouts longer than the trial are not drawn.
    """
    lengths = _rollout_lengths([8, 16, 32, 64, 128, 256, 512], rollout_envs, timesteps)
    n_steps = trial.suggest_categorical("n_steps", lengths)
    minibatches = trial.suggest_categorical("n_minibatches", [1, 2, 4, 8])
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True),
        "n_steps": n_steps,
        "batch_size": max((n_steps * rollout_envs) // minibatches, 1),
        "n_epochs": trial.suggest_categorical("n_epochs", [1, 5, 10, 20]),
        "gamma": trial.suggest_categorical("gamma", GAMMAS),
        "gae_lambda": trial.suggest_categorical("gae_lambda", GAE_LAMBDAS),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        "clip_range": trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3, 0.4]),
        "max_grad_norm": trial.suggest_categorical("max_grad_norm", MAX_GRAD_NORMS),
        "vf_coef": trial.suggest_float("vf_coef", 0.0, 1.0),
    }


def _sample_a2c(trial: Any, rollout_envs: int, timesteps: int) -> dict[str, Any]:
    """A2C: rl-zoo3's ``sample_a2c_params`` (RMSprop as in SB3's default)."""
    lengths = _rollout_lengths([4, 8, 16, 32, 64, 128], rollout_envs, timesteps)
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True),
        "n_steps": trial.suggest_categorical("n_steps", lengths),
        "gamma": trial.suggest_categorical("gamma", GAMMAS),
        "gae_lambda": trial.suggest_categorical("gae_lambda", GAE_LAMBDAS),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        "max_grad_norm": trial.suggest_categorical("max_grad_norm", MAX_GRAD_NORMS),
        "vf_coef": trial.suggest_float("vf_coef", 0.0, 1.0),
    }


def _sample_off_policy(trial: Any, rollout_envs: int, timesteps: int) -> dict[str, Any]:
    """SAC / TQC: rl-zoo3's ``sample_sac_params`` (without its network choice)."""
    del rollout_envs, timesteps  # updates start after learning_starts, whatever the budget
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256, 512]),
        "buffer_size": trial.suggest_categorical("buffer_size", [10_000, 100_000, 1_000_000]),
        "learning_starts": trial.suggest_categorical("learning_starts", [0, 100, 1000]),
        "train_freq": trial.suggest_categorical("train_freq", [1, 4, 8, 16]),
        "gamma": trial.suggest_categorical("gamma", GAMMAS),
        "tau": trial.suggest_categorical("tau", [0.001, 0.005, 0.01, 0.02, 0.05]),
    }


def _sample_td3(trial: Any, rollout_envs: int, timesteps: int) -> dict[str, Any]:
    """TD3: rl-zoo3's ``sample_td3_params``: SAC's space and Gaussian action noise."""
    return {
        **_sample_off_policy(trial, rollout_envs, timesteps),
        "action_noise_std": trial.suggest_categorical("action_noise_std", [0.0, 0.1, 0.2, 0.5]),
    }


SEARCH_SPACES: dict[str, Callable[[Any, int, int], dict[str, Any]]] = {
    "ppo": _sample_ppo,
    "a2c": _sample_a2c,
    "sac": _sample_off_policy,
    "tqc": _sample_off_policy,
    "td3": _sample_td3,
}
"""Algorithm -> sampler ``(optuna trial, envs per rollout, trial timesteps) -> hyperparameters``."""


@dataclass(frozen=True)
class AgentSearch:
    """Settings of an agent hyperparameter search (``igb tune-agent``).

    Attributes:
        trials: Trial budget: the study holds this many finished (complete or pruned) trials
            when the search ends; a resumed study runs only the missing ones.
        timesteps: Env steps of each trial (``None``: the config's ``total_timesteps``). A
            fraction of the full budget finds learning rates and batch sizes that learn fast,
            which is what a search on a budget can find.
        eval_every: Env steps between the held-out evaluations that score the trial and that the
            pruner sees (``None``: the config's ``eval_every``).
        search_seed: Seed of the sampler: the same settings give the same trials.
        startup_trials: Trials drawn at random before TPE models the results.
        pruner: ``median`` (stop a trial whose latest mean return is below the median of the
            completed trials' at that point) or ``none``.
        prune_startup_trials: Completed trials before the pruner may stop any trial.
    """

    trials: int = 20
    timesteps: int | None = None
    eval_every: int | None = None
    search_seed: int = 0
    startup_trials: int = 5
    pruner: str = "median"
    prune_startup_trials: int = 3

    def __post_init__(self) -> None:
        studies.check_search_settings(
            self.trials,
            self.search_seed,
            self.startup_trials,
            self.pruner,
            self.prune_startup_trials,
        )
        if self.timesteps is not None and self.timesteps < 1:
            raise ConfigError(f"timesteps must be >= 1, got {self.timesteps}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1 env step, got {self.eval_every}")


@dataclass(frozen=True)
class AgentTrial:
    """One finished trial of ``tune_agent``.

    Attributes:
        number: Optuna's trial number in the study.
        params: What Optuna drew (``n_minibatches`` for PPO's batch size).
        hyperparameters: The hyperparameters the agent trained with (the config's, updated).
        state: ``complete`` or ``pruned``.
        score: Best mean held-out return (complete) or the last reported one (pruned).
        timesteps: Env steps of the last evaluation it reached.
        reported: Mean held-out return at every evaluation (what the pruner saw).
    """

    number: int
    params: dict[str, Any]
    hyperparameters: dict[str, Any]
    state: str
    score: float
    timesteps: int
    reported: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentSearchResult:
    """Outcome of ``tune_agent``.

    Attributes:
        best: The best complete trial (ties: the earliest).
        trials: Every finished trial of the study, in order.
        ran: Trials run by this call.
        config_path: ``OUT/best.yaml``: the base config with the best hyperparameters.
    """

    best: AgentTrial
    trials: list[AgentTrial]
    ran: int
    config_path: Path

    @property
    def n_pruned(self) -> int:
        """Trials stopped by the pruner."""
        return sum(t.state == "pruned" for t in self.trials)


class TrialPruningCallback(BaseCallback):
    """Report each held-out evaluation to an Optuna trial; stop training when it is pruned.

    Runs as ``EvalCallback``'s ``callback_after_eval`` (its ``parent``), as rl-zoo3's
    ``TrialEvalCallback`` does.
    """

    def __init__(self, trial: Any) -> None:
        super().__init__(verbose=0)
        self.trial = trial
        self.pruned = False
        self.reported: dict[int, float] = {}

    def _on_step(self) -> bool:
        parent = self.parent
        assert isinstance(parent, EvalCallback), "TrialPruningCallback runs after an evaluation"
        value = float(parent.last_mean_reward)
        step = int(self.num_timesteps)
        self.reported[step] = value
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.pruned = True
            return False
        return True


def rollout_envs(config: AgentConfig) -> int:
    """Sub-envs stepped together: ``n_envs`` per env group."""
    return config.n_envs * max(len(config.env_groups), 1)


def _settings(config: AgentConfig, search: AgentSearch) -> dict[str, Any]:
    """Everything a study's trials depend on (the trial budget is not: a study may grow)."""
    settings = {
        "format": STUDY_FORMAT,
        "config": to_dict(config),
        "search": {
            "timesteps": search.timesteps,
            "eval_every": search.eval_every,
            "search_seed": search.search_seed,
            "startup_trials": search.startup_trials,
            "pruner": search.pruner,
            "prune_startup_trials": search.prune_startup_trials,
        },
    }
    out: dict[str, Any] = json.loads(json.dumps(settings, sort_keys=True, default=str))
    return out


def trial_folder(out: Path, number: int) -> Path:
    """The run folder of trial ``number``."""
    return out / f"trial-{number:03d}"


def _clear_unrecorded(folder: Path) -> None:
    """Remove the folder of a trial that was killed before the study recorded it."""
    if not folder.exists():
        return
    if not (folder / "config.yaml").is_file():
        raise FileExistsError(
            f"{str(folder)!r} exists and is not an agent run folder; igb tune-agent would "
            "train a trial there: move it away or choose another --out"
        )
    shutil.rmtree(folder)


def _claim_folder(out: Path, settings: Mapping[str, Any], study: Path | None) -> None:
    """Check that ``out`` is new or this search's own, and record the search in it.

    A search's trial folders are cleared when their trial runs again, so a folder of another
    search (or of an in-memory study, which cannot be continued) is refused, never reused.
    """
    manifest = out / SEARCH_FILE
    study_path = None if study is None else str(study.resolve())
    if manifest.is_file():
        recorded = read_json(manifest, "tune-agent search record")
        if study_path is None or recorded.get("study") != study_path:
            raise FileExistsError(
                f"{str(out)!r} holds the trials of another igb tune-agent search (study "
                f"{recorded.get('study')}); continue it with that --study, or give a new --out"
            )
        diff = studies.differences(recorded.get("settings"), dict(settings))
        if diff:
            raise ValueError(
                f"{str(out)!r} holds a search with other settings: {'; '.join(diff)}; give a "
                "new --out"
            )
        return
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(
            f"{str(out)!r} is not empty and holds no igb tune-agent search; give a new --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(manifest, "w") as fh:
        json.dump({"study": study_path, "settings": dict(settings)}, fh, indent=2)


def _record(optuna: Any, trial: Any) -> AgentTrial:
    pruned = trial.state == optuna.trial.TrialState.PRUNED
    reported = {int(k): float(v) for k, v in sorted(trial.intermediate_values.items())}
    last = max(reported) if reported else 0
    score = reported[last] if pruned and reported else float(trial.value)
    hyperparameters = dict(trial.user_attrs.get("hyperparameters", {}))
    timesteps = last if pruned else int(trial.user_attrs.get("timesteps", last))
    state = "pruned" if pruned else "complete"
    return AgentTrial(
        trial.number, dict(trial.params), hyperparameters, state, score, timesteps, reported
    )


def _write_outputs(out: Path, config: AgentConfig, trials: list[AgentTrial]) -> AgentTrial:
    complete = [t for t in trials if t.state == "complete" and math.isfinite(t.score)]
    if not complete:
        raise RuntimeError(
            "no trial of the study completed with a finite score; see the trial folders"
        )
    best = max(complete, key=lambda t: (t.score, -t.number))
    best_config = replace(
        config, hyperparameters={**config.hyperparameters, **best.hyperparameters}
    )
    with atomic_open(out / "best.yaml", "w") as fh:
        fh.write(
            f"# igb tune-agent: trial {best.number} of {len(trials)}, best mean held-out return "
            f"{best.score:.4f} in a {best.timesteps}-step trial; total_timesteps is the base "
            "config's\n"
        )
        yaml.safe_dump(to_dict(best_config), fh, sort_keys=False)
    names = sorted({k for t in trials for k in t.hyperparameters})
    with atomic_open(out / "trials.csv", "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial", "state", "score", "timesteps", *names])
        for t in trials:
            row = [t.number, t.state, f"{t.score:.6g}", t.timesteps]
            writer.writerow(row + [t.hyperparameters.get(k, "") for k in names])
    return best


def tune_agent(
    config: AgentConfig,
    out_dir: str | Path,
    search: AgentSearch | None = None,
    study: str | Path | None = None,
    progress_bar: bool = False,
    log: Callable[[str], None] = print,
) -> AgentSearchResult:
    """Search ``config``'s hyperparameters with TPE and median pruning on held-out returns.

    Args:
        config: The base agent config; its env needs a ``test_set`` (the held-out instances
            that score a trial) and the algorithm a search space (``SEARCH_SPACES``).
        out_dir: Folder of the trial run folders, ``best.yaml`` and ``trials.csv`` (a rerun
            with the same study continues in it).
        search: Trial budget, timesteps, sampler and pruner (default ``AgentSearch()``).
        study: SQLite file of a resumable study (``None``: in memory). Its folder must exist.
        progress_bar: Show progress over the trials (and each trial's own progress).
        log: Where the one line per finished trial goes.

    Returns:
        The best trial, every trial and where the best config was written.

    Raises:
        ConfigError: No held-out ``test_set``, or no search space for the algorithm.
        ImportError: optuna is not installed (the ``tune`` extra).
        ValueError: A study file that is not SQLite, holds other studies, or was made with
            another config or other search settings.
        BlockingIOError: Another process is running a search on the study file.
    """
    search = search or AgentSearch()
    if config.algorithm not in SEARCH_SPACES:
        raise ConfigError(
            f"igb tune-agent has no search space for algorithm {config.algorithm!r}; valid "
            f"choices: {', '.join(SEARCH_SPACES)}"
        )
    trial_config = replace(
        config,
        total_timesteps=search.timesteps or config.total_timesteps,
        eval_every=search.eval_every or config.eval_every,
        checkpoint_every=None,  # a trial that is killed runs again from the start
    )
    # Checked without building the env: each trial's training builds its own.
    if held_out_episodes(trial_config) is None:
        raise ConfigError(
            "igb tune-agent scores each trial on the env's held-out instances: give the env a "
            "test_set (e.g. env: {test_set: [5000, 5001]}) and eval_every (config or --eval-every)"
        )
    optuna = studies.import_optuna("igb tune-agent")
    path = None if study is None else studies.check_study_path(study, COMMAND)
    out = check_writable_dir(out_dir, "the tune-agent folder")
    settings = _settings(config, search)
    _claim_folder(out, settings, path)
    pruner = studies.make_pruner(optuna, search.pruner, search.prune_startup_trials)
    sample = SEARCH_SPACES[config.algorithm]
    ran = 0
    with studies.study_file(optuna, path, settings, STUDY_NAME, COMMAND, "maximize") as record:
        work = optuna.create_study(direction="maximize", pruner=pruner)
        work.add_trials(studies.finished_trials(optuna, record) if record is not None else [])
        done = len(work.trials)
        remaining = max(0, search.trials - done)
        bar = Progress(remaining, "tune-agent", "trial", disable=not progress_bar)
        try:
            for _ in range(remaining):
                work.sampler = studies.seeded_tpe_sampler(
                    optuna, search.search_seed, done + ran, search.startup_trials, False
                )
                trial = work.ask()
                hyperparameters = sample(trial, rollout_envs(config), trial_config.total_timesteps)
                trial.set_user_attr("hyperparameters", hyperparameters)
                folder = trial_folder(out, trial.number)
                _clear_unrecorded(folder)
                pruning = TrialPruningCallback(trial)
                run_config = replace(
                    trial_config,
                    hyperparameters={**config.hyperparameters, **hyperparameters},
                )
                train_agent(run_config, folder, progress_bar=False, after_eval=pruning)
                summary = read_json(folder / "training.json", "training summary")
                trial.set_user_attr("timesteps", int(summary["timesteps"]))
                if pruning.pruned:
                    frozen = work.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    best = summary.get("best_mean_reward")
                    frozen = work.tell(trial, -math.inf if best is None else float(best))
                if record is not None:
                    record.add_trial(frozen)  # the file has every finished trial, in order
                ran += 1
                bar.update(1)
                line = _trial_line(_record(optuna, frozen))
                if progress_bar:
                    bar.write(line)
                else:
                    log(line)
        finally:
            bar.close()
        finished = studies.finished_trials(optuna, work)
        trials = [_record(optuna, t) for t in finished]
    best = _write_outputs(out, config, trials)
    return AgentSearchResult(best, trials, ran, out / "best.yaml")


def _trial_line(trial: AgentTrial) -> str:
    end = "" if trial.state == "complete" else f" (pruned at {trial.timesteps} steps)"
    shown = ", ".join(f"{k}={_short(v)}" for k, v in trial.hyperparameters.items())
    return f"trial {trial.number}: held-out return {trial.score:.4f}{end}  {shown}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


__all__ = [
    "COMMAND",
    "SEARCH_SPACES",
    "STUDY_NAME",
    "AgentSearch",
    "AgentSearchResult",
    "AgentTrial",
    "TrialPruningCallback",
    "rollout_envs",
    "trial_folder",
    "tune_agent",
]
