"""The TPE search of ``igb tune-static`` (Optuna): quality, pruning, resumable studies, errors."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml

from mtl_backends import studies, tuning
from mtl_backends.config import MethodSpec, TrainConfig, from_dict
from mtl_backends.registry import ConfigError
from mtl_backends.results import DivergenceError
from mtl_backends.trainer import MTLTrainer
from mtl_backends.tuning import (
    STUDY_NAME,
    TPEConfig,
    TPEResult,
    logit_weights,
    tune_static_tpe,
    tune_static_weights,
)
from mtl_backends.weightings.tuned_static import TunedStatic
from tests._tiny import TINY_SYNTHETIC, write_tune_config

# Equal weights are bad here by construction: task 2 is a classification whose labels are pure
# noise (noise 1000x its scale), so neither STL nor MTL gets above chance on it, yet its
# cross-entropy gradient stays large and, the tasks being unrelated, takes the tiny trunk away
# from task 1. The grid measured (seed 101, 40 steps): equal weights +11.1 % val Δm, weights
# (1.96, 0.04) -10.3 %; every weight vector that favours task 2 is worse than +11 %.
NOISE_TASK = MethodSpec(
    "synthetic",
    {
        "n_tasks": 2,
        "kinds": ["regression", "classification"],
        "noise": [0.0, 1000.0],
        "relatedness": 0.0,
        **TINY_SYNTHETIC,
    },
)
NOISE_TRAIN = TrainConfig(steps=40, batch_size=20, base_window=(4, 8), lr=0.01)
NOISE_SEARCH = TPEConfig(
    trials=10,
    logit_range=2.0,  # the best weights there are 1.96 : 0.04, a ratio beyond the default's 7.4
    startup_trials=4,
    include_equal=False,  # the search must find better weights, not return the baseline
    eval_every=10,
    prune_startup_trials=2,
)

BENCH = MethodSpec("synthetic", {"n_tasks": 3, **TINY_SYNTHETIC})
TRAIN = TrainConfig(steps=20, batch_size=20, base_window=(4, 8))
SEARCH = TPEConfig(trials=4, startup_trials=2, eval_every=5, prune_startup_trials=1)


@pytest.fixture(scope="module")
def noise_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[TPEResult, float]:
    """The TPE search on the noise-task setting and equal weights' score there."""
    stl = tmp_path_factory.mktemp("stl")
    result = tune_static_tpe(NOISE_TASK, NOISE_TRAIN, [101], NOISE_SEARCH, stl_cache=stl)
    equal = tune_static_weights(
        NOISE_TASK, NOISE_TRAIN, [101], candidates=[[1.0, 1.0]], stl_cache=stl
    )
    return result, equal.score


def _fingerprint(result: TPEResult) -> list[tuple[object, ...]]:
    return [(t.number, t.logits, t.state, t.score, t.step, t.reported) for t in result.trials]


def test_logit_weights_are_t_softmax() -> None:
    assert logit_weights([0.0, math.log(3.0)]) == pytest.approx([0.5, 1.5], abs=1e-15)
    assert logit_weights([0.0] * 11) == [1.0] * 11  # equal weights exactly
    w = logit_weights([2.0, -2.0, 0.0])
    assert sum(w) == pytest.approx(3.0) and w[0] / w[1] == pytest.approx(math.exp(4.0))


def test_eval_steps() -> None:
    assert TPEConfig().eval_steps(100) == [20, 40, 60, 80]
    assert TPEConfig(eval_every=30).eval_steps(100) == [30, 60, 90]
    assert TPEConfig(eval_every=100).eval_steps(100) == []  # only the final score: no pruning


def test_tpe_beats_equal_weights_where_they_are_bad(
    noise_search: tuple[TPEResult, float],
) -> None:
    result, equal = noise_search
    assert equal == pytest.approx(11.11, abs=0.01)  # the grid's measurement (module comment)
    assert result.equal_score is None and len(result.trials) == NOISE_SEARCH.trials
    # Far better than equal weights, by moving weight to the learnable task.
    assert result.score < equal - 10.0
    assert result.weights[0] > 1.5 > 0.5 > result.weights[1]
    assert sum(result.weights) == pytest.approx(2.0)
    best = min((t for t in result.trials if t.state == "complete"), key=lambda t: t.score)
    assert (best.weights, best.score) == (result.weights, result.score)


