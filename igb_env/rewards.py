"""Named reward functions of ``IGBEnv`` (the ``REWARDS`` registry).

Each reward is a pure function of a ``RewardInput`` (what one env step changed), a scale and its
own keyword arguments, and returns a finite Python ``float``. An env step covers ``K`` trainer
steps; "window" losses are the mean raw training losses of the batches of those steps, the first
window's predecessor being the base losses ``L_base``.

* ``min_gap_decrease`` (IGBv2, Dai et al.): ``α · min_t (L̄_prev,t − L̄_now,t) / (L_base,t − L*_t)``,
  optionally multiplied by ``min(lr_0 / lr, lr_scale_cap)`` (IGBv2's LR factor, capped).
* ``mean_log_gap_decrease``: ``α · mean_t [log(L̄_prev,t − L*_t) − log(L̄_now,t − L*_t)]``, the
  decrease of the log gap of the window-mean training loss.
* ``val_log_improvement``: ``α · mean_t [log(V_prev,t − L*_t) − log(V_now,t − L*_t)]`` on a fixed
  held-in validation batch, ``V_prev`` measured at the previous env step (or at the end of the base
  window). Over an episode it telescopes to ``α · mean_t log(V_base,t / V_end,t)``. It worked best
  in the prototype (``docs/architecture.md``, "Defaults and where they come from").
* ``val_log_metric_improvement``: ``α · mean_m s_m [log M_now,m − log M_prev,m]`` over the
  benchmark's metrics on the same validation batch (``s_m = +1`` where higher is better, e.g. a
  classifier's accuracy, ``−1`` for a loss or an error), each metric floored at ``floor``
  (``1e-6``); metrics must be non-negative. Over
  an episode it telescopes to the log form of validation Δm against the start of the episode:
  it pays for what the metrics gain, not for a saturated classifier's cross-entropy falling
  further (``docs/experiments/generalist.md``, "Why the DB-MTL generalist loses on
  multi_digits").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

TINY = 1e-30
METRIC_FLOOR = 1e-6
"""Lower clip of a metric inside ``val_log_metric_improvement``'s log (an accuracy of 0)."""


@dataclass(frozen=True)
class RewardInput:
    """What one env step changed (float64 arrays ``[T]``).

    Attributes:
        losses_prev: Mean raw training loss of the previous window (``L_base`` for the first step).
        losses_now: Mean raw training loss of this step's window.
        base_losses: Base losses ``L_base``.
        lower_bounds: Declared loss lower bounds ``L*``.
        lr_ratio: Learning rate / initial learning rate after the step, in [0, 1].
        val_prev: Validation losses at the previous env step (``None`` unless the reward needs
            them).
        val_now: Validation losses now (``None`` unless the reward needs them).
        val_metrics_prev: The benchmark's metrics (``metric_specs`` order) on the validation
            batch at the previous env step (``None`` unless the reward needs metrics).
        val_metrics_now: The same metrics now.
        metric_signs: ``+1`` for each metric where higher is better, ``-1`` where lower is.
    """

    losses_prev: np.ndarray
    losses_now: np.ndarray
    base_losses: np.ndarray
    lower_bounds: np.ndarray
    lr_ratio: float
    val_prev: np.ndarray | None = None
    val_now: np.ndarray | None = None
    val_metrics_prev: np.ndarray | None = None
    val_metrics_now: np.ndarray | None = None
    metric_signs: np.ndarray | None = None


RewardFn = Callable[..., float]


@dataclass(frozen=True)
class Reward:
    """A registered reward.

    Attributes:
        name: Registry name.
        fn: ``fn(inputs, scale, **kwargs) -> float``.
        needs_validation: Whether ``inputs.val_prev``/``val_now`` must be filled (a validation pass
            per env step, needed only in training).
        needs_metrics: Whether ``inputs.val_metrics_prev``/``val_metrics_now``/``metric_signs``
            must be filled too (the benchmark's metrics on the same validation outputs).
    """

    name: str
    fn: RewardFn
    needs_validation: bool
    needs_metrics: bool = False

    def __post_init__(self) -> None:
        if self.needs_metrics and not self.needs_validation:
            raise ValueError(
                f"reward {self.name!r}: metrics are computed on the validation batch, so "
                "needs_metrics requires needs_validation"
            )

    def __call__(self, inputs: RewardInput, scale: float = 1.0, **kwargs: Any) -> float:
        """The reward as a Python float (``nan``/``inf`` mean the step diverged)."""
        return float(self.fn(inputs, scale, **kwargs))


def _log_gap(losses: np.ndarray, lower_bounds: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(losses - lower_bounds, TINY))


