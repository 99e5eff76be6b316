from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from mtl_backends.benchmarks import BENCHMARKS
from mtl_backends.config import RunConfig, load_config
from mtl_backends.metrics import mean_rank
from mtl_backends.registry import valid_arguments

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "runs"


def test_every_benchmark_has_a_reference_config() -> None:
    assert set(BENCHMARKS) <= {p.stem for p in CONFIGS.glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_config_loads_into_run_config(name: str) -> None:
    config = load_config(RunConfig, CONFIGS / f"{name}.yaml")
    assert config.benchmark.name == name
    assert set(config.benchmark.kwargs) <= set(valid_arguments(BENCHMARKS[name]))
    assert config.balancer.name == "sum"
    # Training rows from the config (or the constructor default), without building the data.
    rows_arg = {"synthetic": "n_train", "toy": "n_rows", "multi_digits": "n_train", "qm9": "subset",
                "qm9_graph": "subset"}  # fmt: skip
    folder_rows = {"nyuv2": 795, "cityscapes": 2975}  # the published folders' training images
    if name in folder_rows:
        n_rows = folder_rows[name]
    else:
        key = rows_arg[name]
        default = inspect.signature(BENCHMARKS[name]).parameters[key].default
        n_rows = int(config.benchmark.kwargs.get(key, default))
    if name in ("qm9", "qm9_graph"):
        n_rows -= 2 * (n_rows // 10)  # val and test are subset // 10 each
    steps_per_epoch = n_rows // config.train.batch_size
    # Enough epochs for the gap tracker's second-epoch base window and IGB's schedules.
    assert config.train.steps >= 15 * steps_per_epoch


def test_mean_rank_with_mixed_directions() -> None:
    # Multi-Digits-like metrics: two accuracies (higher is better), MAE and MSE (lower is better).
    directions = [True, True, False, False]
    ranks = mean_rank(
        {"ew": [0.90, 0.80, 1.0, 2.0], "si": [0.95, 0.80, 1.2, 2.5], "igb": [0.85, 0.70, 0.9, 1.5]},
        directions,
    )
    assert ranks == pytest.approx(
        {"ew": (2 + 1.5 + 2 + 2) / 4, "si": (1 + 1.5 + 3 + 3) / 4, "igb": (3 + 3 + 1 + 1) / 4}
    )
    with pytest.raises(ValueError, match="one value per metric"):
        mean_rank({"ew": [1.0, 2.0]}, directions)
