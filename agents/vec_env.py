"""Vectorised envs of agent training: sub-envs seeded by ``SeedSequence``.

``make_vec_env`` gives ``n_envs`` sub-envs, seeded from ``numpy.random.SeedSequence(seed).spawn(
n_envs)`` (SB3's own ``seed + i`` would make neighbouring runs share sub-env seeds, SB3 issue
#2268), under ``VecMonitor``:

* ``dummy``: copies of ``IGBEnv`` in this process (``DummyVecEnv``);
* ``subproc``: one copy per worker process (``SubprocVecEnv``, one torch thread each);
* ``batched``: one ``igb_env.vector.BatchedIGBEnv`` training all sub-envs' MTL runs together in
  this process, behind ``BatchedVecEnv``, SB3's ``VecEnv`` interface (same-step autoreset, the
  terminal observation in ``info["terminal_observation"]``).

A set policy (``policy: set``) trains on several env groups at once (``env_groups``: e.g. one per
T): ``n_envs`` sub-envs per group, joined by ``PaddedVecEnv`` in the padded layout of
``agents.set_policy``; with ``group_processes`` each batched group runs in its own worker process
(``WorkerVecEnv``), so the groups step in parallel on several cores.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecEnvWrapper,
    VecMonitor,
)
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from agents.config import AgentConfig, group_env_configs
from agents.padded_vec_env import PaddedVecEnv
from agents.set_policy import PaddedLayout
from agents.worker_vec_env import WorkerVecEnv, preload_workers
from igb_env import make_env
from igb_env.config import load_env_config
from igb_env.vector import BatchedIGBEnv
from mtl_backends.lifetime import exit_with_parent
from mtl_backends.registry import ConfigError


def spawn_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 32-bit seeds from ``numpy.random.SeedSequence(seed).spawn(n)``."""
    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(n)]


