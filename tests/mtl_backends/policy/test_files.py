"""Exported-policy folders: the format, saving and loading, normalisation, refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_backends.features import FeatureTable
from mtl_backends.policy import PolicyNetwork, load_policy, save_policy
from mtl_backends.policy.network import SetPolicyNetwork
from tests.mtl_backends.policy._policies import (
    SPEC_V2,
    random_policy,
    random_set_policy,
    set_network,
    set_sidecar,
    sidecar,
)

ROOT = Path(__file__).resolve().parents[3]


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


# -- format version 2: set policies -----------------------------------------------------------
def _copy_with_sidecar(src: Path, dst: Path, side: dict) -> Path:
    dst.mkdir()
    (dst / "policy.pt").write_bytes((src / "policy.pt").read_bytes())
    (dst / "policy.json").write_text(json.dumps(side))
    return dst


def test_set_policy_round_trip_gives_identical_actions_at_any_t(tmp_path):
    table = FeatureTable(SPEC_V2)
    f, g = len(table.per_task), len(table.global_)
    task_scale = [0.1] * (f - 1) + [1 / 32]
    net = set_network(seed=3, task_scale=task_scale, global_scale=[1.0, 0.5, 2.0]).eval()
    path = save_policy(tmp_path / "s", net, set_sidecar())
    side = json.loads((path / "policy.json").read_text())
    assert side["format_version"] == 2 and side["n_tasks"] is None and side["obs_dim"] is None
    assert side["network"] == net.spec() and side["obs_normalization"] is None
    tensors = torch.load(path / "policy.pt", weights_only=True)
    assert torch.equal(tensors["encoder.task_scale"], torch.tensor(task_scale))
    assert torch.equal(tensors["encoder.global_scale"], torch.tensor([1.0, 0.5, 2.0]))
    policy = load_policy(path)
    assert isinstance(policy.network, SetPolicyNetwork)
    assert policy.n_tasks is None and policy.obs_dim is None and policy.feature_spec == SPEC_V2
    for name, value in net.state_dict().items():
        assert torch.equal(policy.network.state_dict()[name], value), name
    rng = np.random.default_rng(0)
    for n_tasks in (1, 2, 3, 5, 11, 20):
        obs = rng.uniform(-5, 5, n_tasks * f + g).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(obs)[None])[0]
        got = policy.act(obs)
        assert got.shape == (n_tasks + 2,) and torch.equal(got, expected)
    assert not list(path.glob(".*tmp"))


def test_save_refuses_normalisation_statistics_for_a_set_network(tmp_path):
    net = set_network()
    with pytest.raises(ValueError) as err:
        save_policy(tmp_path / "s", net, set_sidecar(), obs_mean=np.zeros(30), obs_var=np.ones(30))
    assert str(err.value) == (
        "set networks take unnormalised observations (their input scales are part of the "
        "weights); obs_mean/obs_var cannot be given"
    )
    with pytest.raises(ValueError, match="sets obs_normalization but no obs_mean/obs_var"):
        save_policy(
            tmp_path / "t",
            net,
            set_sidecar(obs_normalization={"clip_obs": 10.0, "epsilon": 1e-8}),
        )
    assert not (tmp_path / "s").exists() and not (tmp_path / "t").exists()


def test_save_refuses_a_set_network_with_a_sidecar_of_one_t(tmp_path):
    side = sidecar(SPEC_V2, "interp")  # n_tasks 3: format version 1
    with pytest.raises(
        ValueError, match=re.escape(f"{tmp_path / 's'}: set networks need format_version 2")
    ):
        save_policy(tmp_path / "s", set_network(), side)
    assert not (tmp_path / "s").exists()


def test_tensors_that_do_not_fit_the_network_name_the_file(tmp_path):
    path = random_set_policy(tmp_path / "s")  # hidden 16
    side = json.loads((path / "policy.json").read_text())
    bad = _copy_with_sidecar(
        path, tmp_path / "wider", {**side, "network": {**side["network"], "hidden": 32}}
    )
    with pytest.raises(ValueError) as err:
        load_policy(bad)
    message = str(err.value)
    assert message.startswith(
        f"{bad / 'policy.pt'}: the tensors do not fit the sidecar's network "
        f"{ {**side['network'], 'hidden': 32} }: "
    )
    assert "size mismatch" in message
    # An MLP whose hidden widths were edited: sizes still fit obs_dim and T, the tensors do not.
    mlp = random_policy(tmp_path / "m")
    side = json.loads((mlp / "policy.json").read_text())
    side["network"]["sizes"] = [20, 8, 16, 3]
    bad = _copy_with_sidecar(mlp, tmp_path / "mlp", side)
    with pytest.raises(ValueError, match=re.escape(f"{bad / 'policy.pt'}: the tensors do not fit")):
        load_policy(bad)
    # Tensors of another kind of network: missing and unexpected keys.
    side = json.loads((path / "policy.json").read_text())
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "policy.pt").write_bytes((mlp / "policy.pt").read_bytes())
    (tmp_path / "mixed" / "policy.json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match="Missing key"):
        load_policy(tmp_path / "mixed")


def test_a_set_policy_edited_to_normalise_is_refused_on_load(tmp_path):
    path = random_set_policy(tmp_path / "s")
    side = json.loads((path / "policy.json").read_text())
    side["obs_normalization"] = {"clip_obs": 10.0, "epsilon": 1e-8}
    bad = _copy_with_sidecar(path, tmp_path / "bad", side)
    with pytest.raises(ValueError, match=re.escape(f"{bad / 'policy.json'}: set policies take")):
        load_policy(bad)


@pytest.mark.parametrize("name", ["synthetic-ppo-residual", "synthetic-ppo-residual-dbmtl"])
def test_committed_version_1_files_load_and_are_rewritten_as_version_1(tmp_path, name):
    folder = ROOT / "policies" / name
    original = json.loads((folder / "policy.json").read_text())
    assert original["format_version"] == 1 and "kind" not in original["network"]
    policy = load_policy(folder)
    assert isinstance(policy.network, PolicyNetwork)
    assert policy.n_tasks == 3 and policy.obs_dim == 20
    side = {k: v for k, v in policy.sidecar.items() if k not in ("network", "format_version")}
    again = load_policy(save_policy(tmp_path / name, policy.network, side))
    written = json.loads((tmp_path / name / "policy.json").read_text())
    assert written["format_version"] == 1 and written == original
    obs = np.random.default_rng(2).uniform(-1, 1, (16, 20)).astype(np.float32)
    for o in obs:
        assert torch.equal(again.act(o), policy.act(o))
