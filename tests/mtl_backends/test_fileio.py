"""``mtl_backends.fileio``: JSON errors that name the file; output folders checked before work."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from mtl_backends.fileio import (
    FileFormatError,
    check_writable_dir,
    check_writable_file,
    read_json,
)


def test_read_json_names_the_file_and_the_position(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"a": 1,\n "b": }')
    with pytest.raises(FileFormatError) as err:
        read_json(path, "checkpoint state")
    message = str(err.value)
    assert message.startswith(f"checkpoint state {str(path)!r} is not valid JSON")
    assert "line 2, column 7" in message and "restore or regenerate it" in message


@pytest.mark.parametrize(
    ("content", "kind"),
    [("[1, 2]", "array"), ('"text"', "string"), ("3", "number"), ("null", "null")],
)
def test_read_json_refuses_a_value_that_is_not_an_object(
    tmp_path: Path, content: str, kind: str
) -> None:
    path = tmp_path / "policy.json"
    path.write_text(content)
    with pytest.raises(FileFormatError, match=f"must hold a JSON object, got a {kind}"):
        read_json(path, "policy sidecar")
    assert read_json(path, "policy sidecar", expect=None) == json.loads(content)


def test_read_json_refuses_binary_files_and_folders(tmp_path: Path) -> None:
    binary = tmp_path / "cell.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(FileFormatError, match="is not a UTF-8 text file"):
        read_json(binary, "cell record")
    with pytest.raises(FileFormatError, match="is a folder, not a file"):
        read_json(tmp_path, "cell record")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{str(tmp_path / 'x.json')!r}")):
        read_json(tmp_path / "x.json", "cell record")


def test_check_writable_dir_accepts_new_and_existing_folders_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    new = tmp_path / "a" / "b"
    assert check_writable_dir(new, "--out") == new
    assert not (tmp_path / "a").exists()  # nothing created
    assert check_writable_dir(tmp_path, "--out") == tmp_path
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_check_writable_dir_refuses_a_file_or_a_path_through_a_file(tmp_path: Path) -> None:
    file = tmp_path / "results"
    file.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"--out '.*results' is a file; give a folder"):
        check_writable_dir(file, "--out")
    with pytest.raises(NotADirectoryError, match=r"cannot be created: '.*results' is a file"):
        check_writable_dir(file / "sub", "stl_cache")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_writable_dir_refuses_a_read_only_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=r"--out '.*locked.*' is not writable"):
            check_writable_dir(locked / "run", "--out")
    finally:
        locked.chmod(0o700)


def test_check_writable_file_refuses_a_folder(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="is a folder; give a file path"):
        check_writable_file(tmp_path, "--out")
    assert check_writable_file(tmp_path / "x.yaml", "--out") == tmp_path / "x.yaml"
    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError):
        check_writable_file(blocker / "x.yaml", "--out")
