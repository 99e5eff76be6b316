"""The env's engine: one MTL run driven K trainer steps at a time (no gymnasium dependency).

``Episode`` runs an ``MTLTrainer`` with whatever ``LossWeighting`` it is given: ``IGBEnv`` gives it
``HeldActionWeighting`` (the agent's action held for K steps, through the action map), the
baseline rollouts (``igb_env.rollouts``) a registered weighting on the same instance, so their
returns are reference lines for the agent's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from igb_env.config import EnvConfig
from igb_env.rewards import RewardInput, get_reward
from mtl_backends.benchmarks import Benchmark, predict
from mtl_backends.build import build_trainer
from mtl_backends.gaps import GapTracker
from mtl_backends.policy.action_maps import HeldAction
from mtl_backends.trainer import DivergenceError
from mtl_backends.weightings import LossWeighting, StepContext


class HeldActionWeighting(LossWeighting):
    """The env's weighting: the agent's action, held for K steps, through the action map.

    Before the base losses exist the weights are 1; until the first action arrives the held action
    is 0 (so ``residual`` is IGBv1 and ``absolute`` is SI there). Transform ``log``.

    Args:
        mode: Action map (``absolute`` or ``residual``).
        tau: Action temperature.
    """

    transform = "log"

    def __init__(self, mode: str, tau: float) -> None:
        self.held = HeldAction(mode, tau)

    @property
    def mode(self) -> str:
        """Action map."""
        return self.held.mode

    @property
    def tau(self) -> float:
        """Action temperature."""
        return self.held.tau

    @property
    def action(self) -> Tensor | None:
        """The held action (``None`` before the first one)."""
        return self.held.action

    def hold(self, action: Tensor | None) -> None:
        """Hold the action ``[T]`` of the next K steps (``None``: release it).

        Raises:
            ValueError: Wrong shape or a NaN / infinite entry.
        """
        self.held.hold(action, self.n_tasks)

    def reset(self, n_tasks: int, generator: torch.Generator | None = None) -> None:
        """Forget the held action."""
        super().reset(n_tasks, generator)
        self.held.hold(None, n_tasks)

    def __call__(self, context: StepContext) -> Tensor:
        """Weights of the held action with the current gaps."""
        return self.held.weights(context.progress)

    def state_dict(self) -> dict[str, Any]:
        """The held action."""
        action = self.held.action
        return {"action": None if action is None else action.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the held action."""
        self.held.hold(state["action"], self.n_tasks)


@dataclass
class StepOutcome:
    """What one env step (K trainer steps) produced.

    Attributes:
        reward: The reward (the divergence penalty when ``diverged``).
        terminated: Budget spent or training diverged.
        diverged: A loss (or the reward) became non-finite.
        weights: Mean weights applied over the step's trainer steps ``[T]``.
        val_losses: Validation losses after the step (when the reward uses them).
    """

    reward: float
    terminated: bool
    diverged: bool
    weights: np.ndarray
    val_losses: np.ndarray | None


