"""``igb tune-agent``: rl-zoo3-style hyperparameter search (TPE, pruning, resumable study)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml

from agents.config import AgentConfig, load_agent_config
from agents.experiments.tune_agent import (
    SEARCH_SPACES,
    AgentSearch,
    AgentSearchResult,
    TrialPruningCallback,
    tune_agent,
)
from agents.train import train_agent
from mtl_backends.registry import ConfigError
from tests.agents._configs import TINY_ENV, tiny_agent

# 2 sub-envs, a held-out pair of instances evaluated every 40 env steps, 80-step trials.
BASE = tiny_agent(
    env={**TINY_ENV, "test_set": [5000, 5001]},
    eval_every=40,
    total_timesteps=80,
    checkpoint_every=None,
)
SEARCH = AgentSearch(trials=3, startup_trials=2, prune_startup_trials=1)


def _quiet(line: str) -> None:
    del line


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> tuple[AgentSearchResult, Path]:
    out = tmp_path_factory.mktemp("search")
    result = tune_agent(BASE, out / "out", SEARCH, study=out / "s.db", log=_quiet)
    return result, out


def test_the_best_config_is_the_best_trial_s_and_trains(
    search: tuple[AgentSearchResult, Path],
) -> None:
    result, out = search
    assert len(result.trials) == 3 and result.ran == 3
    complete = [t for t in result.trials if t.state == "complete"]
    assert result.best.score == max(t.score for t in complete)
    # best.yaml is a whole agent config: the base one with the best trial's hyperparameters.
    best = load_agent_config(result.config_path)
    assert dict(best.hyperparameters) == {**BASE.hyperparameters, **result.best.hyperparameters}
    assert dataclasses.replace(best, hyperparameters=BASE.hyperparameters) == dataclasses.replace(
        BASE, env=best.env
    )
    # A trial's score is its run's best evaluation (SB3's evaluations.npz, mean over episodes).
    for trial in complete:
        folder = out / "out" / f"trial-{trial.number:03d}"
        evaluations = np.load(folder / "eval" / "evaluations.npz")["results"]
        assert trial.score == pytest.approx(float(evaluations.mean(axis=1).max()), abs=1e-6)
        assert trial.reported == {
            int(k): pytest.approx(float(v), abs=1e-6)
            for k, v in zip(
                np.load(folder / "eval" / "evaluations.npz")["timesteps"],
                evaluations.mean(axis=1),
                strict=True,
            )
        }
        # The drawn rollout fits the trial: PPO's minibatches divide it.
        hyper = trial.hyperparameters
        assert hyper["n_steps"] * BASE.n_envs <= BASE.total_timesteps
        assert (hyper["n_steps"] * BASE.n_envs) % hyper["batch_size"] == 0
        assert 1e-5 <= hyper["learning_rate"] <= 1e-2
    rows = list(csv.DictReader((out / "out" / "trials.csv").open()))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2]
    assert {r["state"] for r in rows} <= {"complete", "pruned"}


def test_a_resumed_study_draws_and_scores_what_an_uninterrupted_one_did(
    search: tuple[AgentSearchResult, Path], tmp_path: Path
) -> None:
    result, _ = search
    study = tmp_path / "s.db"
    first = tune_agent(BASE, tmp_path / "out", dataclasses.replace(SEARCH, trials=2), study=study)
    assert first.ran == 2
    resumed = tune_agent(BASE, tmp_path / "out", SEARCH, study=study, log=_quiet)
    assert resumed.ran == 1 and len(resumed.trials) == 3
    for a, b in zip(resumed.trials, result.trials, strict=True):
        assert (a.params, a.state, a.score, a.reported) == (b.params, b.state, b.score, b.reported)
    # The budget is reached: running again trains nothing.
    assert tune_agent(BASE, tmp_path / "out", SEARCH, study=study, log=_quiet).ran == 0


class _PruneAtOnce:
    """A stand-in Optuna trial that prunes at the first report."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, int]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return True


def test_a_pruned_trial_stops_training_at_that_evaluation(tmp_path: Path) -> None:
    trial = _PruneAtOnce()
    pruning = TrialPruningCallback(trial)
    config = dataclasses.replace(BASE, total_timesteps=400)
    train_agent(config, tmp_path / "run", progress_bar=False, after_eval=pruning)
    summary = json.loads((tmp_path / "run" / "training.json").read_text())
    assert pruning.pruned and len(trial.reports) == 1
    # The first evaluation comes after 40 env steps (20 per sub-env); training stopped there.
    assert trial.reports[0][1] == 40 and summary["timesteps"] < 400


def test_without_a_held_out_set_the_search_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="test_set"):
        tune_agent(tiny_agent(), tmp_path / "out", SEARCH)
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_search_is_never_reused(tmp_path: Path) -> None:
    one = AgentSearch(trials=1)
    tune_agent(BASE, tmp_path / "out", one, study=tmp_path / "a.db", log=_quiet)
    # Another study, or an in-memory one, would clear its trial folders: refused.
    with pytest.raises(FileExistsError, match="another igb tune-agent search"):
        tune_agent(BASE, tmp_path / "out", one, study=tmp_path / "b.db")
    with pytest.raises(FileExistsError, match="another igb tune-agent search"):
        tune_agent(BASE, tmp_path / "out", one)
    # Other settings on the same study: the study file refuses them, naming the difference.
    with pytest.raises(ValueError, match=r"search\.pruner: study 'median', now 'none'"):
        tune_agent(
            BASE, tmp_path / "out", dataclasses.replace(one, pruner="none"), study=tmp_path / "a.db"
        )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        tune_agent(BASE, tmp_path / "other", one)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("trials", 0, "trials"),
        ("timesteps", 0, "timesteps"),
        ("eval_every", 0, "eval_every"),
        ("startup_trials", 0, "startup_trials"),
        ("pruner", "hyperband", "valid choices: median, none"),
        ("prune_startup_trials", 0, "prune_startup_trials"),
    ],
)
def test_bad_search_settings_are_named(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AgentSearch(**{field: value})


@pytest.mark.parametrize("algorithm", sorted(SEARCH_SPACES))
def test_every_search_space_draws_hyperparameters_the_algorithm_takes(algorithm: str) -> None:
    from agents.build import check_hyperparameters

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        drawn = SEARCH_SPACES[algorithm](trial, 4, 1000)
        config = AgentConfig(algorithm=algorithm, hyperparameters=drawn)
        check_hyperparameters(config)  # every name is one the SB3 class takes
        study.tell(trial, 0.0)


def test_igb_tune_agent_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agents.cli import main

    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(BASE)))))
    argv = ["tune-agent", str(path), "--out", str(tmp_path / "out"), "--trials", "1"]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1 trials (0 pruned), 1 run now" in printed and "best config:" in printed
    assert load_agent_config(tmp_path / "out" / "best.yaml").algorithm == "ppo"
    assert main([*argv[:-2], "--trials", "0", "--out", str(tmp_path / "o2")]) == 2
    assert "--trials (the trial budget) must be >= 1" in capsys.readouterr().err
