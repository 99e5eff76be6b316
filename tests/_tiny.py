"""The smallest synthetic problem of the tests: the ``smoke`` env preset's benchmark, defined once.

``TINY_SYNTHETIC`` are the benchmark's constructor arguments (without ``name``);
``tests/test_configs.py`` checks that they are the preset's.
"""

from __future__ import annotations

from typing import Any

TINY_SYNTHETIC: dict[str, Any] = {
    "n_train": 200,
    "n_val": 50,
    "n_test": 50,
    "input_dim": 20,
    "output_dim": 5,
    "hidden": [16, 16],
}
