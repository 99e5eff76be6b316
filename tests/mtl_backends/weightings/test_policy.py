"""``PolicyWeighting``: an exported policy in ``MTLTrainer`` and in a plain PyTorch loop."""

from __future__ import annotations

import copy
import functools
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import Synthetic, make_benchmark
from mtl_backends.build import build_trainer
from mtl_backends.config import TrainConfig
from mtl_backends.features import FeatureSpec
from mtl_backends.gaps import GapTracker
from mtl_backends.policy.files import shipped_policy
from mtl_backends.trainer import MTLTrainer
from mtl_backends.weightings import LOSS_WEIGHTINGS, IGBv1, make_weighting
from mtl_backends.weightings.policy import PolicyMismatchError, PolicyWeighting
from tests._tiny import TINY_SYNTHETIC
from tests.mtl_backends.policy._policies import SPEC, SPEC_V2, random_policy, random_set_policy

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


# -- set policies: any T ----------------------------------------------------------------------
SET_TRAIN = TrainConfig(steps=30, batch_size=20, base_window=(4, 8))


def set_trainer(path, n_tasks: int, seed: int = 0, **kw) -> MTLTrainer:
    """A tiny synthetic run of ``n_tasks`` tasks weighted by the policy folder ``path``."""
    bench = Synthetic(n_tasks=n_tasks, **TINY_SYNTHETIC)
    return build_trainer(bench, PolicyWeighting(path), make_balancer("sum"), SET_TRAIN, seed, **kw)


@pytest.fixture(scope="module")
def set_policy(tmp_path_factory):
    return random_set_policy(tmp_path_factory.mktemp("set") / "p")


@functools.cache
def _run(path: str, n_tasks: int) -> tuple[torch.Tensor, torch.Tensor, tuple[float, ...]]:
    """Losses, weights and learning rates of every step of a set-policy run of T tasks."""
    trainer = set_trainer(path, n_tasks)
    results = [trainer.step() for _ in range(SET_TRAIN.steps)]
    return (
        torch.stack([r.losses for r in results]),
        torch.stack([r.weights for r in results]),
        tuple(float(r.lr) for r in results),
    )


def test_set_policy_runs_in_the_trainer_at_any_t(set_policy) -> None:
    for n_tasks in (2, 3, 5, 11, 20):
        trainer = set_trainer(set_policy, n_tasks)
        assert trainer.progress.spec == SPEC_V2  # taken from the weighting
        w = torch.tensor(trainer.fit().weights, dtype=torch.float64)
        assert w.shape == (30, n_tasks) and torch.isfinite(w).all() and (w > 0).all()
        torch.testing.assert_close(w.sum(1), torch.full((30,), float(n_tasks), dtype=w.dtype))
        assert torch.equal(w[:8], torch.ones(8, n_tasks, dtype=w.dtype))  # the base window
        # The policy acts: its weights are not IGBv1's (the interp map's zero action).
        igbv1 = build_trainer(
            Synthetic(n_tasks=n_tasks, **TINY_SYNTHETIC),
            IGBv1(),
            make_balancer("sum"),
            SET_TRAIN,
            0,
            features=SPEC_V2,
        )
        ref = torch.tensor(igbv1.fit().weights, dtype=torch.float64)
        assert (w[8:] - ref[8:]).abs().max() > 1e-2, n_tasks


@pytest.mark.parametrize("n_tasks", [2, 5])
def test_set_policy_update_replays_the_trainer_bit_for_bit(set_policy, n_tasks: int) -> None:
    losses, weights, lrs = _run(str(set_policy), n_tasks)
    pw = PolicyWeighting.load(set_policy, base_window=(4, 8), total_steps=30)
    got = torch.stack([pw.update(x, lr=lr) for x, lr in zip(losses, lrs, strict=True)])
    assert torch.equal(got, weights)


@settings(max_examples=15, deadline=None)
@given(n_tasks=st.sampled_from([2, 3, 5, 8]), seed=st.integers(0, 2**16))
def test_permuting_the_tasks_permutes_the_weights(set_policy, n_tasks: int, seed: int) -> None:
    """The same run with its tasks listed in another order gets the same weights, reordered."""
    losses, weights, lrs = _run(str(set_policy), n_tasks)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n_tasks))
    pw = PolicyWeighting.load(set_policy, base_window=(4, 8), total_steps=30)
    got = torch.stack([pw.update(x[perm], lr=lr) for x, lr in zip(losses, lrs, strict=True)])
    torch.testing.assert_close(got, weights[:, perm], rtol=1e-6, atol=1e-6)


