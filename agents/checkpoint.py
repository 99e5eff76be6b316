"""Resumable agent checkpoints: everything a killed ``igb train-agent`` run needs to continue.

A checkpoint is one folder, written whole into a temporary folder and renamed into place, then
published by atomically replacing the pointer file ``RUN/checkpoint.json``::

    RUN/checkpoint.json                   {"dir": "checkpoint-000000080", "timesteps": 80}
    RUN/checkpoint-000000080/model.zip    the SB3 model (optimizer state, num_timesteps, ...)
    RUN/checkpoint-000000080/replay_buffer.pkl   off-policy algorithms only
    RUN/checkpoint-000000080/vecnormalize.pkl    when the env is under VecNormalize
    RUN/checkpoint-000000080/state.json   timesteps, instance state of every sub-env, episodes,
                                          wall time used, best held-out return, references
    RUN/checkpoint-000000080/rng.json     numpy, torch and Python ``random`` states (plain JSON)
    RUN/checkpoint-000000080/episodes.json   SB3's rolling episode statistics (ep_info_buffer)
    RUN/checkpoint.zip                    hard link to the latest model.zip (the pre-resume layout)

A crash (even SIGKILL) at any moment leaves the pointer on a complete checkpoint: the folder is
renamed into place only once complete, and the pointer is replaced (``os.replace``) only after.
Older checkpoint folders are removed after the pointer moves on.

Checkpoints are taken at rollout boundaries (``on_rollout_start``: after the previous update, so
the model, optimizer, replay buffer and timestep counter agree); a resumed run therefore loses at
most the steps since its last checkpoint, and the episodes in progress when it stopped.

Trust (``docs/architecture.md``, "Bad input and trust"): igb-rl's own state is plain JSON and
tensors; no pickle of its own is written or read. SB3 archives (``model.zip``) are loaded by
``load_sb3_model``, which gives SB3 a trusted replacement (rebuilt from the run's config) for
every cloudpickled entry, so no stored callable is unpickled. ``replay_buffer.pkl`` and
``vecnormalize.pkl`` are SB3's own pickles: an agent run folder must be trusted like code.
Checkpoints written before the JSON RNG format (``rng.pkl``) are still resumed: their RNG pickle
is read by an unpickler that admits only numpy arrays and torch byte tensors.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from agents.callbacks import save_model_atomic
from agents.rng_state import (
    read_legacy_rng,
    rng_states,
    rng_states_from_json,
    rng_states_to_json,
)
from mtl_backends.atomic import write_json_atomic
from mtl_backends.fileio import FileFormatError, read_json

POINTER = "checkpoint.json"
LEGACY_MODEL = "checkpoint.zip"
RNG_FILE = "rng.json"
LEGACY_RNG_FILE = "rng.pkl"
EPISODES_FILE = "episodes.json"
CHECKPOINT_DIR = re.compile(r"checkpoint-\d{9,}")


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
        (tmp / RNG_FILE).write_text(json.dumps(rng_states_to_json(rng_states())))
        (tmp / EPISODES_FILE).write_text(json.dumps(episode_buffers(model)))
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
    name = read_json(pointer, "checkpoint pointer").get("dir")
    # The pointer names a folder inside the run; anything else (a path, "..") is refused.
    if not isinstance(name, str) or not CHECKPOINT_DIR.fullmatch(name):
        raise FileFormatError(
            f"checkpoint pointer {str(pointer)!r} must name a checkpoint folder of the run "
            f"('checkpoint-' and its timestep, 9 digits or more) in 'dir', got {name!r}; the run "
            "folder is damaged"
        )
    folder = run / name
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} is incomplete")
    return folder


def load_state(folder: str | Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint folder.

    Raises:
        FileFormatError: Not JSON or not an object (naming the file).
    """
    state: dict[str, Any] = read_json(Path(folder) / "state.json", "checkpoint state")
    return state


def load_rng_states(folder: str | Path) -> dict[str, Any]:
    """The RNG states saved in a checkpoint folder, in the form of ``rng_states()``.

    ``rng.json`` is read as plain JSON; the ``rng.pkl`` of a checkpoint written before it is read
    by an unpickler that admits numpy arrays and torch byte tensors only (no code can run).

    Raises:
        FileNotFoundError: Neither file exists.
        FileFormatError: A malformed file, or a pickle holding anything but RNG states.
    """
    folder = Path(folder)
    if (folder / RNG_FILE).is_file():
        data = read_json(folder / RNG_FILE, "RNG states")
        return rng_states_from_json(data, str(folder / RNG_FILE))
    legacy = folder / LEGACY_RNG_FILE
    if legacy.is_file():
        return read_legacy_rng(legacy)
    raise FileNotFoundError(f"checkpoint folder {str(folder)!r} has no {RNG_FILE}")


