"""The sidecar format: what ``build_sidecar`` writes and what ``validate_sidecar`` refuses."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from mtl_backends.features import FeatureSpec, FeatureTable
from mtl_backends.policy.format import (
    FORMAT,
    FORMAT_VERSION,
    REQUIRED_KEYS,
    build_sidecar,
    validate_sidecar,
    versions,
)
from tests.mtl_backends.policy._policies import SPEC, sidecar

WHERE = "policies/p/policy.json"


def _valid(**kw: Any) -> dict[str, Any]:
    side = sidecar(**kw)
    dim = FeatureTable(SPEC).dim(3)
    side["network"] = {"sizes": [dim, 16, 3], "activation": "tanh", "output": "clip"}
    return side


def _refused(side: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        validate_sidecar(side, WHERE)
    assert str(err.value) == f"{WHERE}: {message}"


def test_build_sidecar_fields() -> None:
    side = build_sidecar(
        n_tasks=4,
        features=FeatureSpec(history=1, stride=7, ema=0.5),
        action_mode="absolute",
        tau=3,
        steps_per_action=7,
        balancer="db_mtl",
        base_window=(10, 20),
        total_steps=500,
        algorithm="SAC",
        task_names=["a", "b", "c", "d"],
    )
    assert side["format"] == FORMAT == "igb-policy"
    # MLP policies of one T keep format version 1; version 2 adds set networks (any T).
    assert side["format_version"] == 1 and FORMAT_VERSION == 2
    assert side["n_tasks"] == 4 and side["obs_dim"] == 4 * 4 + 2
    assert side["action_map"] == {"mode": "absolute", "version": 1, "tau": 3.0}
    assert type(side["action_map"]["tau"]) is float
    assert side["steps_per_action"] == 7 and side["transform"] == "log"
    assert side["balancer"] == "db_mtl" and side["algorithm"] == "SAC"
    assert side["base_window"] == [10, 20] and side["features"]["base_window"] == [10, 20]
    assert side["total_steps"] == 500 and side["obs_normalization"] is None
    assert side["task_names"] == ["a", "b", "c", "d"]
    assert set(side["versions"]) == {"igb_rl", "torch", "numpy", "python"}
    assert side["versions"] == versions()
    assert "+" not in side["versions"]["torch"]
    assert set(REQUIRED_KEYS) <= set(side)
    assert json.loads(json.dumps(side)) == side


def test_extra_fields_override_the_defaults() -> None:
    side = sidecar(obs_normalization={"clip_obs": 5.0, "epsilon": 1e-8}, base_window=None)
    assert side["obs_normalization"] == {"clip_obs": 5.0, "epsilon": 1e-8}
    assert side["base_window"] is None and side["features"]["base_window"] is None


def test_a_valid_sidecar_passes() -> None:
    validate_sidecar(_valid(), WHERE)
    validate_sidecar(_valid(mode="absolute"), WHERE)


def test_another_format_is_refused() -> None:
    side = _valid()
    side["format"] = "sb3-zip"
    _refused(side, "not an igb policy sidecar (format 'sb3-zip')")
    del side["format"]
    _refused(side, "not an igb policy sidecar (format None)")


def test_another_format_version_is_refused() -> None:
    side = _valid()
    side["format_version"] = 3
    _refused(side, "policy format_version 3 is not supported (this library reads versions 1, 2)")


@pytest.mark.parametrize("missing", [["network"], ["n_tasks", "network"], ["algorithm"]])
def test_missing_keys_are_named(missing: list[str]) -> None:
    side = _valid()
    for key in missing:
        del side[key]
    _refused(side, f"sidecar lacks key(s) {', '.join(missing)}")


def test_unknown_action_map_version_or_mode() -> None:
    side = _valid()
    side["action_map"] = {"mode": "residual", "version": 2, "tau": 1.0}
    with pytest.raises(ValueError, match="action map 'residual' version 2 is not supported"):
        validate_sidecar(side, WHERE)
    side["action_map"] = {"mode": "softmax", "version": 1, "tau": 1.0}
    with pytest.raises(ValueError, match="unknown action mode 'softmax'"):
        validate_sidecar(side, WHERE)
    side["action_map"] = {"mode": "residual", "version": 1, "tau": 0.0}
    with pytest.raises(ValueError, match="tau must be positive"):
        validate_sidecar(side, WHERE)


@pytest.mark.parametrize(
    "change",
    [
        lambda rows: rows[0].update(description="log of the raw gap"),
        lambda rows: rows[1].update(high=20.0),
        lambda rows: rows.pop(2),
        lambda rows: rows.reverse(),
    ],
)
def test_a_different_feature_table_is_refused(change: Any) -> None:
    side = _valid()
    change(side["features"]["table"])
    _refused(
        side,
        "the policy's feature table differs from this library's for the settings "
        "{'history': 3, 'stride': 5, 'ema': 0.9}; it was exported by an incompatible version",
    )


def _spec_with_unknown_key(side: dict[str, Any]) -> None:
    side["features"]["spec"]["horizon"] = 4


def _spec_with_negative_history(side: dict[str, Any]) -> None:
    side["features"]["spec"]["history"] = -1


def _no_feature_spec(side: dict[str, Any]) -> None:
    del side["features"]["spec"]


def _action_map_without_tau(side: dict[str, Any]) -> None:
    del side["action_map"]["tau"]


def _unknown_action_mode(side: dict[str, Any]) -> None:
    side["action_map"]["mode"] = "softmax"


@pytest.mark.parametrize(
    "corrupt",
    [
        _spec_with_unknown_key,
        _spec_with_negative_history,
        _no_feature_spec,
        _action_map_without_tau,
        _unknown_action_mode,
    ],
)
def test_malformed_entries_are_refused_with_a_value_error_naming_the_file(corrupt: Any) -> None:
    side = _valid()
    corrupt(side)
    with pytest.raises(ValueError, match=re.escape(WHERE)):
        validate_sidecar(side, WHERE)


def test_wrong_obs_dim_is_refused() -> None:
    side = _valid()
    side["obs_dim"] = 21
    _refused(side, "obs_dim 21 does not match the feature table (20 for T=3)")
    # A T that disagrees with the recorded obs_dim is the same inconsistency.
    side = _valid()
    side["n_tasks"] = 4
    _refused(side, "obs_dim 20 does not match the feature table (26 for T=4)")


@pytest.mark.parametrize("sizes", [[19, 16, 3], [20, 16, 4], [20, 2]])
def test_network_sizes_must_fit(sizes: list[int]) -> None:
    side = _valid()
    side["network"]["sizes"] = sizes
    _refused(
        side,
        f"network sizes {sizes} must start with obs_dim 20 and end with the action size 3 (T=3)",
    )


def test_only_the_log_transform_is_accepted() -> None:
    side = _valid()
    side["transform"] = "identity"
    _refused(side, "transform 'identity'; policies work on the 'log' transform")


def test_validation_does_not_change_the_sidecar() -> None:
    side = _valid()
    before = copy.deepcopy(side)
    validate_sidecar(side, WHERE)
    assert side == before


def test_versions_are_plain_strings() -> None:
    got = versions()
    assert all(isinstance(v, str) and v for v in got.values())
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", got["python"])