SHIPPED_TRAIN = TrainConfig(steps=60, batch_size=20, base_window=(4, 8))
REPO = Path(__file__).resolve().parents[3]
# The trained set policies in the repository and the balancer each was trained with: the shipped
# default, and the DB-MTL-trained generalists (one per agent seed) of
# configs/experiments/generalist.yaml.
TRAINED = {
    "generalist": "sum",
    "generalist-dbmtl": "db_mtl",
    "generalist-dbmtl-s0": "db_mtl",
    "generalist-dbmtl-s2": "db_mtl",
}


def _trained(name: str) -> PolicyWeighting:
    if name == "generalist":
        pw = PolicyWeighting()
        assert pw.path == shipped_policy("generalist")  # what no path loads
        return pw
    return PolicyWeighting(REPO / "policies" / name)


@functools.cache
def _shipped_run(name: str, n_tasks: int) -> tuple[torch.Tensor, torch.Tensor, tuple[float, ...]]:
    """Losses, weights and learning rates of a tiny run of T tasks under a trained generalist."""
    bench = Synthetic(n_tasks=n_tasks, **TINY_SYNTHETIC)
    # The gap tracker's features are taken from the policy's sidecar (table v2, stride K = 25).
    balancer = make_balancer(TRAINED[name])
    trainer = build_trainer(bench, _trained(name), balancer, SHIPPED_TRAIN, 0)
    results = [trainer.step() for _ in range(SHIPPED_TRAIN.steps)]
    return (
        torch.stack([r.losses for r in results]),
        torch.stack([r.weights for r in results]),
        tuple(float(r.lr) for r in results),
    )


@pytest.mark.parametrize("name", sorted(TRAINED))
@pytest.mark.parametrize("n_tasks", [2, 3, 5, 11, 20])
def test_the_trained_generalists_run_at_any_t(name: str, n_tasks: int) -> None:
    """The trained weights (not a random policy) at T = 2, 3, 5, 11, 20: sum T, positive, acting.

    Each runs under the balancer it was trained with and acts differently from IGBv1 there.
    """
    assert _trained(name).balancer == TRAINED[name]
    _, weights, _ = _shipped_run(name, n_tasks)
    w = weights.to(torch.float64)
    assert torch.isfinite(w).all() and (w > 0).all()
    torch.testing.assert_close(w.sum(1), torch.full((len(w),), float(n_tasks), dtype=w.dtype))
    assert torch.equal(w[:8], torch.ones(8, n_tasks, dtype=w.dtype))  # the base window
    bench = Synthetic(n_tasks=n_tasks, **TINY_SYNTHETIC)
    igbv1 = build_trainer(bench, IGBv1(), make_balancer(TRAINED[name]), SHIPPED_TRAIN, 0)
    ref = torch.tensor(igbv1.fit().weights, dtype=torch.float64)
    assert (w[8:] - ref[8:]).abs().max() > 1e-3  # its own decisions, not the zero action's


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(sorted(TRAINED)),
    n_tasks=st.sampled_from([2, 3, 5, 11, 20]),
    seed=st.integers(0, 2**16),
)
def test_the_trained_generalists_permute_their_weights_with_the_tasks(
    name: str, n_tasks: int, seed: int
) -> None:
    losses, weights, lrs = _shipped_run(name, n_tasks)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n_tasks))
    pw = _trained(name)
    pw = PolicyWeighting(pw.path, base_window=(4, 8), total_steps=SHIPPED_TRAIN.steps)
    got = torch.stack([pw.update(x[perm], lr=lr) for x, lr in zip(losses, lrs, strict=True)])
    torch.testing.assert_close(got, weights[:, perm], rtol=1e-6, atol=1e-6)


