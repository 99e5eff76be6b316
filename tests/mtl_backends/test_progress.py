"""``mtl_backends.progress``: bars on a terminal, few plain lines with rate and ETA in a log."""

from __future__ import annotations

import io
import re

import pytest

from mtl_backends.progress import Progress, format_duration, progress_mode


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


LINE = re.compile(
    r"^compare: (\d+)/100 cell \(\d+%\) \| [\d.]+ (cell/s|s/cell) \| elapsed \d+:\d\d \| "
    r"ETA \d+:\d\d$"
)


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IGB_PROGRESS", raising=False)


def test_mode_follows_the_terminal_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert progress_mode(io.StringIO()) == "lines"
    assert progress_mode(Tty()) == "bar"
    closed = io.StringIO()
    closed.close()
    assert progress_mode(closed) == "lines"
    monkeypatch.setenv("IGB_PROGRESS", "bar")
    assert progress_mode(io.StringIO()) == "bar"
    monkeypatch.setenv("IGB_PROGRESS", "OFF")
    assert progress_mode(Tty()) == "off"


def test_unknown_environment_value_names_the_valid_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IGB_PROGRESS", "fancy")
    with pytest.raises(ValueError, match=r"IGB_PROGRESS='fancy'.*bar, lines, off"):
        progress_mode(io.StringIO())


def test_fast_work_in_a_log_gives_one_line_per_five_percent_at_most() -> None:
    out, clock = io.StringIO(), Clock()
    bar = Progress(100, "compare", "cell", stream=out, clock=clock)
    assert bar.mode == "lines"
    for _ in range(100):  # 100 cells, 0.4 s each: a 5% step every 2 s
        clock.now += 0.4
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 20  # one per 5% (not per update); the closing line reports 100%
    assert "\r" not in out.getvalue()
    for line in lines[:-1]:
        assert LINE.match(line), line
    assert lines[0] == "compare: 5/100 cell (5%) | 2.5 cell/s | elapsed 0:02 | ETA 0:38"
    assert lines[-1] == "compare: 100/100 cell (100%) | 2.5 cell/s | done in 0:40"


def test_slow_work_in_a_log_gives_one_line_per_ten_seconds() -> None:
    out, clock = io.StringIO(), Clock()
    bar = Progress(10_000, "agent", "step", stream=out, clock=clock)
    for _ in range(120):  # 2 minutes, one step per second: 1.2% of the work
        clock.now += 1.0
        bar.update(1)
    bar.set_postfix(episodes=3, ret="0.250")
    clock.now += 10.0
    bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 13  # one per 10 s
    assert lines[0] == "agent: 10/10000 step (0%) | 1 step/s | elapsed 0:10 | ETA 2:46:30"
    assert lines[-1].endswith("| episodes=3, ret=0.250")
    assert bar.lines_written == 13


def test_a_wall_clock_budget_bounds_the_eta() -> None:
    """Agent training stops at its budget: a 5-minute run must not promise 2 hours."""
    out, clock = io.StringIO(), Clock()
    bar = Progress(10_000, "agent", "step", stream=out, clock=clock, time_budget_s=300.0)
    for _ in range(40):
        clock.now += 1.0
        bar.update(1)
    lines = out.getvalue().splitlines()
    # At 10 s: 1 step/s leaves 2:46:30 for the cap, the budget 4:50; at 40 s, 4:20.
    assert lines[0].endswith("| elapsed 0:10 | ETA 4:50")
    assert lines[-1].endswith("| elapsed 0:40 | ETA 4:20")
    # A budget longer than the work leaves the rate's estimate.
    out2, clock2 = io.StringIO(), Clock()
    bar2 = Progress(20, "agent", "step", stream=out2, clock=clock2, time_budget_s=3600.0)
    clock2.now += 10.0
    bar2.update(10)
    assert out2.getvalue().splitlines()[0].endswith("| ETA 0:10")


def test_update_to_unknown_total_slow_rates_and_write() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress(None, "stl", "ref", stream=out, clock=clock) as bar:
        clock.now += 30.0
        bar.update_to(2)
        bar.write("STL synthetic seed 1 lost")
        clock.now += 90.0
        bar.update_to(3)
    assert out.getvalue().splitlines() == [
        "stl: 2 ref | 15 s/ref | elapsed 0:30 | ETA ?",
        "STL synthetic seed 1 lost",
        "stl: 3 ref | 40 s/ref | elapsed 2:00 | ETA ?",
        "stl: 3 ref | 40 s/ref | done in 2:00",
    ]


def test_nothing_is_written_when_disabled_off_or_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    out, clock = io.StringIO(), Clock()
    bar = Progress(10, "train", "step", stream=out, clock=clock, disable=True)
    clock.now += 100.0
    bar.update(10)
    bar.close()
    assert bar.n == 10 and bar.mode == "off"
    Progress(10, "train", "step", stream=out, clock=clock).close()  # no work: no closing line
    monkeypatch.setenv("IGB_PROGRESS", "off")
    quiet = Progress(10, "train", "step", stream=out, clock=clock)
    clock.now += 100.0
    quiet.update(5)
    quiet.close()
    assert out.getvalue() == ""


def test_bar_mode_is_tqdm() -> None:
    out = Tty()
    bar = Progress(4, "compare", "cell", stream=out)
    assert bar.mode == "bar"
    bar.update(2)
    bar.set_postfix(failed=0)
    bar.update_to(4)
    bar.close()
    assert "\r" in out.getvalue() and "4/4" in out.getvalue()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="total must be >= 0"):
        Progress(-1, "x")
    with pytest.raises(ValueError, match="every_fraction"):
        Progress(1, "x", every_fraction=0.0)
    with pytest.raises(ValueError, match="valid choices: bar, lines, off"):
        Progress(1, "x", mode="fancy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0:00"), (59.6, "1:00"), (754, "12:34"), (3600 * 27 + 5, "27:00:05"), (-1, "?")],
)
def test_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
