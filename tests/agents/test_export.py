from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.config import group_env_configs, load_agent_config
from agents.export import actor_spec, export_model, export_run
from agents.set_policy import SetActorCriticPolicy
from agents.train import load_model
from igb_env import make_env
from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import Synthetic
from mtl_backends.build import build_trainer
from mtl_backends.config import TrainConfig
from mtl_backends.policy import action_to_weights, load_policy
from mtl_backends.policy.network import SetPolicyNetwork
from mtl_backends.weightings.policy import PolicyWeighting
from tests._tiny import TINY_SYNTHETIC
from tests.mtl_backends.policy._policies import tracker_with_gaps

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def exported(trained: Path) -> Path:
    return export_run(trained)


def _observations(env_config: dict, n_random: int = 64) -> np.ndarray:
    """Observations from real episodes plus random points of the observation space."""
    env = make_env(env_config)
    obs, _ = env.reset(seed=0)
    real = [obs]
    done = False
    while not done:
        obs, _, done, _, _ = env.step(env.action_space.sample())
        real.append(obs)
    env.observation_space.seed(1)
    rand = [env.observation_space.sample() for _ in range(n_random)]
    return np.stack(real + rand).astype(np.float32)


def test_export_equals_model_predict_mapped_to_weights(trained: Path, exported: Path) -> None:
    config = load_agent_config(trained / "config.yaml")
    model = load_model(trained)
    policy = load_policy(exported)
    obs = _observations(dict(config.env))
    expected, _ = model.predict(obs, deterministic=True)
    got = np.stack([policy.act(o).numpy() for o in obs])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # ... and the same weights through the shared, versioned action map.
    tracker = tracker_with_gaps([0.9, 0.5, 0.2])
    for a_exp, a_got in zip(expected, got, strict=True):
        w_exp = action_to_weights(a_exp, policy.action_mode, policy.tau, tracker)
        w_got = action_to_weights(a_got, policy.action_mode, policy.tau, tracker)
        torch.testing.assert_close(w_got, w_exp, atol=1e-5, rtol=0)


def test_sidecar_records_the_training_setting(trained: Path, exported: Path) -> None:
    config = load_agent_config(trained / "config.yaml")
    sidecar = json.loads((exported / "policy.json").read_text())
    env = dict(config.env)
    assert sidecar["n_tasks"] == 3
    assert sidecar["algorithm"] == config.algorithm.upper()
    assert sidecar["steps_per_action"] == env["steps_per_action"]
    assert sidecar["action_map"] == {"mode": env["action_mode"], "version": 1, "tau": env["tau"]}
    assert sidecar["transform"] == "log"
    assert sidecar["balancer"] == "sum"
    assert sidecar["features"]["spec"]["stride"] == env["steps_per_action"]
    assert sidecar["network"]["sizes"] == [sidecar["obs_dim"], 64, 64, 3]
    assert sidecar["network"]["output"] == ("clip" if config.algorithm == "ppo" else "tanh")
    assert {"torch", "stable_baselines3", "gymnasium", "igb_rl"} <= set(sidecar["versions"])
    spec = actor_spec(load_model(trained))
    assert spec.activation == ("tanh" if config.algorithm == "ppo" else "relu")


