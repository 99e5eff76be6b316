"""A SIGKILLed agent process leaves no env worker behind (issue 18).

``WorkerVecEnv`` (one env group per process) and ``SubprocVecEnv`` workers used to keep running,
re-parented to PID 1, after their parent was killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests._processes import children, kill_parent_and_expect_gone, kill_strays

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads process trees from /proc"
)

# Builds both kinds of worker and sends each a step that trains for hours (K = 10^7 trainer steps),
# says so, then waits to be killed: the workers are busy, not waiting on their pipe, when it dies.
PARENT = textwrap.dedent(
    """
    import functools, time
    import numpy as np
    from stable_baselines3.common.vec_env import SubprocVecEnv
    from agents.vec_env import BatchedVecEnv, make_worker_env
    from agents.worker_vec_env import WorkerVecEnv, preload_workers

    config = {"preset": "smoke", "train": {"steps": 20_000_000}, "steps_per_action": 10_000_000}
    preload_workers()
    group = WorkerVecEnv(functools.partial(BatchedVecEnv, config, 2))
    group.reset()
    sub = SubprocVecEnv([functools.partial(make_worker_env, config)])
    sub.reset()
    group.step_async(np.zeros((2, 3), np.float32))
    sub.step_async(np.zeros((1, 3), np.float32))
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_env_workers_exit_when_their_parent_is_killed() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    workers: dict[int, str] = {}
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "ready"
        # The forkserver is the parent's child; the env workers are the forkserver's children.
        time.sleep(2.0)  # the workers are inside their step now
        servers = children(parent.pid)
        workers = {pid: cmd for s in servers for pid, cmd in children(s).items()}
        assert len(workers) >= 2, (servers, workers)
        kill_parent_and_expect_gone(parent, workers)
    finally:
        kill_strays(parent, workers)
