"""Policies shipped inside the package: found by name, loaded without a path, hashed by content."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtl_backends.policy import files
from mtl_backends.policy.files import shipped_policies, shipped_policy
from mtl_backends.registry import ConfigError
from mtl_backends.weightings import LOSS_WEIGHTINGS, PolicyWeighting
from tests.mtl_backends.policy._policies import random_policy


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A shipped-policies folder with one policy, ``generalist``, and a stray folder."""
    root = tmp_path / "shipped"
    random_policy(root / "generalist")
    (root / "not-a-policy").mkdir()
    monkeypatch.setattr(files, "SHIPPED_DIR", root)
    monkeypatch.setattr(files, "builtin_policies", dict)  # without the repository's policies/
    return root


def test_shipped_policies_are_the_folders_with_a_sidecar(shipped: Path) -> None:
    assert shipped_policies() == ["generalist"]
    assert shipped_policy() == shipped / "generalist"
    with pytest.raises(ValueError, match="no shipped policy 'nope'; valid choices: generalist"):
        shipped_policy("nope")


def test_without_a_path_the_weighting_loads_the_shipped_policy(shipped: Path) -> None:
    weighting = PolicyWeighting()
    assert weighting.path == shipped / "generalist"
    assert PolicyWeighting(shipped="generalist").path == weighting.path
    with pytest.raises(ConfigError, match="not both"):
        PolicyWeighting(shipped / "generalist", shipped="generalist")


def test_data_path_is_what_experiments_hash(shipped: Path) -> None:
    policy = LOSS_WEIGHTINGS["policy"]
    assert policy.data_path({}) == str(shipped / "generalist")
    assert policy.data_path({"path": "elsewhere"}) == "elsewhere"
    assert policy.data_path({"shipped": "missing"}) is None  # the build reports it
    # Other weightings read the files their `path` names, if any.
    assert LOSS_WEIGHTINGS["ew"].data_path({}) is None
    assert LOSS_WEIGHTINGS["ew"].data_path({"path": "x"}) == "x"


def test_no_shipped_policy_installed_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "SHIPPED_DIR", tmp_path / "absent")
    monkeypatch.setattr(files, "builtin_policies", dict)
    assert shipped_policies() == []
    with pytest.raises(ValueError, match=r"valid choices: \(none installed\)"):
        PolicyWeighting()
