"""Dense-prediction benchmarks read from the MTAN ``.npy`` folder layout (NYUv2, Cityscapes).

The layout of the preprocessed data of MTAN, CAGrad, Nash-MTL, FAMO, IMGrad and LibMTL (their
``create_dataset.py`` / ``data.py`` read ``{split}/{kind}/{i}.npy`` by integer index ``i``)::

    ROOT/train/image/0.npy ... N-1.npy   H×W×3 float, RGB in [0, 1]
    ROOT/train/label/i.npy               H×W, class ids, -1 = ignored pixel
    ROOT/train/depth/i.npy               H×W×1 float, 0 = no measurement
    ROOT/train/normal/i.npy              H×W×3 unit vectors, 0 = no measurement (NYUv2 only)
    ROOT/val/...                         the same; the papers' test set

Each item is the image ``[3, H, W]`` and its targets packed into one float tensor ``[C, H, W]``
(label, then depth, then the normal's three channels), so a dense benchmark fits the one-tensor
target of the benchmark contract. Nothing is downloaded: a missing folder or file is an error that
names the expected layout and the first missing file.

Losses (as published): cross-entropy ignoring label -1; L1 over pixels with depth != 0;
``1 - cos`` over pixels with a non-zero normal. Metrics (``DenseMetrics``): mIoU and pixel accuracy
from a confusion matrix over the whole split (label -1 ignored); depth absolute and relative error
over every valid pixel of the split; normal angle mean, median and the fractions within 11.25°,
22.5° and 30° over every valid pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mtl_backends.benchmarks.base import MetricSpec
from mtl_backends.benchmarks.streamed import StreamedBenchmark
from mtl_backends.models.hps import HardParameterSharing
from mtl_backends.models.segnet_mtan import segnet_mtan
from mtl_backends.registry import ConfigError
from mtl_backends.results import Reference


@dataclass(frozen=True)
class DenseLayout:
    """What a dense benchmark's folder holds.

    Attributes:
        benchmark: Benchmark name (for messages).
        kinds: Sub-folders read per item, label first (``label`` may have alternatives).
        channels: Channels of each kind's array (``0``: an ``H×W`` array).
        n_classes: Segmentation classes (labels ``0 .. n_classes-1``, ``-1`` ignored).
        label_alternatives: Folder names accepted for the labels, first found wins.
    """

    benchmark: str
    kinds: tuple[str, ...]
    channels: tuple[int, ...]
    n_classes: int
    label_alternatives: tuple[str, ...] = ("label",)

    def describe(self) -> str:
        """The expected layout, for error messages."""
        label = " or ".join(f"{a}/" for a in self.label_alternatives)
        parts = ", ".join(
            (label if kind == "label" else f"{kind}/") + f" ({self._shape(c)})"
            for kind, c in zip(self.kinds, self.channels, strict=True)
        )
        return (
            f"ROOT/train/ and ROOT/val/ (the papers' test split), each with image/ (H×W×3) and "
            f"{parts} holding 0.npy ... N-1.npy (the preprocessed MTAN / Nash-MTL / LibMTL "
            "layout; igb-rl downloads nothing)"
        )

    @staticmethod
    def _shape(channels: int) -> str:
        return "H×W" if channels == 0 else f"H×W×{channels}"


class DenseFolder(Dataset[tuple[Tensor, Tensor]]):
    """One split of a dense benchmark's folder, checked when built.

    Args:
        root: The data folder (``ROOT``).
        folder: ``train`` or ``val``.
        layout: The expected contents.
        indices: Which items (default all); ``dataset[k]`` reads item ``indices[k]``.
        size: Resize every item to this ``(height, width)`` when read (``None``: as stored);
            images bilinearly (corners aligned), targets by nearest neighbour, so labels stay
            classes, normals stay unit vectors and invalid pixels stay invalid.

    Raises:
        ConfigError: A folder or file is missing, or the first item's arrays have the wrong
            shapes (the message names the expected layout and the file).
    """

    def __init__(
        self,
        root: Path,
        folder: str,
        layout: DenseLayout,
        indices: Sequence[int] | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.layout = layout
        self.size = size
        base = root / folder
        image_dir = base / "image"
        if not image_dir.is_dir():
            raise ConfigError(
                f"{layout.benchmark}: missing folder {image_dir}; expected {layout.describe()}"
            )
        n = len(list(image_dir.glob("*.npy")))
        if n == 0:
            raise ConfigError(
                f"{layout.benchmark}: no .npy files in {image_dir}; expected {layout.describe()}"
            )
        dirs = [image_dir]
        for kind in layout.kinds:
            names = layout.label_alternatives if kind == "label" else (kind,)
            found = next((base / a for a in names if (base / a).is_dir()), None)
            if found is None:
                raise ConfigError(
                    f"{layout.benchmark}: missing folder {base / names[0]}; "
                    f"expected {layout.describe()}"
                )
            dirs.append(found)
        for d in dirs:
            for i in range(n):
                if not (d / f"{i}.npy").is_file():
                    raise ConfigError(
                        f"{layout.benchmark}: missing file {d / f'{i}.npy'} ({n} images in "
                        f"{image_dir}, so {d.name}/ needs 0.npy ... {n - 1}.npy); expected "
                        f"{layout.describe()}"
                    )
        self.dirs = dirs
        self.indices = list(range(n)) if indices is None else list(indices)
        self.n_files = n
        image = np.load(dirs[0] / "0.npy", mmap_mode="r")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ConfigError(
                f"{layout.benchmark}: {dirs[0] / '0.npy'} has shape {image.shape}, expected H×W×3"
            )
        self.height, self.width = int(image.shape[0]), int(image.shape[1])
        out_h, out_w = size if size is not None else (self.height, self.width)
        if out_h % 32 or out_w % 32 or out_h < 32 or out_w < 32:
            what = "size" if size is not None else "images are"
            raise ConfigError(
                f"{layout.benchmark}: {what} {out_h}×{out_w}; SegNet's five 2× poolings need a "
                "height and width divisible by 32 (set size: [h, w] to resize, e.g. [96, 128])"
            )
        for d, c in zip(dirs[1:], layout.channels, strict=True):
            shape = np.load(d / "0.npy", mmap_mode="r").shape
            want = (self.height, self.width) if c == 0 else (self.height, self.width, c)
            # A label saved as H×W×1 is accepted (squeezed when read).
            if shape != want and not (c == 0 and shape == (self.height, self.width, 1)):
                raise ConfigError(
                    f"{layout.benchmark}: {d / '0.npy'} has shape {shape}, expected {want} "
                    f"({self.layout.describe()})"
                )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        i = self.indices[k]
        image = np.load(self.dirs[0] / f"{i}.npy")
        parts = []
        for d, c in zip(self.dirs[1:], self.layout.channels, strict=True):
            a = np.asarray(np.load(d / f"{i}.npy"), dtype=np.float32)
            parts.append(a.reshape(self.height, self.width, 1) if c == 0 else a)
        label = parts[0]
        if label.size and (label.max() >= self.layout.n_classes or label.min() < -1):
            raise ConfigError(
                f"{self.layout.benchmark}: {self.dirs[1] / f'{i}.npy'} holds labels from "
                f"{label.min():g} to {label.max():g}; {self.layout.benchmark} has "
                f"{self.layout.n_classes} classes (0 .. {self.layout.n_classes - 1}, -1 ignored): "
                "is path the right data set?"
            )
        target = np.moveaxis(np.concatenate(parts, axis=2), -1, 0)
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(target))
        if self.size is not None and self.size != (self.height, self.width):
            x = F.interpolate(x[None], self.size, mode="bilinear", align_corners=True)[0]
            y = F.interpolate(y[None], self.size, mode="nearest")[0]
        return x, y


def segmentation_loss(logits: Tensor, label: Tensor) -> Tensor:
    """Cross-entropy over pixels whose label is not -1 (``label`` ``[B, H, W]`` as floats)."""
    return F.cross_entropy(logits, label.long(), ignore_index=-1)


def depth_loss(pred: Tensor, depth: Tensor) -> Tensor:
    """Mean absolute error over pixels with ``depth != 0`` (``[B, 1, H, W]`` both)."""
    mask = depth != 0
    return (pred - depth).abs().masked_select(mask).sum() / mask.sum().clamp_min(1)


def normal_loss(pred: Tensor, normal: Tensor) -> Tensor:
    """``1 - cos`` averaged over pixels with a non-zero normal (``[B, 3, H, W]`` both)."""
    mask = normal.sum(dim=1) != 0
    cos = (pred * normal).sum(dim=1)
    return 1 - cos.masked_select(mask).sum() / mask.sum().clamp_min(1)


SEG_METRICS = (("miou", True), ("pix_acc", True))
DEPTH_METRICS = (("abs_err", False), ("rel_err", False))
NORMAL_METRICS = (
    ("angle_mean", False),
    ("angle_median", False),
    ("within_11.25", True),
    ("within_22.5", True),
    ("within_30", True),
)


def dense_metric_specs(normals: bool) -> tuple[MetricSpec, ...]:
    """The metrics of segmentation (task 0), depth (task 1) and, with ``normals``, normals (2)."""
    groups = [SEG_METRICS, DEPTH_METRICS] + ([NORMAL_METRICS] if normals else [])
    return tuple(
        MetricSpec(name, task, higher) for task, g in enumerate(groups) for name, higher in g
    )


class DenseMetrics:
    """Segmentation, depth and (optionally) normal metrics accumulated over batches.

    Outputs are ``[logits, depth, normal]`` as the models give them; targets are packed as the
    datasets give them (label, depth, normal channels). mIoU averages the IoU of the classes that
    occur in the ground truth or the prediction (a class absent from both has no IoU; the published
    code's mean would be NaN there). The angle median is exact: every valid pixel's angle is kept
    on the host (float32; about 0.3 GB for NYUv2's 654 test images).

    Args:
        n_classes: Segmentation classes (labels ``0 .. n_classes-1``; others are ignored).
        normals: Whether the third task is surface normals.
    """

    def __init__(self, n_classes: int, normals: bool) -> None:
        self.n_classes = n_classes
        self.normals = normals
        self.confusion = torch.zeros(n_classes, n_classes, dtype=torch.int64)
        self.abs_sum = 0.0
        self.rel_sum = 0.0
        self.depth_count = 0
        self.angles: list[Tensor] = []

    def update(self, outputs: list[Tensor], targets: Tensor) -> None:
        """Absorb one batch."""
        n = self.n_classes
        label = targets[:, 0]
        pred = outputs[0].argmax(dim=1)
        valid = (label >= 0) & (label < n)
        index = n * label[valid].long() + pred[valid]
        self.confusion += torch.bincount(index, minlength=n * n).reshape(n, n).cpu()
        depth = targets[:, 1:2]
        mask = depth != 0
        err = (outputs[1] - depth).abs().masked_select(mask).double()
        self.abs_sum += float(err.sum())
        self.rel_sum += float((err / depth.masked_select(mask).double().abs()).sum())
        self.depth_count += int(mask.sum())
        if self.normals:
            normal = targets[:, 2:5]
            valid_n = normal.sum(dim=1) != 0
            cos = (outputs[2] * normal).sum(dim=1).masked_select(valid_n).clamp(-1.0, 1.0)
            self.angles.append(torch.rad2deg(torch.acos(cos.double())).float().cpu())

    def compute(self) -> dict[str, float]:
        """The metrics of every batch absorbed."""
        h = self.confusion.double()
        tp = torch.diagonal(h)
        union = h.sum(0) + h.sum(1) - tp
        present = union > 0
        out = {
            "miou": float((tp[present] / union[present]).mean()) if bool(present.any()) else 0.0,
            "pix_acc": float(tp.sum() / h.sum().clamp_min(1)),
            "abs_err": self.abs_sum / max(self.depth_count, 1),
            "rel_err": self.rel_sum / max(self.depth_count, 1),
        }
        if self.normals:
            angles = torch.cat(self.angles).double() if self.angles else torch.zeros(1)
            out["angle_mean"] = float(angles.mean())
            out["angle_median"] = float(np.median(angles.numpy()))
            for name, limit in (("within_11.25", 11.25), ("within_22.5", 22.5), ("within_30", 30)):
                out[name] = float((angles < limit).double().mean())
        return out


Published = Mapping[str, tuple[str, Mapping[str, float]]]
"""Published single-task numbers: source -> (citation, metric name -> value)."""


class DenseBenchmark(StreamedBenchmark):
    """A dense benchmark on SegNet-MTAN, read from a folder in the MTAN layout.

    Subclasses set the class attributes (``name``, ``task_names``, ``layout``, ``normals``,
    ``published``) and nothing else.

    Splits: ``train`` is ``ROOT/train`` (without its last ``val_images`` items); ``test`` is
    ``ROOT/val``, the papers' test set; ``val`` is the last ``val_images`` training items, or with
    ``val_images: 0`` (the papers' protocol, which has no validation split) the test set itself,
    so select the reported step with ``final`` there.

    Args:
        path: The data folder ``ROOT`` (required; nothing is downloaded).
        width: SegNet-MTAN's first-level filters (published 64; tests use 4).
        val_images: Training items held out as the validation split (0: validate on test).
        train_images: Use only the first this many training items (CPU-sized runs).
        eval_images: Use only the first this many test (and validation) items.
        size: Resize every item to ``[height, width]`` when read (both divisible by 32; e.g.
            ``[96, 128]`` for a CPU-sized NYUv2); ``None``: as stored. Metrics are then those of
            the resized targets, not comparable with the published numbers.

    Raises:
        ConfigError: No path, a missing or incomplete folder (naming the layout and the missing
            file), or counts that leave a split empty.
    """

    layout: DenseLayout
    normals: bool
    published: ClassVar[Published]
    """Published single-task numbers on the test split: source -> (citation, metric -> value)."""

    def __init__(
        self,
        path: str | None = None,
        width: int = 64,
        val_images: int = 0,
        train_images: int | None = None,
        eval_images: int | None = None,
        size: Sequence[int] | None = None,
    ) -> None:
        if path is None:
            raise ConfigError(
                f"benchmark {self.name} needs path: the data folder, {self.layout.describe()}"
            )
        if width < 1 or val_images < 0:
            raise ConfigError(f"{self.name}: width must be >= 1 and val_images >= 0")
        if size is not None and len(size) != 2:
            raise ConfigError(f"{self.name}: size must be [height, width], got {list(size)}")
        shape = None if size is None else (int(size[0]), int(size[1]))
        root = Path(path).expanduser()
        if not root.is_dir():
            raise ConfigError(
                f"{self.name}: data folder {root} does not exist; expected {self.layout.describe()}"
            )
        train_all = DenseFolder(root, "train", self.layout, size=shape)
        test_all = DenseFolder(root, "val", self.layout, size=shape)
        n_train = train_all.n_files - val_images
        if train_images is not None:
            n_train = min(n_train, train_images)
        n_eval = test_all.n_files if eval_images is None else min(test_all.n_files, eval_images)
        if n_train < 1 or n_eval < 1:
            raise ConfigError(
                f"{self.name}: {train_all.n_files} training and {test_all.n_files} test images "
                f"leave an empty split with val_images={val_images}, train_images={train_images}, "
                f"eval_images={eval_images}"
            )
        self._datasets: dict[str, DenseFolder] = {
            "train": DenseFolder(root, "train", self.layout, range(n_train), shape),
            "test": DenseFolder(root, "val", self.layout, range(n_eval), shape),
        }
        if val_images > 0:
            held = range(train_all.n_files - val_images, train_all.n_files)
            if eval_images is not None:
                held = held[:eval_images]
            self._datasets["val"] = DenseFolder(root, "train", self.layout, held, shape)
        else:
            self._datasets["val"] = self._datasets["test"]
        train_all[0]  # a label outside the classes (another data set's folder) fails here
        self.image_size = shape or (train_all.height, train_all.width)
        self.metric_specs = dense_metric_specs(self.normals)
        self.lower_bounds = torch.zeros(len(self.task_names))
        self._width = width
        self._kwargs: dict[str, Any] = {
            "path": str(path),
            "width": width,
            "val_images": val_images,
            "train_images": train_images,
            "eval_images": eval_images,
            "size": None if shape is None else list(shape),
        }

    def dataset(self, name: str) -> Dataset[tuple[Tensor, Tensor]]:
        """The items of split ``name``."""
        self.check_split(name)
        return self._datasets[name]

    def metric_accumulator(self) -> DenseMetrics:
        """A fresh ``DenseMetrics``."""
        return DenseMetrics(self.layout.n_classes, self.normals)

    def build_model(self) -> HardParameterSharing:
        """SegNet-MTAN with a segmentation, a depth and (NYUv2) a unit-normal head."""
        channels = [self.layout.n_classes, 1] + ([3] if self.normals else [])
        norms = [False, False] + ([True] if self.normals else [])
        return segnet_mtan(channels, self._width, norms)

    def losses(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        """Cross-entropy, masked L1 depth and (NYUv2) masked ``1 - cos``: ``[T]``."""
        losses = [
            segmentation_loss(outputs[0], targets[:, 0]),
            depth_loss(outputs[1], targets[:, 1:2]),
        ]
        if self.normals:
            losses.append(normal_loss(outputs[2], targets[:, 2:5]))
        return torch.stack(losses)

    def published_reference(self, source: str | None = None) -> Reference:
        """Published single-task metrics as a Δm / Δp reference (``MTLTrainer(reference=...)``).

        They are test-split numbers of the full protocol (full-size data, full width, the
        published budget); ``val`` gets them too when it is the test set (``val_images: 0``).

        Args:
            source: Which publication (default: the first in ``published``).

        Raises:
            ValueError: An unknown source (the message lists the known ones).
        """
        key = next(iter(self.published)) if source is None else source
        if key not in self.published:
            raise ValueError(
                f"{self.name}: unknown reference source {key!r}; valid choices: "
                f"{', '.join(self.published)}"
            )
        values = dict(self.published[key][1])
        ref: Reference = {"test": values}
        if self._datasets["val"] is self._datasets["test"]:
            ref["val"] = dict(values)
        return ref

    def config(self) -> dict[str, Any]:
        """Arguments that rebuild this benchmark."""
        return dict(self._kwargs)


__all__ = [
    "DenseBenchmark",
    "DenseFolder",
    "DenseLayout",
    "DenseMetrics",
    "Published",
    "dense_metric_specs",
    "depth_loss",
    "normal_loss",
    "segmentation_loss",
]
