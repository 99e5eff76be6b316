"""Exported-policy folders: the format, saving and loading, normalisation, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mtl_backends.policy import PolicyNetwork, load_policy, save_policy
from tests.mtl_backends.policy._policies import random_policy, sidecar


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
        ("format_version", 3, "format_version"),
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
