"""Cityscapes (7-class segmentation, inverse depth) from a local folder, on SegNet-MTAN.

The preprocessed MTAN data at 128×256 (2975 training and 500 test images; ``dense.py`` gives the
layout; the labels in ``label_7/`` as CAGrad, FAMO and IMGrad read them, or ``label/`` as LibMTL
does). The depth is inverse depth (disparity), so relative errors are large (published STL 27.77).
Four metrics: mIoU ↑, pixel accuracy ↑, depth absolute ↓ and relative ↓ error.
"""

from __future__ import annotations

from typing import ClassVar

from mtl_backends.benchmarks.dense import DenseBenchmark, DenseLayout, Published


class Cityscapes(DenseBenchmark):
    """Cityscapes from ``path`` (see ``DenseBenchmark`` for the arguments and splits)."""

    name = "cityscapes"
    task_names = ("segmentation", "depth")
    layout = DenseLayout("cityscapes", ("label", "depth"), (0, 1), 7, ("label_7", "label"))
    normals = False
    published: ClassVar[Published] = {
        "cagrad": (
            "the single-task baseline of CAGrad (Liu et al., NeurIPS 2021), reused by FAMO and "
            "IMGrad: base in Cranial-XIX/CAGrad cityscapes/plot.py and Cranial-XIX/FAMO "
            "experiments/cityscapes/utils.py",
            {"miou": 0.7401, "pix_acc": 0.9316, "abs_err": 0.0125, "rel_err": 27.77},
        ),
    }


__all__ = ["Cityscapes"]
