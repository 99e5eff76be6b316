"""The smallest synthetic problem of the tests: the ``smoke`` env preset's benchmark, defined once.

``TINY_SYNTHETIC`` are the benchmark's constructor arguments (without ``name``);
``tests/test_configs.py`` checks that they are the preset's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TINY_SYNTHETIC: dict[str, Any] = {
    "n_train": 200,
    "n_val": 50,
    "n_test": 50,
    "input_dim": 20,
    "output_dim": 5,
    "hidden": [16, 16],
}


def write_tune_config(folder: Path) -> Path:
    """The ``igb tune-static`` config of the tuning tests: the tiny 3-task problem, 20 steps.

    Written to ``folder/c.yaml``; its STL references are cached in ``folder/stl``.
    """
    config = {
        "benchmark": {"name": "synthetic", "n_tasks": 3, **TINY_SYNTHETIC},
        "train": {"steps": 20, "batch_size": 20, "base_window": [4, 8]},
        "stl_cache": str(folder / "stl"),
    }
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
