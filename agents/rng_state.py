"""The random states of an agent run (numpy, torch, Python ``random``) as plain JSON.

Checkpoints store them in ``rng.json`` (``agents.checkpoint``); no pickle is written. Checkpoints of
the older layout (``rng.pkl``) are read by an unpickler that admits only numpy arrays and torch byte
tensors, so a crafted file runs no code.
"""

from __future__ import annotations

import base64
import io
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl_backends.fileio import FileFormatError

RNG_FORMAT = "igb-rng-states"


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


def rng_states_to_json(states: Mapping[str, Any]) -> dict[str, Any]:
    """``rng_states()`` as plain JSON values (integers, floats, a base64 byte string)."""
    name, key, pos, has_gauss, cached = states["numpy"]
    version, internal, gauss_next = states["random"]
    return {
        "format": RNG_FORMAT,
        "version": 1,
        "numpy": {
            "bit_generator": str(name),
            "key": [int(k) for k in np.asarray(key, dtype=np.uint32)],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": base64.b64encode(states["torch"].numpy().tobytes()).decode("ascii"),
        "random": {
            "version": int(version),
            "state": [int(v) for v in internal],
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
    }


def rng_states_from_json(data: Any, where: str) -> dict[str, Any]:
    """The inverse of ``rng_states_to_json``, checked entry by entry.

    Raises:
        FileFormatError: A missing entry or a value of the wrong kind (naming ``where``).
    """
    try:
        if data.get("format") != RNG_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {RNG_FORMAT!r}")
        np_state = data["numpy"]
        key = np.asarray(np_state["key"], dtype=np.int64)
        if np_state["bit_generator"] != "MT19937" or key.shape != (624,):
            raise ValueError("numpy: an MT19937 state needs 624 key words")
        if key.min() < 0 or key.max() >= 2**32:
            raise ValueError("numpy: key words must be 32-bit unsigned integers")
        pos, has_gauss = int(np_state["pos"]), int(np_state["has_gauss"])
        cached = float(np_state["cached_gaussian"])
        numpy_state = ("MT19937", key.astype(np.uint32), pos, has_gauss, cached)
        raw = base64.b64decode(str(data["torch"]), validate=True)
        torch_state = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()
        py = data["random"]
        gauss = py["gauss_next"]
        random_state = (
            int(py["version"]),
            tuple(int(v) for v in py["state"]),
            None if gauss is None else float(gauss),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # binascii.Error: ValueError
        detail = f"missing entry {err}" if isinstance(err, KeyError) else str(err)
        raise FileFormatError(
            f"RNG states {where!r} are malformed ({detail}); the checkpoint is damaged: resume "
            "from an intact copy or start the run again"
        ) from None
    return {"numpy": numpy_state, "torch": torch_state, "random": random_state}


class _LegacyRngUnpickler(pickle.Unpickler):
    """Reads the ``rng.pkl`` of older checkpoints and nothing else.

    Only the globals such a file holds are admitted: numpy's array reconstruction (non-object
    dtypes), torch's tensor rebuild from a byte storage (read back with
    ``torch.load(weights_only=True)`` instead of torch's own ``weights_only=False`` helper) and
    ``OrderedDict``. Any other global (``os.system``, ``builtins.eval``, ...) is refused, so a
    crafted file cannot run code.
    """

    _ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("torch._utils", "_rebuild_tensor_v2"),
            ("collections", "OrderedDict"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("numpy", "dtype"):
            return _plain_dtype
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _storage_from_bytes
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in an RNG state file")


def _plain_dtype(*args: Any) -> np.dtype[Any]:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed in an RNG state file")
    return dtype


def _storage_from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


def read_legacy_rng(path: Path) -> dict[str, Any]:
    """The RNG states of an old checkpoint's ``rng.pkl``, unpickling numpy and torch data only.

    Raises:
        FileFormatError: The pickle names anything else (it would have run code) or is damaged.
    """
    try:
        with path.open("rb") as fh:
            states = _LegacyRngUnpickler(fh).load()
        numpy_state = tuple(states["numpy"])
        torch_state = states["torch"]
        random_state = tuple(states["random"])
        if numpy_state[0] != "MT19937" or not isinstance(torch_state, torch.Tensor):
            raise ValueError("not the numpy/torch/random states of an igb-rl checkpoint")
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError) as err:
        raise FileFormatError(
            f"RNG states {str(path)!r} (a checkpoint from before the JSON RNG format) cannot be "
            f"read safely ({err}); the checkpoint is damaged or was not written by igb-rl: "
            "start the run again"
        ) from None
    return {"numpy": numpy_state, "torch": torch_state, "random": random_state}


__all__ = [
    "RNG_FORMAT",
    "read_legacy_rng",
    "rng_states",
    "rng_states_from_json",
    "rng_states_to_json",
    "set_rng_states",
]
