"""Process trees for the tests that SIGKILL a parent and expect its workers to exit (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path


def children(pid: int) -> dict[int, str]:
    """Child processes of ``pid``: pid -> command line."""
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # The command name (field 2) may hold spaces: the parent pid is the 2nd field after ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out[int(entry.name)] = cmdline
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


def kill_parent_and_expect_gone(
    parent: subprocess.Popen[bytes] | subprocess.Popen[str],
    watched: Mapping[int, str],
    timeout: float = 30.0,
) -> None:
    """SIGKILL ``parent`` and assert every process of ``watched`` exits within ``timeout`` s."""
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    gone = wait_for(lambda: not any(alive(p) for p in watched), timeout=timeout)
    assert gone, {p: cmd for p, cmd in watched.items() if alive(p)}


def kill_strays(
    parent: subprocess.Popen[bytes] | subprocess.Popen[str], pids: Iterable[int]
) -> None:
    """Never leave a stray process behind, even when the test failed."""
    if parent.poll() is None:
        parent.kill()
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