def test_the_median_pruner_stops_bad_trials(noise_search: tuple[TPEResult, float]) -> None:
    result, _ = noise_search
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert result.n_pruned == len(pruned) >= 3
    for trial in result.trials:
        # MedianPruner: once enough trials completed, a trial stops at the first evaluation
        # where its best value so far is worse than the completed trials' median there.
        before = [t for t in result.trials if t.state == "complete" and t.number < trial.number]
        stops = []
        for step, _value in sorted(trial.reported.items()):
            if len(before) < NOISE_SEARCH.prune_startup_trials:
                continue
            best = min(v for s, v in trial.reported.items() if s <= step)
            stops.append(best > np.median([t.reported[step] for t in before]))
        if trial.state == "pruned":
            assert stops and stops[-1] and not any(stops[:-1])
            assert trial.step < NOISE_TRAIN.steps and trial.score == trial.reported[trial.step]
        else:
            assert not any(stops)
            assert trial.step == NOISE_TRAIN.steps
            assert sorted(trial.reported) == NOISE_SEARCH.eval_steps(NOISE_TRAIN.steps)


def test_a_study_resumes_to_its_budget_as_if_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stl = tmp_path / "stl"
    whole = tune_static_tpe(BENCH, TRAIN, [100], SEARCH, stl_cache=stl)  # in memory
    assert whole.ran == 4 and len(whole.trials) == 4
    assert whole.trials[0].logits == [0.0, 0.0, 0.0] and whole.equal_score is not None
    # The equal-weights trial scores as the grid scores equal weights, bit for bit (intermediate
    # evaluations change no run).
    grid = tune_static_weights(BENCH, TRAIN, [100], candidates=[[1.0] * 3], stl_cache=stl)
    assert whole.equal_score == grid.score

    study = tmp_path / "b.db"

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    # Killed in its first trial (equal weights, queued when the study was made).
    with monkeypatch.context() as patch:
        patch.setattr(tuning, "_candidate_delta_m", killed)
        with pytest.raises(KeyboardInterrupt):
            tune_static_tpe(BENCH, TRAIN, [100], SEARCH, stl_cache=stl, study=study)
    two = dataclasses.replace(SEARCH, trials=2)
    half = tune_static_tpe(BENCH, TRAIN, [100], two, stl_cache=stl, study=study)
    assert half.ran == 2 and _fingerprint(half) == _fingerprint(whole)[:2]
    resumed = tune_static_tpe(BENCH, TRAIN, [100], SEARCH, stl_cache=stl, study=study)
    assert resumed.ran == 2
    # The same trials as the uninterrupted study: the killed one ran again, none twice.
    assert _fingerprint(resumed) == _fingerprint(whole)
    assert len({tuple(t.logits) for t in resumed.trials}) == 4
    assert (resumed.weights, resumed.score) == (whole.weights, whole.score)
    # The file holds the finished trials only: the killed one left nothing behind.
    stored = optuna.load_study(study_name=STUDY_NAME, storage=_url(study)).trials
    assert [t.number for t in stored] == [0, 1, 2, 3]
    again = tune_static_tpe(BENCH, TRAIN, [100], SEARCH, stl_cache=stl, study=study)
    assert again.ran == 0 and _fingerprint(again) == _fingerprint(whole)


def test_the_search_seed_changes_the_trials(tmp_path: Path) -> None:
    a, b = (
        tune_static_tpe(
            BENCH,
            TRAIN,
            [100],
            dataclasses.replace(SEARCH, trials=2, pruner="none", search_seed=seed),
            stl_cache=tmp_path / "stl",
        )
        for seed in (0, 1)
    )
    assert a.trials[0].logits == b.trials[0].logits == [0.0, 0.0, 0.0]
    assert a.trials[1].logits != b.trials[1].logits
    assert all(-1.0 <= v <= 1.0 for t in a.trials + b.trials for v in t.logits)  # logit_range