def lr_factor(lr_ratio: float, cap: float) -> float:
    """IGBv2's LR compensation ``min(lr_0 / lr, cap)`` (``cap`` when the LR has decayed to 0)."""
    return cap if lr_ratio <= 0 else min(1.0 / lr_ratio, cap)


def min_gap_decrease(
    inputs: RewardInput, scale: float, lr_scale: bool = False, lr_scale_cap: float = 10.0
) -> float:
    """IGBv2's reward: the worst task's base-normalised decrease of the window-mean loss.

    Args:
        inputs: The step's losses.
        scale: ``α``.
        lr_scale: Multiply by ``lr_0 / lr`` (IGBv2's compensation of smaller late declines).
        lr_scale_cap: Cap of that factor (it would be infinite when the LR decays to 0).
    """
    denom = np.maximum(inputs.base_losses - inputs.lower_bounds, TINY)
    value = float(np.min((inputs.losses_prev - inputs.losses_now) / denom))
    factor = lr_factor(inputs.lr_ratio, lr_scale_cap) if lr_scale else 1.0
    return scale * factor * value


def mean_log_gap_decrease(inputs: RewardInput, scale: float) -> float:
    """Mean over tasks of the decrease of the log gap of the window-mean training loss."""
    prev = _log_gap(inputs.losses_prev, inputs.lower_bounds)
    now = _log_gap(inputs.losses_now, inputs.lower_bounds)
    return scale * float(np.mean(prev - now))


def val_log_improvement(inputs: RewardInput, scale: float) -> float:
    """Mean over tasks of the decrease of the log validation loss since the previous env step."""
    if inputs.val_prev is None or inputs.val_now is None:
        raise ValueError("val_log_improvement needs validation losses (val_prev and val_now)")
    prev = _log_gap(inputs.val_prev, inputs.lower_bounds)
    now = _log_gap(inputs.val_now, inputs.lower_bounds)
    return scale * float(np.mean(prev - now))


def val_log_metric_improvement(
    inputs: RewardInput, scale: float, floor: float = METRIC_FLOOR
) -> float:
    """Mean over metrics of the signed change of the log validation metric since the last step.

    A task with several metrics (multi_digits' digit sum: MAE and MSE) counts once per metric, as
    in Δm. Metrics must be non-negative (accuracies, errors, losses above 0): the log of a metric
    that can be negative (``toy``'s raw losses) has no meaning, and such a benchmark is refused.

    Args:
        inputs: The step's validation metrics and their directions.
        scale: ``α``.
        floor: Lower clip of every metric inside the log (an accuracy of 0 on the batch).

    Raises:
        ValueError: The metrics or their signs are missing, their shapes differ, or a metric is
            negative.
    """
    prev, now, signs = inputs.val_metrics_prev, inputs.val_metrics_now, inputs.metric_signs
    if prev is None or now is None or signs is None:
        raise ValueError(
            "val_log_metric_improvement needs validation metrics "
            "(val_metrics_prev, val_metrics_now and metric_signs)"
        )
    if not prev.shape == now.shape == signs.shape:
        raise ValueError(
            f"metric shapes differ: prev {prev.shape}, now {now.shape}, signs {signs.shape}"
        )
    if bool((prev < 0).any() or (now < 0).any()):
        raise ValueError(
            "val_log_metric_improvement needs non-negative metrics (their log is the reward), got "
            f"{prev.tolist()} then {now.tolist()}; use val_log_improvement for this benchmark"
        )
    change = np.log(np.maximum(now, floor)) - np.log(np.maximum(prev, floor))
    return scale * float(np.mean(signs * change))


REWARDS: dict[str, Reward] = {
    "min_gap_decrease": Reward("min_gap_decrease", min_gap_decrease, needs_validation=False),
    "mean_log_gap_decrease": Reward(
        "mean_log_gap_decrease", mean_log_gap_decrease, needs_validation=False
    ),
    "val_log_improvement": Reward(
        "val_log_improvement", val_log_improvement, needs_validation=True
    ),
    "val_log_metric_improvement": Reward(
        "val_log_metric_improvement",
        val_log_metric_improvement,
        needs_validation=True,
        needs_metrics=True,
    ),
}


def get_reward(name: str) -> Reward:
    """The reward registered as ``name``.

    Raises:
        ValueError: Unknown name (the valid ones are listed).
    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; valid choices: {', '.join(sorted(REWARDS))}")
    return REWARDS[name]


__all__ = [
    "REWARDS",
    "Reward",
    "RewardInput",
    "get_reward",
    "lr_factor",
    "mean_log_gap_decrease",
    "min_gap_decrease",
    "val_log_improvement",
    "val_log_metric_improvement",
]
