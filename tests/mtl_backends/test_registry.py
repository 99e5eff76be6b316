from __future__ import annotations

import re

import pytest

from mtl_backends import make_balancer, make_benchmark, make_weighting
from mtl_backends.registry import ConfigError


def test_unknown_weighting_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown loss weighting 'igb'; valid choices: .*igbv1"):
        make_weighting("igb")


def test_unknown_balancer_lists_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown gradient balancer 'summ'; valid choices: .*sum"
    ):
        make_balancer("summ")


def test_unknown_benchmark_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown benchmark 'nyu'; valid choices: .*synthetic"):
        make_benchmark("nyu")


def test_unknown_argument_lists_valid_arguments() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown argument\(s\) 'task'.*valid arguments: .*n_tasks"
    ):
        make_benchmark("synthetic", task=3)


def test_invalid_weights_mode() -> None:
    with pytest.raises(ValueError, match="valid choices: after, before"):
        make_balancer("sum", weights="middle")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_tasks": "three"}, "argument 'n_tasks' must be an integer, got 'three'"),
        ({"n_tasks": 2.5}, "argument 'n_tasks' must be an integer, got 2.5"),
        ({"n_tasks": True}, "argument 'n_tasks' must be an integer, got True"),
        ({"scales": "1, 10, 100"}, "argument 'scales' must be a list of a number or null"),
        ({"scales": [1, "x", 3]}, "argument 'scales' must be a list of a number or null"),
        ({"input_dim": None}, "argument 'input_dim' must be an integer, got None"),
    ],
)
def test_argument_of_the_wrong_type_names_the_argument(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"benchmark 'synthetic': {message}")):
        make_benchmark("synthetic", **kwargs)


def test_arguments_of_the_right_types_still_build() -> None:
    import numpy as np

    bench = make_benchmark(
        "synthetic",
        n_tasks=np.int64(2),
        scales=np.array([1.0, 10.0]),
        noise=(0.0, 0.5),
        n_train=100,
        input_dim=8,
        output_dim=4,
        hidden=[8],
    )
    assert bench.n_tasks == 2
    assert make_weighting("tuned_static", weights=[1, 2.5, 0.5]) is not None
    with pytest.raises(ConfigError, match="argument 'weights' must be a list of a number"):
        make_weighting("tuned_static", weights=["a"])