def test_a_diverging_candidate_scores_inf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fit = MTLTrainer.fit

    def fit(self: MTLTrainer, *args: Any, **kwargs: Any) -> Any:
        weighting = self.weighting
        if isinstance(weighting, TunedStatic) and not bool((weighting.weights == 1).all()):
            raise DivergenceError("exploding loss (every weighting but equal weights)")
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(MTLTrainer, "fit", fit)
    stl = tmp_path / "stl"
    # The search goes on: a diverging candidate is the worst one, not the end of the search.
    grid = tune_static_weights(BENCH, TRAIN, [100], [[1.0] * 3, [1.0, 2.0, 3.0]], stl_cache=stl)
    assert math.isfinite(grid.scores[0]) and grid.scores[1] == math.inf
    assert grid.weights == [1.0] * 3
    tpe = tune_static_tpe(BENCH, TRAIN, [100], dataclasses.replace(SEARCH, trials=3), stl_cache=stl)
    assert [t.score for t in tpe.trials] == [grid.scores[0], math.inf, math.inf]
    assert [t.state for t in tpe.trials] == ["complete"] * 3  # a known (worst) score
    assert tpe.weights == [1.0] * 3


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def one_trial_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    config = dataclasses.replace(SEARCH, trials=1)
    tune_static_tpe(BENCH, TRAIN, [100], config, stl_cache=folder / "stl", study=folder / "s.db")
    return folder / "s.db"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seeds": [101]}, r"seeds: study \[100\], now \[101\]"),
        ({"train": TrainConfig(steps=30, batch_size=20, base_window=(4, 8))}, r"train\.steps"),
        (
            {"search": dataclasses.replace(SEARCH, trials=1, search_seed=3)},
            r"search\.search_seed: study 0, now 3",
        ),
        ({"balancer": MethodSpec("pcgrad")}, r"balancer\.name: study 'sum', now 'pcgrad'"),
    ],
)
def test_a_study_of_other_settings_is_refused(
    one_trial_study: Path, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    copy = tmp_path / "s.db"
    copy.write_bytes(one_trial_study.read_bytes())
    kwargs: dict[str, object] = {
        "seeds": [100],
        "train": TRAIN,
        "search": dataclasses.replace(SEARCH, trials=1),
        **change,
    }
    with pytest.raises(ValueError, match=f"was made with other settings.*{message}"):
        tune_static_tpe(BENCH, stl_cache=tmp_path / "stl", study=copy, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "stl").exists()  # refused before anything trained


def test_bad_study_files_are_refused(tmp_path: Path) -> None:
    def tune(study: Path) -> None:
        tune_static_tpe(BENCH, TRAIN, [100], SEARCH, stl_cache=tmp_path / "stl", study=study)

    missing = r"folder of study file '.*nope/s\.db' does not exist"
    with pytest.raises(FileNotFoundError, match=missing):
        tune(tmp_path / "nope" / "s.db")
    with pytest.raises(IsADirectoryError, match="is a folder; give a file path"):
        tune(tmp_path)
    text = tmp_path / "notes.db"
    text.write_text("not a database")
    with pytest.raises(ValueError, match="is not an SQLite database"):
        tune(text)
    foreign = tmp_path / "foreign.db"
    optuna.create_study(study_name="someone-else", storage=_url(foreign))
    with pytest.raises(ValueError, match=r"holds other Optuna studies \(someone-else\)"):
        tune(foreign)
    assert not (tmp_path / "nope").exists() and not (tmp_path / "stl").exists()


def test_a_study_in_use_is_refused(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    study = tmp_path / "s.db"
    with study.open("ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError, match="in use by another igb tune-static process"):
            tune_static_tpe(BENCH, TRAIN, [100], SEARCH, stl_cache=tmp_path / "stl", study=study)
    with sqlite3.connect(study) as db:  # left as it was: an empty file
        assert db.execute("select name from sqlite_master").fetchall() == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"trials": 0}, r"trials \(the trial budget\) must be >= 1, got 0"),
        ({"pruner": "mean"}, r"unknown pruner 'mean'; valid choices: median, none"),
        ({"logit_range": float("nan")}, r"logit_range must be a finite number > 0"),
        ({"eval_every": 0}, r"eval_every must be >= 1 step"),
        ({"startup_trials": 0}, r"startup_trials must be >= 1"),
        ({"search_seed": -1}, r"search_seed must be >= 0"),
        ({"trails": 5}, r"unknown key\(s\) 'trails'; valid keys: trials, search_seed"),
    ],
)
def test_bad_search_settings_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(TPEConfig, data, "search")


