"""``igb evaluate``: a tiny agent on held-out instances, as env rollouts and as plain MTL runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.cli import main
from agents.experiments.evaluate import evaluation_experiment, held_out_instances
from agents.experiments.grid import plan_grid
from agents.experiments.stats import paired
from agents.export import export_run
from agents.train import train_agent
from igb_env.config import load_env_config
from igb_env.instances import BenchmarkCache
from tests.agents._configs import TINY_ENV, tiny_agent


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = {**TINY_ENV, "test_set": [1000, 1001, 1002]}
    config = tiny_agent(
        "ppo", env=env, total_timesteps=40, reference_instances=0, checkpoint_every=None
    )
    return train_agent(config, tmp_path_factory.mktemp("eval-run"), progress_bar=False)


def test_evaluate_run_prints_delta_m_mean_std(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stl = str(tmp_path / "stl")
    assert main(["evaluate", str(run), "--stl-cache", stl]) == 0
    printed = capsys.readouterr().out
    assert "Δm % (test, 3 seeds)" in printed and "| learned policy |" in printed
    results = json.loads((run / "evaluation.json").read_text())
    assert results["instances"] == [1000, 1001, 1002]
    assert (run / "policy" / "policy.json").is_file()  # exported on demand
    policy = results["summary"]["learned policy"]
    assert policy["delta_m"]["n"] == 3 and "vs_igbv1" in policy and "vs_si" in policy
    assert policy["vs_igbv1"]["n"] == 3
    assert {"policy", "ew", "igbv1", "policy_vs_igbv1"} <= set(results["rollouts"])
    assert len(results["rollouts"]["policy"]["returns"]) == 3
    # The MTL runs are comparison cells, with their report beside the JSON.
    assert (run / "evaluation" / "results.md").is_file()
    assert len(list((run / "evaluation" / "cells").glob("*.json"))) == 12


def test_evaluate_policy_folder_with_a_balancer(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = export_run(run, tmp_path / "policy")
    out = tmp_path / "eval.json"
    argv = ["evaluate", str(policy), "--instances", "1000", "1001", "--balancer", "db_mtl"]
    assert main([*argv, "--out", str(out), "--stl-cache", str(tmp_path / "stl")]) == 0
    summary = json.loads(out.read_text())["summary"]
    # EW trains raw losses, which DB-MTL refuses: it is skipped under that balancer.
    assert {"learned policy", "IGBv1", "SI", "EW"} <= set(summary)
    assert {"learned policy + DB-MTL", "IGBv1 + DB-MTL"} <= set(summary)
    assert "EW + DB-MTL" not in summary
    assert summary["learned policy + DB-MTL"]["vs_igbv1"]["n"] == 2
    assert "learned policy + DB-MTL" in capsys.readouterr().out


def test_evaluate_on_varied_instances(run: Path, tmp_path: Path) -> None:
    """``--variation`` evaluates on instances whose task scales the sampler draws."""
    out = tmp_path / "varied.json"
    argv = ["evaluate", str(run), "--instances", "1000", "--variation", "--out", str(out)]
    assert main([*argv, "--stl-cache", str(tmp_path / "stl")]) == 0
    results = json.loads(out.read_text())
    assert results["variation"] is True
    scales = results["instance_specs"]["1000"]["scales"]
    assert len(scales) == 3 and all(1.0 <= s <= 100.0 for s in scales)
    assert scales != [1.0, 10.0, 100.0]  # drawn, not the benchmark's defaults
    config = load_env_config(dict(TINY_ENV))
    plain = BenchmarkCache(config.benchmark, variation=False).kwargs_for(1000)
    assert plain.get("scales") != scales


def test_evaluation_experiment_seeds_each_instance_as_the_env_does() -> None:
    """Every cell trains the benchmark the env would build for that instance."""
    env = {**TINY_ENV, "variation": True}
    experiment = evaluation_experiment(env, "some/policy", [1000, 1001], ["db_mtl"])
    cache = BenchmarkCache(load_env_config(env).benchmark, variation=True)
    plan = plan_grid(experiment)
    assert {c.balancer.name for c in plan.cells} == {"sum", "db_mtl"}
    for cell in plan.cells:
        assert dict(cell.benchmark.spec_for(cell.seed).kwargs) == cache.kwargs_for(cell.seed)
    assert any("transform conflict" in reason for _, reason in plan.skipped)  # EW + DB-MTL


def test_held_out_instances_need_a_test_set_or_seeds() -> None:
    with pytest.raises(ValueError, match="--instances"):
        held_out_instances(TINY_ENV, None)
    assert held_out_instances(TINY_ENV, [5, 6]) == [5, 6]
    stats = paired([-1.0, -2.0, 0.5])
    assert stats.wins == 2 and stats.low < stats.mean < stats.high


def test_evaluate_refuses_other_folders(tmp_path: Path) -> None:
    assert main(["evaluate", str(tmp_path)]) == 2
