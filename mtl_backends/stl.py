"""Single-task (STL) references for Δm and Δp, cached on disk.

``stl_reference`` trains one model per task with the same model, data order, budget and seed as
the multi-task run (weight 1 on that task's raw loss, 0 on the others), evaluates each on ``val``
and ``test``, and keeps the metrics of the trained task. Results are cached as JSON keyed by a hash
of everything that changes them (benchmark arguments, training config, seed, format version).

Each cache entry carries a SHA-256 of its own content (``sha256``); an entry that does not verify
(edited, truncated, written before entries were hashed, or holding malformed metrics) is not used:
it is trained again and rewritten, with a warning naming the file. The cache folder is checked
for writing before anything trains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mtl_backends.atomic import write_json_atomic
from mtl_backends.balancers.sum import Sum
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.build import build_trainer
from mtl_backends.config import MethodSpec, TrainConfig, key_dict, to_dict
from mtl_backends.fileio import FileFormatError, check_writable_dir, read_json
from mtl_backends.trainer import Reference
from mtl_backends.weightings.single_task import SingleTask

STL_FORMAT_VERSION = 1
"""Part of every STL key: bumping it retrains every reference."""
STL_SPLITS: tuple[str, ...] = ("val", "test")
HASH_FIELD = "sha256"


def stl_key(benchmark: MethodSpec, train: TrainConfig, seed: int) -> str:
    """Hex digest identifying an STL reference (changes whenever its result could change)."""
    payload = {
        "version": STL_FORMAT_VERSION,
        "benchmark": benchmark.to_dict(),
        # base_window, the jacobian method and the flat wrapper do not affect STL training.
        "train": {
            k: v
            for k, v in key_dict(train).items()
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

    Raises:
        NotADirectoryError: ``cache_dir`` (or a parent) is a file.
        PermissionError: ``cache_dir`` is not writable (checked before anything trains).
    """
    if cache_dir is None:
        return train_stl(benchmark, train, seed, progress_bar)
    path = stl_cache_path(benchmark, train, seed, cache_dir)
    if path.exists():
        try:
            return read_stl_entry(path)
        except (FileFormatError, OSError) as err:
            warnings.warn(f"{err}; training the STL references again", stacklevel=2)
    check_writable_dir(path.parent, "stl_cache")
    reference = train_stl(benchmark, train, seed, progress_bar)
    entry: dict[str, Any] = {
        "reference": reference,
        "benchmark": benchmark.to_dict(),
        "train": to_dict(train),
        "seed": seed,
        "version": STL_FORMAT_VERSION,
    }
    entry[HASH_FIELD] = content_hash(entry)
    write_json_atomic(entry, path)
    return reference


def stl_cache_path(
    benchmark: MethodSpec, train: TrainConfig, seed: int, cache_dir: str | Path
) -> Path:
    """The cache file of the STL references of (benchmark, training settings, seed)."""
    return (
        Path(cache_dir).expanduser()
        / f"{benchmark.name}-{stl_key(benchmark, train, seed)[:20]}.json"
    )


def content_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of an entry's canonical JSON, its own ``sha256`` field left out."""
    body = {k: v for k, v in entry.items() if k != HASH_FIELD}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_stl_entry(path: str | Path) -> Reference:
    """The references of a cache entry that verifies against its content hash.

    Raises:
        FileFormatError: Not JSON, no or a wrong ``sha256`` (edited, or written before entries
            were hashed), or references that are not split -> metric -> number.
    """
    entry = read_json(path, "STL cache entry")
    recorded = entry.get(HASH_FIELD)
    if recorded is None:
        raise FileFormatError(
            f"STL cache entry {str(path)!r} has no content hash (written by an older igb-rl)"
        )
    if recorded != content_hash(entry):
        raise FileFormatError(
            f"STL cache entry {str(path)!r} does not match its content hash (edited or damaged)"
        )
    reference = entry.get("reference")
    if not isinstance(reference, dict) or set(reference) != set(STL_SPLITS):
        raise FileFormatError(
            f"STL cache entry {str(path)!r}: 'reference' must map {', '.join(STL_SPLITS)} to "
            "metrics"
        )
    for split, metrics in reference.items():
        if not isinstance(metrics, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
            for v in metrics.values()
        ):
            raise FileFormatError(
                f"STL cache entry {str(path)!r}: reference[{split!r}] must map metric names to "
                "numbers"
            )
    return reference
