from __future__ import annotations

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
