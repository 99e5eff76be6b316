"""``igb perf``, the batched env: env steps per second of N runs trained together, side by side.

Keys (``BATCHED_KEYS``):

* ``batched_env_steps_per_second``: ``preset -> "N=<n>" ->`` env steps per second of
  ``igb_env.vector.BatchedIGBEnv`` with N sub-envs, at the run's torch threads, for the ``small``
  preset (50-64-64-16 synthetic model, batch 64) and the default synthetic setting (250-100-100
  x 100, batch 100), and ``small`` with the ``db_mtl`` balancer underneath (``small_db_mtl``:
  per-task gradients of every slot, the DB-MTL generalist's setting); ``"single"`` is one
  ``IGBEnv`` in this process, for reference.
* ``batched_env_speedup``: ``preset ->`` env steps per second of the batched env with 16 sub-envs
  in one process using the machine's two cores (two torch threads) / two ``IGBEnv`` workers in a
  ``SubprocVecEnv`` (one torch thread each, the agents' ``subproc``), timed in alternating rounds
  on the same instances; the median of the per-round ratios.
* ``agent_batched16_env_steps_per_second``: env steps per second of the default agent (PPO, the
  default design and rollout size, ``AgentConfig`` defaults) learning on ``vec_env: batched``
  with 16 sub-envs and two torch threads: compare with ``agent_env_steps_per_second`` (one env)
  and ``agent_subproc2_speedup`` (two workers).

Steps take zero actions (the residual map's IGBv1 weights); episodes that end are reset as agent
training resets them (``same_step`` for the batched env, SB3's autoreset for the workers), so
resets weigh as they do in training.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv

from agents.experiments.perf_agent import agent_steps_per_second
from agents.experiments.timing import num_threads
from agents.vec_env import make_worker_env
from agents.worker_vec_env import preload_workers
from igb_env import make_env
from igb_env.vector import BatchedIGBEnv

BATCHED_KEYS: tuple[str, ...] = (
    "batched_env_steps_per_second",
    "batched_env_speedup",
    "agent_batched16_env_steps_per_second",
)
PRESETS: dict[str, dict[str, Any]] = {
    "small": {"preset": "small"},
    "small_db_mtl": {"preset": "small", "balancer": "db_mtl"},
    "synthetic": {},
}
TINY_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"preset": "smoke"},
    "smoke_db_mtl": {"preset": "smoke", "balancer": "db_mtl"},
}
SIZES: tuple[int, ...] = (1, 16, 64)
TINY_SIZES: tuple[int, ...] = (1, 2)
SPEEDUP_ENVS = 16


def _rate(step: Callable[[], int], seconds: float, min_calls: int = 2) -> float:
    """Env steps per second of ``step()`` (which returns the env steps it took), after a warm-up."""
    step()
    done, calls = 0, 0
    start = time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        done += step()
        calls += 1
    return done / (time.perf_counter() - start)


def _batched(config: Mapping[str, Any], n: int) -> tuple[BatchedIGBEnv, Callable[[], int]]:
    env = BatchedIGBEnv(n, dict(config), autoreset_mode="same_step")
    env.reset(seed=0)
    actions = np.zeros((n, env.action_dim), dtype=np.float32)

    def step() -> int:
        env.step(actions)
        return n

    return env, step


def _single(config: Mapping[str, Any]) -> Callable[[], int]:
    env = make_env(dict(config))
    env.reset(seed=0)
    action = np.zeros(env.action_space.shape or (0,), dtype=np.float32)

    def step() -> int:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
        return 1

    return step


def _subproc(config: Mapping[str, Any], n: int) -> tuple[SubprocVecEnv, Callable[[], int]]:
    preload_workers()
    venv = SubprocVecEnv([functools.partial(make_worker_env, dict(config)) for _ in range(n)])
    venv.seed(0)
    venv.reset()
    actions = np.zeros((n, *(venv.action_space.shape or ())), dtype=np.float32)

    def step() -> int:
        venv.step(actions)
        return n

    return venv, step


def batched_env_rates(threads: int, repeats: int, tiny: bool) -> dict[str, Any]:
    """Measure ``BATCHED_KEYS`` (see the module docstring).

    Args:
        threads: Torch threads of the per-size rates (the speedup's batched env uses two).
        repeats: Alternating rounds of the speedup (its median is reported).
        tiny: The ``smoke`` preset and sizes 1 and 2 (for tests; not meaningful).
    """
    presets = TINY_PRESETS if tiny else PRESETS
    sizes = TINY_SIZES if tiny else SIZES
    seconds = 0.2 if tiny else 4.0
    rates: dict[str, dict[str, float]] = {}
    speedup: dict[str, float] = {}
    for name, config in presets.items():
        row: dict[str, float] = {}
        with num_threads(threads):
            row["single"] = _rate(_single(config), seconds)
            for n in sizes:
                env, step = _batched(config, n)
                row[f"N={n}"] = _rate(step, seconds)
                env.close()
        rates[name] = row
        n_batched = max(sizes) if tiny else SPEEDUP_ENVS
        env, batched_step = _batched(config, n_batched)
        venv, subproc_step = _subproc(config, 2)
        ratios = []
        try:
            for _ in range(1 if tiny else max(1, repeats)):
                with num_threads(2):
                    batched = _rate(batched_step, seconds)
                workers = _rate(subproc_step, seconds)
                ratios.append(batched / workers)
        finally:
            venv.close()
            env.close()
        speedup[name] = statistics.median(ratios)
    with num_threads(2):
        agent = agent_steps_per_second(tiny, n_envs=max(sizes) if tiny else 16, vec_env="batched")
    return {
        "batched_env_steps_per_second": rates,
        "batched_env_speedup": speedup,
        "agent_batched16_env_steps_per_second": agent,
    }


__all__ = ["BATCHED_KEYS", "batched_env_rates"]
