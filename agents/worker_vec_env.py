"""``WorkerVecEnv``: a whole ``VecEnv`` built and stepped in a worker process.

With ``group_processes`` each batched env group of a set policy runs in its own worker (one torch
thread), so the groups step in parallel on several cores; the results equal in-process groups bit
for bit.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import (
    VecEnv,
)
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from mtl_backends.lifetime import exit_with_parent


def preload_workers() -> None:
    """Have the forkserver import torch, SB3 and the env once, so each worker starts in a blink.

    ``SubprocVecEnv`` and the process pools here start their workers through the one forkserver
    of this process; without a preload every worker re-imports torch (seconds each). No effect once
    the forkserver runs.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "stable_baselines3", "igb_env", "agents.vec_env"])


def _vec_worker(remote: Connection, parent: Connection, factory: Callable[[], VecEnv]) -> None:
    """Serve one ``VecEnv`` in a worker process (one torch thread) until ``close``.

    The worker exits as soon as the process that started it dies (``exit_with_parent``).
    """
    parent.close()
    exit_with_parent()
    torch.set_num_threads(1)
    venv = factory()
    # The step's result (or its exception) between ``step_async`` and ``step_wait``.
    pending: VecEnvStepReturn | BaseException | None = None
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
                # Step now, not at ``step_wait``: the parent sends every group's actions before
                # collecting any result, so the groups compute at the same time only if each
                # starts when its actions arrive (a batched or dummy VecEnv defers its work to
                # ``step_wait``, which would run the groups one after another).
                try:
                    venv.step_async(data)
                    pending = venv.step_wait()
                except Exception as error:  # raised at step_wait, where the caller expects it
                    pending = error
            elif cmd == "step_wait":
                result, pending = pending, None
                if isinstance(result, BaseException):
                    raise result
                remote.send(result)
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

    ``step_async`` returns at once and the worker steps right away (``step_wait`` only collects),
    so the groups of a ``PaddedVecEnv`` step in parallel, one process (and one core) each;
    results equal the in-process group's bit for bit (the worker runs the same code with one
    torch thread). Attribute and method calls are forwarded.

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


__all__ = ["WorkerVecEnv", "preload_workers"]
