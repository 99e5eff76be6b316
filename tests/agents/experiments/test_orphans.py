"""A SIGKILLed ``igb compare`` leaves no worker behind (issue 18).

Before, a worker busy with a cell or an STL reference kept running after its parent was killed,
re-parented to PID 1 (350 MB for a real cell), and kept the ``multiprocessing`` resource tracker
alive with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests._processes import children, kill_parent_and_expect_gone, kill_strays, wait_for
from tests._tiny import TINY_SYNTHETIC

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads process trees from /proc"
)


def test_workers_and_resource_tracker_exit_when_compare_is_killed(tmp_path: Path) -> None:
    bench = {"name": "synthetic", **TINY_SYNTHETIC}
    quick = {**bench, "label": "quick", "train": {"steps": 30, "batch_size": 20}}
    # Its STL references alone would train for hours: the worker is busy when the parent dies.
    long = {**bench, "label": "long", "train": {"steps": 10_000_000, "batch_size": 20}}
    config = tmp_path / "experiment.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "benchmarks": [quick, long],
                "weightings": ["ew"],
                "balancers": ["sum"],
                "seeds": [0],
                "stl_cache": str(tmp_path / "stl"),
                "plots": {"delta_m_bars": False, "trajectory_points": 0},
            }
        )
    )
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "agents.cli", "compare", str(config), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(
        [*argv, "--workers", "1", "--no-progress"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: dict[int, str] = {}
    try:
        # The quick table's cell is written; its worker then takes the long STL job.
        assert wait_for(lambda: any((out / "cells").glob("*.json")), timeout=240)
        time.sleep(3.0)
        workers = children(parent.pid)
        busy = [p for p, cmd in workers.items() if "spawn_main" in cmd]
        tracker = [p for p, cmd in workers.items() if "resource_tracker" in cmd]
        assert busy, workers
        assert parent.poll() is None  # still running the long STL references
        kill_parent_and_expect_gone(parent, {p: workers[p] for p in busy + tracker})
    finally:
        kill_strays(parent, workers)
