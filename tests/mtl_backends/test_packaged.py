"""``mtl_backends.packaged``: configs and policies by name, in a checkout and a wheel's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtl_backends import packaged
from mtl_backends.packaged import builtin_configs, data_dir, is_name, resolve_config
from mtl_backends.policy.files import load_policy, resolve_policy, shipped_policies
from mtl_backends.registry import ConfigError
from mtl_backends.weightings import LOSS_WEIGHTINGS, PolicyWeighting

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkout_reads_configs_and_policies_in_place() -> None:
    assert data_dir("configs") == ROOT / "configs"
    assert data_dir("policies") == ROOT / "policies"
    assert {"smoke", "igb_vs_rl"} <= set(builtin_configs("experiments"))
    assert {"synthetic", "smoke"} <= set(builtin_configs("runs"))
    assert "ppo" in builtin_configs("agents")
    assert resolve_config("smoke", "experiments") == ROOT / "configs/experiments/smoke.yaml"
    assert resolve_config("smoke", "runs") == ROOT / "configs/runs/smoke.yaml"  # per schema
    assert {"synthetic-ppo-residual", "synthetic-ppo-residual-dbmtl"} <= set(shipped_policies())


def test_a_wheel_reads_its_packaged_copy_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = tmp_path / "_data"
    (wheel / "configs" / "runs").mkdir(parents=True)
    (wheel / "configs" / "runs" / "only.yaml").write_text("seed: 0\n")
    monkeypatch.setattr(packaged, "PACKAGED_DATA", wheel)
    assert data_dir("configs") == wheel / "configs"
    assert builtin_configs("runs") == ["only"]
    assert builtin_configs("experiments") == []
    assert data_dir("policies") == ROOT / "policies"  # not packaged here: the checkout's


def test_outside_a_checkout_without_data_nothing_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    (site / "configs" / "runs").mkdir(parents=True)  # no pyproject.toml: not a checkout
    monkeypatch.setattr(packaged, "PACKAGED_DATA", site / "mtl_backends" / "_data")
    monkeypatch.setattr(packaged, "CHECKOUT_ROOT", site)
    assert data_dir("configs") is None and data_dir("policies") is None
    assert builtin_configs("runs") == []
    with pytest.raises(ConfigError, match=r"built-in runs configs: \(none: this installation"):
        resolve_config("synthetic", "runs")


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("smoke", True),
        ("synthetic-ppo-residual", True),
        ("smoke.yaml", False),
        ("smoke.yml", False),
        ("configs/smoke", False),
        ("./smoke", False),
        ("..", False),
        ("", False),
    ],
)
def test_what_counts_as_a_name(value: str, name: bool) -> None:
    assert is_name(value) is name


def test_paths_stay_paths_and_files_win_over_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_config("missing.yaml", "runs") == Path("missing.yaml")  # the loader reports it
    assert resolve_config("sub/smoke", "runs") == Path("sub/smoke")
    monkeypatch.chdir(tmp_path)
    Path("smoke").write_text("seed: 0\n")  # an existing file named like a built-in config
    assert resolve_config("smoke", "runs") == Path("smoke")


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config("smok", "experiments")
    assert "'smok' is neither a config file nor a built-in experiments config" in str(info.value)
    assert "smoke" in str(info.value) and "igb_vs_rl" in str(info.value)
    with pytest.raises(ValueError, match="valid choices: runs, env, agents, experiments"):
        builtin_configs("models")
    with pytest.raises(ValueError, match="valid choices: configs, policies"):
        data_dir("weights")  # type: ignore[arg-type]


def test_a_policy_loads_by_name_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = ROOT / "policies" / "synthetic-ppo-residual"
    assert resolve_policy("synthetic-ppo-residual") == folder
    by_name = PolicyWeighting.load("synthetic-ppo-residual")
    assert by_name.path == folder
    obs = torch.linspace(-1, 1, by_name.policy.obs_dim or 0, dtype=torch.float32)
    by_path = load_policy(folder)
    assert torch.equal(by_name.policy.act(obs), by_path.act(obs))
    assert LOSS_WEIGHTINGS["policy"].data_path({"path": "synthetic-ppo-residual"}) == str(folder)
    # A path is a path: the same name under a folder that does not exist is not resolved.
    assert resolve_policy("nowhere/synthetic-ppo-residual") == Path(
        "nowhere/synthetic-ppo-residual"
    )
    with pytest.raises(FileNotFoundError) as info:
        PolicyWeighting.load("synthetic-ppo")
    message = str(info.value)
    assert "policy folder 'synthetic-ppo' does not exist" in message
    assert "synthetic-ppo-residual, synthetic-ppo-residual-dbmtl" in message
