"""The ``igb`` command line's one error boundary: expected failures as one line and an exit code.

``describe`` turns an exception that reached ``agents.cli.main`` into the line printed after
``igb COMMAND:`` and the exit code:

* ``EXIT_BAD_INPUT`` (2): the user's input is wrong and the message says what to fix: configs
  (``ConfigError``, invalid YAML), files igb-rl reads (policies, checkpoints, caches, records:
  ``FileFormatError`` and other ``ValueError``), missing files and unusable output paths
  (``FileNotFoundError``, ``NotADirectoryError``, ``PermissionError``, ...), a missing optional
  extra (``ImportError``, e.g. ``MissingExtraError``).
* ``EXIT_RUN_FAILED`` (1): the input was accepted but the run failed: training diverged, the
  disk filled up, memory ran out.
* Anything else is a bug: one line naming the exception, exit 1, and the hint to rerun with
  ``--debug``, which prints the traceback of every failure.

The library is imported lazily so that ``igb --help`` stays light.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

_PATH_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def _one_line(text: str) -> str:
    """``text`` on one line (messages of nested failures may hold newlines)."""
    return " ".join(text.split())


def _os_message(exc: OSError) -> str:
    """An ``OSError`` raised by the OS names its file; one raised by igb-rl is already a message."""
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    where = repr(str(exc.filename))
    if exc.filename2 is not None:
        where += f" -> {str(exc.filename2)!r}"
    return f"{exc.strerror}: {where}"


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message of an exception that ended a command.

    Args:
        exc: The exception.

    Returns:
        ``(exit code, message)``; the message does not repeat the command name.
    """
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    from mtl_backends.results import DivergenceError

    if isinstance(exc, DivergenceError):
        return EXIT_RUN_FAILED, _one_line(f"run failed: training diverged: {exc}")
    if isinstance(exc, ValueError):
        # ConfigError, FileFormatError, JSON / Unicode decode errors: all name the file or setting.
        return EXIT_BAD_INPUT, _one_line(f"error: {exc}")
    if isinstance(exc, _PATH_ERRORS):
        return EXIT_BAD_INPUT, _one_line(f"error: {_os_message(exc)}")
    if isinstance(exc, OSError):
        hint = (
            "; free some disk space and run again"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else ""
        )
        return EXIT_RUN_FAILED, _one_line(f"run failed: {_os_message(exc)}{hint}")
    if isinstance(exc, MemoryError):
        return EXIT_RUN_FAILED, "run failed: out of memory; use a smaller config or fewer workers"
    if isinstance(exc, ImportError):
        # MissingExtraError and the extras' own messages say what to install.
        hint = "" if "pip install" in str(exc) else " (is an optional extra missing?)"
        return EXIT_BAD_INPUT, _one_line(f"error: {exc}{hint}")
    return EXIT_RUN_FAILED, _one_line(
        f"internal error: {type(exc).__name__}: {exc} (a bug in igb-rl; rerun with --debug for "
        "the traceback and report it)"
    )


def flag_message(message: str, flags: Mapping[str, str]) -> str:
    """A config dataclass's message in the words of the flag the user typed.

    ``flags`` maps field names to flags: ``trials must be >= 1`` becomes ``--trials must be >= 1``
    with ``{"trials": "--trials"}``; a message that starts with no field is returned unchanged.
    """
    for name, flag in flags.items():
        if message.startswith(f"{name} "):
            return flag + message[len(name) :]
    return message


__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_RUN_FAILED", "describe", "flag_message"]
