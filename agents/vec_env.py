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

import contextlib
import functools
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecEnvWrapper,
    VecMonitor,
)
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from agents.config import AgentConfig, group_env_configs
from agents.set_policy import PaddedLayout
from igb_env import make_env
from igb_env.config import load_env_config
from igb_env.vector import BatchedIGBEnv
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
    """

    def __init__(self, env_config: Mapping[str, Any], n_envs: int, adam: str = "fused") -> None:
        self.env = BatchedIGBEnv(
            n_envs,
            dict(env_config),
            autoreset_mode="same_step",
            adam=adam,  # type: ignore[arg-type]
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


class PaddedVecEnv(VecEnv):
    """One SB3 ``VecEnv`` over groups of sub-envs whose runs have different T (``policy: set``).

    Each group is a ``VecEnv`` of one env configuration (a ``BatchedVecEnv``, or copies of
    ``IGBEnv``); their observations are padded to ``layout`` (``agents.set_policy.PaddedLayout``:
    per-task features up to ``max_tasks``, globals, task mask) and the padded actions cut back to
    each group's ``T + A`` entries. Sub-env indices run group after group; every info carries the
    sub-env's ``n_tasks``, and ``terminal_observation`` is padded like the observations.

    Args:
        groups: The groups' vectorised envs.
        n_tasks: T of each group.
        layout: The padded layout (``max_tasks`` at least every group's T).
        observation_space: The padded observation space (``layout.observation_space(spec)``).
    """

    def __init__(
        self,
        groups: Sequence[VecEnv],
        n_tasks: Sequence[int],
        layout: PaddedLayout,
        observation_space: spaces.Box,
    ) -> None:
        if not groups or len(groups) != len(n_tasks):
            raise ValueError("PaddedVecEnv needs one T per group and at least one group")
        self.groups = list(groups)
        self.n_tasks = [int(t) for t in n_tasks]
        self.layout = layout
        for venv, t in zip(self.groups, self.n_tasks, strict=True):
            expected = t * layout.task_features + layout.global_features
            if venv.observation_space.shape != (expected,):
                raise ValueError(
                    f"a group of T={t} must observe {expected} features for the layout, got "
                    f"{venv.observation_space.shape}"
                )
        self._offsets = np.cumsum([0] + [g.num_envs for g in self.groups])
        self.render_mode = None
        if observation_space.shape != (layout.obs_dim,):
            raise ValueError(
                f"the observation space must have shape ({layout.obs_dim},) for the layout, got "
                f"{observation_space.shape}"
            )
        super().__init__(int(self._offsets[-1]), observation_space, layout.action_space())

    def _locate(self, index: int) -> tuple[int, int]:
        group = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return group, index - int(self._offsets[group])

    def _slices(self) -> list[slice]:
        return [
            slice(int(a), int(b))
            for a, b in zip(self._offsets[:-1], self._offsets[1:], strict=True)
        ]

    def reset(self) -> np.ndarray:
        """Reset every group (with the seeds of ``seed()`` when set since the last reset)."""
        out = []
        infos: list[dict[str, Any]] = []
        for venv, part, t in zip(self.groups, self._slices(), self.n_tasks, strict=True):
            seeds = self._seeds[part]
            if any(s is not None for s in seeds):
                venv._seeds = list(seeds)
            out.append(self.layout.pad(np.asarray(venv.reset()), t))
            infos += [{**info, "n_tasks": t} for info in venv.reset_infos]
        self.reset_infos = infos
        self._reset_seeds()
        return np.concatenate(out)

    def step_async(self, actions: np.ndarray) -> None:
        """Start every group's step with its share of the actions (cut to its T)."""
        actions = np.asarray(actions)
        for venv, part, t in zip(self.groups, self._slices(), self.n_tasks, strict=True):
            venv.step_async(self.layout.unpad_action(actions[part], t))

    def step_wait(self) -> VecEnvStepReturn:
        """Wait for every group; pad the observations (and terminal observations)."""
        obs, rewards, dones, infos = [], [], [], []
        for venv, t in zip(self.groups, self.n_tasks, strict=True):
            o, r, d, i = venv.step_wait()
            obs.append(self.layout.pad(np.asarray(o), t))
            rewards.append(np.asarray(r, dtype=np.float32))
            dones.append(np.asarray(d, dtype=bool))
            for info in i:
                info = dict(info)
                info["n_tasks"] = t
                if "terminal_observation" in info:
                    info["terminal_observation"] = self.layout.pad(
                        np.asarray(info["terminal_observation"])[None], t
                    )[0]
                infos.append(info)
        return np.concatenate(obs), np.concatenate(rewards), np.concatenate(dones), infos

    def close(self) -> None:
        """Close every group."""
        for venv in self.groups:
            venv.close()

    def _dispatch(self, indices: VecEnvIndices) -> list[tuple[int, int]]:
        return [self._locate(i) for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of each indexed sub-env."""
        return [
            self.groups[g].get_attr(attr_name, indices=[i])[0] for g, i in self._dispatch(indices)
        ]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of each indexed sub-env (where its group allows it)."""
        for g, i in self._dispatch(indices):
            self.groups[g].set_attr(attr_name, value, indices=[i])

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        """Call a method of each indexed sub-env."""
        return [
            self.groups[g].env_method(method_name, *method_args, indices=[i], **kwargs)[0]
            for g, i in self._dispatch(indices)
        ]

    def env_is_wrapped(
        self,
        wrapper_class: type[gym.Wrapper],
        indices: VecEnvIndices = None,
    ) -> list[bool]:
        """Whether each indexed sub-env is wrapped with ``wrapper_class``."""
        return [
            self.groups[g].env_is_wrapped(wrapper_class, indices=[i])[0]
            for g, i in self._dispatch(indices)
        ]


def _vec_worker(remote: Connection, parent: Connection, factory: Callable[[], VecEnv]) -> None:
    """Serve one ``VecEnv`` in a worker process (one torch thread) until ``close``."""
    parent.close()
    torch.set_num_threads(1)
    venv = factory()
    try:
        while True:
            try:
                cmd, data = remote.recv()
            except EOFError:
                break
            if cmd == "spaces":
                remote.send((venv.num_envs, venv.observation_space, venv.action_space))
            elif cmd == "reset":
                if data is not None:
                    venv._seeds = list(data)
                obs = venv.reset()
                remote.send((obs, venv.reset_infos))
            elif cmd == "step_async":
                venv.step_async(data)
            elif cmd == "step_wait":
                remote.send(venv.step_wait())
            elif cmd == "get_attr":
                remote.send(venv.get_attr(data[0], data[1]))
            elif cmd == "set_attr":
                remote.send(venv.set_attr(data[0], data[1], data[2]))
            elif cmd == "env_method":
                remote.send(venv.env_method(data[0], *data[1], indices=data[3], **data[2]))
            elif cmd == "is_wrapped":
                remote.send(venv.env_is_wrapped(data[0], data[1]))
            elif cmd == "close":
                break
            else:
                raise NotImplementedError(f"unknown worker command {cmd!r}")
    finally:
        venv.close()
        remote.close()


class WorkerVecEnv(VecEnv):
    """A whole ``VecEnv`` (e.g. one env group's ``BatchedVecEnv``) built and stepped in a worker.

    ``step_async`` returns at once, so the groups of a ``PaddedVecEnv`` step in parallel, one
    process (and one core) each; results equal the in-process group's bit for bit (the worker runs
    the same code with one torch thread). Attribute and method calls are forwarded.

    Args:
        factory: Builds the ``VecEnv`` in the worker (picklable: a module-level function or a
            ``functools.partial`` of one).
    """

    def __init__(self, factory: Callable[[], VecEnv]) -> None:
        preload_workers()
        context = multiprocessing.get_context("forkserver")
        self._remote, worker = context.Pipe()
        self._process = context.Process(
            target=_vec_worker, args=(worker, self._remote, factory), daemon=True
        )
        self._process.start()
        worker.close()
        self._remote.send(("spaces", None))
        n, obs_space, action_space = self._remote.recv()
        self.render_mode = None
        self._closed = False
        super().__init__(n, obs_space, action_space)

    def _call(self, cmd: str, data: Any = None) -> Any:
        self._remote.send((cmd, data))
        return self._remote.recv()

    def reset(self) -> np.ndarray:
        """Reset the worker's envs (with the seeds of ``seed()`` when set since the last reset)."""
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, infos = self._call("reset", seeds)
        self.reset_infos = infos
        self._reset_seeds()
        return np.asarray(obs)

    def step_async(self, actions: np.ndarray) -> None:
        """Send the actions; the worker steps while this process goes on."""
        self._remote.send(("step_async", np.asarray(actions)))

    def step_wait(self) -> VecEnvStepReturn:
        """The worker's step results."""
        result: VecEnvStepReturn = self._call("step_wait")
        return result

    def close(self) -> None:
        """Stop the worker."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(BrokenPipeError, EOFError):  # the worker is already gone
            self._remote.send(("close", None))
        self._process.join(timeout=30)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of each indexed sub-env of the worker."""
        result: list[Any] = self._call("get_attr", (attr_name, indices))
        return result

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of each indexed sub-env of the worker."""
        self._call("set_attr", (attr_name, value, indices))

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        """Call a method of each indexed sub-env of the worker."""
        result: list[Any] = self._call("env_method", (method_name, method_args, kwargs, indices))
        return result

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Whether each indexed sub-env of the worker is wrapped with ``wrapper_class``."""
        result: list[bool] = self._call("is_wrapped", (wrapper_class, indices))
        return result


def make_worker_env(env_config: dict[str, Any]) -> gym.Env[np.ndarray, np.ndarray]:
    """The env of one worker (a module-level, picklable factory), with one torch thread.

    One thread per worker lets ``n_envs`` workers share the cores instead of oversubscribing them
    (SB3 issue #90).
    """
    torch.set_num_threads(1)
    return make_env(env_config)


def preload_workers() -> None:
    """Have the forkserver import torch, SB3 and the env once, so each worker starts in a blink.

    ``SubprocVecEnv`` and the process pools here start their workers through the one forkserver
    of this process; without a preload every worker re-imports torch (seconds each). No effect once
    the forkserver runs.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "stable_baselines3", "igb_env", "agents.vec_env"])


def _group_vec_env(
    env_config: dict[str, Any], n_envs: int, kind: str, process: bool = False
) -> VecEnv:
    """``n_envs`` sub-envs of one env configuration, vectorised as ``kind``.

    ``process``: a batched group runs in its own worker process (``WorkerVecEnv``).
    """
    if kind == "batched":
        if process:
            return WorkerVecEnv(functools.partial(BatchedVecEnv, env_config, n_envs))
        return BatchedVecEnv(env_config, n_envs)
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
            _group_vec_env(c, config.n_envs, config.vec_env, config.group_processes)
            for c in configs
        ]
        tasks = [int(g.get_attr("n_tasks", indices=[0])[0]) for g in groups]
        layout = padded_layout(configs, tasks)
        space = layout.observation_space(load_env_config(configs[0]).feature_spec)
        venv = PaddedVecEnv(groups, tasks, layout, space)
    else:
        venv = _group_vec_env(dict(config.env), config.n_envs, config.vec_env)
    venv = SeedSequenceVecEnv(venv)
    venv.seed(config.seed)
    return VecMonitor(venv)


__all__ = [
    "BatchedVecEnv",
    "PaddedVecEnv",
    "SeedSequenceVecEnv",
    "WorkerVecEnv",
    "make_vec_env",
    "make_worker_env",
    "padded_layout",
    "preload_workers",
    "spawn_seeds",
]
