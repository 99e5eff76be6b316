from __future__ import annotations

from pathlib import Path

import pytest

from mtl_backends.config import MethodSpec, RunConfig, TrainConfig, from_dict, load_config, to_dict
from mtl_backends.registry import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_method_given_by_name_or_mapping() -> None:
    cfg = from_dict(
        RunConfig, {"weighting": "igbv1", "balancer": {"name": "sum", "weights": "before"}}
    )
    assert cfg.weighting == MethodSpec("igbv1", {})
    assert cfg.balancer == MethodSpec("sum", {"weights": "before"})


def test_unknown_top_level_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'sede'.*valid keys: .*seed"):
        from_dict(RunConfig, {"sede": 1})


def test_unknown_nested_key_names_its_path() -> None:
    with pytest.raises(ConfigError, match=r"config\.train: unknown key\(s\) 'lr_rate'.*lr"):
        from_dict(RunConfig, {"train": {"lr_rate": 0.1}})


def test_wrong_types_are_rejected() -> None:
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(RunConfig, {"seed": "zero"})
    with pytest.raises(ConfigError, match="expected 2 values"):
        from_dict(TrainConfig, {"base_window": [1, 2, 3]})


def test_invalid_values_name_the_choices() -> None:
    with pytest.raises(ConfigError, match="valid choices: adam, adamw, sgd"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match=r"valid choices: constant, cosine, step"):
        TrainConfig(lr_schedule="linear")


def test_method_mapping_needs_a_name() -> None:
    with pytest.raises(ConfigError, match="needs a 'name' key"):
        from_dict(RunConfig, {"weighting": {"beta": 1}})


def test_round_trip_through_plain_dict() -> None:
    cfg = from_dict(
        RunConfig, {"weighting": "si", "train": {"steps": 7, "base_window": [1, 3]}, "seed": 4}
    )
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config(RunConfig, tmp_path / "nope.yaml")
