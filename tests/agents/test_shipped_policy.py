"""The learned policy in ``policies/``, as ``configs/experiments/igb_vs_rl.yaml`` uses it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
import yaml

from agents.experiments.config import experiment_from_dict
from agents.experiments.grid import Cell, plan_grid
from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.config import TrainConfig
from mtl_backends.trainer import MTLTrainer
from mtl_backends.weightings import IGBv1
from mtl_backends.weightings.policy import PolicyMismatchError, PolicyWeighting

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "policies" / "synthetic-ppo-residual"
POLICY_DBMTL = ROOT / "policies" / "synthetic-ppo-residual-dbmtl"
MAIN = ROOT / "configs" / "experiments" / "igb_vs_rl.yaml"


@pytest.mark.parametrize(
    ("policy", "balancer"), [(POLICY, "sum"), (POLICY_DBMTL, "db_mtl")], ids=["sum", "db_mtl"]
)
def test_shipped_policy_matches_the_synthetic_setting_of_the_main_comparison(
    policy: Path, balancer: str
) -> None:
    weighting = PolicyWeighting(policy)
    sidecar = weighting.policy.sidecar
    assert (weighting.policy.n_tasks, weighting.steps_per_action, weighting.action_mode) == (
        3,
        25,
        "residual",
    )
    assert sidecar["balancer"] == balancer and sidecar["transform"] == "log"
    data = yaml.safe_load(MAIN.read_text())
    synthetic = next(b for b in data["benchmarks"] if b["name"] == "synthetic")
    assert sidecar["total_steps"] == synthetic["train"]["steps"]
    assert sidecar["base_window"] == synthetic["train"]["base_window"]


def test_main_comparison_runs_the_shipped_policy_except_on_qm9(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)  # the config's policy path is relative to the repository root
    plan = plan_grid(experiment_from_dict(yaml.safe_load(MAIN.read_text())))

    def benches(cells: Iterable[Cell], label: str) -> set[str]:
        return {c.benchmark.display for c in cells if c.weighting.display == label}

    assert benches(plan.cells, "learned policy") == {"synthetic", "multi_digits"}
    skipped = [c for c, _ in plan.skipped]
    assert benches(skipped, "learned policy") == {"qm9-20k"}
    # The DB-MTL-trained policy runs on synthetic only, under every balancer.
    assert benches(plan.cells, "learned policy (DB-MTL-trained)") == {"synthetic"}
    assert benches(skipped, "learned policy (DB-MTL-trained)") == {"multi_digits", "qm9-20k"}
    balancers = {
        c.balancer.name
        for c in plan.cells
        if c.weighting.display == "learned policy (DB-MTL-trained)"
    }
    assert balancers == {"sum", "db_mtl", "imgrad"}


def test_shipped_policy_is_a_trained_policy_not_igbv1() -> None:
    """On a small synthetic run it gives valid weights that move away from IGBv1's."""
    bench = make_benchmark(
        "synthetic", n_tasks=3, n_train=300, n_val=50, n_test=50, input_dim=20, hidden=[16, 16]
    )
    train = TrainConfig(steps=200, batch_size=20, base_window=(5, 10))
    policy = PolicyWeighting(POLICY)
    runs = {}
    for name, weighting in (("policy", policy), ("igbv1", IGBv1())):
        trainer = MTLTrainer(bench, weighting, make_balancer("sum"), train, seed=0)
        runs[name] = torch.stack([trainer.step().weights.double() for _ in range(200)])
    w = runs["policy"]
    assert torch.isfinite(w).all() and (w > 0).all()
    assert torch.allclose(w.sum(1), torch.full((200,), 3.0, dtype=torch.float64), atol=1e-5)
    assert torch.equal(w[:10], torch.ones(10, 3, dtype=torch.float64))  # base window
    # After its first decision the learned action is not zero, so the weights differ from IGBv1's.
    assert (w[10:] - runs["igbv1"][10:]).abs().max() > 1e-3


def test_shipped_policy_refuses_a_run_with_other_t() -> None:
    bench = make_benchmark("synthetic", n_tasks=2, n_train=100, n_val=20, n_test=20)
    with pytest.raises(PolicyMismatchError, match="T=3"):
        MTLTrainer(
            bench,
            PolicyWeighting(POLICY),
            make_balancer("sum"),
            TrainConfig(steps=20, batch_size=10, base_window=(1, 2)),
            seed=0,
        )
