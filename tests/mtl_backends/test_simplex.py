"""``scaled_softmax``: positive weights on the simplex scaled to ``T``, shared with IGBv1."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.simplex import scaled_softmax
from mtl_backends.weightings import igbv1_weights

logits = st.lists(st.floats(-30.0, 30.0), min_size=1, max_size=8)


def test_hand_values() -> None:
    assert scaled_softmax(torch.zeros(4)).tolist() == [1.0, 1.0, 1.0, 1.0]
    w = scaled_softmax(torch.tensor([math.log(1.0), math.log(3.0)]))
    assert w.tolist() == pytest.approx([0.5, 1.5])
    w = scaled_softmax(torch.tensor([0.0, math.log(2.0), math.log(5.0)]))
    assert w.tolist() == pytest.approx([3 / 8, 6 / 8, 15 / 8])
    assert scaled_softmax(torch.tensor([7.0])).tolist() == [1.0]


def test_float64_whatever_the_input() -> None:
    for dtype in (torch.float32, torch.float64, torch.float16):
        assert scaled_softmax(torch.tensor([0.1, 0.2], dtype=dtype)).dtype == torch.float64


@settings(max_examples=80, deadline=None)
@given(z=logits, shift=st.floats(-100.0, 100.0))
def test_positive_sum_t_and_shift_invariant(z: list[float], shift: float) -> None:
    x = torch.tensor(z, dtype=torch.float64)
    w = scaled_softmax(x)
    assert bool((w > 0).all()) and bool(torch.isfinite(w).all())
    assert float(w.sum()) == pytest.approx(len(z), rel=1e-12)
    torch.testing.assert_close(scaled_softmax(x + shift), w, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(z=st.lists(st.floats(-5.0, 5.0), min_size=2, max_size=6))
def test_weight_ratios_are_exponentials_of_logit_differences(z: list[float]) -> None:
    w = scaled_softmax(torch.tensor(z, dtype=torch.float64))
    for i in range(len(z)):
        for j in range(len(z)):
            assert float(w[i] / w[j]) == pytest.approx(math.exp(z[i] - z[j]), rel=1e-9)
    # A larger logit never gets a smaller weight.
    order = sorted(range(len(z)), key=lambda i: z[i])
    assert all(w[a] <= w[b] for a, b in itertools.pairwise(order))


def test_large_logits_do_not_overflow() -> None:
    w = scaled_softmax(torch.tensor([1000.0, 0.0, -1000.0], dtype=torch.float64))
    assert w.tolist() == [3.0, 0.0, 0.0]


def test_igbv1_uses_the_same_map_bit_for_bit() -> None:
    gaps = torch.tensor([0.9, 0.55, 1.3], dtype=torch.float64)
    assert torch.equal(igbv1_weights(gaps), scaled_softmax(gaps))
    assert torch.equal(igbv1_weights(gaps.float()), scaled_softmax(gaps.float()))
