"""Searching constant task weights on training instances (``igb tune-static``).

Two searches share one way of scoring a candidate weight vector (``_candidate_delta_m``: one
``TunedStatic`` run per training seed, validation Δm against that seed's STL reference, a run that
diverges scores ``inf``):

* ``tune_static_weights``: a (sampled) grid of ``T · softmax(logits)`` candidates, each trained to
  the full budget. Exhaustive and dependency-free, but the grid grows as ``len(logits)^T``.
* ``tune_static_tpe``: Optuna's TPE sampler over per-task logits, with a trial budget, pruning on
  intermediate validation Δm and an optional resumable study in a local SQLite file (the ``tune``
  extra). Optuna is imported inside the function: importing this module never loads it.

The result is the ``tuned_static`` control of the comparisons.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl_backends import studies
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.build import build_trainer
from mtl_backends.config import MethodSpec, TrainConfig, check_seed, key_dict
from mtl_backends.progress import Progress
from mtl_backends.registry import ConfigError
from mtl_backends.results import DivergenceError
from mtl_backends.stl import stl_reference
from mtl_backends.trainer import MTLTrainer, Reference
from mtl_backends.weightings.tuned_static import TunedStatic

DEFAULT_LOGITS: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
"""Per-task logit grid of the default candidates ``T · softmax(logits)``."""

PRUNERS = studies.PRUNERS
"""Pruners of ``TPEConfig.pruner``: Optuna's ``MedianPruner``, or no pruning."""

STUDY_NAME = "igb-tune-static"
"""The name of the one study in a ``--study`` file."""

STUDY_FORMAT = 1
"""Part of a study's recorded settings: bumping it makes older study files refused."""

COMMAND = "igb tune-static"
"""The command named in the study file's messages."""


def static_candidates(
    n_tasks: int,
    logits: Sequence[float] = DEFAULT_LOGITS,
    max_candidates: int | None = None,
    seed: int = 0,
) -> list[list[float]]:
    """Distinct constant weight vectors ``T · softmax(l)`` for ``l`` in ``logits^T``.

    Equal weights come first. Vectors that differ only by a common logit shift are the same
    weights and appear once. When there are more than ``max_candidates``, equal weights plus a
    seeded uniform sample of the others are kept (in grid order).

    Args:
        n_tasks: Number of tasks ``T``.
        logits: Per-task logit grid.
        max_candidates: Keep at most this many (``None``: all).
        seed: Seed of the subsample.

    Returns:
        Candidate weight vectors, each positive and summing to ``T``.
    """
    if n_tasks < 1 or not logits:
        raise ValueError("need n_tasks >= 1 and a non-empty logit grid")
    seen: set[tuple[float, ...]] = set()
    out: list[list[float]] = []
    equal = [1.0] * n_tasks
    seen.add(tuple(round(v, 9) for v in equal))
    out.append(equal)
    for combo in itertools.product([float(v) for v in logits], repeat=n_tasks):
        w = n_tasks * torch.softmax(torch.tensor(combo, dtype=torch.float64), dim=0)
        key = tuple(round(v, 9) for v in w.tolist())
        if key not in seen:
            seen.add(key)
            out.append(w.tolist())
    if max_candidates is not None and len(out) > max_candidates:
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        rng = np.random.default_rng(seed)
        keep = sorted(rng.choice(np.arange(1, len(out)), size=max_candidates - 1, replace=False))
        out = [out[0]] + [out[int(i)] for i in keep]
    return out


