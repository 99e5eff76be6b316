"""Single-task (STL) references for Δm and Δp, cached on disk.

``stl_reference`` trains one model per task with the same model, data order, budget and seed as
the multi-task run (weight 1 on that task's raw loss, 0 on the others), evaluates each on ``val``
and ``test``, and keeps the metrics of the trained task. Results are cached as JSON keyed by a hash
of everything that changes them (benchmark arguments, training config, seed, format version).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from mtl_backends.atomic import write_json_atomic
from mtl_backends.balancers.sum import Sum
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.build import build_trainer
from mtl_backends.config import MethodSpec, TrainConfig, to_dict
from mtl_backends.trainer import Reference
from mtl_backends.weightings.single_task import SingleTask

STL_FORMAT_VERSION = 1
STL_SPLITS: tuple[str, ...] = ("val", "test")


def stl_key(benchmark: MethodSpec, train: TrainConfig, seed: int) -> str:
    """Hex digest identifying an STL reference (changes whenever its result could change)."""
    payload = {
        "version": STL_FORMAT_VERSION,
        "benchmark": benchmark.to_dict(),
        # base_window, the jacobian method and the flat wrapper do not affect STL training.
        "train": {
            k: v
            for k, v in to_dict(train).items()
            if k not in ("base_window", "jacobian", "flat_rho")
        },
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def train_stl(
    benchmark: MethodSpec, train: TrainConfig, seed: int, progress_bar: bool = False
) -> Reference:
    """Train the single-task references (no cache).

    Returns:
        Split -> metric name -> value, for ``val`` and ``test``.
    """
    bench = make_benchmark(benchmark.name, **dict(benchmark.kwargs))
    reference: Reference = {split: {} for split in STL_SPLITS}
    for t in range(bench.n_tasks):
        # References are plain single-task runs, also for a flat (sharpness-aware) MTL run.
        plain = dataclasses.replace(train, flat_rho=None)
        trainer = build_trainer(bench, SingleTask(t), Sum(), plain, seed=seed)
        trainer.fit(progress_bar=progress_bar, record=False)
        for split in STL_SPLITS:
            metrics = trainer.evaluate(split).metrics
            for spec in bench.metric_specs:
                if spec.task == t:
                    reference[split][spec.name] = metrics[spec.name]
    return reference


def stl_reference(
    benchmark: MethodSpec,
    train: TrainConfig,
    seed: int,
    cache_dir: str | Path | None,
    progress_bar: bool = False,
) -> Reference:
    """STL reference metrics, from the cache when present, else trained and cached.

    Args:
        benchmark: Benchmark name and arguments.
        train: Training settings of the multi-task run (same budget for STL).
        seed: Seed of the multi-task run.
        cache_dir: Cache folder (``None``: no caching).
        progress_bar: Show progress bars while training.
    """
    if cache_dir is None:
        return train_stl(benchmark, train, seed, progress_bar)
    path = (
        Path(cache_dir).expanduser()
        / f"{benchmark.name}-{stl_key(benchmark, train, seed)[:20]}.json"
    )
    if path.is_file():
        with path.open() as fh:
            return json.load(fh)["reference"]
    reference = train_stl(benchmark, train, seed, progress_bar)
    write_json_atomic(
        {
            "reference": reference,
            "benchmark": benchmark.to_dict(),
            "train": to_dict(train),
            "seed": seed,
            "version": STL_FORMAT_VERSION,
        },
        path,
    )
    return reference
