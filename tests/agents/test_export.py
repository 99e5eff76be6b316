from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.config import load_agent_config
from agents.export import actor_spec, export_run
from agents.train import load_model
from igb_env import make_env
from mtl_backends.policy import action_to_weights, load_policy
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
