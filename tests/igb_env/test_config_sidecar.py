"""``config_sidecar``: the one mapping from env settings to a policy sidecar."""

from __future__ import annotations

import pytest

from igb_env import make_env
from igb_env.config import config_sidecar, load_env_config

# The smoke preset: T = 3, 60 steps, base window (5, 10), K = 10, residual map with tau = 1.
SMOKE = {"preset": "smoke"}


def test_fixed_t_sidecar_holds_the_settings() -> None:
    cfg = load_env_config(SMOKE)
    side = config_sidecar(cfg, "PPO", n_tasks=3)
    assert side["n_tasks"] == 3 and side["format_version"] == 1
    assert side["steps_per_action"] == 10 and side["total_steps"] == 60
    assert side["base_window"] == [5, 10]
    assert side["action_map"] == {"mode": "residual", "version": 1, "tau": 1.0}
    assert side["balancer"] == "sum" and side["algorithm"] == "PPO"


def test_set_sidecar_runs_at_any_t() -> None:
    cfg = load_env_config({**SMOKE, "feature_table": "v2", "action_mode": "interp"})
    side = config_sidecar(cfg, "random")
    assert side["n_tasks"] is None and side["obs_dim"] is None and side["format_version"] == 2
    assert side["action_map"]["mode"] == "interp"


def test_base_window_override_and_default() -> None:
    cfg = load_env_config(SMOKE)
    assert config_sidecar(cfg, "PPO", n_tasks=3, base_window=(2, 7))["base_window"] == [2, 7]
    open_cfg = load_env_config({**SMOKE, "train": {"base_window": None}})
    assert config_sidecar(open_cfg, "PPO", n_tasks=3)["base_window"] is None


def test_extra_fields_pass_through() -> None:
    cfg = load_env_config(SMOKE)
    side = config_sidecar(cfg, "PPO", n_tasks=3, env_config=cfg.to_dict(), note="x")
    assert side["env_config"] == cfg.to_dict() and side["note"] == "x"


@pytest.mark.parametrize("reset", [False, True])
def test_the_env_sidecar_is_the_config_sidecar(reset: bool) -> None:
    env = make_env(SMOKE)
    if reset:
        env.reset(seed=0)
    expected = config_sidecar(
        env.config,
        "PPO",
        n_tasks=env.n_tasks,
        task_names=list(env.task_names),
        env_config=env.config.to_dict(),
    )
    side = env.policy_sidecar("PPO")
    env.close()
    side.pop("versions"), expected.pop("versions")
    assert side == expected
