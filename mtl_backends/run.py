"""One plain MTL run from a ``RunConfig``: build, train, evaluate, write a run folder."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from mtl_backends.atomic import write_json_atomic
from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.config import RunConfig, to_dict
from mtl_backends.stl import stl_reference
from mtl_backends.trainer import EvalResult, FitHistory, MTLTrainer
from mtl_backends.weightings import make_weighting


@dataclass(frozen=True)
class RunResult:
    """Outcome of ``run``.

    Attributes:
        val: Final validation evaluation.
        test: Final test evaluation.
        wall_time: Seconds spent in training steps (excluding STL and evaluation).
        steps_per_second: Training steps per second.
        history: Per-step losses and weights.
        out_dir: Run folder (``None`` if not written).
    """

    val: EvalResult
    test: EvalResult
    wall_time: float
    steps_per_second: float
    history: FitHistory
    out_dir: Path | None


def build_trainer(config: RunConfig, progress_bar: bool = False) -> MTLTrainer:
    """The trainer of ``config``, with its STL reference attached when a cache is configured."""
    benchmark = make_benchmark(config.benchmark.name, **dict(config.benchmark.kwargs))
    weighting = make_weighting(config.weighting.name, **dict(config.weighting.kwargs))
    balancer = make_balancer(config.balancer.name, **dict(config.balancer.kwargs))
    reference = None
    if config.stl_cache is not None:
        reference = stl_reference(
            config.benchmark, config.train, config.seed, config.stl_cache, progress_bar
        )
    return MTLTrainer(
        benchmark, weighting, balancer, config.train, seed=config.seed, reference=reference
    )


def run(
    config: RunConfig, out_dir: str | Path | None = None, progress_bar: bool = False
) -> RunResult:
    """Train ``config`` to the end of its budget and evaluate on ``val`` and ``test``.

    Writes ``config.yaml`` (resolved), ``metrics.json`` and ``history.json`` to ``out_dir``.
    """
    trainer = build_trainer(config, progress_bar)
    start = time.perf_counter()
    history = trainer.fit(progress_bar=progress_bar)
    wall = time.perf_counter() - start
    val, test = trainer.evaluate("val"), trainer.evaluate("test")
    result = RunResult(val, test, wall, config.train.steps / wall, history, None)
    if out_dir is None:
        return result
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "config.yaml").open("w") as fh:
        yaml.safe_dump(to_dict(config), fh, sort_keys=False)
    summary: dict[str, Any] = {
        "val": asdict(val),
        "test": asdict(test),
        "wall_time_s": wall,
        "steps_per_second": result.steps_per_second,
        "task_names": list(trainer.benchmark.task_names),
    }
    write_json_atomic(summary, out / "metrics.json")
    write_json_atomic({"losses": history.losses, "weights": history.weights}, out / "history.json")
    return RunResult(val, test, wall, result.steps_per_second, history, out)
