"""The env's engine: base window, K-step windows, the reward's inputs, the end, divergence."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from igb_env import make_env
from igb_env.config import EnvConfig, load_env_config
from igb_env.episode import Episode, HeldActionWeighting
from igb_env.instances import BenchmarkCache
from igb_env.rewards import lr_factor
from mtl_backends.benchmarks import predict
from mtl_backends.results import DivergenceError, StepResult
from mtl_backends.weightings import LossWeighting, make_weighting
from tests._tiny import TINY_SYNTHETIC

# smoke: 60 steps, base window [5, 10), K = 10, reward val_log_improvement x 10.
SMOKE: dict[str, Any] = {"preset": "smoke"}


def _episode(
    overrides: dict[str, Any] | None = None,
    instance: int = 0,
    weighting: LossWeighting | None = None,
) -> Episode:
    cfg = load_env_config({**SMOKE, **(overrides or {})})
    bench = BenchmarkCache(cfg.benchmark).get(instance)
    held = weighting if weighting is not None else HeldActionWeighting(cfg.action_mode, cfg.tau)
    return Episode(cfg, bench, held, instance)


def _record_steps(episode: Episode, monkeypatch: pytest.MonkeyPatch) -> list[StepResult]:
    """Record every ``apply`` result of the episode's trainer."""
    results: list[StepResult] = []
    apply = episode.trainer.apply

    def recording(weights: Any = None) -> StepResult:
        result = apply(weights)
        results.append(result)
        return result

    monkeypatch.setattr(episode.trainer, "apply", recording)
    return results


@pytest.mark.parametrize(
    ("steps", "k", "windows"),
    [
        (60, 10, [10, 10, 10, 10, 10]),
        (57, 10, [10, 10, 10, 10, 7]),
        (31, 7, [7, 7, 7]),
        (12, 5, [2]),
        (11, 25, [1]),
        (13, 1, [1, 1, 1]),
    ],
)
def test_windows_cover_the_budget(steps: int, k: int, windows: list[int]) -> None:
    overrides = {"train": {"steps": steps}, "steps_per_action": k}
    episode = _episode(overrides)
    episode.start()
    assert episode.trainer.step_count == 10
    counts, terminated = [], []
    while not episode.over:
        before = episode.trainer.step_count
        outcome = episode.advance()
        counts.append(episode.trainer.step_count - before)
        terminated.append(outcome.terminated)
    assert counts == windows
    assert len(counts) == math.ceil((steps - 10) / k)
    assert terminated == [False] * (len(windows) - 1) + [True]
    assert episode.trainer.step_count == steps and episode.trainer.done
    assert make_env({**SMOKE, **overrides}).episode_length == len(windows)


def test_advance_after_the_end_raises() -> None:
    episode = _episode({"train": {"steps": 20}})
    episode.start()
    assert episode.advance().terminated
    with pytest.raises(RuntimeError, match="the episode is over"):
        episode.advance()


def test_start_runs_the_base_window_and_absorbs_the_first_decision_batch() -> None:
    episode = _episode(instance=4)
    # A twin trainer of the same instance, stepped by hand with unit weights.
    twin = _episode(instance=4).trainer
    losses = [twin.step().losses.to(torch.float64) for _ in range(10)]
    episode.start()
    tracker = episode.progress
    assert episode.trainer.step_count == 10 and tracker.step == 10
    assert tracker.base_losses is not None and tracker.gaps is not None
    expected_base = torch.stack(losses[5:10]).mean(dim=0)
    torch.testing.assert_close(tracker.base_losses, expected_base, rtol=1e-12, atol=0.0)
    assert episode.window_losses is not None
    np.testing.assert_array_equal(episode.window_losses, tracker.base_losses.numpy())
    # The base window trained with unit weights.
    torch.testing.assert_close(tracker.last_weights, torch.ones(3, dtype=torch.float64))
    # The first decision's batch is absorbed, not trained on: the twin's next batch is the same.
    assert tracker.losses is not None
    twin.forward()
    assert twin.progress.losses is not None
    assert torch.equal(tracker.losses, twin.progress.losses)


