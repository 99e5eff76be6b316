"""GradNorm-style synthetic multi-task regression with controllable task scales."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_backends.benchmarks.base import SPLITS, Benchmark, MetricSpec, SplitData
from mtl_backends.models.hps import HardParameterSharing, mlp


def default_scales(n_tasks: int, low: float = 1.0, high: float = 100.0) -> tuple[float, ...]:
    """Log-spaced output scales ``low .. high`` (T = 3 gives 1, 10, 100)."""
    if n_tasks == 1:
        return (low,)
    return tuple(float(s) for s in np.geomspace(low, high, n_tasks))


class Synthetic(Benchmark):
    """GradNorm's synthetic regression (Chen et al., ICML 2018, §4): tasks that share structure but
    differ in output scale by orders of magnitude.

    Data (seeded by ``seed``): ``x ~ U(-1, 1)^d`` with each row scaled to unit norm; a shared matrix
    ``B ~ N(0, 10²)`` and per-task ``E_t ~ N(0, task_noise_std²)``; targets
    ``y_t = σ_t tanh(x (B + E_t)ᵀ) + noise_t · N(0, 1)``. Model: a ReLU MLP trunk and one linear head
    per task. Loss: per-task MSE (lower bound ``L* = 0``). Metrics: per-task MSE on a split, lower is
    better.

    Args:
        n_tasks: Number of tasks ``T`` (2 to 10 are typical).
        scales: Output scale ``σ_t`` per task; default log-spaced 1 .. 100.
        noise: Label-noise standard deviation per task (an irreducible loss floor); default 0.
        task_noise_std: Standard deviation of the task-specific part ``E_t`` (larger: less related).
        seed: Seed of the data (not of the model or the batch order, which the trainer seeds).
        n_train: Training rows.
        n_val: Validation rows.
        n_test: Test rows.
        input_dim: Input dimension ``d``.
        output_dim: Output dimension per task.
        hidden: Trunk widths.
    """

    def __init__(
        self,
        n_tasks: int = 3,
        scales: Sequence[float] | None = None,
        noise: Sequence[float] | None = None,
        task_noise_std: float = 3.5,
        seed: int = 0,
        n_train: int = 4000,
        n_val: int = 1000,
        n_test: int = 1000,
        input_dim: int = 250,
        output_dim: int = 100,
        hidden: Sequence[int] = (100, 100),
    ) -> None:
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
        scales_t = tuple(float(s) for s in scales) if scales is not None else default_scales(n_tasks)
        noise_t = tuple(float(s) for s in noise) if noise is not None else (0.0,) * n_tasks
        for label, values in (("scales", scales_t), ("noise", noise_t)):
            if len(values) != n_tasks:
                raise ValueError(f"{label} has {len(values)} entries but n_tasks is {n_tasks}")
        if any(s <= 0 for s in scales_t):
            raise ValueError(f"scales must be positive, got {scales_t}")
        if any(s < 0 for s in noise_t):
            raise ValueError(f"noise must be non-negative, got {noise_t}")
        self.name = "synthetic"
        self.task_names = tuple(f"t{i + 1}" for i in range(n_tasks))
        self.metric_specs = tuple(
            MetricSpec(f"{t}_mse", i, higher_is_better=False) for i, t in enumerate(self.task_names)
        )
        self.lower_bounds = torch.zeros(n_tasks)
        self._kwargs: dict[str, Any] = {
            "n_tasks": n_tasks,
            "scales": list(scales_t),
            "noise": list(noise_t),
            "task_noise_std": float(task_noise_std),
            "seed": int(seed),
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
            "input_dim": input_dim,
            "output_dim": output_dim,
            "hidden": list(hidden),
        }
        self._input_dim = input_dim
        self._output_dim = output_dim
        self._hidden = tuple(hidden)
        self._splits = self._generate(
            np.random.default_rng(seed), scales_t, noise_t, task_noise_std, (n_train, n_val, n_test)
        )

    def _generate(
        self,
        rng: np.random.Generator,
        scales: tuple[float, ...],
        noise: tuple[float, ...],
        task_noise_std: float,
        sizes: tuple[int, int, int],
    ) -> dict[str, SplitData]:
        d, o, n_tasks = self._input_dim, self._output_dim, len(scales)
        shared = rng.normal(0.0, 10.0, (o, d))
        specific = rng.normal(0.0, task_noise_std, (n_tasks, o, d))
        splits: dict[str, SplitData] = {}
        for split, n in zip(SPLITS, sizes, strict=True):
            x = rng.uniform(-1.0, 1.0, (n, d))
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            ys = []
            for t in range(n_tasks):
                y = scales[t] * np.tanh(x @ (shared + specific[t]).T)
                if noise[t] > 0:
                    y = y + noise[t] * rng.normal(0.0, 1.0, y.shape)
                ys.append(y)
            splits[split] = SplitData(
                inputs=torch.from_numpy(x.astype(np.float32)),
                targets=torch.from_numpy(np.stack(ys, axis=1).astype(np.float32)),  # [N, T, o]
            )
        return splits

    def split(self, name: str) -> SplitData:
        """The in-memory data of split ``name``; targets are ``[N, T, output_dim]``."""
        self.check_split(name)
        return self._splits[name]

    def build_model(self) -> HardParameterSharing:
        """ReLU trunk ``d -> hidden`` and a linear head ``hidden[-1] -> output_dim`` per task."""
        encoder = mlp((self._input_dim, *self._hidden))
        heads = [nn.Linear(self._hidden[-1], self._output_dim) for _ in self.task_names]
        return HardParameterSharing(encoder, heads)

    def losses(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        """Per-task MSE ``[T]``."""
        return torch.stack([F.mse_loss(out, targets[:, t]) for t, out in enumerate(outputs)])

    def metrics(self, outputs: list[Tensor], targets: Tensor) -> dict[str, float]:
        """Per-task MSE on the given outputs."""
        losses = self.losses(outputs, targets)
        return {m.name: float(losses[m.task]) for m in self.metric_specs}

    def config(self) -> dict[str, Any]:
        """Arguments that rebuild this benchmark."""
        return dict(self._kwargs)
