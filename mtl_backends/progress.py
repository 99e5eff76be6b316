"""The improvable-gap state shared by IGBv1, the environment and exported policies (DESIGN §3).

One ``GapTracker`` absorbs the raw batch losses of every training step and owns:

* the base losses ``L_base[T]``: the mean raw training loss over a base window of steps (by default
  the second epoch, as in the IGB paper);
* the gap ``g_t = (L_t - L*_t) / (L_base,t - L*_t)`` of the current batch, and an EMA of it against
  mini-batch noise;
* a ring buffer of log-gap snapshots taken every ``stride`` steps after the base window;
* the progress fraction of the budget and the LR ratio ``lr_t / lr_0`` clipped to [0, 1];
* ``features()``: a float32 vector laid out by ``feature_table`` (task-major: every feature of task
  1, then task 2, ...; then the global features), each feature clipped to its finite bounds.

The env builds its observation space from ``feature_table`` and an exported policy's sidecar
records it, so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class FeatureSpec:
    """Which features the tracker computes.

    Attributes:
        history: Number of past log-gap snapshots whose change is a feature.
        stride: Steps between snapshots (the env's steps per action, so decisions see fresh ones).
        ema: EMA coefficient of the smoothed gap (0 = no smoothing).
    """

    history: int = 3
    stride: int = 25
    ema: float = 0.9

    def __post_init__(self) -> None:
        if self.history < 0:
            raise ValueError(f"history must be >= 0, got {self.history}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")


@dataclass(frozen=True)
class Feature:
    """One row of the feature table.

    Attributes:
        name: Feature name (per-task features are prefixed with the task name in the layout).
        low: Lower bound (values are clipped to it).
        high: Upper bound.
        per_task: Whether the feature is repeated for every task.
        description: What it measures.
    """

    name: str
    low: float
    high: float
    per_task: bool
    description: str


LOG_CLIP = 10.0


def feature_table(spec: FeatureSpec) -> tuple[Feature, ...]:
    """The named features for ``spec``: per-task features first, then global ones."""
    rows = [
        Feature("log_gap", -LOG_CLIP, LOG_CLIP, True, "log of the EMA-smoothed improvable gap"),
        Feature("raw_log_gap", -LOG_CLIP, LOG_CLIP, True, "log of the current batch's gap"),
    ]
    rows += [
        Feature(
            f"log_gap_change_{j}",
            -LOG_CLIP,
            LOG_CLIP,
            True,
            f"10 x (log_gap now - log_gap {j} snapshot(s) ago); 0 until it exists",
        )
        for j in range(1, spec.history + 1)
    ]
    rows += [
        Feature("weight", 0.0, 1.0, True, "the task's last applied weight divided by T"),
        Feature("progress", 0.0, 1.0, False, "fraction of the step budget spent"),
        Feature("lr_ratio", 0.0, 1.0, False, "current learning rate / initial learning rate"),
    ]
    return tuple(rows)


def feature_layout(
    spec: FeatureSpec, task_names: tuple[str, ...]
) -> list[tuple[str, float, float]]:
    """Flat ``(name, low, high)`` per observation entry, task-major, e.g. ``t1/log_gap``."""
    table = feature_table(spec)
    layout = [(f"{t}/{f.name}", f.low, f.high) for t in task_names for f in table if f.per_task]
    layout += [(f.name, f.low, f.high) for f in table if not f.per_task]
    return layout


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
        self.table = feature_table(self.spec)
        self._base_sum = torch.zeros(n_tasks, dtype=torch.float64)
        self._base_count = 0
        self.base_losses: Tensor | None = None
        self.losses: Tensor | None = None
        self.gaps: Tensor | None = None
        self.smoothed_gaps: Tensor | None = None
        self.history: list[Tensor] = []
        self.last_weights = torch.ones(n_tasks, dtype=torch.float64)
        self.step = -1
        self.lr = lr0 if lr0 is not None else 0.0

    # -- absorbing ------------------------------------------------------------------------------
    def update(self, losses: Tensor, step: int, lr: float) -> None:
        """Absorb the raw losses of training step ``step`` taken at learning rate ``lr``.

        Raises:
            ValueError: Wrong shape or a non-finite loss.
        """
        losses = losses.detach().to("cpu", torch.float64).reshape(-1)
        if losses.shape != (self.n_tasks,):
            raise ValueError(f"expected {self.n_tasks} losses, got shape {tuple(losses.shape)}")
        if not bool(torch.isfinite(losses).all()):
            raise ValueError(f"non-finite loss at step {step}: {losses.tolist()}")
        if self.lr0 is None:
            self.lr0 = float(lr)
        self.step, self.lr, self.losses = int(step), float(lr), losses
        start, end = self.base_window
        if self.base_losses is None and start <= step < end:
            self._base_sum += losses
            self._base_count += 1
        # The base exists from the first step after the window: the window's last step is still
        # trained as a base step (weights 1), as in the IGB paper (L_base is set after the epoch).
        if self.base_losses is None and step >= end and self._base_count > 0:
            self._set_base(self._base_sum / self._base_count)
        if self.base_losses is None:
            return
        gaps = (losses - self.lower_bounds) / (self.base_losses - self.lower_bounds)
        self.gaps = gaps
        ema = self.spec.ema
        if self.smoothed_gaps is None:
            self.smoothed_gaps = gaps.clone()
        else:
            self.smoothed_gaps = ema * self.smoothed_gaps + (1.0 - ema) * gaps
        if self._is_snapshot_step(step):
            self.history.append(self._log_gap())
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

    def _log_gap(self) -> Tensor:
        assert self.smoothed_gaps is not None
        return torch.log(self.smoothed_gaps.clamp_min(1e-30)).clamp(-LOG_CLIP, LOG_CLIP)

    def features(self) -> np.ndarray:
        """The observation vector (float32, task-major, clipped to the table's bounds)."""
        n_task_feats = sum(f.per_task for f in self.table)
        per_task = np.zeros((self.n_tasks, n_task_feats), dtype=np.float64)
        if self.has_base:
            assert self.gaps is not None
            now = self._log_gap()
            per_task[:, 0] = now.numpy()
            per_task[:, 1] = (
                torch.log(self.gaps.clamp_min(1e-30)).clamp(-LOG_CLIP, LOG_CLIP).numpy()
            )
            # history[-1] is the snapshot at the latest decision point; older ones precede it.
            past = self.history[:-1] if self._is_snapshot_step(self.step) else self.history
            for j in range(1, self.spec.history + 1):
                if len(past) >= j:
                    per_task[:, 1 + j] = (
                        (10.0 * (now - past[-j])).clamp(-LOG_CLIP, LOG_CLIP).numpy()
                    )
        per_task[:, -1] = (self.last_weights / self.n_tasks).clamp(0.0, 1.0).numpy()
        out = np.concatenate([per_task.reshape(-1), [self.progress, self.lr_ratio]])
        return out.astype(np.float32)

    def _is_snapshot_step(self, step: int) -> bool:
        # Snapshots at the last base step and every `stride` steps after it: the env's decision
        # points, so a decision always sees the snapshot of its own moment plus older ones.
        first = self.base_window[1]
        return step >= first and (step - first) % self.spec.stride == 0

    @property
    def feature_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of ``features()`` (float32)."""
        low = [f.low for _ in range(self.n_tasks) for f in self.table if f.per_task]
        high = [f.high for _ in range(self.n_tasks) for f in self.table if f.per_task]
        low += [f.low for f in self.table if not f.per_task]
        high += [f.high for f in self.table if not f.per_task]
        return np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description of the features (for sidecars and docs)."""
        return {
            "spec": asdict(self.spec),
            "table": [asdict(f) for f in self.table],
            "n_tasks": self.n_tasks,
            "base_window": list(self.base_window),
        }

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
        self.history = [h.clone() for h in state["history"]]
        self.last_weights = state["last_weights"].clone()
        self.step = int(state["step"])
        self.lr = float(state["lr"])
        self.lr0 = state["lr0"]


def second_epoch_window(steps_per_epoch: int) -> tuple[int, int]:
    """The IGB paper's base window: every step of the second epoch."""
    return (steps_per_epoch, 2 * steps_per_epoch)