def test_window_losses_and_weights_are_the_means_of_the_k_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    episode = _episode({"reward": "mean_log_gap_decrease", "reward_scale": 3.0}, instance=2)
    episode.start()
    results = _record_steps(episode, monkeypatch)
    assert isinstance(episode.trainer.weighting, HeldActionWeighting)
    episode.trainer.weighting.hold(torch.tensor([0.5, -0.5, 0.0]))
    while not episode.over:
        prev = episode.window_losses
        assert prev is not None
        prev = prev.copy()
        results.clear()
        outcome = episode.advance()
        assert len(results) == 10
        window = np.mean([r.losses.double().numpy() for r in results], axis=0)
        weights = np.mean([r.weights.double().numpy() for r in results], axis=0)
        assert episode.window_losses is not None
        np.testing.assert_allclose(episode.window_losses, window, rtol=1e-12)
        np.testing.assert_allclose(outcome.weights, weights, rtol=1e-12)
        # The synthetic benchmark's lower bounds are 0.
        expected = 3.0 * float(np.mean(np.log(prev) - np.log(episode.window_losses)))
        assert outcome.reward == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert outcome.val_losses is None


@pytest.mark.parametrize("rows", [50, 20])
def test_validation_losses_are_on_the_first_rows_of_val(rows: int) -> None:
    episode = _episode({"val_batch_size": rows}, instance=3)
    episode.start()

    def val_losses() -> np.ndarray:
        val = episode.benchmark.split("val")
        outputs = predict(episode.trainer.model, val.inputs[:rows])
        return episode.benchmark.losses(outputs, val.targets[:rows]).double().numpy()

    assert episode.val_losses is not None
    np.testing.assert_allclose(episode.val_losses, val_losses(), rtol=1e-6)
    prev = episode.val_losses.copy()
    outcome = episode.advance()
    assert outcome.val_losses is not None
    np.testing.assert_allclose(outcome.val_losses, val_losses(), rtol=1e-6)
    expected = 10.0 * float(np.mean(np.log(prev) - np.log(outcome.val_losses)))
    assert outcome.reward == pytest.approx(expected, rel=1e-12)


# Two classifiers (2 classes) and a regression: the metric reward reads accuracies and an MSE.
METRIC: dict[str, Any] = {
    "reward": {"name": "val_log_metric_improvement"},
    "benchmark": {
        "name": "synthetic",
        **TINY_SYNTHETIC,
        "kinds": ["classification", "classification", "regression"],
        "classes": [2, 2, 2],
    },
}


def test_metric_reward_reads_the_benchmarks_metrics_on_the_validation_batch() -> None:
    episode = _episode(METRIC, instance=2)
    episode.start()
    bench = episode.benchmark

    def metrics() -> np.ndarray:
        val = bench.split("val")
        outputs = predict(episode.trainer.model, val.inputs[:50])
        got = bench.metrics(outputs, val.targets[:50])
        return np.array([got[m.name] for m in bench.metric_specs])

    assert [m.name for m in bench.metric_specs] == ["t1_acc", "t2_acc", "t3_mse"]
    np.testing.assert_array_equal(episode.metric_signs, [1.0, 1.0, -1.0])
    assert episode.val_metrics is not None and episode.val_losses is not None
    np.testing.assert_allclose(episode.val_metrics, metrics(), rtol=1e-6)
    prev_loss = episode.val_losses.copy()
    rewards = []
    for _ in range(3):
        prev = episode.val_metrics.copy()
        outcome = episode.advance()
        now = metrics()
        np.testing.assert_allclose(episode.val_metrics, now, rtol=1e-6)
        change = np.log(np.maximum(now, 1e-6)) - np.log(np.maximum(prev, 1e-6))
        expected = 10.0 * float(np.mean(np.array([1.0, 1.0, -1.0]) * change))
        assert outcome.reward == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert outcome.val_losses is not None
        lb = episode.lower_bounds
        loss_reward = 10.0 * float(np.mean(np.log((prev_loss - lb) / (outcome.val_losses - lb))))
        rewards.append((outcome.reward, loss_reward))
        prev_loss = outcome.val_losses.copy()
    # Not the loss reward on the same steps (the classifiers' losses move, their accuracies in
    # steps of 1/50).
    assert all(r != loss_reward for r, loss_reward in rewards)


def test_a_non_finite_metric_ends_the_episode_as_divergence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    episode = _episode(METRIC, instance=2)
    episode.start()
    metrics = episode.benchmark.metrics

    def broken(outputs: Any, targets: Any) -> dict[str, float]:
        return {**metrics(outputs, targets), "t3_mse": math.nan}

    monkeypatch.setattr(episode.benchmark, "metrics", broken)
    outcome = episode.advance()
    assert outcome.diverged and outcome.terminated
    assert outcome.reward == episode.config.divergence_penalty