@dataclass(frozen=True)
class TuneResult:
    """Outcome of ``tune_static_weights``.

    Attributes:
        weights: The best candidate (sums to T).
        score: Its mean validation Δm (%) over the seeds (lower is better).
        candidates: Every candidate evaluated, in order.
        scores: Mean validation Δm of each candidate.
        per_seed: Validation Δm of each candidate on each seed.
        seeds: The training seeds.
    """

    weights: list[float]
    score: float
    candidates: list[list[float]]
    scores: list[float]
    per_seed: list[list[float]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


def _checked_seeds(seeds: Sequence[int], caller: str) -> list[int]:
    out = [int(s) for s in seeds]
    if not out:
        raise ValueError(f"{caller} needs at least one training seed")
    for s in out:
        check_seed(s, "training seed")
    if len(set(out)) != len(out):
        # A repeated seed is the same run twice: it would weigh that instance double.
        raise ValueError(f"{caller}: training seeds {out} repeat a seed; give distinct seeds")
    return out


def _references(
    benchmark: MethodSpec,
    train: TrainConfig,
    seeds: Sequence[int],
    stl_cache: str | Path | None,
    progress_bar: bool,
) -> dict[int, Reference]:
    return {
        s: stl_reference(benchmark, train, s, stl_cache, progress_bar=progress_bar) for s in seeds
    }


def _advance(trainer: MTLTrainer, step: int, split: str) -> float:
    """Train ``trainer`` up to ``step`` and return its ``split`` Δm (``inf``: diverged)."""
    try:
        trainer.fit(steps=step - trainer.step_count, record=False)
    except DivergenceError:
        # A diverged run is the worst candidate, not the end of the search.
        return math.inf
    dm = trainer.evaluate(split).delta_m
    assert dm is not None  # every seed has its STL reference
    return float(dm) if math.isfinite(dm) else math.inf


def _candidate_delta_m(
    benchmark: MethodSpec,
    weights: Sequence[float],
    balancer: MethodSpec,
    train: TrainConfig,
    references: dict[int, Reference],
    split: str,
    eval_steps: Sequence[int] = (),
    on_run: Callable[[], None] | None = None,
) -> Iterator[tuple[int, list[float]]]:
    """Score one candidate: yields ``(step, split Δm of every seed)`` at each evaluation step.

    Every seed trains ``TunedStatic(weights)`` with ``balancer`` for ``train.steps``. The last
    yield is at ``train.steps``; ``eval_steps`` (ascending, below ``train.steps``) add
    intermediate evaluations, for which the seeds advance together. Evaluating changes no run
    (``predict`` uses no randomness and restores the training mode), so the final values are
    those of uninterrupted runs. A seed that diverged stays at ``inf``. The caller may stop
    iterating at any point (pruning).
    """
    seeds = list(references)
    steps = [int(s) for s in eval_steps if 0 < s < train.steps] + [train.steps]

    def build(seed: int) -> MTLTrainer:
        return build_trainer(
            benchmark, TunedStatic(weights), balancer, train, seed=seed, reference=references[seed]
        )

    if len(steps) == 1:
        # One seed after the other keeps a single model in memory (the grid's case).
        row = []
        for seed in seeds:
            row.append(_advance(build(seed), train.steps, split))
            if on_run is not None:
                on_run()
        yield train.steps, row
        return
    trainers = [build(seed) for seed in seeds]
    row = [0.0] * len(seeds)
    for step in steps:
        for i, trainer in enumerate(trainers):
            if math.isfinite(row[i]):
                row[i] = _advance(trainer, step, split)
        yield step, list(row)


def tune_static_weights(
    benchmark: MethodSpec,
    train: TrainConfig,
    seeds: Sequence[int],
    candidates: Sequence[Sequence[float]] | None = None,
    logits: Sequence[float] = DEFAULT_LOGITS,
    max_candidates: int | None = 32,
    balancer: MethodSpec | None = None,
    stl_cache: str | Path | None = ".igb-cache/stl",
    search_seed: int = 0,
    split: str = "val",
    progress_bar: bool = False,
) -> TuneResult:
    """Search constant weights on a grid: best mean ``split`` Δm wins (ties: first).

    Every candidate runs the full budget of ``train`` on every seed with ``TunedStatic(candidate)``
    and ``balancer``, and is scored by its mean Δm on ``split`` against the STL reference of that
    seed (a run that diverges scores ``inf``). Use seeds (instances) that are disjoint from the
    ones you report on. For more than a few tasks the grid is too coarse or too large:
    ``tune_static_tpe`` searches the same weights with a trial budget.

    Args:
        benchmark: Benchmark name and arguments.
        train: Training settings of each run.
        seeds: Training seeds (instances).
        candidates: Weight vectors to try (default: ``static_candidates`` of ``logits``).
        logits: Logit grid of the default candidates.
        max_candidates: Cap on the default candidates (seeded subsample; equal weights kept).
        balancer: Gradient balancer (default ``sum``).
        stl_cache: Cache folder of the STL references (``None``: not cached).
        search_seed: Seed of the candidate subsample.
        split: Split whose Δm is minimised (``val``; never the split you report).
        progress_bar: Show progress over the runs (a bar on a terminal, plain lines in a log).

    Returns:
        The best weights, its score and every candidate's scores.

    Raises:
        ValueError: No seeds or no candidates, or a candidate of the wrong length.
    """
    seeds = _checked_seeds(seeds, "tune_static_weights")
    balancer = balancer or MethodSpec("sum")
    n_tasks = make_benchmark(benchmark.name, **dict(benchmark.kwargs)).n_tasks
    cands = (
        static_candidates(n_tasks, logits, max_candidates, search_seed)
        if candidates is None
        else [[float(v) for v in c] for c in candidates]
    )
    if not cands:
        raise ValueError("tune_static_weights needs at least one candidate")
    for c in cands:
        if len(c) != n_tasks:
            raise ValueError(f"candidate {c} has {len(c)} weights; the benchmark has {n_tasks}")
    references = _references(benchmark, train, seeds, stl_cache, progress_bar)
    per_seed: list[list[float]] = []
    bar = Progress(len(cands) * len(seeds), "tune-static", "run", disable=not progress_bar)
    try:
        for cand in cands:
            for _, row in _candidate_delta_m(
                benchmark, cand, balancer, train, references, split, on_run=bar.update
            ):
                final = row
            per_seed.append(final)
    finally:
        bar.close()
    scores = [float(np.mean(row)) for row in per_seed]
    best = int(np.argmin(scores))
    weights = TunedStatic(cands[best]).weights.tolist()
    return TuneResult(weights, scores[best], [list(c) for c in cands], scores, per_seed, seeds)


# -- TPE search (Optuna) ----------------------------------------------------------------------


@dataclass(frozen=True)
class TPEConfig:
    """Settings of ``tune_static_tpe`` (build it from a mapping with ``config.from_dict``).

    Attributes:
        trials: Trial budget: the study holds this many finished (complete or pruned) trials
            when the search ends; a resumed study runs only the missing ones.
        search_seed: Seed of the sampler: the same settings give the same trials.
        logit_range: Each task's logit is searched in ``[-logit_range, logit_range]``, so two
            tasks' weights differ by at most ``exp(2 · logit_range)`` (7.4 at the default 1,
            the span of the grid's ``DEFAULT_LOGITS``; weights tuned on synthetic and
            multi_digits stayed within a ratio of 4.5).
        startup_trials: Trials drawn at random (uniform logits) before TPE models the results;
            the equal-weights trial counts as one.
        pruner: ``median`` (Optuna's ``MedianPruner``: stop a trial whose mean validation Δm at
            an evaluation point is worse than the median of the completed trials' at that point)
            or ``none``.
        prune_startup_trials: Completed trials before the pruner may stop any trial.
        eval_every: Training steps between the intermediate validation evaluations that the
            pruner sees (``None``: a fifth of ``train.steps``).
        include_equal: Run equal weights (all logits 0) as the first trial, so the study always
            holds the baseline the search must beat.
    """

    trials: int = 50
    search_seed: int = 0
    logit_range: float = 1.0
    startup_trials: int = 10
    pruner: str = "median"
    prune_startup_trials: int = 5
    eval_every: int | None = None
    include_equal: bool = True

    def __post_init__(self) -> None:
        studies.check_search_settings(
            self.trials,
            self.search_seed,
            self.startup_trials,
            self.pruner,
            self.prune_startup_trials,
        )
        if not (math.isfinite(self.logit_range) and self.logit_range > 0):
            raise ConfigError(f"logit_range must be a finite number > 0, got {self.logit_range}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1 step, got {self.eval_every}")

    def eval_steps(self, steps: int) -> list[int]:
        """The intermediate evaluation steps of a ``steps``-step run (below ``steps``)."""
        every = self.eval_every if self.eval_every is not None else max(1, steps // 5)
        return list(range(every, steps, every))


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial of ``tune_static_tpe``.

    Attributes:
        number: Optuna's trial number in the study.
        logits: The trial's per-task logits.
        weights: Its weights ``T · softmax(logits)`` (sum ``T``).
        state: ``complete`` or ``pruned``.
        score: Mean validation Δm (%) over the seeds: the final one (complete) or the last
            reported (pruned); ``inf`` when a run diverged (the trial is then complete: its
            score is known).
        step: Training steps of each seed's run: where it was pruned, else the budget.
        reported: Mean validation Δm at each intermediate evaluation step the trial reached
            (what the pruner saw).
    """

    number: int
    logits: list[float]
    weights: list[float]
    state: str
    score: float
    step: int
    reported: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TPEResult:
    """Outcome of ``tune_static_tpe``.

    Attributes:
        weights: The best complete trial's weights (sum ``T``; ties: the earliest trial).
        score: Its mean validation Δm (%) over the seeds (lower is better).
        equal_score: Mean validation Δm of equal weights (``None`` without that trial).
        trials: Every finished trial of the study, in order (earlier runs of a resumed study
            included).
        seeds: The training seeds.
        ran: Trials run by this call (0 when the study already held the budget).
    """

    weights: list[float]
    score: float
    equal_score: float | None
    trials: list[TrialRecord]
    seeds: list[int]
    ran: int

    @property
    def n_pruned(self) -> int:
        """Trials stopped by the pruner."""
        return sum(t.state == "pruned" for t in self.trials)


def import_optuna() -> Any:
    """The ``optuna`` module, or an ``ImportError`` naming the ``tune`` extra."""
    return studies.import_optuna(
        "the TPE search of tune-static", "or use the grid search: --search grid"
    )


def logit_weights(logits: Sequence[float]) -> list[float]:
    """``T · softmax(logits)`` in float64: the weights of a TPE trial."""
    t = torch.tensor([float(v) for v in logits], dtype=torch.float64)
    return (t.numel() * torch.softmax(t, dim=0)).tolist()


def _study_settings(
    benchmark: MethodSpec,
    train: TrainConfig,
    seeds: list[int],
    balancer: MethodSpec,
    split: str,
    search: TPEConfig,
) -> dict[str, Any]:
    """Everything a study's trials depend on (the trial budget is not: a study may grow)."""
    settings = {
        "format": STUDY_FORMAT,
        "benchmark": benchmark.to_dict(),
        "balancer": balancer.to_dict(),
        "train": key_dict(train),
        "seeds": seeds,
        "split": split,
        "search": {
            "search_seed": search.search_seed,
            "logit_range": search.logit_range,
            "startup_trials": search.startup_trials,
            "pruner": search.pruner,
            "prune_startup_trials": search.prune_startup_trials,
            "eval_steps": search.eval_steps(train.steps),
            "include_equal": search.include_equal,
        },
    }
    # The JSON round trip is what the study file holds (tuples become lists).
    out: dict[str, Any] = json.loads(json.dumps(settings, sort_keys=True, default=str))
    return out


def _record(optuna: Any, trial: Any, n_tasks: int, steps: int) -> TrialRecord:
    logits = [float(trial.params[f"logit_{t}"]) for t in range(n_tasks)]
    pruned = trial.state == optuna.trial.TrialState.PRUNED
    if pruned:
        step = max(trial.intermediate_values)
        score = float(trial.intermediate_values[step])
    else:
        step, score = steps, float(trial.value)
    state = "pruned" if pruned else "complete"
    reported = {int(k): float(v) for k, v in sorted(trial.intermediate_values.items())}
    return TrialRecord(trial.number, logits, logit_weights(logits), state, score, step, reported)


def tune_static_tpe(
    benchmark: MethodSpec,
    train: TrainConfig,
    seeds: Sequence[int],
    search: TPEConfig | None = None,
    balancer: MethodSpec | None = None,
    stl_cache: str | Path | None = ".igb-cache/stl",
    study: str | Path | None = None,
    split: str = "val",
    progress_bar: bool = False,
) -> TPEResult:
    """Search constant weights with Optuna's TPE sampler, pruning on intermediate validation Δm.

    Parametrisation: a trial draws one logit per task, ``l_t`` uniform in ``[-R, R]``
    (``R = search.logit_range``), and its weights are ``w = T · softmax(l)``: positive, summing
    to ``T``, symmetric in the tasks, with every weight ratio up to ``exp(2R)`` reachable (the
    common shift of the logits is redundant; TPE does not mind). Multivariate TPE models the
    logits jointly. The first trial is equal weights (``include_equal``).

    A trial is scored as in ``tune_static_weights`` (the same runs: ``TunedStatic`` on every
    training seed, mean ``split`` Δm against the seeds' STL references, ``inf`` when a run
    diverges), except that the seeds advance together and report their mean Δm at every
    ``search.eval_steps``, where the pruner may stop the trial. Its final score equals the grid's
    score of the same weights bit for bit.

    Study. With ``study`` the trials are stored in that SQLite file
    (``optuna.storages.RDBStorage``) together with the settings they depend on: running again
    continues the study up to ``search.trials`` finished trials (a trial killed midway was never
    stored and runs again),
    and a study made with other settings (benchmark, train, balancer, seeds, split, search
    settings other than the budget) is refused. Each trial's sampler is seeded by the search
    seed and the number of trials before it, so the same settings give the same trials, and a
    resumed search the same as an uninterrupted one. One process per study file (locked).

    Args:
        benchmark: Benchmark name and arguments.
        train: Training settings of each run.
        seeds: Training seeds (instances), disjoint from the ones you report on.
        search: Trial budget, sampler, pruner and evaluation settings (default ``TPEConfig()``).
        balancer: Gradient balancer (default ``sum``).
        stl_cache: Cache folder of the STL references (``None``: not cached).
        study: SQLite file of a resumable study (``None``: in memory, nothing kept). Its
            folder must exist.
        split: Split whose Δm is minimised (``val``; never the split you report).
        progress_bar: Show progress over the trials and one line per trial.

    Returns:
        The best complete trial's weights and score, equal weights' score and every trial.

    Raises:
        ImportError: optuna is not installed (the ``tune`` extra).
        ValueError: No seeds or repeated seeds; a study file that is not SQLite, holds other
            studies, or was made with other settings.
        FileNotFoundError: The study file's folder does not exist.
        IsADirectoryError: The study path is a folder.
        BlockingIOError: Another process is running a search on the study file.
    """
    search = search or TPEConfig()
    seeds = _checked_seeds(seeds, "tune_static_tpe")
    balancer = balancer or MethodSpec("sum")
    optuna = import_optuna()
    path = None if study is None else studies.check_study_path(study, COMMAND)
    n_tasks = make_benchmark(benchmark.name, **dict(benchmark.kwargs)).n_tasks
    settings = _study_settings(benchmark, train, seeds, balancer, split, search)
    eval_steps = search.eval_steps(train.steps)
    pruner = studies.make_pruner(optuna, search.pruner, search.prune_startup_trials)
    ran = 0
    with studies.study_file(optuna, path, settings, STUDY_NAME, COMMAND, "minimize") as record:
        # Trials run in a study in memory (a trial reads the history a few times per step of
        # Optuna's; an SQLite round trip each is seconds per trial) holding the file's trials.
        work = optuna.create_study(direction="minimize", pruner=pruner)
        work.add_trials(studies.finished_trials(optuna, record) if record is not None else [])
        done = len(work.trials)
        if search.include_equal and done == 0:
            work.enqueue_trial({f"logit_{t}": 0.0 for t in range(n_tasks)})
        remaining = max(0, search.trials - done)
        references = (
            _references(benchmark, train, seeds, stl_cache, progress_bar) if remaining else {}
        )
        bar = Progress(remaining, "tune-static", "trial", disable=not progress_bar)
        try:
            for _ in range(remaining):
                work.sampler = studies.seeded_tpe_sampler(
                    optuna, search.search_seed, done + ran, search.startup_trials, True
                )
                trial = work.ask()
                r = search.logit_range
                logits = [trial.suggest_float(f"logit_{t}", -r, r) for t in range(n_tasks)]
                weights = logit_weights(logits)
                state, value = optuna.trial.TrialState.COMPLETE, math.inf
                for step, row in _candidate_delta_m(
                    benchmark, weights, balancer, train, references, split, eval_steps
                ):
                    value = float(np.mean(row))
                    if step == train.steps or math.isinf(value):
                        break  # final, or diverged: the score is known
                    trial.report(value, step)
                    if trial.should_prune():
                        state = optuna.trial.TrialState.PRUNED
                        break
                if state == optuna.trial.TrialState.PRUNED:
                    frozen = work.tell(trial, state=state)
                else:
                    frozen = work.tell(trial, value)
                if record is not None:
                    record.add_trial(frozen)  # the file has every finished trial, in order
                ran += 1
                bar.update(1)
                if progress_bar:
                    bar.write(_trial_line(_record(optuna, frozen, n_tasks, train.steps)))
        finally:
            bar.close()
        records = [_record(optuna, t, n_tasks, train.steps) for t in work.trials]
    complete = [t for t in records if t.state == "complete"]
    # The pruner waits for prune_startup_trials (>= 1) complete trials, so the first is one.
    assert complete, "a study with finished trials has a complete one"
    best = min(complete, key=lambda t: (t.score, t.number))
    equal = [t for t in complete if not any(t.logits)]
    return TPEResult(
        best.weights,
        best.score,
        equal[0].score if equal else None,
        records,
        seeds,
        ran,
    )


def _trial_line(record: TrialRecord) -> str:
    weights = ", ".join(f"{w:.3f}" for w in record.weights)
    end = "" if record.state == "complete" else f" (pruned at step {record.step})"
    return f"trial {record.number}: val Δm {record.score:+.3f} %{end}  weights [{weights}]"


__all__ = [
    "DEFAULT_LOGITS",
    "PRUNERS",
    "STUDY_NAME",
    "TPEConfig",
    "TPEResult",
    "TrialRecord",
    "TuneResult",
    "import_optuna",
    "logit_weights",
    "static_candidates",
    "tune_static_tpe",
    "tune_static_weights",
]
