"""Reading the project's JSON files and checking output folders before any work starts.

Every JSON file igb-rl reads back (policy sidecars, agent checkpoints, comparison cells, STL cache
entries) goes through ``read_json``, so a truncated, hand-edited or foreign file gives an error
that names the file and what to do, never a bare ``JSONDecodeError``. ``check_writable_dir``
proves that a folder can be written *before* a run trains (``docs/architecture.md``, "Bad input
and trust"): a run must never train for an hour and then fail to write its results.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


class FileFormatError(ValueError):
    """A file igb-rl reads is unreadable, malformed or not the kind of file expected."""


def read_json(path: str | Path, what: str, expect: type | None = dict) -> Any:
    """The parsed JSON of ``path``, with errors that name the file.

    Args:
        path: The file.
        what: What the file is, for messages (e.g. ``"policy sidecar"``).
        expect: The type the top-level value must have (``dict`` by default; ``None``: any).

    Raises:
        FileNotFoundError: The file does not exist.
        FileFormatError: Not UTF-8 JSON, or the top-level value is not of type ``expect``.
    """
    path = Path(path)
    if path.is_dir():
        raise FileFormatError(f"{what} {str(path)!r} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise FileFormatError(
            f"{what} {str(path)!r} is not a UTF-8 text file ({err.reason}); "
            "it is damaged or not the file igb-rl wrote"
        ) from None
    except json.JSONDecodeError as err:
        raise FileFormatError(
            f"{what} {str(path)!r} is not valid JSON ({err.msg} at line {err.lineno}, column "
            f"{err.colno}); it is truncated or was edited by hand: restore or regenerate it"
        ) from None
    if expect is not None and not isinstance(data, expect):
        raise FileFormatError(
            f"{what} {str(path)!r} must hold a JSON {_json_kind(expect)}, "
            f"got a {_json_kind(type(data))}"
        )
    return data


def _json_kind(tp: type) -> str:
    kinds = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    kinds.update({bool: "true/false", type(None): "null"})
    return kinds.get(tp, tp.__name__)


def check_writable_dir(path: str | Path, setting: str) -> Path:
    """Prove that ``path`` is (or can become) a writable folder, creating nothing that stays.

    The nearest existing ancestor must be a folder this process can create files in (tested by
    creating and removing a temporary file, which also holds for root and for ACLs, unlike
    ``os.access``); every existing part of the path must be a folder.

    Args:
        path: The folder.
        setting: The option or config key that named it, for messages (e.g. ``"--out"``).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        NotADirectoryError: ``path`` or one of its parents is a file.
        PermissionError: The folder (or its nearest existing parent) is not writable.
    """
    folder = Path(path).expanduser()
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        detail = "is a file" if probe == folder else f"cannot be created: {str(probe)!r} is a file"
        raise NotADirectoryError(
            f"{setting} {str(folder)!r} {detail}; give a folder path (or move the file away)"
        )
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".igb-write-check-")
    except OSError as err:
        raise PermissionError(
            f"{setting} {str(folder)!r} is not writable ({err.strerror or err}: "
            f"{str(probe)!r}); choose a folder you can write to"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return folder


def check_writable_file(path: str | Path, setting: str) -> Path:
    """Prove that the file ``path`` can be written (its folder writable, itself not a folder).

    Raises:
        IsADirectoryError: ``path`` is a folder.
        NotADirectoryError: A parent of ``path`` is a file.
        PermissionError: Its folder is not writable.
    """
    file = Path(path).expanduser()
    if file.is_dir():
        raise IsADirectoryError(f"{setting} {str(file)!r} is a folder; give a file path")
    check_writable_dir(file.parent, f"the folder of {setting}")
    return file


__all__ = ["FileFormatError", "check_writable_dir", "check_writable_file", "read_json"]
