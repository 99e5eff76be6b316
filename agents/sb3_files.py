"""Loading SB3 archives (``model.zip``) without unpickling anything they carry.

SB3 stores some attributes as cloudpickle, which runs code on load; ``load_sb3_model`` replaces
every such entry by a trusted value or ``None`` (``docs/architecture.md``, "Bad input and trust").
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from mtl_backends.fileio import FileFormatError

SB3_STATE_ENTRIES: tuple[str, ...] = (
    "_last_obs",
    "_last_episode_starts",
    "_last_original_obs",
    "ep_info_buffer",
    "ep_success_buffer",
)
"""Cloudpickled SB3 entries that are run state: loaded as ``None`` (``learn`` resets the env and
the observations; the episode buffers come back from ``episodes.json``)."""
SB3_REBUILT_ENTRIES: tuple[str, ...] = (
    "lr_schedule",
    "rollout_buffer_class",
    "replay_buffer_class",
)
"""Cloudpickled SB3 entries that SB3's ``_setup_model`` rebuilds from plain values when ``None``."""


def serialized_entries(path: str | Path) -> list[str]:
    """Names of the cloudpickled (``:serialized:``) entries of an SB3 archive, read as JSON.

    Raises:
        FileFormatError: Not a zip archive with SB3's JSON ``data`` entry.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data").decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FileFormatError(
            f"SB3 model {str(path)!r} is not a readable SB3 archive ({err}); it is damaged or "
            "was not written by igb train-agent"
        ) from None
    if not isinstance(data, dict):
        raise FileFormatError(f"SB3 model {str(path)!r}: its 'data' entry is not a JSON object")
    return [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]


def load_sb3_model(
    algorithm: type[BaseAlgorithm],
    path: str | Path,
    trusted: Mapping[str, Any],
    **kwargs: Any,
) -> BaseAlgorithm:
    """``algorithm.load(path)`` without unpickling any cloudpickled entry of the archive.

    SB3 stores some attributes (the policy class, spaces, schedules, buffers' classes, episode
    buffers) as cloudpickle, which runs code on load. Every such entry is replaced through SB3's
    ``custom_objects``: by ``trusted`` (values rebuilt from the run's own config, e.g.
    ``agents.build.model_template``), by ``None`` for run state that SB3 resets or rebuilds
    (``SB3_STATE_ENTRIES``, ``SB3_REBUILT_ENTRIES``). The tensors are read by SB3 with
    ``torch.load(weights_only=True)``.

    Args:
        algorithm: The SB3 algorithm class.
        path: The ``.zip`` archive.
        trusted: Replacement values by entry name.
        kwargs: Passed to ``algorithm.load`` (``env``, ``device``, ...).

    Raises:
        FileFormatError: Not an SB3 archive, or a cloudpickled entry this loader cannot replace
            (the archive was not written by igb-rl's training; nothing was unpickled).
    """
    custom: dict[str, Any] = {}
    for name in serialized_entries(path):
        if name in trusted:
            custom[name] = trusted[name]
        elif name in SB3_STATE_ENTRIES or name in SB3_REBUILT_ENTRIES:
            custom[name] = None
        else:
            raise FileFormatError(
                f"SB3 model {str(path)!r} holds a pickled entry {name!r} that igb-rl does not "
                "rebuild from the run's config; refusing to unpickle it (the archive was not "
                "written by igb train-agent of this version)"
            )
    with warnings.catch_warnings():
        # Emitted when loading without an env; expected for exports.
        warnings.filterwarnings("ignore", message=".*could not deserialize.*")
        return algorithm.load(path, custom_objects=custom, **kwargs)


__all__ = ["SB3_REBUILT_ENTRIES", "SB3_STATE_ENTRIES", "load_sb3_model", "serialized_entries"]
