"""Progress for humans and for logs: one helper behind every progress display of igb-rl.

On a terminal, ``Progress`` is a tqdm bar. When its stream is not a terminal (a redirected log, a
CI job, a batch scheduler, a notebook's captured output) it writes plain lines instead of
carriage-return redraws: one line when at least ``every_fraction`` (5%) more of the work is done
and ``min_interval_s`` (1 s) have passed since the last line, or when ``interval_s`` (10 s) have
passed, each with the count, the rate and the ETA, and one closing line with the total time (so a
display that finishes within a second writes that line only)::

    compare: 12/40 cell (30%) | 2.4 cell/s | elapsed 0:05 | ETA 0:12

The environment variable ``IGB_PROGRESS`` overrides the choice: ``bar`` (tqdm even when not on a
terminal, e.g. in a notebook), ``lines`` (plain lines even on a terminal) or ``off``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

Mode = Literal["bar", "lines", "off"]
MODES: tuple[Mode, ...] = ("bar", "lines", "off")
ENV_VAR = "IGB_PROGRESS"
"""Environment variable that overrides the display (one of ``MODES``)."""


def progress_mode(stream: TextIO | None = None) -> Mode:
    """How progress is shown on ``stream`` (default ``sys.stderr``).

    ``IGB_PROGRESS`` when set, else ``bar`` on a terminal and ``lines`` otherwise.

    Raises:
        ValueError: ``IGB_PROGRESS`` is set to something else than ``bar``, ``lines`` or ``off``.
    """
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value:
        if value not in MODES:
            raise ValueError(
                f"environment variable {ENV_VAR}={os.environ[ENV_VAR]!r} is not a progress "
                f"display; valid choices: {', '.join(MODES)} (or unset: bars on a terminal, "
                "lines otherwise)"
            )
        return value
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        tty = False
    return "bar" if tty else "lines"


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (or ``M:SS`` under an hour) of a number of seconds; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _format_rate(rate: float, unit: str) -> str:
    if rate <= 0 or not math.isfinite(rate):
        return f"? {unit}/s"
    if rate >= 1:
        return f"{rate:.3g} {unit}/s" if rate < 100 else f"{rate:.0f} {unit}/s"
    return f"{1 / rate:.3g} s/{unit}"


class Progress:
    """A progress display over ``total`` units of work: a tqdm bar, plain log lines, or nothing.

    Use it as tqdm's manual interface (``update``, ``write``, ``set_postfix``, ``close``, or as a
    context manager). Nothing is written before the first ``update``.

    Args:
        total: Units of work (``None``: unknown, no percentage or ETA).
        desc: Name shown first on every line (``compare``, ``agent``, ...).
        unit: Name of a unit (``cell``, ``step``, ...).
        disable: Show nothing (the counting still works).
        leave: Keep the bar on screen when closed (bar mode only).
        mode: ``bar``, ``lines`` or ``off`` (default: ``progress_mode(stream)``).
        stream: Where to write (default ``sys.stderr``, as tqdm).
        clock: Seconds of a monotonic clock (tests inject one).
        interval_s: In line mode, the longest time between two lines while work advances.
        every_fraction: In line mode, the share of ``total`` that gives a line when done, ...
        min_interval_s: ... provided this many seconds have passed since the last line.
        time_budget_s: Work that also stops at a wall-clock budget (agent training): the ETA is
            the sooner of the rate's estimate and the budget left.

    Raises:
        ValueError: A negative ``total`` or non-positive intervals or fraction.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "it",
        *,
        disable: bool = False,
        leave: bool = True,
        mode: Mode | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 10.0,
        every_fraction: float = 0.05,
        min_interval_s: float = 1.0,
        time_budget_s: float | None = None,
    ) -> None:
        if total is not None and total < 0:
            raise ValueError(f"progress total must be >= 0 or None, got {total}")
        if not interval_s > 0 or not 0 < every_fraction <= 1 or min_interval_s < 0:
            raise ValueError(
                "progress needs interval_s > 0, 0 < every_fraction <= 1 and min_interval_s >= 0; "
                f"got {interval_s}, {every_fraction}, {min_interval_s}"
            )
        if mode is not None and mode not in MODES:
            raise ValueError(f"progress mode {mode!r}; valid choices: {', '.join(MODES)}")
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream
        self.clock = clock
        self.interval_s = interval_s
        self.every_fraction = every_fraction
        self.min_interval_s = min_interval_s
        self.time_budget_s = time_budget_s
        self.mode: Mode = "off" if disable else (mode or progress_mode(stream))
        self.n = 0
        self.postfix = ""
        self.lines_written = 0
        self._start = clock()
        self._last_time = self._start
        self._last_n = 0
        self._closed = False
        self._bar: Any = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=stream)

    # -- the tqdm-like interface ----------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.update_to(self.n + n)

    def update_to(self, n: int) -> None:
        """Set the count of units done to ``n`` (e.g. the timesteps of an agent)."""
        self.n = int(n)
        if self._bar is not None:
            self._bar.n = self.n
            self._bar.refresh()
        elif self.mode == "lines" and self._due():
            self._line(final=False)

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the count (``episodes=3, ret=0.25``) on the next redraw or line."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def write(self, message: str) -> None:
        """Print a message as its own line without breaking the display (tqdm's ``write``)."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self._stream(), flush=True)

    def close(self) -> None:
        """Finish the display (in line mode: one closing line when anything was done)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and self.n > 0:
            self._line(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- line mode ------------------------------------------------------------------------------
    def _stream(self) -> TextIO:
        return sys.stderr if self.stream is None else self.stream

    def _due(self) -> bool:
        if self.total is not None and self.n >= self.total:
            return False  # the closing line reports the end
        since = self.clock() - self._last_time
        if since >= self.interval_s:
            return True
        if not self.total or since < self.min_interval_s:
            return False
        return (self.n - self._last_n) / self.total >= self.every_fraction

    def _line(self, final: bool) -> None:
        now = self.clock()
        elapsed = now - self._start
        rate = self.n / elapsed if elapsed > 0 else math.inf
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        parts = [f"{self.desc}: {count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(_format_rate(rate, self.unit))
        if final:
            parts.append(f"done in {format_duration(elapsed)}")
        else:
            parts.append(f"elapsed {format_duration(elapsed)}")
            eta = math.inf
            if self.total is not None and math.isfinite(rate) and rate > 0:
                eta = max(self.total - self.n, 0) / rate
            if self.time_budget_s is not None:
                eta = min(eta, max(self.time_budget_s - elapsed, 0.0))
            parts.append(f"ETA {format_duration(eta)}" if math.isfinite(eta) else "ETA ?")
        if self.postfix:
            parts.append(self.postfix)
        print(" | ".join(parts), file=self._stream(), flush=True)
        self.lines_written += 1
        self._last_time, self._last_n = now, self.n


__all__ = ["ENV_VAR", "MODES", "Mode", "Progress", "format_duration", "progress_mode"]
