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
from tests.mtl_backends.policy._policies import SPEC, SPEC_V2, set_network, set_sidecar, sidecar

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


# -- format version 2: set networks (any T) -------------------------------------------------------
def _valid_set(**kw: Any) -> dict[str, Any]:
    side = set_sidecar(**kw)
    side["network"] = set_network(mode=kw.get("mode", "interp")).spec()
    return side


def test_build_sidecar_for_any_t_writes_format_version_2() -> None:
    side = set_sidecar()
    assert side["format_version"] == 2 == FORMAT_VERSION
    assert side["n_tasks"] is None and side["obs_dim"] is None
    assert side["features"]["n_tasks"] is None
    assert side["features"]["spec"] == {"history": 3, "stride": 5, "ema": 0.9, "table": "v2"}
    table = FeatureTable(SPEC_V2)
    assert side["features"]["table"] == [f.describe() for f in table.rows]
    assert side["action_map"] == {"mode": "interp", "version": 1, "tau": 1.0}
    assert json.loads(json.dumps(side)) == side
    # The same settings for one T stay version 1.
    one_t = sidecar(SPEC_V2, "interp", n_tasks=4)
    assert one_t["format_version"] == 1
    assert one_t["n_tasks"] == 4 and one_t["obs_dim"] == 4 * 9 + 3


def test_a_valid_set_sidecar_passes() -> None:
    validate_sidecar(_valid_set(), WHERE)
    validate_sidecar(_valid_set(mode="residual"), WHERE)  # no global action entries
    validate_sidecar(_valid_set(mode="absolute"), WHERE)
    # A set network on table v1 (6 per-task features, 2 global) is consistent too.
    side = set_sidecar(SPEC)
    side["network"] = set_network(SPEC).spec()
    assert (side["network"]["task_features"], side["network"]["global_features"]) == (6, 2)
    validate_sidecar(side, WHERE)


@pytest.mark.parametrize(
    ("key", "value", "need"),
    [("task_features", 8, 9), ("global_features", 2, 3), ("global_actions", 0, 2)],
)
def test_a_set_network_that_disagrees_with_the_table_or_map_is_refused(
    key: str, value: int, need: int
) -> None:
    side = _valid_set()
    side["network"][key] = value
    _refused(
        side,
        f"network.{key} is {value} but the feature table and action map 'interp' need {need}",
    )
    del side["network"][key]
    _refused(
        side,
        f"network.{key} is None but the feature table and action map 'interp' need {need}",
    )


def test_a_set_network_built_for_another_map_is_refused() -> None:
    side = _valid_set()  # two global action entries (interp)
    side["action_map"] = {"mode": "residual", "version": 1, "tau": 1.0}
    _refused(
        side,
        "network.global_actions is 2 but the feature table and action map 'residual' need 0",
    )


@pytest.mark.parametrize(("key", "value"), [("n_tasks", 3), ("obs_dim", 30)])
def test_a_set_sidecar_must_leave_n_tasks_and_obs_dim_null(key: str, value: int) -> None:
    side = _valid_set()
    side[key] = value
    _refused(side, "a set policy runs at any T; its n_tasks and obs_dim must be null")


def test_format_version_1_cannot_hold_a_set_network() -> None:
    side = _valid_set()
    side["format_version"] = 1
    _refused(side, "set networks need format_version 2")


def test_an_unknown_network_kind_is_refused() -> None:
    side = _valid_set()
    side["network"]["kind"] = "transformer"
    _refused(side, "unknown network kind 'transformer'; valid choices: mlp, set")
    side["network"] = [9, 16, 3]
    _refused(side, "unknown network kind None; valid choices: mlp, set")


def test_set_policies_refuse_obs_normalization() -> None:
    side = _valid_set(obs_normalization={"clip_obs": 10.0, "epsilon": 1e-8})
    _refused(
        side,
        "set policies take unnormalised observations (their input scales are part of the "
        "weights); obs_normalization must be null",
    )


def test_an_mlp_sidecar_without_t_is_refused() -> None:
    """A network without ``kind`` is an MLP, which needs integer n_tasks and obs_dim."""
    side = _valid()
    side["n_tasks"] = None
    with pytest.raises(ValueError) as err:
        validate_sidecar(side, WHERE)
    assert str(err.value).startswith(
        f"{WHERE}: an mlp policy needs integer n_tasks, obs_dim and network.sizes"
    )
