"""SB3 callbacks of agent training: per-task TensorBoard scalars, budgets, checkpoints, progress.

Each callback does one thing and is composed in ``agents/train.py`` with ``CallbackList``:

* ``TaskMetricsCallback``: per-task weights and gaps and the reward (``mtl/t1_weight``,
  ``mtl/t1_gap``, ``mtl/reward``), averaged over the steps between two log dumps, plus constant
  reference lines (``reference/ew_return``, ``reference/igbv1_return``) beside SB3's
  ``rollout/ep_rew_mean``.
* ``BudgetCallback``: stops training at a wall-clock budget; the timestep cap is ``learn``'s
  ``total_timesteps``. Wall-clock stopping makes a run machine-dependent, so the timesteps actually
  done are recorded in the run folder.
* ``TqdmCallback``: a progress bar over timesteps, with the episode count and mean return.

``null_logger`` is the logger of models that log nothing (no TensorBoard folder);
``save_model_atomic`` writes a model so that a crash never leaves a truncated file. Resumable
checkpoints are ``agents.checkpoint``'s.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from mtl_backends.atomic import atomic_open
from mtl_backends.progress import Progress


def null_logger() -> Logger:
    """An SB3 logger that writes nothing.

    Without one, SB3's ``learn`` configures its default logger, which creates an empty
    ``SB3-<date>`` folder in the system's temporary directory on every call.
    """
    return Logger(folder=None, output_formats=[])


def save_model_atomic(model: BaseAlgorithm, path: str | Path) -> Path:
    """``model.save`` to a temporary file in the same folder, then rename it over ``path``.

    A crash while saving never leaves a truncated ``model.zip`` behind.

    Args:
        model: The SB3 model.
        path: Destination (``.zip`` is the SB3 convention).

    Returns:
        ``path``.
    """
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        model.save(cast(io.BufferedIOBase, fh))
    return path


class TaskMetricsCallback(BaseCallback):
    """Log per-task weights and gaps and the step reward to SB3's logger (TensorBoard).

    Reads the info dict every sub-env returns (``info[weights_key]`` and ``info[gaps_key]``, one
    value per task) and records ``mtl/<task>_weight``, ``mtl/<task>_gap`` and ``mtl/reward`` as
    means over the steps since the last dump. Reference returns, when given, are recorded as
    ``reference/<name>_return`` at every dump, so TensorBoard draws them as flat lines beside the
    agent's ``rollout/ep_rew_mean``.

    Runs of different T (a set policy's env groups; ``task_names=None``) have no common tasks:
    then the callback records each step's largest and smallest weight and mean gap
    (``mtl/weight_max``, ``mtl/weight_min``, ``mtl/gap_mean``) and the reward per T
    (``mtl/reward_T<T>``, from ``info["n_tasks"]``).

    Args:
        task_names: Task names, in the env's task order (``None``: pool the tasks).
        references: Baseline name -> mean episode return on the reference instances.
        weights_key: Info key of the applied weights.
        gaps_key: Info key of the improvable gaps.
    """

    def __init__(
        self,
        task_names: Sequence[str] | None,
        references: Mapping[str, float] | None = None,
        weights_key: str = "weights",
        gaps_key: str = "gaps",
    ) -> None:
        super().__init__()
        self.task_names = None if task_names is None else tuple(task_names)
        self.references = dict(references or {})
        self.weights_key = weights_key
        self.gaps_key = gaps_key

    def _record_references(self) -> None:
        for name, value in self.references.items():
            self.logger.record(f"reference/{name}_return", value)

    def _on_training_start(self) -> None:
        self._record_references()

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", ())
        for info in infos:
            for key, suffix in ((self.weights_key, "weight"), (self.gaps_key, "gap")):
                values = info.get(key)
                if values is None:
                    continue
                row = np.asarray(values, dtype=float).reshape(-1)
                if self.task_names is None:
                    self._record_pooled(suffix, row)
                    continue
                for name, value in zip(self.task_names, row, strict=True):
                    self.logger.record_mean(f"mtl/{name}_{suffix}", float(value))
        rewards = self.locals.get("rewards")
        if rewards is not None:
            self.logger.record_mean("mtl/reward", float(np.mean(rewards)))
            if self.task_names is None:
                for info, reward in zip(infos, np.asarray(rewards).reshape(-1), strict=False):
                    if "n_tasks" in info:
                        self.logger.record_mean(f"mtl/reward_T{info['n_tasks']}", float(reward))
        return True

    def _record_pooled(self, suffix: str, row: np.ndarray) -> None:
        if suffix == "weight":
            self.logger.record_mean("mtl/weight_max", float(row.max()))
            self.logger.record_mean("mtl/weight_min", float(row.min()))
        else:
            self.logger.record_mean("mtl/gap_mean", float(row.mean()))

    def _on_rollout_end(self) -> None:
        # Re-recorded before every dump: SB3's logger clears its values after writing them.
        self._record_references()


class BudgetCallback(BaseCallback):
    """Stop training once a wall-clock budget is spent.

    The timestep cap is ``learn(total_timesteps=...)``; this adds the wall-clock limit. SB3 checks
    the return value of ``_on_step`` after every vectorised step, so training stops within one env
    step (plus the update in progress) of the budget.

    Args:
        max_seconds: Wall-clock budget in seconds (``None``: no limit).
    """

    def __init__(self, max_seconds: float | None) -> None:
        super().__init__()
        self.max_seconds = max_seconds
        self.start = time.perf_counter()
        self.stopped_by_budget = False

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since training started."""
        return time.perf_counter() - self.start

    def _on_step(self) -> bool:
        if self.max_seconds is not None and self.elapsed >= self.max_seconds:
            self.stopped_by_budget = True
            return False
        return True


class TqdmCallback(BaseCallback):
    """Progress over timesteps, with the episode count and mean return as postfix.

    A tqdm bar on a terminal, plain lines with rate and ETA in a log (``mtl_backends.progress``).

    Args:
        total_timesteps: The timestep cap.
        disable: Show nothing (tests).
        time_budget_s: The wall-clock budget left (``BudgetCallback``), so that the ETA of a run
            the budget will stop is the budget's, not the timestep cap's.
    """

    def __init__(
        self, total_timesteps: int, disable: bool = False, time_budget_s: float | None = None
    ) -> None:
        super().__init__()
        self.total = total_timesteps
        self.disable = disable
        self.time_budget_s = time_budget_s
        self.bar: Progress | None = None
        self.episodes = 0

    def _on_training_start(self) -> None:
        self.bar = Progress(
            self.total, "agent", "step", disable=self.disable, time_budget_s=self.time_budget_s
        )

    def _on_step(self) -> bool:
        assert self.bar is not None
        dones = self.locals.get("dones")
        if dones is not None:
            self.episodes += int(np.sum(dones))
        buffer = getattr(self.model, "ep_info_buffer", None)
        if buffer:
            mean_return = float(np.mean([ep["r"] for ep in buffer]))
            self.bar.set_postfix(episodes=self.episodes, ret=f"{mean_return:.3f}")
        self.bar.update_to(min(self.num_timesteps, self.total))
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