def test_bad_seeds_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one training seed"):
        tune_static_tpe(BENCH, TRAIN, [], SEARCH, stl_cache=None)
    with pytest.raises(ValueError, match=r"training seeds \[1, 1\] repeat a seed"):
        tune_static_tpe(BENCH, TRAIN, [1, 1], SEARCH, stl_cache=None)


def test_without_optuna_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(ImportError, match=r'pip install "igb-rl\[tune\]".*--search grid'):
        tune_static_tpe(BENCH, TRAIN, [100], SEARCH, stl_cache=None)


def _imports_run_at_import(tree: ast.AST) -> Iterator[str]:
    """Modules imported when a module is imported (function bodies excluded, classes included)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or ""
        yield from _imports_run_at_import(node)


def test_optuna_is_imported_lazily() -> None:
    # `import mtl_backends` (and any module of it) must not load optuna: only inside a function.
    root = Path(tuning.__file__).parent
    found = {
        str(path.relative_to(root)): name
        for path in root.rglob("*.py")
        for name in _imports_run_at_import(ast.parse(path.read_text()))
        if name.split(".")[0] == "optuna"
    }
    assert found == {}
    # ... and the searches do import it (in studies.import_optuna, which they call).
    source = ast.parse(Path(studies.__file__).read_text())
    (function,) = [n for n in source.body if getattr(n, "name", None) == "import_optuna"]
    inside = [a.name for n in ast.walk(function) if isinstance(n, ast.Import) for a in n.names]
    assert inside == ["optuna"]


# -- the command line --------------------------------------------------------------------------


def test_igb_tune_static_tpe_writes_a_snippet_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agents.cli import main

    config, out, study = write_tune_config(tmp_path), tmp_path / "w.yaml", tmp_path / "s.db"
    argv = ["tune-static", str(config), "--seeds", "5", "--study", str(study), "--out", str(out)]
    assert main([*argv, "--trials", "3", "--eval-every", "5"]) == 0
    printed = capsys.readouterr().out
    assert "search=tpe" in printed and "3 trials" in printed and "3 run now" in printed
    assert "equal weights: val Δm" in printed
    text = out.read_text()
    assert "(TPE: 3 trials, " in text.splitlines()[0]
    weights = yaml.safe_load(text)["weighting"]["weights"]
    assert len(weights) == 3 and sum(weights) == pytest.approx(3.0, abs=1e-5)
    assert main([*argv, "--trials", "4", "--eval-every", "5"]) == 0
    assert "4 trials" in capsys.readouterr().out.split("search=tpe")[1]
    # Another evaluation schedule is another study.
    assert main([*argv, "--trials", "4"]) == 2
    assert "search.eval_steps: study [5, 10, 15], now [4, 8, 12, 16]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trials", "0"], r"error: --trials \(the trial budget\) must be >= 1, got 0"),
        (["--candidates", "3", "--trials", "5"], r"--candidates \(grid search\) and --trials"),
        (["--search", "grid", "--study", "x.db"], r"--study: only for --search tpe"),
        (["--search", "tpe", "--logits", "0", "1"], r"--logits: only for --search grid"),
        (["--study", "nope/s.db"], r"folder of study file 'nope/s\.db' does not exist"),
        (["--logit-range", "-1"], r"--logit-range must be a finite number > 0"),
    ],
)
def test_igb_tune_static_refuses_bad_options(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    message: str,
) -> None:
    from agents.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["tune-static", str(write_tune_config(tmp_path)), "--seeds", "5", *extra]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "stl").exists() and not (tmp_path / "tuned_static.yaml").exists()


def test_the_search_follows_the_options_given() -> None:
    from agents.cli.tune_static import GRID_OPTIONS, TPE_OPTIONS, resolve_search

    def namespace(search: str | None = None, **given: object) -> argparse.Namespace:
        values = dict.fromkeys([*GRID_OPTIONS, *TPE_OPTIONS])
        return argparse.Namespace(search=search, **{**values, **given})

    assert resolve_search(namespace()) == "tpe"
    assert resolve_search(namespace(candidates=6)) == "grid"  # the committed grid commands
    assert resolve_search(namespace(logits=[0.0, 1.0])) == "grid"
    assert resolve_search(namespace(trials=5)) == "tpe"
    assert resolve_search(namespace("grid")) == "grid"
