"""The standalone policy format, PolicyWeighting and the action maps (no gymnasium needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.action_map import (
    ACTION_MAPS,
    HeldAction,
    action_to_weights,
    get_action_map,
    held_action_weights,
)
from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.config import TrainConfig
from mtl_backends.progress import FeatureSpec, GapTracker
from mtl_backends.trainer import MTLTrainer
from mtl_backends.weightings import LOSS_WEIGHTINGS, IGBv1, igbv1_weights, make_weighting
from mtl_backends.weightings.policy import (
    PolicyMismatchError,
    PolicyNetwork,
    PolicyWeighting,
    build_sidecar,
    load_policy,
    observation_dim,
    save_policy,
)

T = 3
SPEC = FeatureSpec(history=3, stride=5, ema=0.9)
TRAIN = TrainConfig(steps=60, base_window=(5, 10), batch_size=40)
BENCH = {"n_train": 400, "n_val": 100, "n_test": 100, "seed": 3}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sidecar(spec: FeatureSpec = SPEC, mode: str = "residual", **kw):
    args: dict[str, Any] = {
        "n_tasks": T,
        "features": spec,
        "action_mode": mode,
        "tau": 1.0,
        "steps_per_action": spec.stride,
        "balancer": "sum",
        "base_window": (5, 10),
        "total_steps": 60,
        "algorithm": "test",
    }
    args.update(kw)
    return build_sidecar(**args)


def random_policy(
    path: Path, seed: int = 0, spec: FeatureSpec = SPEC, zero: bool = False, **kw
) -> Path:
    torch.manual_seed(seed)
    net = PolicyNetwork([observation_dim(spec, T), 16, 16, T], "tanh", "clip")
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.0 if zero else 3.0)  # large weights: actions far from 0 and varied
    return save_policy(path, net, sidecar(spec, **kw))


def trainer(weighting, seed: int = 11, features: FeatureSpec | None = None) -> MTLTrainer:
    return MTLTrainer(
        make_benchmark("synthetic", **BENCH),
        weighting,
        make_balancer("sum"),
        TRAIN,
        seed=seed,
        features=features,
    )


def test_action_maps():
    gaps = torch.tensor([0.9, 0.5, 0.7], dtype=torch.float64)
    assert set(ACTION_MAPS) == {"absolute", "residual"}
    assert torch.equal(
        action_to_weights(np.zeros(3), "residual", 1.0, gaps), igbv1_weights(gaps).float()
    )
    w = action_to_weights(np.array([1.0, -1.0, 0.0]), "absolute", 1.0)
    assert w.dtype == torch.float32 and float(w.sum()) == pytest.approx(3.0)
    assert float(w[0] / w[1]) == pytest.approx(np.exp(2.0), rel=1e-6)
    assert torch.equal(w, action_to_weights(np.array([7.0, -3.0, 0.0]), "absolute", 1.0))  # clipped
    for bad in (np.array([np.nan, 0, 0]), np.zeros(2), np.zeros((3, 1))):
        with pytest.raises(ValueError, match="action"):
            action_to_weights(bad, "residual", 1.0, gaps)
    with pytest.raises(ValueError, match="gaps"):
        action_to_weights(np.zeros(3), "residual", 1.0, None)
    with pytest.raises(ValueError, match="unknown action mode"):
        action_to_weights(np.zeros(3), "nope", 1.0, gaps)
    with pytest.raises(ValueError, match="version"):
        get_action_map("residual", 2)


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(sorted(ACTION_MAPS)),
    tau=st.floats(0.1, 3.0),
    action=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
    losses=st.lists(st.floats(0.01, 100.0), min_size=3, max_size=3),
)
def test_held_action_equals_held_action_weights(mode, tau, action, losses):
    """``HeldAction`` (validated once per hold) equals the per-step function bit for bit."""
    tracker = GapTracker(3, (0, 1))
    held = HeldAction(mode, tau)
    assert torch.equal(held.weights(tracker), held_action_weights(None, mode, tau, tracker))
    tracker.update(torch.ones(3, dtype=torch.float64), 0, 1e-3)
    tracker.update(torch.tensor(losses, dtype=torch.float64), 1, 1e-3)
    assert torch.equal(held.weights(tracker), held_action_weights(None, mode, tau, tracker))
    held.hold(np.array(action), 3)
    w = held.weights(tracker)
    assert torch.equal(w, held_action_weights(np.array(action), mode, tau, tracker))
    assert float(w.sum()) == pytest.approx(3.0, rel=1e-5)
    assert held.action is not None
    assert torch.equal(held.action, torch.tensor(action, dtype=torch.float64))  # not clipped
    held.hold(None, 3)
    assert held.action is None


def test_held_action_rejects_bad_actions():
    held = HeldAction("residual", 1.0)
    held.hold(np.zeros(3), 3)
    for bad in (np.array([np.nan, 0.0, 0.0]), np.array([np.inf, 0.0, 0.0]), np.zeros(2)):
        with pytest.raises(ValueError, match="action"):
            held.hold(bad, 3)
    assert held.action is not None
    assert torch.equal(held.action, torch.zeros(3, dtype=torch.float64))  # the old one is kept
    with pytest.raises(ValueError, match="unknown action mode"):
        HeldAction("nope", 1.0)


def test_save_load_round_trip(tmp_path):
    path = random_policy(tmp_path / "p")
    side = json.loads((path / "policy.json").read_text())
    assert side["format"] == "igb-policy" and side["format_version"] == 1
    assert side["network"] == {"sizes": [20, 16, 16, 3], "activation": "tanh", "output": "clip"}
    assert side["features"]["spec"] == {"history": 3, "stride": 5, "ema": 0.9}
    assert [r["name"] for r in side["features"]["table"]][:2] == ["log_gap", "raw_log_gap"]
    assert side["action_map"] == {"mode": "residual", "version": 1, "tau": 1.0}
    assert side["obs_normalization"] is None and "torch" in side["versions"]
    tensors = torch.load(path / "policy.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    policy = load_policy(path)
    obs = np.random.default_rng(0).uniform(-1, 1, 20).astype(np.float32)
    a = policy.act(obs)
    assert a.shape == (3,) and bool((a.abs() <= 1).all())
    torch.manual_seed(0)
    again = load_policy(path).act(obs)
    assert torch.equal(a, again)
    assert not list(path.glob(".*tmp"))  # atomic writes leave no temporaries


def test_obs_normalization(tmp_path):
    net = PolicyNetwork([20, 8, 3], "relu", "tanh")
    mean, var = np.linspace(-1, 1, 20), np.linspace(0.5, 2, 20)
    path = save_policy(tmp_path / "n", net, sidecar(), obs_mean=mean, obs_var=var)
    policy = load_policy(path)
    assert policy.sidecar["obs_normalization"] == {"clip_obs": 10.0, "epsilon": 1e-8}
    obs = np.random.default_rng(1).uniform(-3, 3, 20).astype(np.float32)
    expected = np.clip((obs - mean) / np.sqrt(var + 1e-8), -10, 10).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(expected)[None])[0]
    assert torch.equal(policy.act(obs), ref)
    with pytest.raises(ValueError, match="together"):
        save_policy(tmp_path / "x", net, sidecar(), obs_mean=mean)


def test_invalid_policies_rejected(tmp_path):
    path = random_policy(tmp_path / "p")
    side = json.loads((path / "policy.json").read_text())
    for key, value, match in (
        ("format_version", 2, "format_version"),
        ("action_map", {"mode": "residual", "version": 9, "tau": 1.0}, "version"),
        ("obs_dim", 21, "obs_dim"),
    ):
        bad = tmp_path / f"bad_{key}"
        bad.mkdir()
        (bad / "policy.pt").write_bytes((path / "policy.pt").read_bytes())
        (bad / "policy.json").write_text(json.dumps({**side, key: value}))
        with pytest.raises(ValueError, match=match):
            load_policy(bad)
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "missing")
    with pytest.raises(ValueError, match="sizes"):
        save_policy(tmp_path / "y", PolicyNetwork([19, 3]), sidecar())


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
        from mtl_backends.weightings.policy import PolicyWeighting
        from mtl_backends.action_map import action_to_weights
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