def test_validation_batch_size_changes_the_losses() -> None:
    a, b = _episode({"val_batch_size": 50}, 3), _episode({"val_batch_size": 20}, 3)
    a.start()
    b.start()
    assert a.val_losses is not None and b.val_losses is not None
    assert not np.array_equal(a.val_losses, b.val_losses)


def test_min_gap_decrease_gets_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {
        "reward": {"name": "min_gap_decrease", "lr_scale": True, "lr_scale_cap": 2.0},
        "reward_scale": 5.0,
        "train": {"lr_schedule": "cosine"},
    }
    episode = _episode(overrides, instance=6)
    episode.start()
    assert episode.reward_kwargs == {"lr_scale": True, "lr_scale_cap": 2.0}
    base = episode.progress.base_losses
    assert base is not None
    factors = []
    while not episode.over:
        prev = episode.window_losses
        assert prev is not None
        prev = prev.copy()
        outcome = episode.advance()
        assert episode.window_losses is not None
        ratio = episode.progress.lr_ratio
        factors.append(lr_factor(ratio, 2.0))
        value = float(np.min((prev - episode.window_losses) / base.numpy()))
        assert outcome.reward == pytest.approx(5.0 * lr_factor(ratio, 2.0) * value, rel=1e-12)
    # The cosine schedule decays the LR: the factor grows from 1 and reaches the cap.
    assert factors == sorted(factors) and factors[-1] == 2.0 and factors[0] < 2.0


def test_weighting_is_any_loss_weighting() -> None:
    episode = _episode({"reward": "mean_log_gap_decrease"}, weighting=make_weighting("ew"))
    episode.start()
    outcome = episode.advance()
    np.testing.assert_array_equal(outcome.weights, np.ones(3))
    assert not outcome.diverged and not outcome.terminated


def _diverging(penalty: float = -7.0) -> dict[str, Any]:
    # The LR grows by 1e12 after the base window: the next steps diverge.
    return {
        "train": {
            "optimizer": "sgd",
            "lr_schedule": "step",
            "lr_step_size": 10,
            "lr_gamma": 1e12,
        },
        "divergence_penalty": penalty,
    }


def test_divergence_ends_the_episode_with_the_penalty() -> None:
    episode = _episode(_diverging(-7.0))
    episode.start()
    outcomes = []
    while not episode.over:
        outcomes.append(episode.advance())
    last = outcomes[-1]
    assert last.diverged and last.terminated and last.reward == -7.0
    assert type(last.reward) is float
    assert last.weights.shape == (3,)
    assert len(outcomes) < 5 and not any(o.diverged for o in outcomes[:-1])
    with pytest.raises(RuntimeError, match="over"):
        episode.advance()


def test_divergence_inside_the_base_window_raises() -> None:
    episode = _episode({"train": {"optimizer": "sgd", "lr": 1e10, "momentum": 0.0}})
    with pytest.raises(DivergenceError, match="non-finite loss at step 1"):
        episode.start()


def test_held_action_weighting_state() -> None:
    held = HeldActionWeighting("absolute", 2.0)
    assert held.transform == "log" and held.mode == "absolute" and held.tau == 2.0
    held.reset(3)
    assert held.action is None and held.state_dict() == {"action": None}
    held.hold(torch.tensor([3.0, -1.0, 0.5]))
    assert held.action is not None and held.action.tolist() == [3.0, -1.0, 0.5]
    other = HeldActionWeighting("absolute", 2.0)
    other.reset(3)
    other.load_state_dict(held.state_dict())
    assert other.action is not None and torch.equal(other.action, held.action)
    with pytest.raises(ValueError, match="finite"):
        held.hold(torch.tensor([float("nan"), 0.0, 0.0]))
    assert held.action.tolist() == [3.0, -1.0, 0.5]
    held.reset(3)  # a new run forgets the held action
    assert held.action is None


def test_config_of_an_episode_is_kept() -> None:
    episode = _episode({"steps_per_action": 4}, instance=12)
    assert isinstance(episode.config, EnvConfig)
    assert episode.instance == 12 and episode.trainer.seed == 12
    assert episode.progress is episode.trainer.progress
    assert episode.progress.spec.stride == 4
    assert episode.val_losses is None and episode.window_losses is None and not episode.over
