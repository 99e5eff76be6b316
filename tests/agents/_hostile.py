"""Crafted files shared by the hostile-input tests: pickles that would run code if loaded."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zipfile
from pathlib import Path


class Payload:
    """Unpickling this object creates ``marker``: code from the file would have run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def replace_serialized(archive: Path, out: Path, entries: dict[str, object]) -> Path:
    """A copy of an SB3 archive whose ``data`` holds these cloudpickled entries.

    ``out`` may be ``archive`` itself: the original is read fully before it is rewritten.
    """
    with zipfile.ZipFile(archive) as src:
        items = [(item, src.read(item.filename)) for item in src.infolist()]
    with zipfile.ZipFile(out, "w") as dst:
        for item, content in items:
            if item.filename == "data":
                data = json.loads(content)
                for name, obj in entries.items():
                    blob = base64.b64encode(pickle.dumps(obj)).decode()
                    data[name] = {":type:": "<class 'object'>", ":serialized:": blob}
                content = json.dumps(data).encode()
            dst.writestr(item, content)
    return out


def tamper(archive: Path, entries: dict[str, object]) -> None:
    """Rewrite an SB3 archive in place with these cloudpickled ``data`` entries."""
    replace_serialized(archive, archive, entries)
