"""Built-in configs and shipped policies by name: the CLI and experiment configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.cli import main
from agents.experiments.config import experiment_from_dict
from mtl_backends.packaged import builtin_configs


def test_an_experiment_may_name_a_shipped_policy() -> None:
    config = experiment_from_dict(
        {
            "benchmarks": ["synthetic"],
            "weightings": ["igbv1", {"name": "policy", "path": "synthetic-ppo-residual"}],
        }
    )
    assert config.weightings[1].kwargs["path"] == "synthetic-ppo-residual"


def test_the_cli_resolves_names_and_reports_unknown_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "smoke"
    assert main(["compare", "smoke", "--out", str(out), "--report-only", "--no-progress"]) == 0
    assert (out / "experiment.json").is_file() or (out / "results.md").is_file()
    capsys.readouterr()
    assert main(["train", "synthtic"]) == 2
    err = capsys.readouterr().err
    assert "igb train: error: 'synthtic' is neither a config file nor a built-in runs config" in err
    assert "synthetic, synthetic_tuned_static" in err
    assert main(["train-agent", "nope", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    # The list is whatever ships (checkout or wheel), in sorted order: every name is offered.
    shipped = builtin_configs("agents")
    assert {"generalist", "ppo", "sac"} <= set(shipped)
    assert "built-in agents configs: " + ", ".join(shipped) in err
