"""GradNorm-style synthetic multi-task problems with seeded samplers of problem variations.

Task scales, label-noise floors, per-task label fractions, task relatedness and task kinds
(regression or classification) are controllable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_backends.benchmarks.base import SPLITS, Benchmark, MetricSpec, SplitData
from mtl_backends.models.hps import HardParameterSharing, mlp

SHARED_STD = 10.0
"""Standard deviation of the shared generator ``B`` (GradNorm's N(0, 10), read as a std)."""


def default_scales(n_tasks: int, low: float = 1.0, high: float = 100.0) -> tuple[float, ...]:
    """Log-spaced output scales ``low .. high`` (T = 3 gives 1, 10, 100)."""
    if n_tasks == 1:
        return (low,)
    return tuple(float(s) for s in np.geomspace(low, high, n_tasks))


class Synthetic(Benchmark):
    """GradNorm's synthetic regression (Chen et al., ICML 2018, §4).

    Tasks share structure but differ in output scale by orders of magnitude.

    Data (seeded by ``seed``): ``x ~ U(-1, 1)^d`` with each row scaled to unit norm; per task a
    generator ``W_t = B + E_t`` with a shared part ``B`` and a task-specific part ``E_t``; targets
    ``y_t = σ_t tanh(x W_tᵀ) + noise_t · N(0, 1)``. Model: a ReLU MLP trunk and one linear head per
    task. Loss: per-task MSE (lower bound ``L* = 0``). Metrics: per-task MSE on a split, lower is
    better.

    Relatedness. By default ``B ~ N(0, 10²)`` and ``E_t ~ N(0, task_noise_std²)`` (GradNorm's
    recipe; the correlation of two tasks' generators is ``100 / (100 + task_noise_std²)``, 0.89 for
    the default 3.5). With ``relatedness = r ∈ [0, 1]`` the total generator variance
    ``v = 10² + task_noise_std²`` is kept and split as ``B ~ N(0, r·v)``, ``E_t ~ N(0, (1 - r)·v)``:
    ``r = 1`` makes all tasks the same function up to scale, ``r = 0`` makes them independent.

    Label fractions. With ``fractions``, task ``t`` sees labels for a fixed, seeded subset of
    ``round(fractions[t] · n_train)`` training rows (at least one). The targets then carry one extra
    channel, ``targets[:, t, -1]``, holding the label mask (1: labelled); val and test rows are all
    labelled. The training loss of task ``t`` is the MSE averaged over the labelled rows of the
    batch. A batch without any labelled row for a task (probability ``(1 - f)^batch_size``, e.g.
    3·10⁻⁵ for ``f = 0.1`` and batch 100) uses its first row instead, so the loss is never 0 or NaN;
    keep ``f · batch_size ≥ 10`` for that fallback to stay negligible.

    Args:
        n_tasks: Number of tasks ``T`` (2 to 10 are typical).
        scales: Output scale ``σ_t`` per task; default log-spaced 1 .. 100.
        noise: Label-noise standard deviation per task (an irreducible loss floor ``noise_t²``);
            default 0.
        task_noise_std: Standard deviation of the task-specific part ``E_t`` (larger: less related).
        seed: Seed of the data (not of the model or the batch order, which the trainer seeds).
        n_train: Training rows.
        n_val: Validation rows.
        n_test: Test rows.
        input_dim: Input dimension ``d``.
        output_dim: Output dimension per task.
        hidden: Trunk widths.
        relatedness: Shared fraction of the generator variance in ``[0, 1]``; ``None`` keeps
            GradNorm's ``B + E_t`` with ``task_noise_std``.
        fractions: Fraction of training rows labelled per task, each in ``(0, 1]``; ``None``: all.
        kinds: Per task ``regression`` (MSE on ``σ_t tanh(x W_tᵀ)``, the GradNorm task) or
            ``classification`` (cross-entropy: the class is the argmax over the ``output_dim``
            outputs of ``σ_t tanh(x W_tᵀ) + noise``, so the label noise is ``noise_t / σ_t``;
            the head's outputs are logits, the metric is accuracy); ``None``: all regression.
        classes: Per task, the number of classes of a classification task (the class is the
            argmax over the first ``classes_t`` of the ``output_dim`` outputs; fewer classes make
            an easier task, whose cross-entropy approaches 0 as in multi_digits); entries of
            regression tasks are ignored. ``None``: ``output_dim`` classes. Needs ``kinds``.

    Target layout. Regression only: ``[N, T, output_dim]``; with ``fractions`` a label-mask
    channel follows (``[N, T, output_dim + 1]``). With ``kinds`` (typed layout) the targets are
    ``[N, T, output_dim + 2]``: the values (a one-hot class for classification), the label mask
    (all ones without ``fractions``) and a kind flag (1 for classification). The losses read the
    kind from the data, so instances with different kinds share one losses function (and stack:
    ``mtl_backends.stacked``).
    """

    KINDS: ClassVar[tuple[str, ...]] = ("regression", "classification")

    WIDE_RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "scales": (1.0, 1000.0),
        "noise": (0.0, 0.3),
        "fractions": (0.1, 1.0),
        "relatedness": (0.0, 1.0),
        "classification": (0.3, 0.3),
    }
    """Ranges of ``sample_variation(..., family="wide")``: scales log-uniform over three decades,
    noise floors as a multiple of the scale, fractions and relatedness uniform, and the
    probability that a task is a classification."""

    VARIATION_FAMILIES: ClassVar[tuple[str, ...]] = ("default", "wide", "wide2")
    """Families of ``sample_variation``."""

    WIDE2_CLASSES: ClassVar[tuple[int, ...]] = (2, 4, 16)
    """Numbers of classes a classification task of the ``wide2`` family draws from (uniformly)."""

    DEFAULT_OUTPUT_DIM: ClassVar[int] = 100
    """``output_dim``'s default (caps ``wide2``'s classes when the caller does not fix it)."""

    VARIATION_RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "scales": (1.0, 100.0),
        "noise": (0.0, 0.2),
        "fractions": (0.1, 1.0),
        "relatedness": (0.2, 1.0),
    }
    """Ranges of ``sample_variation``: ``scales`` log-uniform; ``noise`` as a multiple of the
    task's scale; ``fractions`` and ``relatedness`` uniform."""

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
        output_dim: int = DEFAULT_OUTPUT_DIM,
        hidden: Sequence[int] = (100, 100),
        relatedness: float | None = None,
        fractions: Sequence[float] | None = None,
        kinds: Sequence[str] | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
        scales_t = (
            tuple(float(s) for s in scales) if scales is not None else default_scales(n_tasks)
        )
        noise_t = tuple(float(s) for s in noise) if noise is not None else (0.0,) * n_tasks
        fractions_t = None if fractions is None else tuple(float(f) for f in fractions)
        for label, values in (("scales", scales_t), ("noise", noise_t), ("fractions", fractions_t)):
            if values is not None and len(values) != n_tasks:
                raise ValueError(f"{label} has {len(values)} entries but n_tasks is {n_tasks}")
        if any(s <= 0 for s in scales_t):
            raise ValueError(f"scales must be positive, got {scales_t}")
        if any(s < 0 for s in noise_t):
            raise ValueError(f"noise must be non-negative, got {noise_t}")
        if fractions_t is not None and any(not 0.0 < f <= 1.0 for f in fractions_t):
            raise ValueError(f"fractions must lie in (0, 1], got {fractions_t}")
        kinds_t = None if kinds is None else tuple(str(k) for k in kinds)
        if kinds_t is not None:
            if len(kinds_t) != n_tasks:
                raise ValueError(f"kinds has {len(kinds_t)} entries but n_tasks is {n_tasks}")
            unknown = sorted(set(kinds_t) - set(self.KINDS))
            if unknown:
                raise ValueError(
                    f"unknown task kind(s) {unknown}; valid choices: {', '.join(self.KINDS)}"
                )
        classes_t = None if classes is None else tuple(int(c) for c in classes)
        if classes_t is not None:
            if kinds_t is None:
                raise ValueError("classes needs kinds: without kinds every task is a regression")
            if len(classes_t) != n_tasks:
                raise ValueError(f"classes has {len(classes_t)} entries but n_tasks is {n_tasks}")
            bad = [
                c
                for c, k in zip(classes_t, kinds_t, strict=True)
                if k == "classification" and not 2 <= c <= output_dim
            ]
            if bad:
                raise ValueError(
                    f"classes must lie in [2, output_dim={output_dim}] for classification "
                    f"tasks, got {bad}"
                )
        if relatedness is not None and not 0.0 <= relatedness <= 1.0:
            raise ValueError(f"relatedness must lie in [0, 1], got {relatedness}")
        if task_noise_std < 0:
            raise ValueError(f"task_noise_std must be non-negative, got {task_noise_std}")
        self.name = "synthetic"
        self.task_names = tuple(f"t{i + 1}" for i in range(n_tasks))
        self.kinds = kinds_t if kinds_t is not None else ("regression",) * n_tasks
        self.metric_specs = tuple(
            MetricSpec(f"{t}_acc", i, higher_is_better=True)
            if kind == "classification"
            else MetricSpec(f"{t}_mse", i, higher_is_better=False)
            for i, (t, kind) in enumerate(zip(self.task_names, self.kinds, strict=True))
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
            "relatedness": None if relatedness is None else float(relatedness),
            "fractions": None if fractions_t is None else list(fractions_t),
        }
        if kinds_t is not None:
            self._kwargs["kinds"] = list(kinds_t)
        if classes_t is not None:
            self._kwargs["classes"] = list(classes_t)
        self._classes = classes_t
        self._input_dim = input_dim
        self._output_dim = output_dim
        self._hidden = tuple(hidden)
        self._masked = fractions_t is not None
        self._typed = kinds_t is not None
        if relatedness is None:
            shared_std, specific_std = SHARED_STD, float(task_noise_std)
        else:
            total = SHARED_STD**2 + float(task_noise_std) ** 2
            shared_std = math.sqrt(relatedness * total)
            specific_std = math.sqrt((1.0 - relatedness) * total)
        self._kinds_arg = kinds_t
        rng = np.random.default_rng(seed)
        self._splits = self._generate(
            rng, scales_t, noise_t, shared_std, specific_std, (n_train, n_val, n_test)
        )
        if fractions_t is not None:
            self._add_masks(rng, fractions_t)
        if kinds_t is not None:
            self._add_kinds(n_tasks if fractions_t is None else None)

    @property
    def relatedness(self) -> float:
        """Shared fraction of the generator variance (the correlation of two tasks' generators)."""
        r = self._kwargs["relatedness"]
        if r is not None:
            return float(r)
        return SHARED_STD**2 / (SHARED_STD**2 + self._kwargs["task_noise_std"] ** 2)

    def _generate(
        self,
        rng: np.random.Generator,
        scales: tuple[float, ...],
        noise: tuple[float, ...],
        shared_std: float,
        specific_std: float,
        sizes: tuple[int, int, int],
    ) -> dict[str, SplitData]:
        d, o, n_tasks = self._input_dim, self._output_dim, len(scales)
        shared = rng.normal(0.0, shared_std, (o, d))
        specific = rng.normal(0.0, specific_std, (n_tasks, o, d))
        splits: dict[str, SplitData] = {}
        for split, n in zip(SPLITS, sizes, strict=True):
            x = rng.uniform(-1.0, 1.0, (n, d))
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            ys = []
            for t in range(n_tasks):
                y = scales[t] * np.tanh(x @ (shared + specific[t]).T)
                if noise[t] > 0:
                    y = y + noise[t] * rng.normal(0.0, 1.0, y.shape)
                if self._kinds_arg is not None and self._kinds_arg[t] == "classification":
                    # One-hot class of the noisy outputs (argmax over the first c: c classes).
                    c = o if self._classes is None else self._classes[t]
                    y = np.eye(o)[np.argmax(y[:, :c], axis=1)]
                ys.append(y)
            splits[split] = SplitData(
                inputs=torch.from_numpy(x.astype(np.float32)),
                targets=torch.from_numpy(np.stack(ys, axis=1).astype(np.float32)),  # [N, T, o]
            )
        return splits

    def _add_masks(self, rng: np.random.Generator, fractions: tuple[float, ...]) -> None:
        # Drawn after all data, so the data of a masked instance equals the unmasked one's.
        for split, data in self._splits.items():
            n = len(data)
            mask = np.ones((n, len(fractions), 1), dtype=np.float32)
            if split == "train":
                for t, f in enumerate(fractions):
                    keep = max(1, round(f * n))
                    mask[:, t, 0] = 0.0
                    mask[rng.choice(n, size=keep, replace=False), t, 0] = 1.0
            targets = torch.cat([data.targets, torch.from_numpy(mask)], dim=2)  # [N, T, o + 1]
            self._splits[split] = SplitData(inputs=data.inputs, targets=targets)

    def _add_kinds(self, add_mask_for: int | None) -> None:
        # Typed layout: a mask channel (all ones when there are no fractions), then the kind flag.
        flags = torch.tensor([float(k == "classification") for k in self.kinds])
        for split, data in self._splits.items():
            targets = data.targets
            n = len(data)
            if add_mask_for is not None:
                targets = torch.cat([targets, torch.ones(n, add_mask_for, 1)], dim=2)
            kind = flags.view(1, -1, 1).expand(n, -1, 1)
            self._splits[split] = SplitData(data.inputs, torch.cat([targets, kind], dim=2))

    def split(self, name: str) -> SplitData:
        """The in-memory data of split ``name`` (see the class docstring for the target layout)."""
        self.check_split(name)
        return self._splits[name]

    def label_mask(self, name: str = "train") -> Tensor:
        """Label mask ``[N, T]`` of split ``name`` (all ones without ``fractions``)."""
        data = self.split(name)
        if self._typed:
            return data.targets[:, :, self._output_dim].clone()
        if not self._masked:
            return torch.ones(len(data), self.n_tasks)
        return data.targets[:, :, -1].clone()

    def build_model(self) -> HardParameterSharing:
        """ReLU trunk ``d -> hidden`` and a linear head ``hidden[-1] -> output_dim`` per task."""
        encoder = mlp((self._input_dim, *self._hidden))
        heads = [nn.Linear(self._hidden[-1], self._output_dim) for _ in self.task_names]
        return HardParameterSharing(encoder, heads)

    def losses(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        """Per-task losses ``[T]``: MSE, or cross-entropy for classification (labelled rows)."""
        if self._typed:
            return self._typed_losses(outputs, targets)
        if not self._masked:
            return torch.stack([F.mse_loss(out, targets[:, t]) for t, out in enumerate(outputs)])
        losses = []
        for t, out in enumerate(outputs):
            y, mask = targets[:, t, :-1], targets[:, t, -1]
            # A batch without a labelled row falls back to its first row; torch.where instead of
            # an `if` keeps the loss free of data-dependent Python control flow, so it can be
            # vmapped over stacked runs (mtl_backends.stacked).
            first = (torch.arange(mask.shape[0], device=mask.device) == 0).to(mask.dtype)
            mask = torch.where(mask.sum() > 0, mask, first)
            per_row = ((out - y) ** 2).mean(dim=1)
            losses.append((per_row * mask).sum() / mask.sum())
        return torch.stack(losses)

    def _typed_losses(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        # The kind comes from the data (no Python branch on it), so instances with other kinds
        # share this function; a batch without a labelled row falls back to its first row.
        o = self._output_dim
        losses = []
        for t, out in enumerate(outputs):
            y, mask, flag = targets[:, t, :o], targets[:, t, o], targets[:, t, o + 1]
            first = (torch.arange(mask.shape[0], device=mask.device) == 0).to(mask.dtype)
            mask = torch.where(mask.sum() > 0, mask, first)
            mse = ((out - y) ** 2).mean(dim=1)
            ce = -(y * torch.log_softmax(out, dim=1)).sum(dim=1)
            per_row = torch.where(flag > 0.5, ce, mse)
            losses.append((per_row * mask).sum() / mask.sum())
        return torch.stack(losses)

    def metrics(self, outputs: list[Tensor], targets: Tensor) -> dict[str, float]:
        """Per-task MSE (regression) or accuracy (classification) on the given outputs."""
        losses = self.losses(outputs, targets)
        out: dict[str, float] = {}
        for m in self.metric_specs:
            if self.kinds[m.task] == "classification":
                y = targets[:, m.task, : self._output_dim]
                hits = outputs[m.task].argmax(dim=1) == y.argmax(dim=1)
                out[m.name] = float(hits.to(torch.float64).mean())
            else:
                out[m.name] = float(losses[m.task])
        return out

    def config(self) -> dict[str, Any]:
        """Arguments that rebuild this benchmark."""
        return dict(self._kwargs)

    @classmethod
    def sample_variation(
        cls, rng: np.random.Generator, family: str = "default", **fixed: Any
    ) -> dict[str, Any]:
        """Draw the constructor arguments of one problem variation.

        ``default``: per task, a log-uniform scale ``σ_t ∈ [1, 100]``, a label-noise floor (with
        probability 1/2, ``noise_t = σ_t · U(0, 0.2)``, else 0) and a label fraction (with
        probability 1/2, ``U(0.1, 1)``, else 1); one ``relatedness ~ U(0.2, 1)``; and a data seed
        (``VARIATION_RANGES``). ``wide`` (the training distribution of the generalist policy,
        ``WIDE_RANGES``): scales over three decades ``[1, 1000]``, noise floors up to ``0.3 σ_t``,
        relatedness ``U(0, 1)``, and each task a classification with probability 0.3.
        ``wide2``: ``wide``'s draws (the same arguments for the same generator state), then each
        task's number of classes, uniform over ``WIDE2_CLASSES`` (capped at ``output_dim``), so
        that easy classifications, whose cross-entropy approaches 0 as on multi_digits, are part
        of the distribution (with 16 classes the accuracies of ``wide`` runs are 0.12-0.75;
        ``docs/experiments/generalist.md``, "Where the multi_digits effect lives").

        Args:
            rng: Source of all draws (the same state gives the same variation).
            family: ``default``, ``wide`` or ``wide2``.
            **fixed: Arguments to set rather than draw (e.g. ``n_tasks=5``, ``n_train=2000``);
                ``n_tasks`` defaults to 3.

        Returns:
            Keyword arguments for ``Synthetic(**kwargs)``.

        Raises:
            ValueError: An unknown family.
        """
        if family not in cls.VARIATION_FAMILIES:
            raise ValueError(
                f"unknown variation family {family!r}; valid choices: "
                + ", ".join(cls.VARIATION_FAMILIES)
            )
        ranges = cls.VARIATION_RANGES if family == "default" else cls.WIDE_RANGES
        n_tasks = int(fixed.get("n_tasks", 3))
        lo, hi = ranges["scales"]
        # libm's exp per draw, not numpy's vectorised one: numpy picks SIMD kernels by CPU, and
        # its AVX-512 exp rounds some draws 1 ulp apart from its AVX2 path, which changed the
        # drawn scales (and so cell keys) between machines (docs/experiments/generalist.md).
        scales = np.array([math.exp(u) for u in rng.uniform(math.log(lo), math.log(hi), n_tasks)])
        n_lo, n_hi = ranges["noise"]
        noisy = rng.random(n_tasks) < 0.5
        noise = np.where(noisy, scales * rng.uniform(n_lo, n_hi, n_tasks), 0.0)
        f_lo, f_hi = ranges["fractions"]
        partial = rng.random(n_tasks) < 0.5
        fractions = np.where(partial, rng.uniform(f_lo, f_hi, n_tasks), 1.0)
        r_lo, r_hi = ranges["relatedness"]
        drawn: dict[str, Any] = {
            "n_tasks": n_tasks,
            "scales": [float(s) for s in scales],
            "noise": [float(s) for s in noise],
            "fractions": [float(f) for f in fractions],
            "relatedness": float(rng.uniform(r_lo, r_hi)),
            "seed": int(rng.integers(0, 2**31 - 1)),
        }
        if family in ("wide", "wide2"):
            p_class = ranges["classification"][0]
            drawn["kinds"] = [
                "classification" if c else "regression" for c in rng.random(n_tasks) < p_class
            ]
        if family == "wide2":
            cap = int(fixed.get("output_dim", cls.DEFAULT_OUTPUT_DIM))
            picks = rng.integers(0, len(cls.WIDE2_CLASSES), n_tasks)
            drawn["classes"] = [min(cls.WIDE2_CLASSES[int(i)], cap) for i in picks]
        drawn.update(fixed)
        return drawn