class SeedSequenceVecEnv(VecEnvWrapper):
    """Seeds sub-env ``i`` with the ``i``-th ``SeedSequence`` child instead of SB3's ``seed + i``.

    SB3 calls ``env.seed(seed)`` when a model is built with ``seed=...``; this wrapper intercepts
    that call. With ``seed + i``, runs with seeds 0 and 1 would share a sub-env seed
    (SB3 issue #2268).
    """

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Set the seeds the sub-envs get at their next reset."""
        if seed is None:
            return list(self.venv.seed(None))
        seeds: list[int | None] = list(spawn_seeds(seed, self.num_envs))
        # SB3's VecEnv applies `_seeds` at the next reset(), then clears it (base_vec_env.py).
        self.venv._seeds = seeds
        return seeds

    def reset(self) -> Any:
        """Reset every sub-env."""
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        """Wait for the step started by ``step_async``."""
        return self.venv.step_wait()


class BatchedVecEnv(VecEnv):
    """SB3's ``VecEnv`` over a ``BatchedIGBEnv`` (all sub-envs trained in one stacked trainer).

    Sub-env ``i`` is seeded, walks its instances and reports its infos as the ``i``-th ``IGBEnv``
    of a ``DummyVecEnv`` with the same seeds would (its MTL run equals that env's to float
    rounding). ``env_method`` offers the sub-envs' ``get_instance_state`` and
    ``set_instance_state``; ``get_attr`` their shared attributes (``task_names``, ``n_tasks``,
    ``config``, ...).

    Args:
        env_config: The env configuration (``igb_env.config.EnvConfig`` fields).
        n_envs: Number of sub-envs.
        adam: The stacked trainer's Adam implementation.
        paired_baseline: Rewards relative to zero-action twin runs (``BatchedIGBEnv``).
    """

    def __init__(
        self,
        env_config: Mapping[str, Any],
        n_envs: int,
        adam: str = "fused",
        paired_baseline: bool = False,
    ) -> None:
        self.env = BatchedIGBEnv(
            n_envs,
            dict(env_config),
            autoreset_mode="same_step",
            adam=adam,  # type: ignore[arg-type]
            paired_baseline=paired_baseline,
        )
        self.render_mode = None
        super().__init__(n_envs, self.env.single_observation_space, self.env.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        """Start every sub-env (with the seeds of ``seed()`` when set since the last reset)."""
        seeds = None if all(s is None for s in self._seeds) else [int(s or 0) for s in self._seeds]
        obs, infos = self.env.reset(seed=seeds)
        self.reset_infos = self._split(infos)
        self._reset_seeds()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions of the next ``step_wait``."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every sub-env; a finished episode restarts in the same step (SB3's convention)."""
        assert self._actions is not None, "step_async() first"
        obs, rewards, terminated, truncated, infos = self.env.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        split = self._split(infos)
        if dones.any():
            # A finished sub-env reports its final step's info (as DummyVecEnv does), not the
            # info of the episode that started in the same step.
            final = self._split(infos["final_info"])
            for i in np.flatnonzero(dones):
                split[i] = final[i]
        for i in np.flatnonzero(dones):
            split[i]["terminal_observation"] = infos["final_obs"][i]
            split[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, split

    def _split(self, infos: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Gymnasium's batched infos as one dict per sub-env (keys its mask marks present)."""
        keys = [k for k in infos if not k.startswith("_") and k not in ("final_obs", "final_info")]
        present = {k: infos.get(f"_{k}", np.ones(self.num_envs, dtype=bool)) for k in keys}
        return [{k: infos[k][i] for k in keys if present[k][i]} for i in range(self.num_envs)]

    def close(self) -> None:
        """Release the stacked trainer."""
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute the sub-envs share (one value per index)."""
        return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Not supported: the sub-envs share one configuration."""
        raise AttributeError(f"cannot set {attr_name!r}: the batched sub-envs share their settings")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        """Call a per-sub-env method (``get_instance_state``, ``set_instance_state``)."""
        method = getattr(self.env, method_name)
        return [method(i, *method_args, **kwargs) for i in self._get_indices(indices)]

    def env_is_wrapped(
        self,
        wrapper_class: type[gym.Wrapper],
        indices: VecEnvIndices = None,
    ) -> list[bool]:
        """No sub-env is wrapped."""
        return [False for _ in self._get_indices(indices)]


def make_worker_env(env_config: dict[str, Any]) -> gym.Env[np.ndarray, np.ndarray]:
    """The env of one worker (a module-level, picklable factory), with one torch thread.

    One thread per worker lets ``n_envs`` workers share the cores instead of oversubscribing them
    (SB3 issue #90). In a worker process the env exits with its parent (``exit_with_parent``): a
    killed ``igb train-agent`` leaves no ``SubprocVecEnv`` worker behind.
    """
    torch.set_num_threads(1)
    exit_with_parent()
    return make_env(env_config)


def _group_vec_env(
    env_config: dict[str, Any],
    n_envs: int,
    kind: str,
    process: bool = False,
    paired_baseline: bool = False,
) -> VecEnv:
    """``n_envs`` sub-envs of one env configuration, vectorised as ``kind``.

    ``process``: a batched group runs in its own worker process (``WorkerVecEnv``);
    ``paired_baseline``: its rewards are relative to zero-action twins (``BatchedVecEnv``).
    """
    if kind == "batched":
        make = functools.partial(BatchedVecEnv, env_config, n_envs, paired_baseline=paired_baseline)
        return WorkerVecEnv(make) if process else make()
    fns = [functools.partial(make_worker_env, env_config) for _ in range(n_envs)]
    if kind == "subproc":
        preload_workers()
        return SubprocVecEnv(fns)  # type: ignore[arg-type]
    return DummyVecEnv(fns)  # type: ignore[arg-type]


def padded_layout(env_configs: Sequence[Mapping[str, Any]], n_tasks: Sequence[int]) -> PaddedLayout:
    """The padded layout of a set policy over groups of these env configurations and T.

    Raises:
        ConfigError: The groups differ in their feature settings or action map.
    """
    resolved = [load_env_config(dict(c)) for c in env_configs]
    first = resolved[0]
    for other in resolved[1:]:
        for key in ("feature_spec", "action_mode"):
            if getattr(other, key) != getattr(first, key):
                raise ConfigError(
                    f"env_groups must share {key}: {getattr(first, key)} vs {getattr(other, key)}"
                )
    return PaddedLayout.build(first.feature_spec, first.action_mode, max(n_tasks))


def make_vec_env(config: AgentConfig) -> VecEnv:
    """``config.n_envs`` envs per group, vectorised, seeded by ``SeedSequence``, in ``VecMonitor``.

    With ``policy: set`` the sub-envs of every env group are joined in one ``PaddedVecEnv``. The
    sub-env seeds are applied when SB3 seeds the model (``seed=config.seed``) or when
    ``venv.seed(seed)`` is called.
    """
    venv: VecEnv
    if config.policy == "set":
        configs = group_env_configs(config)
        groups = [
            _group_vec_env(
                c, config.n_envs, config.vec_env, config.group_processes, config.paired_baseline
            )
            for c in configs
        ]
        tasks = [int(g.get_attr("n_tasks", indices=[0])[0]) for g in groups]
        layout = padded_layout(configs, tasks)
        space = layout.observation_space(load_env_config(configs[0]).feature_spec)
        venv = PaddedVecEnv(groups, tasks, layout, space)
    else:
        venv = _group_vec_env(
            dict(config.env), config.n_envs, config.vec_env, paired_baseline=config.paired_baseline
        )
    venv = SeedSequenceVecEnv(venv)
    venv.seed(config.seed)
    return VecMonitor(venv)


__all__ = [
    "BatchedVecEnv",
    "SeedSequenceVecEnv",
    "make_vec_env",
    "make_worker_env",
    "padded_layout",
    "spawn_seeds",
]
