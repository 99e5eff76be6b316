"""Seeded instances: which benchmarks an instance seeds, and the arguments it gives them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.benchmarks import (
    QM9,
    MultiDigits,
    Synthetic,
    Toy,
    instance_kwargs,
    instance_seeded,
    make_benchmark,
)
from mtl_backends.config import MethodSpec

SMALL: dict[str, Any] = {
    "n_train": 60,
    "n_val": 20,
    "n_test": 20,
    "input_dim": 6,
    "output_dim": 2,
    "hidden": [4],
}


@pytest.mark.parametrize("benchmark", [Synthetic, MultiDigits, QM9])
def test_benchmarks_with_a_seed_are_seeded_unless_the_spec_fixes_it(benchmark: type) -> None:
    assert instance_seeded(benchmark, MethodSpec("x"), variation=False)
    assert instance_seeded(benchmark, MethodSpec("x", {"n_val": 3}), variation=False)
    assert not instance_seeded(benchmark, MethodSpec("x", {"seed": 4}), variation=False)
    # with variation the instance always matters
    assert instance_seeded(benchmark, MethodSpec("x", {"seed": 4}), variation=True)


def test_benchmarks_without_a_seed_are_not_seeded() -> None:
    assert not instance_seeded(Toy, MethodSpec("toy"), variation=False)
    assert not instance_seeded(None, MethodSpec("unknown"), variation=False)
    assert instance_seeded(None, MethodSpec("unknown"), variation=True)


def test_the_instance_becomes_the_seed() -> None:
    spec = MethodSpec("synthetic", SMALL)
    kwargs = instance_kwargs(Synthetic, spec, 17, variation=False)
    assert kwargs == {**SMALL, "seed": 17}
    assert "seed" not in spec.kwargs  # the spec is not changed
    assert type(kwargs["seed"]) is int
    assert instance_kwargs(Synthetic, spec, np.int64(5), variation=False)["seed"] == 5  # type: ignore[arg-type]


def test_a_fixed_seed_is_kept() -> None:
    spec = MethodSpec("synthetic", {**SMALL, "seed": 3})
    for instance in (0, 17, 12345):
        assert instance_kwargs(Synthetic, spec, instance, variation=False) == {**SMALL, "seed": 3}


def test_unseeded_benchmarks_get_the_spec_unchanged() -> None:
    spec = MethodSpec("toy", {"start": 2, "scale": 0.5})
    assert instance_kwargs(Toy, spec, 9, variation=False) == {"start": 2, "scale": 0.5}


def test_variation_draws_from_the_instance_seed() -> None:
    spec = MethodSpec("synthetic", {"n_train": 60, "n_tasks": 4})
    kwargs = instance_kwargs(Synthetic, spec, 7, variation=True)
    rng = np.random.default_rng(np.random.SeedSequence(7))
    assert kwargs == Synthetic.sample_variation(rng, n_train=60, n_tasks=4)
    assert kwargs == instance_kwargs(Synthetic, spec, 7, variation=True)
    assert kwargs["n_train"] == 60 and kwargs["n_tasks"] == 4
    assert len(kwargs["scales"]) == len(kwargs["noise"]) == len(kwargs["fractions"]) == 4
    other = instance_kwargs(Synthetic, spec, 8, variation=True)
    assert other["scales"] != kwargs["scales"] and other["seed"] != kwargs["seed"]


def test_variation_overrides_a_fixed_seed_only_when_the_spec_does_not_fix_it() -> None:
    # The spec's arguments stay fixed under variation, the seed included.
    spec = MethodSpec("synthetic", {"seed": 11})
    assert instance_kwargs(Synthetic, spec, 1, variation=True)["seed"] == 11
    assert instance_kwargs(Synthetic, MethodSpec("synthetic"), 1, variation=True)["seed"] != 11


@settings(max_examples=25, deadline=None)
@given(instance=st.integers(0, 2**31 - 1))
def test_variations_lie_in_the_declared_ranges(instance: int) -> None:
    kwargs = instance_kwargs(Synthetic, MethodSpec("synthetic"), instance, variation=True)
    ranges = Synthetic.VARIATION_RANGES
    assert kwargs["n_tasks"] == 3
    for s, n, f in zip(kwargs["scales"], kwargs["noise"], kwargs["fractions"], strict=True):
        assert ranges["scales"][0] <= s <= ranges["scales"][1]
        assert n == 0.0 or ranges["noise"][0] * s <= n <= ranges["noise"][1] * s
        assert f == 1.0 or ranges["fractions"][0] <= f <= ranges["fractions"][1]
    assert ranges["relatedness"][0] <= kwargs["relatedness"] <= ranges["relatedness"][1]
    Synthetic(**{**kwargs, **SMALL})  # every draw builds


def test_variation_of_a_benchmark_without_variations() -> None:
    with pytest.raises(NotImplementedError, match="Toy defines no sample_variation"):
        instance_kwargs(Toy, MethodSpec("toy"), 0, variation=True)


def test_instances_are_different_problems_and_repeat_exactly() -> None:
    spec = MethodSpec("synthetic", SMALL)

    def data(instance: int) -> torch.Tensor:
        kwargs = instance_kwargs(Synthetic, spec, instance, variation=False)
        return make_benchmark("synthetic", **kwargs).split("train").targets

    assert torch.equal(data(1), data(1))
    assert not torch.equal(data(1), data(2))


def test_variation_may_name_a_family() -> None:
    spec = MethodSpec("synthetic", {"n_train": 60, "n_tasks": 4})
    wide = instance_kwargs(Synthetic, spec, 7, variation="wide")
    rng = np.random.default_rng(np.random.SeedSequence(7))
    assert wide == Synthetic.sample_variation(rng, family="wide", n_train=60, n_tasks=4)
    assert len(wide["kinds"]) == 4 and set(wide["kinds"]) <= set(Synthetic.KINDS)
    # True is the default family, and so is its name.
    default = instance_kwargs(Synthetic, spec, 7, variation=True)
    assert instance_kwargs(Synthetic, spec, 7, variation="default") == default
    assert "kinds" not in default and default != wide
    assert instance_seeded(Synthetic, MethodSpec("synthetic", {"seed": 4}), variation="wide")
    assert instance_seeded(Toy, MethodSpec("toy"), variation="wide")


def test_an_unknown_variation_family_names_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown variation family 'broad'; valid choices: default, wide, wide2$"
    ):
        instance_kwargs(Synthetic, MethodSpec("synthetic"), 0, variation="broad")
    with pytest.raises(NotImplementedError, match="Toy defines no sample_variation"):
        instance_kwargs(Toy, MethodSpec("toy"), 0, variation="wide")


@settings(max_examples=25, deadline=None)
@given(instance=st.integers(0, 2**31 - 1))
def test_wide_variations_lie_in_the_declared_ranges(instance: int) -> None:
    kwargs = instance_kwargs(Synthetic, MethodSpec("synthetic"), instance, variation="wide")
    ranges = Synthetic.WIDE_RANGES
    assert kwargs["n_tasks"] == 3 and len(kwargs["kinds"]) == 3
    for s, n, f in zip(kwargs["scales"], kwargs["noise"], kwargs["fractions"], strict=True):
        assert ranges["scales"][0] <= s <= ranges["scales"][1]
        assert n == 0.0 or ranges["noise"][0] * s <= n <= ranges["noise"][1] * s
        assert f == 1.0 or ranges["fractions"][0] <= f <= ranges["fractions"][1]
    assert ranges["relatedness"][0] <= kwargs["relatedness"] <= ranges["relatedness"][1]
    bench = Synthetic(**{**kwargs, **SMALL})  # every draw builds, with the typed layout
    assert bench.split("train").targets.shape == (60, 3, SMALL["output_dim"] + 2)
