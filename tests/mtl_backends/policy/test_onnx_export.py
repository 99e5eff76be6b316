"""``policy.onnx``: onnxruntime gives the PyTorch policy's actions (1e-5), a set policy at any T."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtl_backends.features import FeatureTable
from mtl_backends.policy import PolicyNetwork, load_policy, save_policy
from mtl_backends.policy.onnx_export import METADATA_KEY, ONNX_FILE, write_onnx
from mtl_backends.policy.runtime import Policy
from tests.mtl_backends.policy._policies import SPEC, SPEC_V2, T, set_network, set_sidecar, sidecar

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TOL = 1e-5


def _session(path: Path) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _observations(dim: int, n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, size=(n, dim)).astype(np.float32)


def _torch_actions(policy: Policy, obs: np.ndarray) -> np.ndarray:
    return np.stack([policy.act(row).numpy() for row in obs])


def _max_diff(policy_dir: Path, onnx_file: Path, obs: np.ndarray) -> float:
    (onnx_out,) = _session(onnx_file).run(["action"], {"obs": obs})
    expected = _torch_actions(load_policy(policy_dir), obs)
    assert onnx_out.shape == expected.shape and onnx_out.dtype == np.float32
    assert (np.abs(expected) < 0.99).mean() > 0.3  # mostly unsaturated: the test can fail
    return float(np.abs(onnx_out - expected).max())


def test_v1_mlp_policy_shipped(tmp_path: Path) -> None:
    out = write_onnx("synthetic-ppo-residual", tmp_path / "shipped.onnx")
    policy = load_policy("synthetic-ppo-residual")
    assert policy.obs_dim is not None
    assert _max_diff(Path("synthetic-ppo-residual"), out, _observations(policy.obs_dim)) < TOL
    with pytest.raises(Exception, match=r"(?i)invalid dimensions|got: \d+"):
        _session(out).run(["action"], {"obs": _observations(policy.obs_dim + 1)})  # fixed T


def test_v1_policy_with_observation_normalisation(tmp_path: Path) -> None:
    dim = FeatureTable(SPEC).dim(T)
    torch.manual_seed(1)
    net = PolicyNetwork([dim, 16, 16, T], "tanh", "tanh")
    rng = np.random.default_rng(1)
    folder = save_policy(
        tmp_path / "normed",
        net,
        sidecar(SPEC),
        obs_mean=rng.normal(size=dim),
        obs_var=rng.uniform(0.1, 4.0, size=dim),
    )
    out = write_onnx(folder)
    assert out == folder / ONNX_FILE and out.is_file()
    assert _max_diff(folder, out, _observations(dim) * 5.0) < TOL  # some clipped at clip_obs


def test_set_policy_runs_at_any_t(tmp_path: Path) -> None:
    folder = save_policy(tmp_path / "set", set_network(gain=0.7), set_sidecar())
    out = write_onnx(folder)
    table = FeatureTable(SPEC_V2)
    per_task, globals_ = len(table.per_task), len(table.global_)
    for n_tasks in (2, 7):
        obs = _observations(n_tasks * per_task + globals_, seed=n_tasks)
        assert _max_diff(folder, out, obs) < TOL
    (action,) = _session(out).run(["action"], {"obs": obs[:1]})
    assert action.shape == (1, 7 + 2)  # T entries and the interp map's two global entries


def test_metadata_holds_the_sidecar(tmp_path: Path) -> None:
    import onnx

    out = write_onnx("synthetic-ppo-residual", tmp_path / "p.onnx")
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta[METADATA_KEY]) == load_policy("synthetic-ppo-residual").sidecar


def test_a_policy_object_or_a_shipped_name_needs_an_output_file() -> None:
    with pytest.raises(ValueError, match="needs out"):
        write_onnx(load_policy("synthetic-ppo-residual"))
    with pytest.raises(ValueError, match="names a shipped policy, whose folder is package data"):
        write_onnx("synthetic-ppo-residual")


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    real_import = builtins.__import__

    def no_onnx(name: str, *args: object, **kwargs: object) -> object:
        if name == "onnx":
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ImportError, match=r'pip install "igb-rl\[onnx\]"'):
        write_onnx("synthetic-ppo-residual", tmp_path / "p.onnx")
