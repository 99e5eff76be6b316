"""The two-objective toy landscape of CAGrad, Nash-MTL and FAMO.

The "model" is a point ``x = (x1, x2)`` in the plane and the two task losses are closed-form
functions of it (data.md §2.1). The data splits are dummy rows that the losses ignore; they exist
so that the ordinary ``MTLTrainer`` (batches, epochs, the gap tracker's windows) runs unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mtl_backends.benchmarks.base import SPLITS, Benchmark, MetricSpec, SplitData
from mtl_backends.models.hps import HardParameterSharing

TOY_STARTS: tuple[tuple[float, float], ...] = (
    (-8.5, 7.5),
    (0.0, 0.0),
    (9.0, 9.0),
    (-7.5, -0.5),
    (9.0, -1.0),
)
"""The five starting points of Nash-MTL and FAMO (CAGrad uses the 1st, 3rd and (-8.5, -5))."""

PARETO_X2 = -8.3552
"""The Pareto set used for plots and metrics: ``x2 = PARETO_X2``, ``x1 ∈ [-7, 7]``."""

PARETO_X1 = 7.0
CLAMP = 5e-6


def toy_losses(x: Tensor, scale: float = 0.1) -> Tensor:
    """The two toy losses at points ``x``.

    Args:
        x: Points ``[..., 2]``.
        scale: Factor ``s`` on the first loss (0.1 in Nash-MTL and FAMO, 1 in CAGrad).

    Returns:
        Losses ``[..., 2]``: ``(s·L1, L2)``.
    """
    x1, x2 = x[..., 0], x[..., 1]
    c1 = torch.clamp(torch.tanh(x2 / 2), min=0.0)
    c2 = torch.clamp(torch.tanh(-x2 / 2), min=0.0)
    f1_log = torch.log(torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), min=CLAMP)) + 6
    f2_log = torch.log(torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), min=CLAMP)) + 6
    f1_sq = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    f2_sq = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    l1 = scale * (c1 * f1_log + c2 * f1_sq)
    l2 = c1 * f2_log + c2 * f2_sq
    return torch.stack([l1, l2], dim=-1)


def pareto_distance(x: np.ndarray | Sequence[float]) -> float:
    """Euclidean distance of a point to the Pareto segment ``x2 = -8.3552, x1 ∈ [-7, 7]``."""
    x1, x2 = (float(v) for v in np.asarray(x, dtype=np.float64).reshape(2))
    return math.hypot(max(abs(x1) - PARETO_X1, 0.0), x2 - PARETO_X2)


class ToyPoint(HardParameterSharing):
    """The toy "model": the shared parameter is the point ``x``; there are no task parameters.

    ``forward`` ignores its input and returns the point, broadcast to the batch, once per task.
    Each head holds an unused zero-sized placeholder parameter so that code which backpropagates
    into the task parameters (the trainer's Jacobian path) has a non-empty parameter list; it never
    receives a gradient and is skipped by the optimizer.

    Args:
        start: The starting point ``(x1, x2)``.
        n_tasks: Number of outputs (2).
    """

    def __init__(self, start: Sequence[float], n_tasks: int = 2) -> None:
        encoder = nn.Module()
        encoder.register_parameter(
            "x", nn.Parameter(torch.tensor([float(v) for v in start], dtype=torch.float32))
        )
        heads = []
        for _ in range(n_tasks):
            head = nn.Module()
            head.register_parameter("placeholder", nn.Parameter(torch.zeros(0)))
            heads.append(head)
        super().__init__(encoder, heads)

    @property
    def point(self) -> Tensor:
        """The current point ``x`` ``[2]`` (a view of the parameter)."""
        x = self.encoder.x
        assert isinstance(x, Tensor)
        return x

    def forward(self, x: Tensor) -> list[Tensor]:
        """The point broadcast to ``[batch, 2]``, once per task."""
        # ``repeat`` (not a view), so outputs made under ``no_grad`` do not require gradients.
        out = self.point.unsqueeze(0).repeat(int(x.shape[0]), 1)
        return [out for _ in self.heads]


class Toy(Benchmark):
    """The CAGrad / Nash-MTL / FAMO two-objective toy landscape (data.md §2.1).

    Losses are ``(s·L1(x), L2(x))`` with ``s = scale`` (0.1 makes the tasks imbalanced, as in
    Nash-MTL and FAMO). Both are negative near the optimum, so the declared lower bounds are FAMO's
    ``L* = (-21·s, -21)``: the reachable minima are ``-20·s`` and ``-20`` (the quadratic branches,
    with ``c ≤ 1``; the log branches stay above ``log(5·10⁻⁶) + 6 ≈ -6.2``), so the log transform
    ``log(L - L* + eps)`` is always defined. Train with Adam, lr 1e-3, for 35,000 (Nash-MTL) to
    50,000 (FAMO) steps.

    Metrics (on any split; the inputs are ignored): ``l1`` and ``l2``, the final losses (lower is
    better; ``metric_specs``). ``metrics`` also returns the diagnostics ``pareto_dist`` (distance to
    the Pareto set, lower is better; see ``DIAGNOSTICS``), ``x1`` and ``x2``. The diagnostics stay
    out of ``metric_specs`` because a converged run has distance 0, which cannot be a Δm reference.

    Args:
        start: Index ``0..4`` into ``TOY_STARTS``.
        scale: Factor ``s`` on the first loss.
        n_rows: Dummy rows per split (sets the number of steps per epoch with the batch size).
    """

    DIAGNOSTICS: Mapping[str, bool] = {"pareto_dist": False}
    """Extra entries of ``metrics`` with their direction (``True``: higher is better)."""

    def __init__(self, start: int = 0, scale: float = 0.1, n_rows: int = 10000) -> None:
        if not 0 <= start < len(TOY_STARTS):
            raise ValueError(f"start must be an index 0..{len(TOY_STARTS) - 1}, got {start}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if n_rows < 1:
            raise ValueError(f"n_rows must be >= 1, got {n_rows}")
        self.name = "toy"
        self.task_names = ("f1", "f2")
        self.metric_specs = (
            MetricSpec("l1", 0, higher_is_better=False),
            MetricSpec("l2", 1, higher_is_better=False),
        )
        self.lower_bounds = torch.tensor([-21.0 * scale, -21.0])
        self.start = TOY_STARTS[start]
        self.scale = float(scale)
        self._kwargs: dict[str, Any] = {"start": start, "scale": float(scale), "n_rows": n_rows}
        rows = SplitData(inputs=torch.zeros(n_rows, 1), targets=torch.zeros(n_rows, 1))
        self._splits = dict.fromkeys(SPLITS, rows)

    def split(self, name: str) -> SplitData:
        """Dummy rows (inputs ``[n_rows, 1]`` and targets ``[n_rows, 1]`` of zeros)."""
        self.check_split(name)
        return self._splits[name]

    def build_model(self) -> ToyPoint:
        """The point model at the chosen start (deterministic: no random initialisation)."""
        return ToyPoint(self.start, self.n_tasks)

    def losses(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        """The two losses ``[2]`` at the point (the first row of the outputs)."""
        return toy_losses(outputs[0][0], self.scale)

    def metrics(self, outputs: list[Tensor], targets: Tensor) -> dict[str, float]:
        """Final losses ``l1``, ``l2``, the Pareto distance and the point."""
        point = outputs[0][0].detach().cpu()
        l1, l2 = (float(v) for v in toy_losses(point, self.scale))
        x = point.numpy()
        return {
            "l1": l1,
            "l2": l2,
            "pareto_dist": pareto_distance(x),
            "x1": float(x[0]),
            "x2": float(x[1]),
        }

    def config(self) -> dict[str, Any]:
        """Arguments that rebuild this benchmark."""
        return dict(self._kwargs)


class TrajectoryRecorder:
    """A ``fit`` callback that records the toy point after every step.

    Example:
        ``rec = TrajectoryRecorder(); trainer.fit(callbacks=[rec]); rec.array()``
    """

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def __call__(self, trainer: Any, result: Any) -> None:
        """Append the current point of ``trainer.model`` (a ``ToyPoint``)."""
        x = trainer.model.point.detach().cpu().tolist()
        self.points.append((float(x[0]), float(x[1])))

    def array(self) -> np.ndarray:
        """The recorded points ``[steps, 2]``."""
        return np.asarray(self.points, dtype=np.float64).reshape(-1, 2)


def plot_toy_trajectories(
    trajectories: Mapping[str, Sequence[np.ndarray]] | Sequence[np.ndarray],
    path: str | Path,
    scale: float = 0.1,
    title: str | None = None,
) -> Path:
    """Plot trajectories over the contours of ``s·L1 + L2`` and write a PNG (Agg canvas).

    Args:
        trajectories: Arrays ``[steps, 2]`` of points (one per start), or a mapping from a method
            name to such arrays (one panel per method).
        path: Output PNG file (parent folders are created).
        scale: The ``s`` used for the contours.
        title: Figure title.

    Returns:
        The written path.
    """
    # The Agg canvas is used directly (no pyplot), so the caller's matplotlib backend is untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = dict(trajectories) if isinstance(trajectories, Mapping) else {"": trajectories}
    grid = np.linspace(-10.0, 10.0, 200)
    xx, yy = np.meshgrid(grid, grid)
    pts = torch.from_numpy(np.stack([xx, yy], axis=-1))
    zz = toy_losses(pts, scale).sum(-1).numpy()
    fig = Figure(figsize=(4.5 * len(panels), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, paths) in zip(axes[0], panels.items(), strict=True):
        ax.contourf(xx, yy, zz, levels=30, cmap="Greys", alpha=0.6)
        ax.plot(
            [-PARETO_X1, PARETO_X1],
            [PARETO_X2, PARETO_X2],
            color="tab:green",
            lw=3,
            label="Pareto set",
        )
        for i, traj in enumerate(paths):
            arr = np.asarray(traj, dtype=np.float64).reshape(-1, 2)
            color = f"C{i % 10}"
            ax.plot(arr[:, 0], arr[:, 1], color=color, lw=1.5)
            ax.scatter(arr[:1, 0], arr[:1, 1], color=color, marker="o", s=25, zorder=3)
            ax.scatter(arr[-1:, 0], arr[-1:, 1], color=color, marker="*", s=60, zorder=3)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        if name:
            ax.set_title(name)
    axes[0][0].legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
