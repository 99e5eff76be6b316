"""Multi-Digits: pairs of scikit-learn's bundled 8×8 digits on a 12×12 canvas (data.md §2.6)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_backends.benchmarks.base import SPLITS, Benchmark, MetricSpec, SplitData
from mtl_backends.models.hps import HardParameterSharing

CANVAS = 12
"""Canvas side: the left digit sits at ``[0:8, 0:8]``, the right one at ``[4:12, 4:12]``."""


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (no download): images ``[1797, 8, 8]`` in [0, 1], labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float32) / 16.0
    return images, np.asarray(digits.target, dtype=np.int64)


def compose_pairs(images: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Paste ``images[left]`` at the top left and ``images[right]`` at the bottom right.

    Args:
        images: Source images ``[M, 8, 8]``.
        left: Indices of the left digits ``[N]``.
        right: Indices of the right digits ``[N]``.

    Returns:
        Canvases ``[N, 12, 12]``; the overlap ``[4:8, 4:8]`` takes the element-wise maximum.
    """
    n = len(left)
    canvas = np.zeros((n, CANVAS, CANVAS), dtype=np.float32)
    canvas[:, 0:8, 0:8] = images[left]
    canvas[:, 4:12, 4:12] = np.maximum(canvas[:, 4:12, 4:12], images[right])
    return canvas


class DigitsCNN(nn.Module):
    """A small CNN trunk mapping ``[N, 1, 12, 12]`` to ``[N, width]``.

    Two 3×3 conv blocks, each followed by 2×2 max pooling, then a dense layer.

    Args:
        channels: Channels of the two conv layers.
        width: Size of the shared representation.
    """

    def __init__(self, channels: tuple[int, int] = (16, 32), width: int = 128) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 6×6
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 3×3
            nn.Flatten(),
            nn.Linear(c2 * 9, width),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """The shared representation ``[N, width]``."""
        out: Tensor = self.features(x)
        return out


class MultiDigits(Benchmark):
    """Left class, right class and digit sum of two overlapping sklearn digits.

    Data (seeded by ``seed``): the 1797 images are first split into disjoint train / val / test
    pools (``pool_fractions``), then ``n_train`` / ``n_val`` / ``n_test`` pairs are drawn uniformly
    with replacement within each pool, so no source image of a test pair appears in a training
    pair. Inputs ``[N, 1, 12, 12]``; targets ``[N, 3]`` = (left class, right class, left + right).

    Tasks: ``left`` and ``right`` (10-way cross-entropy) and ``sum`` (MSE on the 0..18 sum, a
    loss about 10-30× larger than the cross-entropies at the start). All lower bounds ``L* = 0``.
    Model: a small CNN (``DigitsCNN``) with linear heads. Metrics: ``left_acc``, ``right_acc``
    (higher is better), ``sum_mae`` and ``sum_mse`` (lower is better).

    Args:
        seed: Seed of the pools and the pairs.
        n_train: Training pairs.
        n_val: Validation pairs.
        n_test: Test pairs.
        pool_fractions: Fractions of the source images in the train and val pools (the rest is
            the test pool).
        channels: Conv channels of the trunk.
        width: Width of the shared representation.
    """

    def __init__(
        self,
        seed: int = 0,
        n_train: int = 20000,
        n_val: int = 2000,
        n_test: int = 2000,
        pool_fractions: tuple[float, float] = (0.6, 0.2),
        channels: tuple[int, int] = (16, 32),
        width: int = 128,
    ) -> None:
        f_train, f_val = (float(f) for f in pool_fractions)
        if f_train <= 0 or f_val <= 0 or f_train + f_val >= 1:
            raise ValueError(
                f"pool_fractions must be positive and sum to < 1 (the rest is the test pool), "
                f"got {pool_fractions}"
            )
        self.name = "multi_digits"
        self.task_names = ("left", "right", "sum")
        self.metric_specs = (
            MetricSpec("left_acc", 0, higher_is_better=True),
            MetricSpec("right_acc", 1, higher_is_better=True),
            MetricSpec("sum_mae", 2, higher_is_better=False),
            MetricSpec("sum_mse", 2, higher_is_better=False),
        )
        self.lower_bounds = torch.zeros(3)
        self._channels = (int(channels[0]), int(channels[1]))
        self._width = int(width)
        self._kwargs: dict[str, Any] = {
            "seed": int(seed),
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
            "pool_fractions": [f_train, f_val],
            "channels": list(self._channels),
            "width": self._width,
        }
        images, labels = load_digit_images()
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(images))
        cut1 = round(f_train * len(images))
        cut2 = cut1 + round(f_val * len(images))
        self.pools: dict[str, np.ndarray] = {
            "train": np.sort(order[:cut1]),
            "val": np.sort(order[cut1:cut2]),
            "test": np.sort(order[cut2:]),
        }
        """Indices of the source images (into sklearn's digits) each split draws from."""
        self.sources: dict[str, np.ndarray] = {}
        """Per split, the source image indices ``[N, 2]`` (left, right) of every pair."""
        self._splits: dict[str, SplitData] = {}
        for split, n in zip(SPLITS, (n_train, n_val, n_test), strict=True):
            pool = self.pools[split]
            pairs = pool[rng.integers(0, len(pool), size=(n, 2))]
            self.sources[split] = pairs
            x = compose_pairs(images, pairs[:, 0], pairs[:, 1])
            y_left, y_right = labels[pairs[:, 0]], labels[pairs[:, 1]]
            targets = np.stack([y_left, y_right, y_left + y_right], axis=1).astype(np.float32)
            self._splits[split] = SplitData(
                inputs=torch.from_numpy(x).unsqueeze(1), targets=torch.from_numpy(targets)
            )

    def split(self, name: str) -> SplitData:
        """Inputs ``[N, 1, 12, 12]`` and targets ``[N, 3]`` (left, right, sum) as floats."""
        self.check_split(name)
        return self._splits[name]

    def build_model(self) -> HardParameterSharing:
        """``DigitsCNN`` trunk; heads ``width -> 10``, ``width -> 10`` and ``width -> 1``."""
        heads = [nn.Linear(self._width, 10), nn.Linear(self._width, 10), nn.Linear(self._width, 1)]
        return HardParameterSharing(DigitsCNN(self._channels, self._width), heads)

    def losses(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        """Cross-entropy (left), cross-entropy (right), MSE (sum): ``[3]``."""
        return torch.stack(
            [
                F.cross_entropy(outputs[0], targets[:, 0].long()),
                F.cross_entropy(outputs[1], targets[:, 1].long()),
                F.mse_loss(outputs[2].squeeze(1), targets[:, 2]),
            ]
        )

    def metrics(self, outputs: list[Tensor], targets: Tensor) -> dict[str, float]:
        """Accuracies of the two classes, MAE and MSE of the sum."""
        err = outputs[2].squeeze(1) - targets[:, 2]
        return {
            "left_acc": float((outputs[0].argmax(1) == targets[:, 0].long()).float().mean()),
            "right_acc": float((outputs[1].argmax(1) == targets[:, 1].long()).float().mean()),
            "sum_mae": float(err.abs().mean()),
            "sum_mse": float((err**2).mean()),
        }

    def config(self) -> dict[str, Any]:
        """Arguments that rebuild this benchmark."""
        return dict(self._kwargs)