class Episode:
    """One MTL run driven K trainer steps at a time; the engine of ``IGBEnv``.

    ``start()`` runs the base window (unit weights on log losses until the base losses exist) and
    absorbs the first decision batch; each ``advance()`` applies the weighting for K steps, absorbs
    the next batch and computes the reward.

    Args:
        config: The env configuration.
        benchmark: The instance's benchmark (data seeded by the instance seed).
        weighting: Decides every step's weights (``trainer.apply(None)``).
        instance: Instance seed: model initialisation, batch order and the trainer's RNG streams.
    """

    def __init__(
        self, config: EnvConfig, benchmark: Benchmark, weighting: LossWeighting, instance: int
    ) -> None:
        self.config = config
        self.instance = int(instance)
        self.benchmark = benchmark
        self.trainer = build_trainer(
            benchmark,
            weighting,
            config.balancer,
            config.train_for(self.instance),
            seed=self.instance,
            features=config.feature_spec,
        )
        self.reward = get_reward(config.reward.name)
        self.reward_kwargs = dict(config.reward.kwargs)
        self.lower_bounds = benchmark.lower_bounds.detach().to(torch.float64).numpy()
        self._val: tuple[Tensor, Tensor] | None = None
        if self.reward.needs_validation:
            val = benchmark.split("val")
            n = min(config.val_batch_size, len(val))
            self._val = (
                val.inputs[:n].to(self.trainer.device),
                val.targets[:n].to(self.trainer.device),
            )
        self.val_losses: np.ndarray | None = None
        self.val_metrics: np.ndarray | None = None
        # +1 where a metric is better higher (accuracy), -1 where lower (a loss): the metric
        # rewards' direction, in ``metric_specs`` order.
        self.metric_signs = np.array(
            [1.0 if m.higher_is_better else -1.0 for m in benchmark.metric_specs]
        )
        self.window_losses: np.ndarray | None = None
        self.over = False

    @property
    def progress(self) -> GapTracker:
        """The trainer's gap tracker."""
        return self.trainer.progress

    def start(self) -> None:
        """Run the base window and absorb the batch of the first decision.

        Raises:
            DivergenceError: Training diverged inside the base window.
        """
        trainer = self.trainer
        first = trainer.progress.base_window[1]
        while trainer.step_count < first:
            trainer.step()
        trainer.forward()
        assert trainer.progress.base_losses is not None
        self.window_losses = trainer.progress.base_losses.numpy().copy()
        self.val_losses, self.val_metrics = self._validation()

    def _validation(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Losses ``[T]`` and (for a metric reward) metrics ``[M]`` on the validation batch."""
        if self._val is None:
            return None, None
        x, y = self._val
        trainer = self.trainer
        with torch.no_grad():
            outputs = predict(trainer.model, x, trainer.config.eval_batch_size)
            losses = self.benchmark.losses(outputs, y).detach().to("cpu", torch.float64).numpy()
            metrics = None
            if self.reward.needs_metrics:
                values = self.benchmark.metrics(outputs, y)
                metrics = np.array(
                    [values[m.name] for m in self.benchmark.metric_specs], dtype=np.float64
                )
        return losses, metrics

    def observation(self) -> np.ndarray:
        """The current features (float32, clipped to the table's bounds)."""
        obs: np.ndarray = self.trainer.progress.features()
        return obs

    def advance(self) -> StepOutcome:
        """Apply the weighting for K trainer steps (fewer at the end of the budget)."""
        if self.over:
            raise RuntimeError("the episode is over (budget spent or diverged); call reset()")
        trainer = self.trainer
        n_tasks = trainer.n_tasks
        # Per-step losses and weights are kept as tensors and averaged once per env step
        # (``_row_mean``): a float64 conversion per trainer step cost ~1% of a synthetic step.
        step_losses: list[torch.Tensor] = []
        step_weights: list[torch.Tensor] = []
        try:
            for k in range(self.config.steps_per_action):
                if k > 0:
                    if trainer.done:
                        break
                    trainer.forward()
                result = trainer.apply()
                step_losses.append(result.losses)
                step_weights.append(result.weights)
            done = trainer.done
            if not done:
                trainer.forward()
            val_now, metrics_now = self._validation()
            assert self.window_losses is not None and trainer.progress.base_losses is not None
            window = _row_mean(step_losses)
            inputs = RewardInput(
                losses_prev=self.window_losses,
                losses_now=window,
                base_losses=trainer.progress.base_losses.numpy(),
                lower_bounds=self.lower_bounds,
                lr_ratio=trainer.progress.lr_ratio,
                val_prev=self.val_losses,
                val_now=val_now,
                val_metrics_prev=self.val_metrics,
                val_metrics_now=metrics_now,
                metric_signs=self.metric_signs if metrics_now is not None else None,
            )
            finite_val = (val_now is None or bool(np.isfinite(val_now).all())) and (
                metrics_now is None or bool(np.isfinite(metrics_now).all())
            )
            reward = (
                self.reward(inputs, self.config.reward_scale, **self.reward_kwargs)
                if finite_val
                else math.nan
            )
        except DivergenceError:
            reward = math.nan
            done = True
            window, val_now, metrics_now = np.full(n_tasks, math.nan), None, None
        weights = _row_mean(step_weights) if step_weights else np.zeros(n_tasks)
        if not math.isfinite(reward):
            self.over = True
            return StepOutcome(float(self.config.divergence_penalty), True, True, weights, val_now)
        self.window_losses, self.val_losses, self.val_metrics = window, val_now, metrics_now
        self.over = done
        return StepOutcome(reward, done, False, weights, val_now)


def _row_mean(rows: list[torch.Tensor]) -> np.ndarray:
    """Float64 mean of equal-length 1-D tensors.

    numpy reduces axis 0 row by row, so the result equals a running float64 sum divided by the
    count bit for bit (the env's numbers before it kept tensors).
    """
    total: np.ndarray = torch.stack(rows).to(torch.float64).numpy().sum(axis=0)
    return total / len(rows)


__all__ = ["Episode", "HeldActionWeighting", "StepOutcome"]
