from __future__ import annotations

import torch

from mtl_backends.gaps import GapTracker
from mtl_backends.weightings import EW, SI, IGBv1, StepContext, make_weighting


def _context(tracker: GapTracker, losses: list[float], step: int) -> StepContext:
    t = torch.tensor(losses)
    tracker.update(t, step, 1.0)
    return StepContext(t, tracker, step, 0, 10, 1.0)


def test_igbv1_is_one_before_base_then_the_formula() -> None:
    tracker = GapTracker(3, base_window=(1, 3))
    w = IGBv1()
    w.reset(3, None)
    sequence = [[5.0, 5.0, 5.0], [1.0, 2.0, 4.0], [3.0, 2.0, 8.0], [1.0, 4.0, 3.0]]
    out = [w(_context(tracker, row, i)) for i, row in enumerate(sequence)]
    # Steps 0-2: no base losses yet (the base exists from step 3, the first after the window).
    for weights in out[:3]:
        assert weights.tolist() == [1.0, 1.0, 1.0]
    # Base = mean of steps 1 and 2 = (2, 2, 6).
    for step in (3,):
        gaps = torch.tensor(sequence[step], dtype=torch.float64) / torch.tensor(
            [2.0, 2.0, 6.0], dtype=torch.float64
        )
        expected = 3 * torch.exp(gaps) / torch.exp(gaps).sum()
        torch.testing.assert_close(out[step].double(), expected, rtol=1e-6, atol=1e-6)
    assert abs(float(out[3].sum()) - 3.0) < 1e-5
    # Hand value for step 3: gaps (0.5, 2, 0.5) -> 3 e^g / Σ e^g.
    e = torch.exp(torch.tensor([0.5, 2.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(out[3].double(), 3 * e / e.sum(), rtol=1e-6, atol=1e-6)


def test_transforms_are_declared() -> None:
    assert EW.transform == "identity"
    assert SI.transform == "log"
    assert IGBv1.transform == "log"
    assert make_weighting("igbv1").transform == "log"


def test_ew_and_si_are_unit_weights() -> None:
    tracker = GapTracker(2, base_window=(0, 1))
    ctx = _context(tracker, [1.0, 2.0], 0)
    assert EW()(ctx).tolist() == [1.0, 1.0]
    assert SI()(ctx).tolist() == [1.0, 1.0]
