"""Private random streams: isolation from the global RNGs, reproducibility, saved states."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.rng import (
    RngStream,
    generator_state,
    numpy_state_from_dict,
    numpy_state_to_dict,
    set_generator_state,
)


@pytest.fixture(autouse=True)
def _keep_global_rngs() -> Iterator[None]:
    """These tests seed the global generators; the rest of the suite gets them back unchanged."""
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)


def _numpy_states_equal(a: Any, b: Any) -> bool:
    return (
        a[0] == b[0]
        and np.array_equal(a[1], b[1])
        and a[2:4] == b[2:4]
        and float(a[4]) == float(b[4])
    )


def test_a_block_leaves_the_callers_global_rngs_alone() -> None:
    torch.manual_seed(123)
    np.random.seed(321)
    torch_before, np_before = torch.get_rng_state(), np.random.get_state()
    stream = RngStream(7, numpy=True)
    with stream.active():
        torch.rand(50)
        torch.randn(3, 3)
        np.random.rand(20)
    assert torch.equal(torch.get_rng_state(), torch_before)
    assert _numpy_states_equal(np.random.get_state(), np_before)
    # ... so the caller's next draws are those it would have made without the block.
    expected_torch = torch.rand(4)
    expected_np = np.random.rand(4)
    torch.manual_seed(123)
    np.random.seed(321)
    assert torch.equal(torch.rand(4), expected_torch)
    assert np.array_equal(np.random.rand(4), expected_np)


def test_the_caller_cannot_change_the_stream() -> None:
    a, b = RngStream(5), RngStream(5)
    with a.active():
        first_a = torch.rand(6)
    torch.rand(1000)  # the caller draws between blocks
    with a.active():
        second_a = torch.rand(6)
    with b.active():
        first_b = torch.rand(6)
        second_b = torch.rand(6)
    assert torch.equal(first_a, first_b) and torch.equal(second_a, second_b)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(1, 20), min_size=1, max_size=4))
def test_stream_draws_are_a_seeded_generator_continued_across_blocks(
    seed: int, sizes: list[int]
) -> None:
    stream = RngStream(seed, numpy=True)
    reference = torch.Generator().manual_seed(seed)
    np_reference = np.random.RandomState(seed)
    for n in sizes:
        with stream.active():
            got = torch.rand(n)
            got_np = np.random.rand(n)
        assert torch.equal(got, torch.rand(n, generator=reference))
        assert np.array_equal(got_np, np_reference.rand(n))


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    draws = []
    for seed in (3, 3, 4):
        with RngStream(seed, numpy=True).active():
            draws.append((torch.randn(5), np.random.randn(5)))
    assert torch.equal(draws[0][0], draws[1][0]) and np.array_equal(draws[0][1], draws[1][1])
    assert not torch.equal(draws[0][0], draws[2][0])
    assert not np.array_equal(draws[0][1], draws[2][1])


def test_torch_only_stream_and_with_numpy_false_use_the_global_numpy() -> None:
    for stream, kwargs in ((RngStream(1), {}), (RngStream(1, numpy=True), {"with_numpy": False})):
        np.random.seed(9)
        with stream.active(**kwargs):
            inside = np.random.rand(3)
        after = np.random.rand(3)
        np.random.seed(9)
        assert np.array_equal(inside, np.random.rand(3))  # the global numpy stream was used
        assert np.array_equal(after, np.random.rand(3))  # and it advanced
    assert RngStream(1).numpy_state is None


def test_with_numpy_false_keeps_the_streams_numpy_state() -> None:
    stream = RngStream(2, numpy=True)
    with stream.active(with_numpy=False):
        np.random.rand(10)
    with stream.active():
        got = np.random.rand(3)
    assert np.array_equal(got, np.random.RandomState(2).rand(3))


def test_an_exception_inside_the_block_restores_the_callers_state() -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    stream = RngStream(11)
    with pytest.raises(KeyError), stream.active():
        first = torch.rand(2)
        raise KeyError("boom")
    assert torch.equal(torch.get_rng_state(), before)
    # The stream kept its advance: the next block continues after `first`.
    with stream.active():
        second = torch.rand(2)
    reference = torch.Generator().manual_seed(11)
    assert torch.equal(first, torch.rand(2, generator=reference))
    assert torch.equal(second, torch.rand(2, generator=reference))


@pytest.mark.parametrize("gauss", [False, True])
def test_numpy_state_round_trip(gauss: bool) -> None:
    rs = np.random.RandomState(42)
    rs.rand(7)
    if gauss:
        rs.randn(1)  # Box-Muller leaves a cached gaussian
    state = rs.get_state()
    stored = numpy_state_to_dict(state)
    assert stored["name"] == "MT19937" and stored["has_gauss"] == int(gauss)
    assert isinstance(stored["keys"], torch.Tensor) and stored["keys"].dtype == torch.int64
    assert stored["keys"].shape == (624,)
    buf = io.BytesIO()
    torch.save(stored, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    restored = numpy_state_from_dict(loaded)
    assert _numpy_states_equal(restored, state)
    other = np.random.RandomState(0)
    other.set_state(restored)
    assert np.array_equal(other.randn(5), rs.randn(5))


class _WithGenerator:
    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)


class _WithoutGenerator:
    generator = "not a torch generator"


def test_generator_state_round_trip() -> None:
    method = _WithGenerator(8)
    state = generator_state(method)
    assert state is not None
    first = torch.rand(4, generator=method.generator)
    set_generator_state(method, state)
    assert torch.equal(torch.rand(4, generator=method.generator), first)
    # Another method of the same kind continues from a stored state.
    other = _WithGenerator(99)
    set_generator_state(other, generator_state(method))
    assert torch.equal(
        torch.rand(3, generator=other.generator), torch.rand(3, generator=method.generator)
    )


def test_methods_without_a_torch_generator() -> None:
    assert generator_state(object()) is None
    assert generator_state(_WithoutGenerator()) is None
    method = _WithGenerator(1)
    expected = torch.rand(2, generator=_WithGenerator(1).generator)
    set_generator_state(method, None)  # nothing to restore: the generator is untouched
    assert torch.equal(torch.rand(2, generator=method.generator), expected)
    set_generator_state(_WithoutGenerator(), torch.Generator().get_state())  # ignored
