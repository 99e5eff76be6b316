"""Every YAML file under ``configs/`` loads with the schema of its folder; so do the package YAMLs.

``configs/`` has one folder per schema (``docs/architecture.md``, "Configs"): ``runs/``
(``RunConfig``), ``env/`` (``EnvConfig``), ``agents/`` (``AgentConfig``) and ``experiments/``
(``ExperimentConfig``). A new config file in another folder fails here until it gets a schema.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.config import load_agent_config
from agents.experiments.config import load_experiment
from agents.experiments.quickstart import SIZES_FILE, load_sizes
from igb_env.config import PRESETS, PRESETS_FILE, load_env_config
from mtl_backends.balancers import GRADIENT_BALANCERS
from mtl_backends.benchmarks import BENCHMARKS
from mtl_backends.config import MethodSpec, RunConfig, load_config
from mtl_backends.registry import valid_arguments
from mtl_backends.weightings import LOSS_WEIGHTINGS
from tests._tiny import TINY_SYNTHETIC

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
YAMLS = sorted(
    p.relative_to(CONFIGS).as_posix() for p in [*CONFIGS.rglob("*.yaml"), *CONFIGS.rglob("*.yml")]
)


def _check_spec(spec: MethodSpec, registry: dict[str, Any], where: str) -> None:
    assert spec.name in registry, f"{where}: unknown name {spec.name!r}"
    unknown = set(spec.kwargs) - set(valid_arguments(registry[spec.name]))
    assert not unknown, f"{where}: unknown arguments {sorted(unknown)}"


def _load_run(path: Path) -> None:
    config = load_config(RunConfig, path)
    _check_spec(config.benchmark, BENCHMARKS, f"{path}: benchmark")
    _check_spec(config.weighting, LOSS_WEIGHTINGS, f"{path}: weighting")
    _check_spec(config.balancer, GRADIENT_BALANCERS, f"{path}: balancer")


def _load_env(path: Path) -> None:
    config = load_env_config(path)
    assert config.to_dict() == load_env_config(config.to_dict()).to_dict()


def _load_agent(path: Path) -> None:
    config = load_agent_config(path)
    load_env_config(dict(config.env))


def _load_experiment(path: Path) -> None:
    config = load_experiment(path)
    assert config.benchmarks and config.weightings and config.seeds


SCHEMAS: dict[str, Callable[[Path], None]] = {
    "runs": _load_run,
    "env": _load_env,
    "agents": _load_agent,
    "experiments": _load_experiment,
}


def test_configs_are_found() -> None:
    folders = {name.split("/")[0] for name in YAMLS}
    assert folders == set(SCHEMAS)  # every schema folder has at least one file


@pytest.mark.parametrize("name", YAMLS)
def test_every_config_is_in_a_schema_folder(name: str) -> None:
    parts = name.split("/")
    assert len(parts) == 2 and parts[0] in SCHEMAS, (
        f"configs/{name}: put it in one of configs/{{{', '.join(SCHEMAS)}}}/ "
        "(one folder per schema)"
    )


@pytest.mark.parametrize("name", YAMLS)
def test_every_config_loads_with_its_schema(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # policy paths in experiments are relative to the repository root
    folder = name.split("/")[0]
    if folder not in SCHEMAS:
        pytest.fail(f"configs/{name} is in no schema folder")
    SCHEMAS[folder](CONFIGS / name)


def test_the_loaders_refuse_another_schema() -> None:
    # The folder decides the schema: a file under the wrong folder would not load.
    with pytest.raises(ValueError, match="unknown key"):
        _load_run(CONFIGS / "agents" / "ppo.yaml")
    with pytest.raises(ValueError, match="unknown key"):
        _load_agent(CONFIGS / "runs" / "smoke.yaml")
    with pytest.raises(ValueError, match="unknown key"):
        _load_env(CONFIGS / "experiments" / "smoke.yaml")


def test_presets_yaml_is_the_presets_table() -> None:
    assert PRESETS_FILE == ROOT / "igb_env" / "presets.yaml"
    assert yaml.safe_load(PRESETS_FILE.read_text()) == PRESETS
    assert {"default", "tiny", "smoke"} <= set(PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_loads(preset: str) -> None:
    config = load_env_config({"preset": preset})
    # A preset's values are the ones the config holds.
    data = PRESETS[preset]
    for key, value in data.items():
        if key != "train":
            assert config.to_dict()[key] == value, key
    for key, value in data.get("train", {}).items():
        got = config.to_dict()["train"][key]
        assert got == (list(value) if isinstance(value, tuple) else value), key


def test_env_tiny_yaml_is_the_tiny_preset() -> None:
    assert load_env_config(CONFIGS / "env" / "tiny.yaml") == load_env_config({"preset": "tiny"})


def test_quickstart_sizes_load() -> None:
    assert SIZES_FILE == ROOT / "agents" / "experiments" / "quickstart.yaml"
    sizes = load_sizes(SIZES_FILE)
    assert set(sizes) == {"full", "tiny"}
    for name, size in sizes.items():
        load_env_config(dict(size.env))
        assert size.time_budget_s > 0 and size.total_timesteps > 0, name
        assert size.held_out and size.workers >= 1, name


def test_the_tests_tiny_synthetic_is_the_smoke_preset() -> None:
    """One definition of the smallest problem: the tests' constant is the preset's benchmark."""
    benchmark = load_env_config({"preset": "smoke"}).benchmark
    assert benchmark.name == "synthetic" and dict(benchmark.kwargs) == TINY_SYNTHETIC
