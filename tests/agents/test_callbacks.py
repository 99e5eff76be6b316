"""``agents.callbacks``: budget, progress and per-task metrics callbacks, and atomic saves."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.logger import KVWriter, Logger

from agents import callbacks
from agents.callbacks import (
    BudgetCallback,
    TaskMetricsCallback,
    TqdmCallback,
    null_logger,
    save_model_atomic,
)


class Capture(KVWriter):
    """Keeps every dump of an SB3 logger."""

    def __init__(self) -> None:
        self.dumps: list[dict[str, Any]] = []

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0
    ) -> None:
        self.dumps.append(dict(key_values))


class Clock:
    """A fake ``time.perf_counter``."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _model(**attrs: Any) -> Any:
    fields: dict[str, Any] = {"num_timesteps": 0, "logger": null_logger(), "get_env": lambda: None}
    return SimpleNamespace(**{**fields, **attrs})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", fake)
    return fake


def test_budget_stops_once_the_budget_is_spent(clock: Clock) -> None:
    cb = BudgetCallback(max_seconds=10.0)
    cb.init_callback(_model())
    clock.now = 500.0  # time before training starts does not count
    cb.on_training_start({}, {})
    assert cb.elapsed == 0.0
    clock.now = 509.5
    assert cb.on_step() is True and not cb.stopped_by_budget
    clock.now = 510.0
    assert cb.elapsed == 10.0
    assert cb.on_step() is False and cb.stopped_by_budget


def test_no_budget_never_stops(clock: Clock) -> None:
    cb = BudgetCallback(max_seconds=None)
    cb.init_callback(_model())
    cb.on_training_start({}, {})
    clock.now += 1e9
    assert cb.on_step() is True and not cb.stopped_by_budget


def test_tqdm_counts_episodes_and_timesteps() -> None:
    model = _model(ep_info_buffer=[])
    cb = TqdmCallback(total_timesteps=10, disable=True)
    cb.init_callback(model)
    cb.on_training_start({}, {})
    for timesteps, dones in [(2, [False, False]), (4, [True, False]), (6, [True, True])]:
        model.num_timesteps = timesteps
        cb.update_locals({"dones": np.array(dones)})
        assert cb.on_step() is True
    assert cb.bar is not None
    assert cb.episodes == 3 and cb.bar.n == 6
    model.ep_info_buffer = [{"r": 1.0}, {"r": 2.0}]
    model.num_timesteps = 12
    cb.update_locals({"dones": np.array([False, False])})
    cb.on_step()
    assert cb.bar.n == 10  # capped at the total
    assert cb.bar.postfix == "episodes=3, ret=1.500"
    cb.on_training_end()


def test_task_metrics_are_means_between_dumps() -> None:
    capture = Capture()
    model = _model(logger=Logger(folder=None, output_formats=[capture]))
    cb = TaskMetricsCallback(["t1", "t2"], references={"ew": -1.5, "igbv1": 0.25})
    cb.init_callback(model)
    cb.on_training_start({}, {})
    steps = [
        ([{"weights": [1.5, 0.5], "gaps": [1.0, 0.8]}, {"weights": [0.5, 1.5]}], [1.0, 3.0]),
        ([{"weights": np.array([1.0, 1.0]), "gaps": [0.6, 0.4]}, {}], [-2.0, 0.0]),
    ]
    for infos, rewards in steps:
        cb.update_locals({"infos": infos, "rewards": np.array(rewards)})
        assert cb.on_step() is True
    model.logger.dump(1)
    assert capture.dumps[0] == pytest.approx(
        {
            "reference/ew_return": -1.5,
            "reference/igbv1_return": 0.25,
            "mtl/t1_weight": (1.5 + 0.5 + 1.0) / 3,
            "mtl/t2_weight": (0.5 + 1.5 + 1.0) / 3,
            "mtl/t1_gap": (1.0 + 0.6) / 2,
            "mtl/t2_gap": (0.8 + 0.4) / 2,
            "mtl/reward": (2.0 + -1.0) / 2,  # mean over envs, then over steps
        }
    )
    # The logger forgets after a dump; the references come back at the next rollout end.
    cb.update_locals({"infos": [{"weights": [2.0, 0.0]}], "rewards": None})
    cb.on_step()
    cb.on_rollout_end()
    model.logger.dump(2)
    assert capture.dumps[1] == {
        "mtl/t1_weight": 2.0,
        "mtl/t2_weight": 0.0,
        "reference/ew_return": -1.5,
        "reference/igbv1_return": 0.25,
    }