def test_update_takes_any_t_then_keeps_it(set_policy) -> None:
    rng = torch.Generator().manual_seed(0)
    for n_tasks in (2, 7):
        pw = PolicyWeighting.load(set_policy)
        assert pw.policy.n_tasks is None
        for _ in range(15):  # past the sidecar's base window (5, 10) and a decision
            w = pw.update(torch.rand(n_tasks, generator=rng) + 0.5)
        assert w.shape == (n_tasks,) and float(w.sum()) == pytest.approx(n_tasks)
        assert pw.tracker is not None and pw.tracker.n_tasks == n_tasks
        assert pw.state_dict()["n_tasks"] == n_tasks
        with pytest.raises(PolicyMismatchError) as err:
            pw.update(torch.ones(n_tasks + 1))
        assert str(err.value) == (
            f"policy {str(set_policy)!r}: n_tasks: the run has T={n_tasks}, "
            f"update() got {n_tasks + 1} losses"
        )


def test_set_policy_state_dict_resumes_identical_weights(set_policy) -> None:
    losses = torch.rand(40, 4, generator=torch.Generator().manual_seed(1)) + 0.5
    pw = PolicyWeighting.load(set_policy)
    for i in range(23):
        pw.update(losses[i])
    state = copy.deepcopy(pw.state_dict())
    assert state["n_tasks"] == 4 and state["action"].shape == (4 + 2,)
    resumed = PolicyWeighting.load(set_policy)
    resumed.load_state_dict(state)
    for i in range(23, 40):
        assert torch.equal(pw.update(losses[i]), resumed.update(losses[i]))
    with pytest.raises(PolicyMismatchError, match="the run has T=4, update\\(\\) got 5"):
        resumed.update(torch.ones(5))
    # A held action cannot be restored without the run's T.
    del state["n_tasks"]
    with pytest.raises(ValueError, match="a held action needs the run's n_tasks in the state"):
        PolicyWeighting.load(set_policy).load_state_dict(state)


def test_set_policy_trainer_resumes_identical_weights(set_policy) -> None:
    full = set_trainer(set_policy, 5)
    expected = [full.step().weights for _ in range(30)]
    first = set_trainer(set_policy, 5)
    for _ in range(17):  # mid-way between two decisions (8, 13, 18, ...)
        first.step()
    state = copy.deepcopy(first.state_dict())
    resumed = set_trainer(set_policy, 5, seed=99)
    resumed.load_state_dict(state)
    for step in range(17, 30):
        assert torch.equal(resumed.step().weights, expected[step]), step


def test_mlp_policies_still_refuse_another_t(tmp_path) -> None:
    path = random_policy(tmp_path / "p")
    pw = PolicyWeighting.load(path)
    with pytest.raises(PolicyMismatchError) as err:
        pw.update(torch.ones(4))
    assert str(err.value) == (
        f"policy {str(path)!r}: n_tasks: the run has T=3, update() got 4 losses"
    )
    with pytest.raises(PolicyMismatchError, match="trained with T=3, the run has T=4"):
        pw.check_run(n_tasks=4)
    with pytest.raises(PolicyMismatchError, match="trained with T=3, the run has T=5"):
        set_trainer(path, 5)
    # ... while a set policy fits any T.
    PolicyWeighting.load(random_set_policy(tmp_path / "s")).check_run(n_tasks=17)


def test_a_run_with_another_feature_table_is_refused(set_policy, tmp_path) -> None:
    v1 = FeatureSpec(history=3, stride=5, ema=0.9)
    trainer = set_trainer(set_policy, 3, features=v1)
    with pytest.raises(PolicyMismatchError) as err:
        trainer.weighting.check_run(trainer)  # type: ignore[attr-defined]
    assert str(err.value) == (
        f"policy {str(set_policy)!r} does not fit this run: features: table is 'v2' in the "
        "policy but 'v1' in the run's gap tracker"
    )
    with pytest.raises(PolicyMismatchError, match="features: table is 'v2'"):
        trainer.fit()  # the trainer's own first decision refuses too
    # ... and an MLP policy of table v1 in a run observing table v2.
    mlp = PolicyWeighting.load(random_policy(tmp_path / "m"))
    with pytest.raises(PolicyMismatchError, match="features: table is 'v1' in the policy but 'v2'"):
        mlp.check_run(features=FeatureSpec(history=3, stride=5, ema=0.9, table="v2"))
