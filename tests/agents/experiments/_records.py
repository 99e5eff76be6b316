"""A hand-written experiment and its cell records, shared by the row, summary and report tests.

One synthetic benchmark (label ``syn``, two tasks), weightings EW, IGBv1 and SI under ``sum`` and
DB-MTL, seeds 0-2. EW + DB-MTL is skipped (transform conflict); SI + DB-MTL failed at seed 2
unless ``failed=False``. The numbers are chosen so every mean, std and paired difference of the
tables can be worked out by hand.
"""

from __future__ import annotations

from typing import Any

from agents.experiments.config import ExperimentConfig, experiment_from_dict
from agents.experiments.grid import GridPlan, plan_grid
from tests._tiny import TINY_SYNTHETIC

BENCH: dict[str, Any] = {
    "name": "synthetic",
    "label": "syn",
    "n_tasks": 2,
    **TINY_SYNTHETIC,
    "train": {"steps": 30, "batch_size": 20, "lr": 0.01, "base_window": [5, 10]},
}

# row -> per seed: (delta_m, delta_p, cpu_time_s, train_wall_time_s, t1_mse, t2_acc)
VALUES: dict[str, list[tuple[float, float, float, float, float, float]]] = {
    "EW": [
        (3.0, -1.0, 2.0, 1.0, 0.5, 0.8),
        (4.0, -2.0, 2.0, 1.0, 0.5, 0.8),
        (5.0, -3.0, 2.0, 1.0, 0.5, 0.8),
    ],
    "IGBv1": [
        (2.0, 0.0, 3.0, 1.5, 0.4, 0.9),
        (2.5, -1.0, 3.0, 1.5, 0.6, 0.9),
        (3.0, -0.5, 3.0, 1.5, 0.5, 0.9),
    ],
    "SI": [
        (2.5, -1.0, 2.0, 1.25, 1.0, 0.7),
        (4.0, -1.0, 2.0, 1.25, 1.0, 0.7),
        (3.0, -1.0, 2.0, 1.25, 1.0, 0.7),
    ],
    "IGBv1 + DB-MTL": [
        (1.0, 1.0, 4.0, 2.0, 0.3, 0.85),
        (2.0, 0.0, 4.0, 2.0, 0.3, 0.85),
        (3.0, 0.5, 4.0, 2.0, 0.3, 0.85),
    ],
    "SI + DB-MTL": [
        (1.5, 0.25, 5.0, 2.5, 0.3, 0.6),
        (3.0, 0.25, 5.0, 2.5, 0.5, 0.8),
        (2.0, 0.25, 5.0, 2.5, 0.4, 0.7),  # replaced by a failure when failed=True
    ],
}

METRIC_SPECS = [
    {"name": "t1_mse", "task": "t1", "higher_is_better": False},
    {"name": "t2_acc", "task": "t2", "higher_is_better": True},
]
ERROR = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom | bar\n'
PROVENANCE = {"git": {"commit": "0123456789abcdef0123", "dirty": True}, "config_hash": "cafe"}


def experiment(**changes: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "benchmarks": [BENCH],
        "weightings": ["ew", "igbv1", "si"],
        "balancers": ["sum", "db_mtl"],
        "seeds": [0, 1, 2],
        "stl_cache": None,
    }
    data.update(changes)
    return experiment_from_dict(data)


def ok_record(values: tuple[float, float, float, float, float, float]) -> dict[str, Any]:
    dm, dp, cpu, wall, t1, t2 = values
    return {
        "status": "ok",
        "delta_m": dm,
        "delta_p": dp,
        "val_delta_m": dm + 1.0,
        "selected_step": 30,
        "cpu_time_s": cpu,
        "wall_time_s": wall + 0.5,
        "train_wall_time_s": wall,
        "task_names": ["t1", "t2"],
        "metric_specs": METRIC_SPECS,
        "metrics": {"val": {"t1_mse": t1, "t2_acc": t2}, "test": {"t1_mse": t1, "t2_acc": t2}},
        "losses": {"val": [t1, 2 * t1], "test": [t1, 2 * t1]},
        "provenance": {**PROVENANCE, "versions": {"torch": "2.0"}},
    }


def records(plan: GridPlan, failed: bool = True) -> dict[str, dict[str, Any]]:
    """Cell key -> record for every cell of ``plan`` (the plan of ``experiment()``)."""
    out: dict[str, dict[str, Any]] = {}
    for cell in plan.cells:
        if failed and cell.row == "SI + DB-MTL" and cell.seed == 2:
            out[cell.key] = {
                "status": "failed",
                "error": ERROR,
                "cpu_time_s": 0.5,
                "wall_time_s": 0.5,
                "provenance": PROVENANCE,
            }
        else:
            out[cell.key] = ok_record(VALUES[cell.row][cell.seed])
    return out


def setup(failed: bool = True) -> tuple[ExperimentConfig, GridPlan, dict[str, dict[str, Any]]]:
    config = experiment()
    plan = plan_grid(config)
    return config, plan, records(plan, failed)