def test_task_metrics_custom_keys_and_a_wrong_task_count() -> None:
    capture = Capture()
    model = _model(logger=Logger(folder=None, output_formats=[capture]))
    cb = TaskMetricsCallback(["a"], weights_key="w", gaps_key="g")
    cb.init_callback(model)
    cb.on_training_start({}, {})
    cb.update_locals({"infos": [{"w": [0.5], "weights": [9.0, 9.0]}]})
    cb.on_step()
    model.logger.dump(0)
    assert capture.dumps == [{"mtl/a_weight": 0.5}]
    cb.update_locals({"infos": [{"w": [0.5, 0.5]}]})
    with pytest.raises(ValueError):
        cb.on_step()


def test_null_logger_writes_nothing(tmp_path: Path) -> None:
    logger = null_logger()
    assert logger.output_formats == [] and logger.get_dir() is None
    logger.record("x", 1.0)
    logger.dump(0)


@pytest.fixture(scope="module")
def ppo() -> PPO:
    return PPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, seed=0, device="cpu")


def test_save_model_atomic_leaves_only_the_model(ppo: PPO, tmp_path: Path) -> None:
    path = save_model_atomic(ppo, tmp_path / "model.zip")
    assert path == tmp_path / "model.zip"
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]
    loaded = PPO.load(path, device="cpu")
    for name, tensor in ppo.policy.state_dict().items():
        assert loaded.policy.state_dict()[name].equal(tensor), name


def test_a_crash_while_saving_keeps_the_previous_model(
    ppo: PPO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_model_atomic(ppo, tmp_path / "model.zip")
    before = path.read_bytes()

    def crash(fh: Any, *args: Any, **kwargs: Any) -> None:
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ppo, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model_atomic(ppo, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]


def test_task_metrics_pool_the_tasks_of_runs_with_different_t() -> None:
    """``task_names=None`` (a set policy's env groups): extremes and means over each run's tasks,
    and the reward per T."""
    capture = Capture()
    model = _model(logger=Logger(folder=None, output_formats=[capture]))
    cb = TaskMetricsCallback(None, references={"ew": 0.5})
    cb.init_callback(model)
    cb.on_training_start({}, {})
    steps = [
        (
            [
                {"weights": [1.5, 0.5], "gaps": [1.0, 0.6], "n_tasks": 2},
                {"weights": [0.2, 2.4, 0.4], "gaps": [0.3, 0.9, 0.6], "n_tasks": 3},
            ],
            [1.0, -2.0],
        ),
        (
            [
                {"weights": np.array([1.0, 1.0]), "n_tasks": 2},
                {"weights": [3.0, 0.5, 0.25, 0.25], "gaps": [0.4, 0.4, 0.4, 0.4], "n_tasks": 4},
            ],
            [3.0, 0.5],
        ),
    ]
    for infos, rewards in steps:
        cb.update_locals({"infos": infos, "rewards": np.array(rewards)})
        assert cb.on_step() is True
    model.logger.dump(1)
    assert capture.dumps[0] == pytest.approx(
        {
            "reference/ew_return": 0.5,
            # one value per info: the run's largest and smallest weight, its mean gap
            "mtl/weight_max": (1.5 + 2.4 + 1.0 + 3.0) / 4,
            "mtl/weight_min": (0.5 + 0.2 + 1.0 + 0.25) / 4,
            "mtl/gap_mean": (0.8 + 0.6 + 0.4) / 3,
            "mtl/reward": ((1.0 - 2.0) / 2 + (3.0 + 0.5) / 2) / 2,
            "mtl/reward_T2": (1.0 + 3.0) / 2,
            "mtl/reward_T3": -2.0,
            "mtl/reward_T4": 0.5,
        }
    )
    # No per-task names are recorded, whatever T.
    assert not any(key.startswith("mtl/t") for key in capture.dumps[0])
    # An info without n_tasks adds to the pooled reward only.
    cb.update_locals({"infos": [{"weights": [2.0, 0.0]}], "rewards": np.array([4.0])})
    cb.on_step()
    model.logger.dump(2)
    assert capture.dumps[1] == {"mtl/weight_max": 2.0, "mtl/weight_min": 0.0, "mtl/reward": 4.0}
