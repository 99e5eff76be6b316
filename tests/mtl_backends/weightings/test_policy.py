"""``PolicyWeighting``: an exported policy in ``MTLTrainer`` and in a plain PyTorch loop."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.config import TrainConfig
from mtl_backends.features import FeatureSpec
from mtl_backends.gaps import GapTracker
from mtl_backends.trainer import MTLTrainer
from mtl_backends.weightings import LOSS_WEIGHTINGS, IGBv1, make_weighting
from mtl_backends.weightings.policy import PolicyMismatchError, PolicyWeighting
from tests.mtl_backends.policy._policies import SPEC, random_policy

TRAIN = TrainConfig(steps=60, base_window=(5, 10), batch_size=40)
BENCH = {"n_train": 400, "n_val": 100, "n_test": 100, "seed": 3}


def trainer(weighting, seed: int = 11, features: FeatureSpec | None = None) -> MTLTrainer:
    return MTLTrainer(
        make_benchmark("synthetic", **BENCH),
        weighting,
        make_balancer("sum"),
        TRAIN,
        seed=seed,
        features=features,
    )


def test_zero_policy_equals_igbv1_in_trainer(tmp_path):
    path = random_policy(tmp_path / "z", zero=True)
    pw = trainer(make_weighting("policy", path=str(path)))
    ref = trainer(IGBv1(), features=SPEC)
    h1, h2 = pw.fit(), ref.fit()
    assert h1.weights == h2.weights
    assert h1.weights[9] == [1.0, 1.0, 1.0] != h1.weights[10]  # IGBv1 from the step after the base
    for a, b in zip(pw.model.parameters(), ref.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_policy_holds_action_for_k_steps(tmp_path):
    path = random_policy(tmp_path / "p", mode="absolute")
    tr = trainer(PolicyWeighting.load(path))
    assert tr.progress.spec == SPEC  # taken from the weighting
    weights = tr.fit().weights
    assert all(w == [1.0, 1.0, 1.0] for w in weights[:10])
    for start in range(10, 60, 5):
        block = weights[start : start + 5]
        assert all(w == block[0] for w in block)  # absolute: constant while the action is held
    assert len({tuple(w) for w in weights[10:]}) > 1


def test_mismatched_policies_refused(tmp_path):
    path = random_policy(tmp_path / "p")
    pw = PolicyWeighting.load(path)
    with pytest.raises(
        PolicyMismatchError, match=r"n_tasks: the policy was trained with T=3, the run has T=2"
    ):
        MTLTrainer(make_benchmark("synthetic", n_tasks=2, **BENCH), pw, make_balancer("sum"), TRAIN)
    tr = trainer(PolicyWeighting.load(path), features=FeatureSpec(history=2, stride=5, ema=0.9))
    with pytest.raises(PolicyMismatchError, match="features: history is 3 in the policy but 2"):
        pw.check_run(tr)
    with pytest.raises(PolicyMismatchError, match="features: history"):
        tr.step()  # the trainer's own first step refuses too
    tr = trainer(PolicyWeighting.load(path), features=FeatureSpec(history=3, stride=25, ema=0.9))
    with pytest.raises(
        PolicyMismatchError, match="steps_per_action: the policy holds each action for K=5"
    ):
        pw.check_run(tr)
    with pytest.raises(PolicyMismatchError, match="transform: the policy needs 'log'"):
        pw.check_run(n_tasks=3, transform="identity")
    with pytest.raises(PolicyMismatchError, match="K=5, the run asks for K=25"):
        pw.check_run(steps_per_action=25)
    ok = trainer(PolicyWeighting.load(path))
    pw.check_run(ok)  # no error, no warning
    db = MTLTrainer(
        make_benchmark("synthetic", **BENCH),
        PolicyWeighting.load(path),
        make_balancer("db_mtl"),
        TRAIN,
    )
    with pytest.warns(
        UserWarning, match="trained with the 'sum' balancer but the run uses 'db_mtl'"
    ):
        pw.check_run(db)


def test_update_loop_example(tmp_path):
    """The README's plain-PyTorch loop with PolicyWeighting."""
    path = random_policy(tmp_path / "p")
    bench = make_benchmark("synthetic", **BENCH)
    data = bench.split("train")
    torch.manual_seed(0)
    model = bench.build_model()
    # --- README example ---
    policy = PolicyWeighting.load(path)  # base window and budget from the sidecar
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(60):
        idx = torch.arange(step * 40, step * 40 + 40) % len(data)
        x, y = data.inputs[idx], data.targets[idx]
        losses = torch.stack([((out - y[:, t]) ** 2).mean() for t, out in enumerate(model(x))])
        weights = policy.update(losses.detach(), lr=opt.param_groups[0]["lr"])
        opt.zero_grad()
        (weights * torch.log(losses + 1e-8)).sum().backward()
        opt.step()
    # --- end ---
    assert policy.tracker is not None and policy.tracker.step == 59
    assert torch.equal(policy.tracker.last_weights.float(), weights)
    assert float(weights.sum()) == pytest.approx(3.0)


def test_update_matches_trainer(tmp_path):
    """update() in a hand-written loop gives the trainer's weights for the same losses."""
    path = random_policy(tmp_path / "p")
    tr = trainer(PolicyWeighting.load(path))
    results = [tr.step() for _ in range(60)]
    pw = PolicyWeighting.load(path)
    for r in results:
        assert torch.equal(pw.update(r.losses, lr=r.lr), r.weights)


def test_state_dict_resume(tmp_path):
    path = random_policy(tmp_path / "p")
    pw = PolicyWeighting.load(path)
    losses = torch.rand(40, 3, generator=torch.Generator().manual_seed(0)) + 0.5
    for i in range(23):
        pw.update(losses[i])
    resumed = PolicyWeighting.load(path)
    resumed.load_state_dict(pw.state_dict())
    for i in range(23, 40):
        assert torch.equal(pw.update(losses[i]), resumed.update(losses[i]))


def test_registered():
    assert LOSS_WEIGHTINGS["policy"] is PolicyWeighting
    assert PolicyWeighting.transform == "log"


def test_import_without_gymnasium_and_sb3(tmp_path):
    path = random_policy(tmp_path / "p")
    code = textwrap.dedent(
        f"""
        import sys
        for name in ("gymnasium", "stable_baselines3"):
            sys.modules[name] = None  # any import of them now fails
        import torch
        from mtl_backends.weightings import PolicyWeighting
        from mtl_backends.policy import action_to_weights
        pw = PolicyWeighting.load({str(path)!r})
        for i in range(30):
            w = pw.update(torch.tensor([1.0, 2.0, 3.0]) / (1 + i))
        print(round(float(w.sum()), 4))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3.0"


def test_gap_tracker_spec_used_by_update(tmp_path):
    path = random_policy(tmp_path / "p")
    pw = PolicyWeighting.load(path, base_window=(2, 4), total_steps=10)
    pw.update(torch.ones(3))
    assert isinstance(pw.tracker, GapTracker)
    assert (
        pw.tracker.base_window == (2, 4)
        and pw.tracker.total_steps == 10
        and pw.tracker.spec == SPEC
    )
