"""A SIGKILLed ``igb compare`` leaves no worker behind (issue 18).

Before, a worker busy with a cell or an STL reference kept running after its parent was killed,
re-parented to PID 1 (350 MB for a real cell), and kept the ``multiprocessing`` resource tracker
alive with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests._tiny import TINY_SYNTHETIC

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads process trees from /proc"
)


def _children(pid: int) -> dict[int, str]:
    """Child processes of ``pid``: pid -> command line."""
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # The command name (field 2) may hold spaces: the parent pid is the 2nd field after ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out[int(entry.name)] = cmdline
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition: object, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(step)
    return False


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
        assert _wait_for(lambda: any((out / "cells").glob("*.json")), timeout=240)
        time.sleep(3.0)
        workers = _children(parent.pid)
        busy = [p for p, cmd in workers.items() if "spawn_main" in cmd]
        tracker = [p for p, cmd in workers.items() if "resource_tracker" in cmd]
        assert busy, workers
        assert parent.poll() is None  # still running the long STL references
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        gone = _wait_for(lambda: not any(_alive(p) for p in busy + tracker), timeout=30)
        assert gone, {p: workers[p] for p in busy + tracker if _alive(p)}
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in workers:  # never leave a stray process behind, even when the test fails
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
