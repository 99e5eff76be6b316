"""Timing helpers of ``igb perf``: interleaved repeats, back-to-back ratios, medians.

Every ratio compares methods timed in the same process, at a stated torch thread count, with the
repeats interleaved (method A, method B, method A, ...) so that drifts of the machine's load hit
all methods alike.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from mtl_backends.trainer import MTLTrainer


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_calls(action: Callable[[], object], calls: int) -> float:
    """Wall seconds of ``calls`` calls of ``action``."""
    start = time.perf_counter()
    for _ in range(calls):
        action()
    return time.perf_counter() - start


def interleaved_medians(
    actions: dict[str, Callable[[], object]], repeats: int, calls: int
) -> dict[str, float]:
    """Median seconds per call of each action, timing ``calls`` calls per repeat, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            times[name].append(time_calls(action, calls) / calls)
    return {name: statistics.median(ts) for name, ts in times.items()}


def paired_ratios(
    actions: Mapping[str, Callable[[], object]], reference: str, repeats: int, calls: int
) -> dict[str, list[float]]:
    """Per-repeat time ratios of each action to ``reference``, timed back to back.

    Each repeat times every action once (``calls`` calls), in forward order on even repeats and
    in reverse order on odd ones, and divides each time by the reference's time of the same
    repeat. A ratio of neighbours cancels the load drifts that move both times, and the
    alternating order cancels the advantage of running first (or last) in a repeat; the median
    of the ratios is then a steadier estimate than a ratio of medians.

    Returns:
        ``name -> ratios`` (one per repeat) for every action except ``reference``.
    """
    if reference not in actions:
        raise ValueError(f"reference {reference!r} is not one of the actions {sorted(actions)}")
    names = list(actions)
    out: dict[str, list[float]] = {name: [] for name in names if name != reference}
    for r in range(repeats):
        order = names if r % 2 == 0 else reversed(names)
        seconds = {name: time_calls(actions[name], calls) for name in order}
        for name in out:
            out[name].append(seconds[name] / seconds[reference])
    return out


def quartiles(values: Sequence[float]) -> list[float]:
    """``[q25, q75]`` of ``values`` (both the value itself for one value)."""
    if len(values) < 2:
        return [float(values[0])] * 2
    q = statistics.quantiles(values, n=4, method="inclusive")
    return [float(q[0]), float(q[2])]


def k_steps(trainer: MTLTrainer, k: int) -> Callable[[], None]:
    """An action that takes ``k`` training steps."""

    def run() -> None:
        for _ in range(k):
            trainer.step()

    return run


__all__ = [
    "interleaved_medians",
    "k_steps",
    "num_threads",
    "paired_ratios",
    "quartiles",
    "time_calls",
]
