"""Resumable agent checkpoints: everything a killed ``igb train-agent`` run needs to continue.

A checkpoint is one folder, written whole into a temporary folder and renamed into place, then
published by atomically replacing the pointer file ``RUN/checkpoint.json``::

    RUN/checkpoint.json                   {"dir": "checkpoint-000000080", "timesteps": 80}
    RUN/checkpoint-000000080/model.zip    the SB3 model (optimizer state, num_timesteps, ...)
    RUN/checkpoint-000000080/replay_buffer.pkl   off-policy algorithms only
    RUN/checkpoint-000000080/vecnormalize.pkl    when the env is under VecNormalize
    RUN/checkpoint-000000080/state.json   timesteps, instance state of every sub-env, episodes,
                                          wall time used, best held-out return, references
    RUN/checkpoint-000000080/rng.pkl      numpy, torch and Python ``random`` states
    RUN/checkpoint.zip                    hard link to the latest model.zip (the pre-resume layout)

A crash (even SIGKILL) at any moment leaves the pointer on a complete checkpoint: the folder is
renamed into place only once complete, and the pointer is replaced (``os.replace``) only after.
Older checkpoint folders are removed after the pointer moves on.

Checkpoints are taken at rollout boundaries (``on_rollout_start``: after the previous update, so
the model, optimizer, replay buffer and timestep counter agree); a resumed run therefore loses at
most the steps since its last checkpoint, and the episodes in progress when it stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from agents.callbacks import save_model_atomic
from mtl_backends.atomic import write_json_atomic

POINTER = "checkpoint.json"
LEGACY_MODEL = "checkpoint.zip"


def rng_states() -> dict[str, Any]:
    """The global RNG states of this process (numpy legacy, torch CPU, Python ``random``)."""
    return {
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "random": random.getstate(),
    }


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Restore ``rng_states()``."""
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    random.setstate(states["random"])


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(model: BaseAlgorithm, run: str | Path, state: Mapping[str, Any]) -> Path:
    """Write a complete checkpoint of ``model`` into ``run`` and point ``checkpoint.json`` at it.

    Args:
        model: The SB3 model (its env, if under ``VecNormalize``, contributes its statistics).
        run: Run folder.
        state: JSON-friendly training state (instance states, episodes, wall time, ...);
            ``timesteps`` is added from ``model.num_timesteps``.

    Returns:
        The checkpoint folder.
    """
    run = Path(run)
    timesteps = int(model.num_timesteps)
    name = f"checkpoint-{timesteps:09d}"
    tmp = Path(tempfile.mkdtemp(dir=run, prefix=".checkpoint-", suffix=".tmp"))
    try:
        model.save(tmp / "model.zip")
        if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
            model.save_replay_buffer(tmp / "replay_buffer.pkl")
        vecnormalize = model.get_vec_normalize_env()
        if vecnormalize is not None:
            vecnormalize.save(str(tmp / "vecnormalize.pkl"))
        with (tmp / "rng.pkl").open("wb") as fh:
            pickle.dump(rng_states(), fh)
        (tmp / "state.json").write_text(json.dumps({**state, "timesteps": timesteps}, indent=2))
        for child in tmp.iterdir():
            with child.open("rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        final = run / name
        if final.exists():  # a checkpoint at the same timestep (e.g. the final one): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(run)
    write_json_atomic({"dir": name, "timesteps": timesteps}, run / POINTER)
    link = run / f".{LEGACY_MODEL}.tmp"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    os.link(final / "model.zip", link)
    os.replace(link, run / LEGACY_MODEL)
    for old in run.glob("checkpoint-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    for stale in run.glob(".checkpoint-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(run: str | Path) -> Path:
    """The folder ``RUN/checkpoint.json`` points at.

    Raises:
        FileNotFoundError: No checkpoint was written (or the run folder does not exist).
    """
    run = Path(run)
    pointer = run / POINTER
    if not pointer.is_file():
        raise FileNotFoundError(
            f"{str(run)!r} has no {POINTER}: nothing to resume (was it started with "
            "checkpoint_every set, and did it reach its first checkpoint?)"
        )
    folder = run / json.loads(pointer.read_text())["dir"]
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} is incomplete")
    return folder


def load_state(folder: str | Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint folder."""
    state: dict[str, Any] = json.loads((Path(folder) / "state.json").read_text())
    return state


def load_rng_states(folder: str | Path) -> dict[str, Any]:
    """The RNG states saved in a checkpoint folder (a pickle this code wrote itself)."""
    with (Path(folder) / "rng.pkl").open("rb") as fh:
        states: dict[str, Any] = pickle.load(fh)
    return states


class ResumableCheckpointCallback(BaseCallback):
    """Write a resumable checkpoint every ``every`` timesteps, at rollout boundaries.

    Args:
        run: Run folder.
        every: Timesteps between checkpoints (counted over all sub-envs).
        state: Called at each checkpoint for the JSON-friendly training state.
        start: Timesteps already done (a resumed run): the next checkpoint is ``start + every``.
    """

    def __init__(
        self,
        run: str | Path,
        every: int,
        state: Callable[[], Mapping[str, Any]],
        start: int = 0,
    ) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 timestep, got {every}")
        self.run = Path(run)
        self.every = every
        self.state = state
        self._next = start + every
        self.saved = 0

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self._next:
            self.save()

    def save(self) -> Path:
        """Checkpoint now."""
        folder = save_checkpoint(self.model, self.run, self.state())
        self._next = self.num_timesteps + self.every
        self.saved += 1
        return folder

    def _on_step(self) -> bool:
        return True


class SaveBestCallback(BaseCallback):
    """``EvalCallback``'s ``callback_on_new_best``: save the model atomically as the best one.

    Args:
        path: Destination, e.g. ``RUN/best_model.zip``.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    def _on_step(self) -> bool:
        save_model_atomic(self.model, self.path)
        return True


__all__ = [
    "LEGACY_MODEL",
    "POINTER",
    "ResumableCheckpointCallback",
    "SaveBestCallback",
    "latest_checkpoint",
    "load_rng_states",
    "load_state",
    "rng_states",
    "save_checkpoint",
    "set_rng_states",
]