def _json_value(value: Any) -> Any:
    """A number of an episode record as JSON (numpy scalars keep their dtype)."""
    if isinstance(value, np.generic):
        return {"numpy": value.dtype.str, "value": value.item()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"unexpected {type(value).__name__} in an SB3 episode record")


def _from_json_value(value: Any) -> Any:
    if isinstance(value, dict):
        dtype = np.dtype(str(value["numpy"]))
        if dtype.kind not in "biuf":
            raise ValueError(f"episode records hold numbers only, got dtype {dtype}")
        return dtype.type(value["value"])
    return value


def episode_buffers(model: BaseAlgorithm) -> dict[str, Any]:
    """SB3's rolling episode statistics of ``model`` as JSON.

    ``ep_info_buffer`` and ``ep_success_buffer`` (``None`` before the first ``learn``); numpy
    scalars keep their dtype, so the logged means after a resume are the same bit for bit.
    """
    out: dict[str, Any] = {}
    for name in ("ep_info_buffer", "ep_success_buffer"):
        buffer = getattr(model, name, None)
        if buffer is None:
            out[name] = None
        elif name == "ep_info_buffer":
            out[name] = [{k: _json_value(v) for k, v in info.items()} for info in buffer]
        else:
            out[name] = [_json_value(v) for v in buffer]
    return out


def restore_episode_buffers(model: BaseAlgorithm, folder: str | Path) -> bool:
    """Put the episode statistics of ``episodes.json`` back into ``model``.

    Returns:
        ``False`` for a checkpoint without the file (written before it existed): the rolling
        episode means of the logs then restart empty.

    Raises:
        FileFormatError: A malformed file.
    """
    path = Path(folder) / EPISODES_FILE
    if not path.is_file():
        return False
    data = read_json(path, "episode statistics")
    window = int(getattr(model, "_stats_window_size", 100))
    try:
        infos = data["ep_info_buffer"]
        successes = data["ep_success_buffer"]
        if infos is not None:
            model.ep_info_buffer = collections.deque(
                ({str(k): _from_json_value(v) for k, v in dict(i).items()} for i in infos),
                maxlen=window,
            )
        if successes is not None:
            model.ep_success_buffer = collections.deque(
                (_from_json_value(v) for v in successes), maxlen=window
            )
    except (KeyError, TypeError, ValueError) as err:
        raise FileFormatError(
            f"episode statistics {str(path)!r} are malformed ({err}); the checkpoint is damaged"
        ) from None
    return True


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


def restore_evaluations(evaluation: EvalCallback, up_to: int) -> int:
    """Give a resumed run's ``EvalCallback`` the evaluations before its checkpoint.

    SB3's ``EvalCallback`` rewrites ``evaluations.npz`` from its own lists at every evaluation, so
    a new one would drop every evaluation made before the resume. Evaluations after the
    checkpoint (``timesteps > up_to``, made before a crash) are dropped: the resumed run makes them
    again.

    Args:
        evaluation: The resumed run's callback (``log_path`` set).
        up_to: The checkpoint's timesteps.

    Returns:
        The evaluations restored.
    """
    if evaluation.log_path is None:
        return 0
    path = Path(evaluation.log_path + ".npz")
    if not path.is_file():
        return 0
    with np.load(path) as saved:
        timesteps, results, lengths = saved["timesteps"], saved["results"], saved["ep_lengths"]
    keep = [i for i, t in enumerate(timesteps) if int(t) <= up_to]
    evaluation.evaluations_timesteps = [int(timesteps[i]) for i in keep]
    evaluation.evaluations_results = [results[i].tolist() for i in keep]
    evaluation.evaluations_length = [lengths[i].tolist() for i in keep]
    return len(keep)


__all__ = [
    "EPISODES_FILE",
    "LEGACY_MODEL",
    "LEGACY_RNG_FILE",
    "POINTER",
    "RNG_FILE",
    "ResumableCheckpointCallback",
    "SaveBestCallback",
    "episode_buffers",
    "latest_checkpoint",
    "load_rng_states",
    "load_state",
    "restore_episode_buffers",
    "restore_evaluations",
    "save_checkpoint",
]
