"""Plain runs: the evaluation schedule, model selection on validation only, run folders."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtl_backends.build import build_trainer
from mtl_backends.config import MethodSpec, RunConfig, TrainConfig, from_dict
from mtl_backends.registry import ConfigError
from mtl_backends.results import EvalResult, StepResult
from mtl_backends.run import SELECTIONS, build_run_trainer, mean_eval, run, train_and_evaluate
from mtl_backends.trainer import MTLTrainer

BENCH = MethodSpec(
    "synthetic",
    {"n_train": 200, "n_val": 50, "n_test": 50, "input_dim": 20, "output_dim": 5, "hidden": [16]},
)
UNIT_REFERENCE = {split: {f"t{t}_mse": 1.0 for t in (1, 2, 3)} for split in ("val", "test")}


def _trainer(steps: int = 20, reference: Any = None) -> MTLTrainer:
    train = TrainConfig(steps=steps, batch_size=20, base_window=(2, 4))
    return build_trainer(
        BENCH, MethodSpec("ew"), MethodSpec("sum"), train, seed=0, reference=reference
    )


@pytest.mark.parametrize(
    ("steps", "eval_every", "eval_steps"),
    [
        (20, 5, [5, 10, 15, 20]),
        (22, 5, [5, 10, 15, 20, 22]),
        (20, 20, [20]),
        (20, 30, [20]),
        (20, None, [20]),
    ],
)
def test_evaluation_schedule(steps: int, eval_every: int | None, eval_steps: list[int]) -> None:
    outcome = train_and_evaluate(_trainer(steps), eval_every=eval_every)
    assert [(v.step, t.step) for v, t in outcome.evals] == [(s, s) for s in eval_steps]
    assert all(v.split == "val" and t.split == "test" for v, t in outcome.evals)
    if eval_every is not None and steps % eval_every == 0:
        assert len(outcome.evals) == steps // eval_every


def test_final_selects_the_last_evaluation() -> None:
    outcome = train_and_evaluate(_trainer(20, UNIT_REFERENCE), "final", eval_every=5)
    assert outcome.val is outcome.evals[-1][0] and outcome.test is outcome.evals[-1][1]
    assert outcome.selected_step == 20


def _scripted_evaluate(
    trainer: MTLTrainer, monkeypatch: pytest.MonkeyPatch, val_dm: list[float], test_dm: list[float]
) -> None:
    """Replace the Δm of the i-th val and test evaluations by ``val_dm[i]`` and ``test_dm[i]``."""
    real = trainer.evaluate
    count = {"val": 0, "test": 0}

    def evaluate(split: str = "val") -> EvalResult:
        result = real(split)
        script = val_dm if split == "val" else test_dm
        value = script[count[split]]
        count[split] += 1
        return dataclasses.replace(result, delta_m=value)

    monkeypatch.setattr(trainer, "evaluate", evaluate)


@pytest.mark.parametrize(
    ("val_dm", "chosen"),
    [
        ([3.0, 1.0, 1.0, 2.0], 1),  # the first of two equal best
        ([0.5, 1.0, 2.0, 3.0], 0),
        ([3.0, 2.0, 1.0, -4.0], 3),
        ([-1.0, -1.0, -1.0, -1.0], 0),
    ],
)
def test_best_val_chooses_the_lowest_validation_delta_m(
    monkeypatch: pytest.MonkeyPatch, val_dm: list[float], chosen: int
) -> None:
    trainer = _trainer(20, UNIT_REFERENCE)
    # Test Δm would prefer another evaluation each time: it must not be looked at.
    test_dm = [-100.0 if i != chosen else 100.0 for i in range(4)]
    _scripted_evaluate(trainer, monkeypatch, val_dm, test_dm)
    outcome = train_and_evaluate(trainer, "best_val", eval_every=5)
    assert len(outcome.evals) == 4
    assert outcome.val is outcome.evals[chosen][0] and outcome.test is outcome.evals[chosen][1]
    assert outcome.val.delta_m == min(val_dm)
    assert outcome.selected_step == 5 * (chosen + 1)


def test_best_val_with_a_real_reference() -> None:
    """Unit STL references: Δm = 100 · mean_t (MSE_t - 1), so the best evaluation is known."""
    # Unit task scales and a large SGD step: validation Δm goes up and down.
    bench = MethodSpec("synthetic", {**BENCH.kwargs, "scales": [1.0, 1.0, 1.0]})
    train = TrainConfig(steps=24, batch_size=20, base_window=(2, 4), optimizer="sgd", lr=2.0)
    trainer = build_trainer(
        bench, MethodSpec("ew"), MethodSpec("sum"), train, seed=0, reference=UNIT_REFERENCE
    )
    outcome = train_and_evaluate(trainer, "best_val", eval_every=3)
    by_hand = [
        100.0 * (sum(v.metrics[f"t{t}_mse"] for t in (1, 2, 3)) / 3.0 - 1.0)
        for v, _ in outcome.evals
    ]
    for (v, _), dm in zip(outcome.evals, by_hand, strict=True):
        assert v.delta_m == pytest.approx(dm)
    best = min(range(len(by_hand)), key=lambda i: (by_hand[i], i))
    assert best < len(by_hand) - 1  # the final model is not the best one here
    assert outcome.val is outcome.evals[best][0]
    assert outcome.test.step == outcome.val.step == outcome.selected_step == 3 * (best + 1)
    final = train_and_evaluate(
        build_trainer(
            bench, MethodSpec("ew"), MethodSpec("sum"), train, seed=0, reference=UNIT_REFERENCE
        ),
        "final",
        eval_every=3,
    )
    assert final.selected_step == 24
    assert [v.metrics for v, _ in final.evals] == [v.metrics for v, _ in outcome.evals]


def test_best_val_with_one_evaluation_is_final() -> None:
    outcome = train_and_evaluate(_trainer(10, UNIT_REFERENCE), "best_val")
    assert len(outcome.evals) == 1 and outcome.selected_step == 10


def test_unknown_selection_is_refused_before_training() -> None:
    trainer = _trainer(10)
    with pytest.raises(ConfigError) as err:
        train_and_evaluate(trainer, "best_test")
    assert str(err.value) == (
        "unknown selection 'best_test'; valid choices: final, best_val, mean_last_10"
    )
    assert trainer.step_count == 0
    assert SELECTIONS == ("final", "best_val", "mean_last_10")


def test_best_val_without_validation_references_is_refused_before_training() -> None:
    trainer = _trainer(10)
    with pytest.raises(ConfigError, match=r"best_val.*needs the STL references"):
        train_and_evaluate(trainer, "best_val", eval_every=5)
    assert trainer.step_count == 0


def test_callbacks_see_every_step_and_record_keeps_the_history() -> None:
    seen: list[int] = []

    def callback(trainer: MTLTrainer, result: StepResult) -> None:
        seen.append(result.step)
        assert trainer.step_count == result.step + 1

    outcome = train_and_evaluate(_trainer(12), callbacks=[callback], record=True)
    assert seen == list(range(12))
    assert len(outcome.history.losses) == len(outcome.history.weights) == 12
    assert outcome.history.weights[0] == [1.0, 1.0, 1.0]
    assert outcome.train_wall_time_s > 0
    quiet = train_and_evaluate(_trainer(12))
    assert quiet.history.losses == [] and quiet.history.weights == []
    # Recording changes nothing in the run.
    assert quiet.test.metrics == outcome.test.metrics


def test_run_writes_a_run_folder(tmp_path: Path) -> None:
    config = RunConfig(
        benchmark=BENCH,
        weighting=MethodSpec("igbv1"),
        train=TrainConfig(steps=8, batch_size=20, base_window=(2, 4)),
        seed=5,
        stl_cache=None,
    )
    result = run(config, tmp_path / "out")
    assert result.out_dir == tmp_path / "out"
    assert sorted(p.name for p in result.out_dir.iterdir()) == [
        "config.yaml",
        "history.json",
        "metrics.json",
    ]
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert metrics["val"] == json.loads(json.dumps(dataclasses.asdict(result.val)))
    assert metrics["test"]["step"] == 8 and metrics["task_names"] == ["t1", "t2", "t3"]
    assert metrics["steps_per_second"] == pytest.approx(8 / metrics["wall_time_s"])
    history = json.loads((result.out_dir / "history.json").read_text())
    assert len(history["losses"]) == len(history["weights"]) == 8
    saved = yaml.safe_load((result.out_dir / "config.yaml").read_text())
    assert from_dict(RunConfig, saved) == config
    # The same config without a folder trains the same model.
    again = run(config)
    assert again.out_dir is None and again.test.metrics == result.test.metrics


def test_build_run_trainer_attaches_the_stl_reference(tmp_path: Path) -> None:
    config = RunConfig(
        benchmark=BENCH,
        train=TrainConfig(steps=6, batch_size=20, base_window=(2, 4)),
        stl_cache=str(tmp_path / "stl"),
    )
    trainer = build_run_trainer(config)
    assert trainer.reference is not None and set(trainer.reference) == {"val", "test"}
    assert list((tmp_path / "stl").glob("*.json"))
    trainer.fit()
    assert trainer.evaluate("test").delta_m is not None
    no_cache = build_run_trainer(dataclasses.replace(config, stl_cache=None))
    assert no_cache.reference is None


def test_mean_last_10_averages_the_last_ten_evaluations_of_each_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trainer = _trainer(24, UNIT_REFERENCE)
    val_dm = [float(i) for i in range(12)]
    test_dm = [float(10 * i) for i in range(12)]
    _scripted_evaluate(trainer, monkeypatch, val_dm, test_dm)
    outcome = train_and_evaluate(trainer, "mean_last_10", eval_every=2)
    assert len(outcome.evals) == 12
    last = outcome.evals[2:]
    # Δm by hand: the mean of the last ten scripted values (2..11 and 20..110).
    assert outcome.val.delta_m == pytest.approx(6.5) and outcome.test.delta_m == pytest.approx(65.0)
    for split, mean in (("val", outcome.val), ("test", outcome.test)):
        results = [v if split == "val" else t for v, t in last]
        assert mean.split == split and mean.step == 24
        for name in mean.metrics:
            by_hand = sum(r.metrics[name] for r in results) / 10
            assert mean.metrics[name] == pytest.approx(by_hand, rel=1e-12)
        assert mean.losses == pytest.approx(
            [sum(r.losses[t] for r in results) / 10 for t in range(3)], rel=1e-12
        )


def test_mean_eval_delta_m_is_the_delta_m_of_the_mean_metrics() -> None:
    """Unit STL references: Δm = 100 · mean_t (MSE_t - 1), linear in the metrics."""
    trainer = _trainer(20, UNIT_REFERENCE)
    outcome = train_and_evaluate(trainer, "mean_last_10", eval_every=2)
    by_hand = 100.0 * (sum(outcome.test.metrics[f"t{t}_mse"] for t in (1, 2, 3)) / 3.0 - 1.0)
    assert outcome.test.delta_m == pytest.approx(by_hand, rel=1e-9)
    assert mean_eval([outcome.evals[-1][1]]) == outcome.evals[-1][1]


@pytest.mark.parametrize(("steps", "eval_every"), [(20, None), (20, 3), (9, 1)])
def test_mean_last_10_with_fewer_evaluations_is_refused_before_training(
    steps: int, eval_every: int | None
) -> None:
    trainer = _trainer(steps)
    with pytest.raises(ConfigError, match="averages the last 10 evaluations"):
        train_and_evaluate(trainer, "mean_last_10", eval_every=eval_every)
    assert trainer.step_count == 0