def test_policy_weighting_runs_without_sb3_or_gymnasium(trained: Path, exported: Path) -> None:
    config = load_agent_config(trained / "config.yaml")
    env = dict(config.env)
    bench = {k: v for k, v in env["benchmark"].items() if k != "name"}
    script = textwrap.dedent(
        f"""
        import sys
        for name in ("stable_baselines3", "gymnasium"):
            sys.modules[name] = None  # any import of them now raises ImportError

        import torch
        from mtl_backends.balancers import make_balancer
        from mtl_backends.benchmarks import make_benchmark
        from mtl_backends.config import TrainConfig
        from mtl_backends.trainer import MTLTrainer
        from mtl_backends.weightings import make_weighting

        weighting = make_weighting("policy", path={str(exported)!r})
        train = TrainConfig(**{env["train"]!r})
        bench = make_benchmark("synthetic", **{bench!r})
        trainer = MTLTrainer(bench, weighting, make_balancer("sum"), train, seed=1000)
        history = trainer.fit()
        w = torch.tensor(history.weights)
        assert torch.isfinite(w).all() and torch.allclose(w.sum(1), torch.full((len(w),), 3.0))
        assert "stable_baselines3" not in [m for m, v in sys.modules.items() if v is not None]
        print("ok", len(w))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_export_refuses_unsupported_models(trained: Path) -> None:
    from stable_baselines3 import A2C

    # A2C exports like PPO (tests/agents/test_algorithms.py); its gSDE variant cannot.
    env = make_env(dict(load_agent_config(trained / "config.yaml").env))
    model = A2C("MlpPolicy", env, use_sde=True)
    with pytest.raises(ValueError, match="gSDE"):
        actor_spec(model)


def test_igb_export_command(trained: Path, tmp_path: Path) -> None:
    from agents.cli import main

    out = tmp_path / "policy"
    assert main(["export", str(trained), "--out", str(out)]) == 0
    assert (out / "policy.pt").is_file() and (out / "policy.json").is_file()


# -- set policies -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def exported_set(trained_set: Path) -> Path:
    return export_run(trained_set)


def test_set_export_is_the_actor_of_model_predict_at_each_t(
    trained_set: Path, exported_set: Path, tmp_path: Path
) -> None:
    config = load_agent_config(trained_set / "config.yaml")
    model = load_model(trained_set)
    assert isinstance(model.policy, SetActorCriticPolicy)
    layout = model.policy.layout
    policy = load_policy(exported_set)
    assert isinstance(policy.network, SetPolicyNetwork)
    for group, n_tasks in zip(group_env_configs(config), (2, 3), strict=True):
        obs = _observations(group)
        assert obs.shape[1] == n_tasks * 9 + 3
        padded = layout.pad(obs, n_tasks)
        predicted, _ = model.predict(padded, deterministic=True)
        expected = layout.unpad_action(predicted, n_tasks)
        got = np.stack([policy.act(o).numpy() for o in obs])
        assert got.shape == (len(obs), n_tasks + 2)
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    # Beyond the layout's max_tasks the export is still the trained actor, unpadded.
    obs = np.random.default_rng(0).uniform(-1, 1, (8, 7 * 9 + 3)).astype(np.float32)
    for o in obs:
        with torch.no_grad():
            actor = model.policy.actor(torch.from_numpy(o)[None])[0]
        assert torch.equal(policy.act(o), actor)
    # Actions far from zero (and clipped ones) too: the same comparison with larger output layers.
    actor = model.policy.actor
    assert isinstance(actor, SetPolicyNetwork) and actor.global_head is not None
    with torch.no_grad():
        for head in (actor.task_head, actor.global_head):
            for param in head[-1].parameters():
                param.mul_(100.0)
    larger = load_policy(export_model(model, dict(config.env), tmp_path / "larger"))
    for group, n_tasks in zip(group_env_configs(config), (2, 3), strict=True):
        obs = _observations(group)
        predicted, _ = model.predict(layout.pad(obs, n_tasks), deterministic=True)
        expected = layout.unpad_action(predicted, n_tasks)
        assert np.abs(expected).max() == 1.0 and (np.abs(expected) < 0.9).mean() > 0.1
        got = np.stack([larger.act(o).numpy() for o in obs])
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_set_sidecar_is_format_2_and_lists_the_training_groups(
    trained_set: Path, exported_set: Path
) -> None:
    config = load_agent_config(trained_set / "config.yaml")
    env = dict(config.env)
    sidecar = json.loads((exported_set / "policy.json").read_text())
    assert sidecar["format_version"] == 2
    assert sidecar["n_tasks"] is None and sidecar["obs_dim"] is None
    assert sidecar["network"] == {
        "kind": "set",
        "task_features": 9,
        "global_features": 3,
        "global_actions": 2,
        "hidden": 16,
        "activation": "tanh",
        "output": "clip",
    }
    assert sidecar["action_map"] == {"mode": "interp", "version": 1, "tau": 1.0}
    assert sidecar["features"]["spec"] == {"history": 3, "stride": 10, "ema": 0.9, "table": "v2"}
    assert sidecar["algorithm"] == "PPO" and sidecar["obs_normalization"] is None
    assert sidecar["steps_per_action"] == 10 and sidecar["total_steps"] == 60
    assert sidecar["base_window"] == [5, 10] and sidecar["env_config"] == env
    groups = sidecar["training_groups"]
    assert [g["benchmark"]["n_tasks"] for g in groups] == [2, 3]
    assert [g["budgets"] for g in groups] == [[60], [60]]  # no budgets: train.steps
    assert all(g["variation"] is False for g in groups)
    assert all(g["benchmark"]["input_dim"] == 20 for g in groups)  # the smoke preset's


def test_set_export_lists_each_group_s_budgets(trained_set: Path, tmp_path: Path) -> None:
    config = load_agent_config(trained_set / "config.yaml")
    groups = [
        {**c, "budgets": b}
        for c, b in zip(group_env_configs(config), ([30, 60], None), strict=True)
    ]
    out = export_model(load_model(trained_set), dict(config.env), tmp_path / "p", groups=groups)
    sidecar = json.loads((out / "policy.json").read_text())
    assert [g["budgets"] for g in sidecar["training_groups"]] == [[30, 60], [60]]


def test_set_export_of_the_best_model(trained_set: Path, tmp_path: Path) -> None:
    from agents.cli import main

    out = tmp_path / "best"
    assert main(["export", str(trained_set), "--best", "--out", str(out)]) == 0
    best = load_model(trained_set, best=True)
    assert isinstance(best.policy, SetActorCriticPolicy)
    policy = load_policy(out)
    assert policy.sidecar["format_version"] == 2
    state = best.policy.actor.state_dict()
    assert state.keys() == policy.network.state_dict().keys()
    for name, value in policy.network.state_dict().items():
        assert torch.equal(value, state[name]), name
    # The best model is the final one exactly when the last evaluation was the best.
    means = np.load(trained_set / "eval" / "evaluations.npz")["results"].mean(1)
    final_policy = load_model(trained_set).policy
    assert isinstance(final_policy, SetActorCriticPolicy)
    final = final_policy.actor.state_dict()
    same = all(torch.equal(final[name], value) for name, value in state.items())
    assert same == (int(np.argmax(means)) == len(means) - 1)


def test_exported_set_policy_weights_runs_of_unseen_t(exported_set: Path) -> None:
    """Trained on T = 2 and 3, the exported policy weights a T = 5 run (no SB3 involved)."""
    train = TrainConfig(steps=60, batch_size=20, base_window=(5, 10))
    trainer = build_trainer(
        Synthetic(n_tasks=5, **TINY_SYNTHETIC),
        PolicyWeighting(exported_set),
        make_balancer("sum"),
        train,
        seed=1000,
    )
    w = torch.tensor(trainer.fit().weights, dtype=torch.float64)
    assert w.shape == (60, 5) and (w > 0).all()
    torch.testing.assert_close(w.sum(1), torch.full((60,), 5.0, dtype=torch.float64))
    assert torch.equal(w[:10], torch.ones(10, 5, dtype=torch.float64))


def test_igb_export_onnx_writes_a_set_policy_for_any_t(trained_set: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from agents.cli import main

    out = tmp_path / "onnx"
    assert main(["export", str(trained_set), "--out", str(out), "--onnx"]) == 0
    assert {p.name for p in out.iterdir()} == {"policy.pt", "policy.json", "policy.onnx"}
    policy = load_policy(out)
    session = ort.InferenceSession(str(out / "policy.onnx"), providers=["CPUExecutionProvider"])
    assert isinstance(policy.network, SetPolicyNetwork)
    encoder = policy.network.encoder
    for n_tasks in (2, 4):
        dim = n_tasks * encoder.task_features + encoder.global_features
        obs = np.random.default_rng(n_tasks).normal(size=(8, dim)).astype(np.float32)
        (actions,) = session.run(["action"], {"obs": obs})
        expected = np.stack([policy.act(row).numpy() for row in obs])
        np.testing.assert_allclose(actions, expected, atol=1e-5, rtol=0)
