from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtl_backends.atomic import atomic_open, atomic_torch_save, write_json_atomic, write_text_atomic


def test_writes_replace_the_destination(tmp_path: Path) -> None:
    write_text_atomic("old", tmp_path / "a.txt")
    write_text_atomic("new", tmp_path / "a.txt")
    write_json_atomic({"b": 1, "a": 2}, tmp_path / "sub" / "c.json")
    atomic_torch_save({"x": torch.ones(2)}, tmp_path / "t.pt")
    assert (tmp_path / "a.txt").read_text() == "new"
    assert (tmp_path / "sub" / "c.json").read_text().index('"a"') < (
        tmp_path / "sub" / "c.json"
    ).read_text().index('"b"')
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "sub", "t.pt"]  # no temp files


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"complete")
    with pytest.raises(RuntimeError, match="killed"), atomic_open(target, "wb") as fh:
        fh.write(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]
