"""NYUv2 (13-class segmentation, depth, surface normals) from a local folder, on SegNet-MTAN.

The preprocessed MTAN data (795 training and 654 test images at 288×384; ``dense.py`` gives the
layout), as used by MTAN, CAGrad, Nash-MTL, FAMO, IMGrad, IGB and LibMTL's SegNet experiments.
Nine metrics: mIoU ↑, pixel accuracy ↑, depth absolute ↓ and relative ↓ error, normal angle
mean ↓ and median ↓, fractions within 11.25° ↑, 22.5° ↑ and 30° ↑.
"""

from __future__ import annotations

from typing import ClassVar

from mtl_backends.benchmarks.dense import DenseBenchmark, DenseLayout, Published

NAMES = (
    "miou",
    "pix_acc",
    "abs_err",
    "rel_err",
    "angle_mean",
    "angle_median",
    "within_11.25",
    "within_22.5",
    "within_30",
)


class NYUv2(DenseBenchmark):
    """NYUv2 from ``path`` (see ``DenseBenchmark`` for the arguments and splits)."""

    name = "nyuv2"
    task_names = ("segmentation", "depth", "normal")
    layout = DenseLayout("nyuv2", ("label", "depth", "normal"), (0, 1, 3), n_classes=13)
    normals = True
    published: ClassVar[Published] = {
        "cagrad": (
            "the single-task baseline of CAGrad (Liu et al., NeurIPS 2021), reused by Nash-MTL "
            "and FAMO: BASE in AvivNavon/nash-mtl experiments/nyuv2/utils.py",
            dict(
                zip(
                    NAMES,
                    (0.3830, 0.6376, 0.6754, 0.2780, 25.01, 19.21, 0.3014, 0.5720, 0.6915),
                    strict=True,
                )
            ),
        ),
        "igb": (
            "IGB's own single-task SegNet runs on its 197 / 457 split of the test images (Dai et "
            "al., UAI 2023): IGB4MTL experiments/nyuv2/utils.py",
            dict(
                zip(
                    NAMES,
                    (0.4116, 0.6570, 0.6074, 0.2400, 24.49, 18.24, 0.3192, 0.5916, 0.7056),
                    strict=True,
                )
            ),
        ),
    }


__all__ = ["NYUv2"]
