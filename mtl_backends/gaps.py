"""The improvable-gap state shared by IGBv1, the environment and exported policies.

One ``GapTracker`` absorbs the raw batch losses of every training step and owns:

* the base losses ``L_base[T]``: the mean raw training loss over a base window of steps (by default
  the second epoch, as in the IGB paper);
* the gap ``g_t = (L_t - L*_t) / (L_base,t - L*_t)`` of the current batch, and an EMA of it against
  mini-batch noise;
* a ring buffer of log-gap snapshots taken every ``stride`` steps after the base window;
* the progress fraction of the budget and the LR ratio ``lr_t / lr_0`` clipped to [0, 1];
* ``features()``: the observation, computed by the rows of its ``FeatureTable``
  (``mtl_backends.features``), from which the env's observation space and an exported policy's
  sidecar are generated too.

``docs/architecture.md`` ("The improvable-gap state") describes when each quantity exists.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtl_backends.features import LOG_CLIP, FeatureSpec, FeatureTable


class GapTracker:
    """Tracks base losses, improvable gaps, their history, progress and the LR ratio.

    Args:
        n_tasks: Number of tasks ``T``.
        lower_bounds: Declared loss lower bounds ``L*`` ``[T]`` (default zeros).
        base_window: ``(start, end)`` steps whose mean raw loss becomes ``L_base`` (end excluded).
        total_steps: Step budget, for the progress fraction (``None``: progress stays 0).
        spec: Feature settings.
        lr0: Initial learning rate (default: the first one seen).
    """

    def __init__(
        self,
        n_tasks: int,
        base_window: tuple[int, int],
        lower_bounds: Tensor | None = None,
        total_steps: int | None = None,
        spec: FeatureSpec | None = None,
        lr0: float | None = None,
    ) -> None:
        start, end = base_window
        if not 0 <= start < end:
            raise ValueError(f"base_window must satisfy 0 <= start < end, got {base_window}")
        self.n_tasks = n_tasks
        self.base_window = (int(start), int(end))
        self.lower_bounds = (
            torch.zeros(n_tasks, dtype=torch.float64)
            if lower_bounds is None
            else lower_bounds.detach().to(torch.float64).clone()
        )
        self.total_steps = total_steps
        self.spec = spec or FeatureSpec()
        self.lr0 = lr0
        self.table = FeatureTable(self.spec)
        self._base_sum = torch.zeros(n_tasks, dtype=torch.float64)
        self._base_count = 0
        self.base_losses: Tensor | None = None
        self.losses: Tensor | None = None
        self.gaps: Tensor | None = None
        self.smoothed_gaps: Tensor | None = None
        # EMA of |log gap - log smoothed gap|: the batch losses' relative noise (table v2 only).
        self.noise: Tensor | None = None
        self.history: list[Tensor] = []
        self.last_weights = torch.ones(n_tasks, dtype=torch.float64)
        self.step = -1
        self.lr = lr0 if lr0 is not None else 0.0

    # -- absorbing ------------------------------------------------------------------------------
    def update(self, losses: Tensor, step: int, lr: float) -> None:
        """Absorb the raw losses of training step ``step`` taken at learning rate ``lr``.

        Raises:
            ValueError: Wrong shape, a non-finite loss, or (after the base window) a loss below
                its lower bound ``L*``.
        """
        # The per-step arithmetic runs on numpy views of the float64 tensors: the same IEEE
        # operations (bit for bit), without torch's per-op dispatch, which dominated a batched
        # env's step (N trackers per trainer step).
        values = losses.detach().to("cpu", torch.float64).reshape(-1)
        row = values.numpy()
        if row.shape != (self.n_tasks,):
            raise ValueError(f"expected {self.n_tasks} losses, got shape {tuple(row.shape)}")
        if not np.isfinite(row).all():
            raise ValueError(f"non-finite loss at step {step}: {row.tolist()}")
        if self.lr0 is None:
            self.lr0 = float(lr)
        self.step, self.lr, self.losses = int(step), float(lr), values
        start, end = self.base_window
        if self.base_losses is None and start <= step < end:
            base_sum = self._base_sum.numpy()
            base_sum += row
            self._base_count += 1
        # The base exists from the first step after the window: the window's last step is still
        # trained as a base step (weights 1), as in the IGB paper (L_base is set after the epoch).
        if self.base_losses is None and step >= end and self._base_count > 0:
            self._set_base(self._base_sum / self._base_count)
        if self.base_losses is None:
            return
        lower = self.lower_bounds.numpy()
        if (row < lower).any():
            # A gap below 0 means the declared bound L* is wrong; every gap-based decision
            # (IGBv1, policies, the env's features) would silently run on nonsense.
            bad = np.nonzero(row < lower)[0].tolist()
            raise ValueError(
                f"loss below its lower bound L* at step {step}: "
                + ", ".join(f"task {i} loss {row[i]:.6g} < L* {lower[i]:.6g}" for i in bad)
                + "; gaps (L - L*) / (L_base - L*) would be negative. The benchmark's "
                "lower_bounds must not exceed any loss it can produce: fix the bounds (or the "
                "losses given to the tracker)"
            )
        gaps = (row - lower) / (self.base_losses.numpy() - lower)
        self.gaps = torch.from_numpy(gaps)
        ema = self.spec.ema
        if self.smoothed_gaps is None:
            self.smoothed_gaps = torch.from_numpy(gaps.copy())
        else:
            self.smoothed_gaps = torch.from_numpy(
                ema * self.smoothed_gaps.numpy() + (1.0 - ema) * gaps
            )
        if self.spec.table != "v1":
            tiny = 1e-30
            smoothed = self.smoothed_gaps.numpy()
            dev = np.abs(np.log(np.maximum(gaps, tiny)) - np.log(np.maximum(smoothed, tiny)))
            self.noise = torch.from_numpy(
                dev if self.noise is None else ema * self.noise.numpy() + (1.0 - ema) * dev
            )
        if self._is_snapshot_step(step):
            self.history.append(self.log_gap())
            del self.history[: -(self.spec.history + 1)]

    def _set_base(self, base: Tensor) -> None:
        margin = base - self.lower_bounds
        if not bool((margin > 0).all()):
            raise ValueError(
                f"base losses {base.tolist()} are not above the lower bounds "
                f"{self.lower_bounds.tolist()}; gaps would be undefined"
            )
        self.base_losses = base.clone()

    def record_weights(self, weights: Tensor) -> None:
        """Remember the weights applied at the current step (a feature of the next decision)."""
        self.last_weights = weights.detach().to("cpu", torch.float64).reshape(-1).clone()

    # -- derived state --------------------------------------------------------------------------
    @property
    def has_base(self) -> bool:
        """Whether the base window has ended and the gaps exist."""
        return self.base_losses is not None

    @property
    def progress(self) -> float:
        """Fraction of the budget spent after the current step, in [0, 1]."""
        if not self.total_steps:
            return 0.0
        return min(max((self.step + 1) / self.total_steps, 0.0), 1.0)

    @property
    def lr_ratio(self) -> float:
        """``lr / lr0`` clipped to [0, 1] (a ratio that cannot blow up when the LR decays to 0)."""
        if not self.lr0:
            return 1.0
        return min(max(self.lr / self.lr0, 0.0), 1.0)

    def log_gap(self) -> Tensor:
        """Log of the EMA-smoothed gap, clipped to ``±LOG_CLIP`` (float64 ``[T]``)."""
        assert self.smoothed_gaps is not None, "gaps exist only after the base window"
        return torch.log(self.smoothed_gaps.clamp_min(1e-30)).clamp(-LOG_CLIP, LOG_CLIP)

    def past_log_gaps(self) -> list[Tensor]:
        """The snapshots before the current decision point, oldest first.

        ``history[-1]`` is the snapshot at the latest decision point when the current step is one;
        the older ones precede it.
        """
        return self.history[:-1] if self._is_snapshot_step(self.step) else self.history

    def features(self) -> np.ndarray:
        """The observation vector (float32, task-major, each row within its bounds)."""
        return self.table.compute(self)

    def _is_snapshot_step(self, step: int) -> bool:
        # Snapshots at the last base step and every `stride` steps after it: the env's decision
        # points, so a decision always sees the snapshot of its own moment plus older ones.
        return is_decision_step(step, self.base_window[1], self.spec.stride)

    @property
    def feature_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of ``features()`` (float32)."""
        return self.table.bounds(self.n_tasks)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description of the features (for sidecars and docs)."""
        return self.table.describe(self.n_tasks, self.base_window)

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly."""
        return {
            "base_sum": self._base_sum.clone(),
            "base_count": self._base_count,
            "base_losses": None if self.base_losses is None else self.base_losses.clone(),
            "losses": None if self.losses is None else self.losses.clone(),
            "gaps": None if self.gaps is None else self.gaps.clone(),
            "smoothed_gaps": None if self.smoothed_gaps is None else self.smoothed_gaps.clone(),
            "noise": None if self.noise is None else self.noise.clone(),
            "history": [h.clone() for h in self.history],
            "last_weights": self.last_weights.clone(),
            "step": self.step,
            "lr": self.lr,
            "lr0": self.lr0,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self._base_sum = state["base_sum"].clone()
        self._base_count = int(state["base_count"])
        self.base_losses = state["base_losses"]
        self.losses = state["losses"]
        self.gaps = state["gaps"]
        self.smoothed_gaps = state["smoothed_gaps"]
        self.noise = state.get("noise")
        self.history = [h.clone() for h in state["history"]]
        self.last_weights = state["last_weights"].clone()
        self.step = int(state["step"])
        self.lr = float(state["lr"])
        self.lr0 = state["lr0"]


def is_decision_step(step: int, base_end: int, every: int) -> bool:
    """Whether ``step`` is a decision point: the end of the base window, then every ``every`` steps.

    The env's agent acts, ``PolicyWeighting`` decides and ``GapTracker`` snapshots its log gaps at
    exactly these steps (``every`` = K, the steps an action is held).
    """
    return step >= base_end and (step - base_end) % every == 0


def second_epoch_window(steps_per_epoch: int) -> tuple[int, int]:
    """The IGB paper's base window: every step of the second epoch."""
    return (steps_per_epoch, 2 * steps_per_epoch)


__all__ = ["GapTracker", "is_decision_step", "second_epoch_window"]
