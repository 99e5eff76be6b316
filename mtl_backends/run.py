"""Plain MTL runs: train to the end of the budget, select a model, evaluate, write a run folder.

``train_and_evaluate`` is the one training loop of a run that ends in test metrics; ``igb train``
(``run``) and every comparison cell (``agents.experiments``) go through it. Model selection is on
validation only: ``final`` takes the model after the budget, ``best_val`` the evaluation with the
best validation Δm (first best on ties); test metrics are never used to choose. ``mean_last_10``
chooses nothing: it reports every metric averaged over the last 10 evaluations, the protocol of
the NYUv2 / Cityscapes tables of Nash-MTL, FAMO and IGB (the mean of the last 10 epochs' test
metrics, with an evaluation every epoch).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from mtl_backends.atomic import write_json_atomic
from mtl_backends.build import build_trainer
from mtl_backends.config import RunConfig, to_dict
from mtl_backends.registry import ConfigError
from mtl_backends.stl import stl_reference
from mtl_backends.trainer import EvalResult, FitHistory, MTLTrainer, StepResult

SELECTIONS: tuple[str, ...] = ("final", "best_val", "mean_last_10")

MEAN_LAST = 10
"""Evaluations averaged by ``mean_last_10``."""

Callback = Callable[[MTLTrainer, StepResult], None]


@dataclass(frozen=True)
class RunOutcome:
    """What ``train_and_evaluate`` measured.

    Attributes:
        val: Validation evaluation of the selected model.
        test: Test evaluation of the selected model.
        evals: Every ``(val, test)`` evaluation, in step order (the last one at the end).
        history: Per-step losses and weights (empty unless recorded).
        train_wall_time_s: Seconds spent in training steps and periodic evaluations.
    """

    val: EvalResult
    test: EvalResult
    evals: list[tuple[EvalResult, EvalResult]]
    history: FitHistory
    train_wall_time_s: float

    @property
    def selected_step(self) -> int:
        """Training steps of the selected model."""
        return self.test.step


def train_and_evaluate(
    trainer: MTLTrainer,
    selection: str = "final",
    eval_every: int | None = None,
    callbacks: Sequence[Callback] = (),
    progress_bar: bool = False,
    record: bool = False,
) -> RunOutcome:
    """Train ``trainer`` to the end of its budget and evaluate the selected model.

    Args:
        trainer: A freshly built trainer.
        selection: ``final``, ``best_val`` or ``mean_last_10`` (``val`` and ``test`` are then
            the means of the last 10 evaluations, ``step`` the last one's).
        eval_every: Steps between ``val``/``test`` evaluations (``None``: only at the end).
        callbacks: Called as ``cb(trainer, result)`` after every step.
        progress_bar: Show progress (a bar on a terminal, plain lines in a log).
        record: Keep per-step losses and weights.

    Raises:
        ConfigError: An unknown selection rule, ``best_val`` without validation references, or
            ``mean_last_10`` with fewer than 10 evaluations in the budget.
    """
    if selection not in SELECTIONS:
        raise ConfigError(
            f"unknown selection {selection!r}; valid choices: {', '.join(SELECTIONS)}"
        )
    if selection == "best_val" and (trainer.reference is None or "val" not in trainer.reference):
        raise ConfigError(
            "selection 'best_val' chooses by validation Δm, which needs the STL references of the "
            "run (trainer.reference with a 'val' split); use 'final' or attach references"
        )
    if selection == "mean_last_10":
        steps = trainer.config.steps
        planned = len(range(eval_every, steps, eval_every)) + 1 if eval_every else 1
        if planned < MEAN_LAST:
            raise ConfigError(
                f"selection 'mean_last_10' averages the last {MEAN_LAST} evaluations, but "
                f"eval_every {eval_every} gives {planned} in {steps} steps; set eval_every to at "
                f"most {steps // MEAN_LAST} (one epoch, as the published tables)"
            )
    evals: list[tuple[EvalResult, EvalResult]] = []

    def periodic(tr: MTLTrainer, result: StepResult) -> None:
        if eval_every and (tr.step_count % eval_every == 0) and not tr.done:
            evals.append((tr.evaluate("val"), tr.evaluate("test")))

    start = time.perf_counter()
    history = trainer.fit(
        callbacks=[*callbacks, periodic], progress_bar=progress_bar, record=record
    )
    wall = time.perf_counter() - start
    evals.append((trainer.evaluate("val"), trainer.evaluate("test")))
    if selection == "best_val":
        # Selection on validation Δm only (first best on ties); test is never looked at here.
        scores = [v.delta_m if v.delta_m is not None else float("inf") for v, _ in evals]
        chosen = min(range(len(evals)), key=lambda i: (scores[i], i))
    elif selection == "mean_last_10":
        last = evals[-MEAN_LAST:]
        val, test = mean_eval([v for v, _ in last]), mean_eval([t for _, t in last])
        return RunOutcome(val, test, evals, history, wall)
    else:
        chosen = len(evals) - 1
    val, test = evals[chosen]
    return RunOutcome(val, test, evals, history, wall)


def mean_eval(results: Sequence[EvalResult]) -> EvalResult:
    """The mean of evaluations of one split: metrics, losses, Δm and Δp; the last one's step.

    Δm and Δp are linear in the metrics for a fixed reference, so their means are the Δm and Δp
    of the mean metrics.
    """
    n = len(results)
    first = results[0]

    def mean(values: Sequence[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return sum(present) / n if len(present) == n else None

    return EvalResult(
        split=first.split,
        step=results[-1].step,
        metrics={k: sum(r.metrics[k] for r in results) / n for k in first.metrics},
        losses=[sum(r.losses[t] for r in results) / n for t in range(len(first.losses))],
        delta_m=mean([r.delta_m for r in results]),
        delta_p=mean([r.delta_p for r in results]),
    )


def build_run_trainer(config: RunConfig, progress_bar: bool = False) -> MTLTrainer:
    """The trainer of ``config``, with its STL reference attached when a cache is configured."""
    reference = None
    if config.stl_cache is not None:
        reference = stl_reference(
            config.benchmark, config.train, config.seed, config.stl_cache, progress_bar
        )
    return build_trainer(
        config.benchmark,
        config.weighting,
        config.balancer,
        config.train,
        seed=config.seed,
        reference=reference,
    )


@dataclass(frozen=True)
class RunResult:
    """Outcome of ``run``.

    Attributes:
        val: Final validation evaluation.
        test: Final test evaluation.
        wall_time: Seconds spent in training steps (excluding STL and evaluation).
        steps_per_second: Training steps per second.
        history: Per-step losses and weights.
        out_dir: Run folder (``None`` if not written).
    """

    val: EvalResult
    test: EvalResult
    wall_time: float
    steps_per_second: float
    history: FitHistory
    out_dir: Path | None


def run(
    config: RunConfig, out_dir: str | Path | None = None, progress_bar: bool = False
) -> RunResult:
    """Train ``config`` to the end of its budget and evaluate on ``val`` and ``test``.

    Writes ``config.yaml`` (resolved), ``metrics.json`` and ``history.json`` to ``out_dir``.
    """
    trainer = build_run_trainer(config, progress_bar)
    outcome = train_and_evaluate(trainer, progress_bar=progress_bar, record=True)
    val, test, wall = outcome.val, outcome.test, outcome.train_wall_time_s
    history = outcome.history
    result = RunResult(val, test, wall, config.train.steps / wall, history, None)
    if out_dir is None:
        return result
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "config.yaml").open("w") as fh:
        yaml.safe_dump(to_dict(config), fh, sort_keys=False)
    summary: dict[str, Any] = {
        "val": asdict(val),
        "test": asdict(test),
        "wall_time_s": wall,
        "steps_per_second": result.steps_per_second,
        "task_names": list(trainer.benchmark.task_names),
    }
    write_json_atomic(summary, out / "metrics.json")
    write_json_atomic({"losses": history.losses, "weights": history.weights}, out / "history.json")
    return RunResult(val, test, wall, result.steps_per_second, history, out)


__all__ = [
    "MEAN_LAST",
    "SELECTIONS",
    "RunOutcome",
    "RunResult",
    "build_run_trainer",
    "mean_eval",
    "run",
    "train_and_evaluate",
]
