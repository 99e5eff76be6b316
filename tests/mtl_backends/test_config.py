from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from mtl_backends.config import (
    MethodSpec,
    RunConfig,
    TrainConfig,
    from_dict,
    key_dict,
    load_config,
    to_dict,
)
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


# -- Careless and hostile input (issue 18) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": float("inf")}, "train.lr must be a finite number > 0, got inf"),
        ({"lr": float("nan")}, "train.lr must be a finite number > 0, got nan"),
        ({"lr": 0.0}, "train.lr must be a finite number > 0, got 0.0"),
        ({"eps": -1.0}, "train.eps must be a finite number >= 0, got -1.0"),
        ({"eps": float("nan")}, "train.eps must be a finite number >= 0, got nan"),
        ({"eval_batch_size": 0}, "train.eval_batch_size must be >= 1, got 0"),
        ({"batch_size": 0}, "train.batch_size must be >= 1, got 0"),
        ({"weight_decay": -0.1}, "train.weight_decay must be a finite number >= 0"),
        ({"grad_clip": float("nan")}, "train.grad_clip must be a finite number > 0 or null"),
        ({"divergence_factor": 0.5}, "train.divergence_factor must be a finite number > 1"),
        ({"jacobian": "fast"}, "unknown train.jacobian 'fast'; valid choices: batched, sequential"),
    ],
)
def test_train_settings_out_of_range_name_the_setting(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(**changes)  # type: ignore[arg-type]


def test_base_window_must_end_before_the_budget() -> None:
    # Past the budget, or ending at it: the base losses would never exist and IGBv1 would train
    # the whole run with unit weights.
    with pytest.raises(
        ConfigError, match=r"base_window \[50, 100\] leaves no steps .* before train\.steps \(100\)"
    ):
        TrainConfig(steps=100, base_window=(50, 100))
    with pytest.raises(ConfigError, match=r"must end before train\.steps \(80\)"):
        TrainConfig(steps=80, base_window=(50, 100))
    with pytest.raises(ConfigError, match=r"must be \[start, end\) with 0 <= start < end"):
        TrainConfig(base_window=(10, 5))
    with pytest.raises(ConfigError, match=r"0 <= start < end"):
        TrainConfig(base_window=(-1, 5))
    assert TrainConfig(steps=101, base_window=(50, 100)).base_window == (50, 100)


def test_negative_seed_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"seed must be >= 0 .*got -1"):
        from_dict(RunConfig, {"seed": -1})


def test_unavailable_or_unknown_device_is_refused_before_anything_is_built() -> None:
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"train\.device 'cuda' is not available: .*use"):
            TrainConfig(device="cuda")
    with pytest.raises(ConfigError, match=r"train\.device 'cuda:99' is not available"):
        TrainConfig(device="cuda:99")
    with pytest.raises(ConfigError, match=r"train\.device 'gpu0' is not a torch device"):
        TrainConfig(device="gpu0")
    assert TrainConfig(device="cpu").device == "cpu"


def test_empty_config_file_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match=r"empty\.yaml' is empty; write the settings"):
        load_config(RunConfig, path)
    path.write_text("{}\n")  # explicit: every default
    assert load_config(RunConfig, path) == RunConfig()


def test_yaml_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  steps: 10\n  lr: [0.1\nseed: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(RunConfig, path)
    message = str(err.value)
    assert message.startswith(f"config {str(path)!r} is not valid YAML at line")
    assert "\n" not in message


def test_yaml_python_tags_run_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.yaml"
    path.write_text(
        f"seed: !!python/object/apply:os.system ['touch {marker}']\n"
        f'train: !!python/object/apply:builtins.exec [\'open("{marker}", "w")\']\n'
    )
    with pytest.raises(ConfigError, match=r"is not valid YAML at line 1, column 7: .*constructor"):
        load_config(RunConfig, path)
    assert not marker.exists()


def test_config_path_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder; give a YAML file"):
        load_config(RunConfig, tmp_path)


def test_key_dict_keeps_result_keys_of_configs_from_before_divergence_factor() -> None:
    train = TrainConfig(steps=30, batch_size=50, base_window=(5, 10))
    assert "divergence_factor" not in key_dict(train)
    neutral = ("divergence_factor", "num_workers", "mixed_precision")
    assert key_dict(train) == {k: v for k, v in to_dict(train).items() if k not in neutral}
    assert key_dict(replace(train, num_workers=2))["num_workers"] == 2
    assert key_dict(replace(train, divergence_factor=50.0))["divergence_factor"] == 50.0
    assert key_dict(replace(train, divergence_factor=None))["divergence_factor"] is None
