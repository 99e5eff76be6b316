"""Searching constant task weights on training instances (``igb tune-static``).

``tune_static_weights`` trains one run per candidate weight vector and training seed with
``TunedStatic`` and keeps the candidate with the best mean validation Δm against the STL
references; the result is the ``tuned_static`` control of the comparisons.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mtl_backends.benchmarks import make_benchmark
from mtl_backends.build import build_trainer
from mtl_backends.config import MethodSpec, TrainConfig
from mtl_backends.progress import Progress
from mtl_backends.stl import stl_reference
from mtl_backends.weightings.tuned_static import TunedStatic

DEFAULT_LOGITS: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
"""Per-task logit grid of the default candidates ``T · softmax(logits)``."""


def static_candidates(
    n_tasks: int,
    logits: Sequence[float] = DEFAULT_LOGITS,
    max_candidates: int | None = None,
    seed: int = 0,
) -> list[list[float]]:
    """Distinct constant weight vectors ``T · softmax(l)`` for ``l`` in ``logits^T``.

    Equal weights come first. Vectors that differ only by a common logit shift are the same
    weights and appear once. When there are more than ``max_candidates``, equal weights plus a
    seeded uniform sample of the others are kept (in grid order).

    Args:
        n_tasks: Number of tasks ``T``.
        logits: Per-task logit grid.
        max_candidates: Keep at most this many (``None``: all).
        seed: Seed of the subsample.

    Returns:
        Candidate weight vectors, each positive and summing to ``T``.
    """
    if n_tasks < 1 or not logits:
        raise ValueError("need n_tasks >= 1 and a non-empty logit grid")
    seen: set[tuple[float, ...]] = set()
    out: list[list[float]] = []
    equal = [1.0] * n_tasks
    seen.add(tuple(round(v, 9) for v in equal))
    out.append(equal)
    for combo in itertools.product([float(v) for v in logits], repeat=n_tasks):
        w = n_tasks * torch.softmax(torch.tensor(combo, dtype=torch.float64), dim=0)
        key = tuple(round(v, 9) for v in w.tolist())
        if key not in seen:
            seen.add(key)
            out.append(w.tolist())
    if max_candidates is not None and len(out) > max_candidates:
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        rng = np.random.default_rng(seed)
        keep = sorted(rng.choice(np.arange(1, len(out)), size=max_candidates - 1, replace=False))
        out = [out[0]] + [out[int(i)] for i in keep]
    return out


@dataclass(frozen=True)
class TuneResult:
    """Outcome of ``tune_static_weights``.

    Attributes:
        weights: The best candidate (sums to T).
        score: Its mean validation Δm (%) over the seeds (lower is better).
        candidates: Every candidate evaluated, in order.
        scores: Mean validation Δm of each candidate.
        per_seed: Validation Δm of each candidate on each seed.
        seeds: The training seeds.
    """

    weights: list[float]
    score: float
    candidates: list[list[float]]
    scores: list[float]
    per_seed: list[list[float]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


def tune_static_weights(
    benchmark: MethodSpec,
    train: TrainConfig,
    seeds: Sequence[int],
    candidates: Sequence[Sequence[float]] | None = None,
    logits: Sequence[float] = DEFAULT_LOGITS,
    max_candidates: int | None = 32,
    balancer: MethodSpec | None = None,
    stl_cache: str | Path | None = ".igb-cache/stl",
    search_seed: int = 0,
    split: str = "val",
    progress_bar: bool = False,
) -> TuneResult:
    """Search constant weights on training seeds: best mean ``split`` Δm wins (ties: first).

    Every candidate runs the full budget of ``train`` on every seed with ``TunedStatic(candidate)``
    and ``balancer``, and is scored by its mean Δm on ``split`` against the STL reference of that
    seed. Use seeds (instances) that are disjoint from the ones you report on.

    Args:
        benchmark: Benchmark name and arguments.
        train: Training settings of each run.
        seeds: Training seeds (instances).
        candidates: Weight vectors to try (default: ``static_candidates`` of ``logits``).
        logits: Logit grid of the default candidates.
        max_candidates: Cap on the default candidates (seeded subsample; equal weights kept).
        balancer: Gradient balancer (default ``sum``).
        stl_cache: Cache folder of the STL references (``None``: not cached).
        search_seed: Seed of the candidate subsample.
        split: Split whose Δm is minimised (``val``; never the split you report).
        progress_bar: Show progress over the runs (a bar on a terminal, plain lines in a log).

    Returns:
        The best weights, its score and every candidate's scores.

    Raises:
        ValueError: No seeds or no candidates, or a candidate of the wrong length.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("tune_static_weights needs at least one training seed")
    balancer = balancer or MethodSpec("sum")
    n_tasks = make_benchmark(benchmark.name, **dict(benchmark.kwargs)).n_tasks
    cands = (
        static_candidates(n_tasks, logits, max_candidates, search_seed)
        if candidates is None
        else [[float(v) for v in c] for c in candidates]
    )
    if not cands:
        raise ValueError("tune_static_weights needs at least one candidate")
    for c in cands:
        if len(c) != n_tasks:
            raise ValueError(f"candidate {c} has {len(c)} weights; the benchmark has {n_tasks}")
    references = {
        s: stl_reference(benchmark, train, s, stl_cache, progress_bar=progress_bar) for s in seeds
    }
    per_seed: list[list[float]] = []
    bar = Progress(len(cands) * len(seeds), "tune-static", "run", disable=not progress_bar)
    try:
        for cand in cands:
            row = []
            for s in seeds:
                trainer = build_trainer(
                    benchmark, TunedStatic(cand), balancer, train, seed=s, reference=references[s]
                )
                trainer.fit(record=False)
                dm = trainer.evaluate(split).delta_m
                assert dm is not None
                row.append(float(dm) if math.isfinite(dm) else math.inf)
                bar.update(1)
            per_seed.append(row)
    finally:
        bar.close()
    scores = [float(np.mean(row)) for row in per_seed]
    best = int(np.argmin(scores))
    weights = TunedStatic(cands[best]).weights.tolist()
    return TuneResult(weights, scores[best], [list(c) for c in cands], scores, per_seed, seeds)


__all__ = ["DEFAULT_LOGITS", "TuneResult", "static_candidates", "tune_static_weights"]
