"""``EnvConfig``: per-instance step budgets (``budgets``, ``train_for``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from igb_env.config import BUDGET_STREAM, load_env_config
from mtl_backends.registry import ConfigError

# The smoke preset trains 60 steps with the base window (5, 10).
BUDGETS: dict[str, Any] = {"preset": "smoke", "budgets": [30, 60, 90]}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"budgets": []}, "budgets must list at least one step budget, or be null"),
        (
            {"budgets": [10, 5, 30, 11]},
            "budgets [10, 5] leave no steps to decide: each must exceed the base window's end (10)",
        ),
        (
            {"budgets": [200], "train": {"steps": 300, "base_window": [100, 200]}},
            "budgets [200] leave no steps to decide: each must exceed the base window's end (200)",
        ),
        (
            {"budgets": [0, 40], "train": {"base_window": None}},
            "budgets [0] leave no steps to decide: each must exceed the base window's end (0)",
        ),
    ],
)
def test_budgets_are_checked(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_env_config({"preset": "smoke", **changes})
    assert str(err.value) == message


def test_budgets_load_as_a_tuple_and_round_trip() -> None:
    cfg = load_env_config(BUDGETS)
    assert cfg.budgets == (30, 60, 90)
    assert cfg.to_dict()["budgets"] == [30, 60, 90]
    assert load_env_config(cfg.to_dict()) == cfg
    # The smallest budget that leaves a decision: one step past the base window.
    assert load_env_config({"preset": "smoke", "budgets": [11]}).budgets == (11,)
    assert load_env_config({"preset": "smoke"}).budgets is None


def test_without_budgets_every_instance_trains_train_itself() -> None:
    cfg = load_env_config({"preset": "smoke"})
    for instance in (0, 7, 123_456):
        assert cfg.train_for(instance) is cfg.train


def test_train_for_draws_one_budget_per_instance_and_keeps_the_other_settings() -> None:
    cfg = load_env_config(BUDGETS)
    for instance in range(50):
        train = cfg.train_for(instance)
        assert train.steps in (30, 60, 90)
        assert train == replace(cfg.train, steps=train.steps)  # only the budget changes
        assert cfg.train_for(instance) == train  # deterministic
        # The draw is the instance's own generator: uniform over the list's positions.
        rng = np.random.default_rng([BUDGET_STREAM, instance])
        assert train.steps == cfg.budgets[int(rng.integers(3))]  # type: ignore[index]


def test_the_draw_depends_on_the_instance_alone() -> None:
    cfg = load_env_config(BUDGETS)
    others = load_env_config(
        {
            **BUDGETS,
            "tau": 2.0,
            "steps_per_action": 5,
            "action_mode": "interp",
            "feature_table": "v2",
            "variation": True,
            "train": {"lr": 0.01, "batch_size": 10},
            "benchmark": {"name": "synthetic", "n_tasks": 5},
            "instances": [0, 400],
        }
    )
    np.random.seed(123)
    first = [cfg.train_for(i).steps for i in range(400)]
    assert [others.train_for(i).steps for i in range(400)] == first
    assert others.train_for(3).lr == 0.01 and others.train_for(3).batch_size == 10
    # ... and it leaves numpy's global generator alone.
    drawn = np.random.random()
    np.random.seed(123)
    assert np.random.random() == drawn


def test_the_draws_cover_every_budget_evenly() -> None:
    cfg = load_env_config(BUDGETS)
    counts = Counter(cfg.train_for(i).steps for i in range(3000))
    assert set(counts) == {30, 60, 90}
    assert all(900 <= n <= 1100 for n in counts.values()), counts
    # A repeated budget is drawn twice as often (positions are drawn, not values).
    doubled = load_env_config({**BUDGETS, "budgets": [30, 30, 90]})
    counts = Counter(doubled.train_for(i).steps for i in range(3000))
    assert 1850 <= counts[30] <= 2150 and counts[30] + counts[90] == 3000
    # One budget is every instance's.
    single = load_env_config({**BUDGETS, "budgets": [45]})
    assert {single.train_for(i).steps for i in range(100)} == {45}
