"""The observation space: generated from the feature table, and what the env actually returns."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from igb_env import PRESETS, make_env
from igb_env.observations import observation_space
from mtl_backends.features import LOG_CLIP, FeatureSpec, FeatureTable

SMOKE_BENCHMARK: dict[str, Any] = dict(PRESETS["smoke"]["benchmark"])


@pytest.mark.parametrize("history", [0, 1, 3, 6])
@pytest.mark.parametrize("n_tasks", [1, 2, 3, 5])
def test_space_matches_the_table(history: int, n_tasks: int) -> None:
    table = FeatureTable(FeatureSpec(history=history))
    box = observation_space(table, n_tasks)
    assert isinstance(box, gym.spaces.Box) and box.dtype == np.float32
    per_task = 3 + history  # log_gap, raw_log_gap, history changes, weight
    assert box.shape == (per_task * n_tasks + 2,) == (table.dim(n_tasks),)
    low, high = table.bounds(n_tasks)
    np.testing.assert_array_equal(box.low, low)
    np.testing.assert_array_equal(box.high, high)
    # Per task: log features in [-LOG_CLIP, LOG_CLIP], the weight in [0, 1]; globals in [0, 1].
    expected_low = ([-LOG_CLIP] * (per_task - 1) + [0.0]) * n_tasks + [0.0, 0.0]
    expected_high = ([LOG_CLIP] * (per_task - 1) + [1.0]) * n_tasks + [1.0, 1.0]
    np.testing.assert_array_equal(box.low, np.asarray(expected_low, np.float32))
    np.testing.assert_array_equal(box.high, np.asarray(expected_high, np.float32))


def test_env_names_are_task_major() -> None:
    env = make_env({"preset": "smoke", "history": 1})
    assert env.observation_names == [
        "t1/log_gap",
        "t1/raw_log_gap",
        "t1/log_gap_change_1",
        "t1/weight",
        "t2/log_gap",
        "t2/raw_log_gap",
        "t2/log_gap_change_1",
        "t2/weight",
        "t3/log_gap",
        "t3/raw_log_gap",
        "t3/log_gap_change_1",
        "t3/weight",
        "progress",
        "lr_ratio",
    ]


@pytest.mark.parametrize(("n_tasks", "history"), [(2, 0), (4, 2), (3, 5)])
def test_env_space_dims(n_tasks: int, history: int) -> None:
    cfg = {
        "preset": "smoke",
        "history": history,
        "benchmark": {**SMOKE_BENCHMARK, "n_tasks": n_tasks},
    }
    env = make_env(cfg)
    assert env.observation_space.shape == ((3 + history) * n_tasks + 2,)
    assert len(env.observation_names) == env.observation_space.shape[0]
    assert env.observation_space == observation_space(FeatureTable(env.feature_spec), n_tasks)
    obs, _ = env.reset(options={"instance": 0})
    assert obs.shape == env.observation_space.shape


def _episode(cfg: dict[str, Any], instance: int, seed: int) -> list[tuple[np.ndarray, Any]]:
    env = make_env(cfg)
    rng = np.random.default_rng(seed)
    obs, info = env.reset(options={"instance": instance})
    out = [(obs, info)]
    terminated = False
    while not terminated:
        obs, _, terminated, _, info = env.step(rng.uniform(-1.5, 1.5, 3).astype(np.float32))
        out.append((obs, info))
    return out


@pytest.mark.parametrize("history", [0, 3])
@pytest.mark.parametrize("mode", ["absolute", "residual"])
def test_every_observation_lies_in_the_space(history: int, mode: str) -> None:
    cfg = {"preset": "smoke", "history": history, "action_mode": mode, "tau": 3.0}
    env = make_env(cfg)
    for obs, _ in _episode(cfg, instance=history + 7, seed=history):
        assert obs.dtype == np.float32
        assert env.observation_space.contains(obs)


def test_pinned_global_features_and_change_history() -> None:
    """Smoke: 60 steps, base window [5, 10), K = 10; the observation follows the decisions."""
    trace = _episode({"preset": "smoke"}, instance=1, seed=0)
    names = make_env({"preset": "smoke"}).observation_names
    col = {name: i for i, name in enumerate(names)}
    # After reset the tracker absorbed step 10 (progress 11 / 60), then steps 20, 30, 40, 50;
    # after the last env step no batch is drawn (step 59: progress 1).
    progress = [trace[i][0][col["progress"]] for i in range(len(trace))]
    expected = [11 / 60, 21 / 60, 31 / 60, 41 / 60, 51 / 60, 1.0]
    np.testing.assert_array_equal(progress, np.asarray(expected, np.float32))
    assert all(obs[col["lr_ratio"]] == 1.0 for obs, _ in trace)  # constant learning rate
    changes = [[obs[col[f"t1/log_gap_change_{j}"]] for j in (1, 2, 3)] for obs, _ in trace]
    # The change over j snapshots exists from the j-th decision after the base window.
    for i, row in enumerate(changes[:-1]):
        for j, value in enumerate(row, start=1):
            assert (value != 0.0) == (i >= j), (i, j, value)


def test_raw_log_gap_is_the_log_of_info_gaps_and_weight_is_w_over_t() -> None:
    cfg = {"preset": "smoke", "action_mode": "absolute"}
    trace = _episode(cfg, instance=9, seed=1)
    names = make_env(cfg).observation_names
    for obs, info in trace[:-1]:
        raw = [obs[names.index(f"t{t}/raw_log_gap")] for t in (1, 2, 3)]
        expected = np.clip(np.log(info["gaps"]), -LOG_CLIP, LOG_CLIP).astype(np.float32)
        np.testing.assert_allclose(raw, expected, rtol=1e-6)
    # After reset the last applied weights are the base window's (1 each): weight = 1 / T.
    first = trace[0][0]
    assert [first[names.index(f"t{t}/weight")] for t in (1, 2, 3)] == pytest.approx([1 / 3] * 3)
    # Under `absolute` the weights are constant over the K steps, so the feature is w / T.
    for obs, info in trace[1:]:
        weight = [obs[names.index(f"t{t}/weight")] for t in (1, 2, 3)]
        np.testing.assert_allclose(weight, info["weights"] / 3.0, rtol=1e-6)


def test_observation_equals_the_trackers_features() -> None:
    env = make_env({"preset": "smoke"})
    obs, _ = env.reset(options={"instance": 2})
    assert env.episode is not None
    tracker = env.episode.progress
    np.testing.assert_array_equal(obs, FeatureTable(env.feature_spec).compute(tracker))
    obs, *_ = env.step(np.zeros(3, np.float32))
    np.testing.assert_array_equal(obs, tracker.features())
