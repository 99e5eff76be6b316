from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.build import build_model
from agents.config import AgentConfig, group_env_configs, load_agent_config
from agents.padded_vec_env import PaddedVecEnv
from agents.references import (
    held_out_episodes,
    held_out_eval_env,
    reference_baselines,
    reference_returns,
)
from agents.set_policy import SetActorCriticPolicy
from agents.train import load_model, train_agent
from agents.vec_env import make_vec_env, spawn_seeds
from igb_env import rollout_baseline
from igb_env.config import load_env_config
from mtl_backends.registry import ConfigError
from tests.agents._configs import SET_GROUPS, TINY_ENV, tiny_agent, tiny_set_agent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["ppo", "sac"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_agent(
        tiny_agent(request.param), tmp_path_factory.mktemp(request.param), progress_bar=False
    )


def _obs_batch(n: int = 8) -> np.ndarray:
    from igb_env import make_env

    env = make_env(TINY_ENV)
    space = env.observation_space
    space.seed(0)
    return np.stack([space.sample() for _ in range(n)])


def test_run_folder_is_complete_and_config_round_trips(trained: Path) -> None:
    for name in ("config.yaml", "model.zip", "checkpoint.zip", "training.json"):
        assert (trained / name).is_file(), name
    assert not list(trained.glob("*.tmp")), "atomic saves left a temporary file behind"
    config = load_agent_config(trained / "config.yaml")
    # The resolved env config is complete: loading it again changes nothing.
    assert load_env_config(dict(config.env)).to_dict() == dict(config.env)
    summary = json.loads((trained / "training.json").read_text())
    assert summary["timesteps"] >= config.total_timesteps
    assert summary["task_names"] == ["t1", "t2", "t3"]
    assert set(summary["references"]) == {"ew", "igbv1"}


def test_agent_learned_and_save_load_predict_identically(trained: Path) -> None:
    config = load_agent_config(trained / "config.yaml")
    model = load_model(trained)
    # Learning changed the actor: it differs from a freshly initialised model of the same seed.
    venv = make_vec_env(dataclasses.replace(config, n_envs=1, vec_env="dummy"))
    fresh = build_model(config, venv, tensorboard_log=None)
    venv.close()
    changed = [
        not torch.equal(a, b)
        for a, b in zip(model.policy.parameters(), fresh.policy.parameters(), strict=True)
    ]
    assert any(changed)
    obs = _obs_batch()
    again = load_model(trained)
    a1, _ = model.predict(obs, deterministic=True)
    a2, _ = again.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a1, a2)
    assert a1.shape == (len(obs), 3)


def test_tensorboard_has_per_task_weight_gap_reward_and_reference_tags(trained: Path) -> None:
    (events,) = list((trained / "tb").glob("agent_*"))
    acc = EventAccumulator(str(events))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for task in ("t1", "t2", "t3"):
        assert f"mtl/{task}_weight" in tags
        assert f"mtl/{task}_gap" in tags
    assert {"mtl/reward", "reference/ew_return", "reference/igbv1_return"} <= tags
    weights = [e.value for e in acc.Scalars("mtl/t1_weight")]
    assert all(0.0 < w < 3.0 for w in weights)


def test_sub_env_seeds_come_from_seed_sequence_and_are_distinct() -> None:
    seeds = spawn_seeds(0, 3)
    assert len(set(seeds)) == 3
    assert seeds != [0, 1, 2]
    # Neighbouring run seeds share no sub-env seed (SB3's seed + i would share two of three).
    assert not set(spawn_seeds(1, 3)) & set(seeds)
    venv = make_vec_env(tiny_agent(n_envs=3))
    try:
        venv.reset()
        instances = venv.get_attr("instance")
    finally:
        venv.close()
    assert len(set(instances)) == 3


def test_wall_budget_stops_training_and_is_recorded(tmp_path: Path) -> None:
    config = tiny_agent(total_timesteps=100_000, time_budget_s=1.0, reference_instances=0)
    run = train_agent(config, tmp_path, progress_bar=False)
    summary = json.loads((run / "training.json").read_text())
    assert summary["stopped_by_budget"] is True
    assert 0 < summary["timesteps"] < 100_000


@pytest.mark.parametrize("name", ["ppo.yaml", "sac.yaml"])
def test_shipped_agent_configs_load(name: str) -> None:
    config = load_agent_config(ROOT / "configs" / "agents" / name)
    assert config.algorithm == name.removesuffix(".yaml")
    load_env_config(dict(config.env))


def test_ppo_yaml_spells_out_the_default_agent() -> None:
    config = load_agent_config(ROOT / "configs" / "agents" / "ppo.yaml")
    default = AgentConfig()
    assert dataclasses.replace(config, env={}) == default
    assert load_env_config(dict(config.env)) == load_env_config(dict(default.env))


def test_bad_agent_configs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown algorithm"):
        AgentConfig(algorithm="dqn")
    with pytest.raises(ConfigError, match="activation_fn"):
        AgentConfig(policy_kwargs={"activation_fn": "torch.nn.Tanh"})
    path = tmp_path / "a.yaml"
    path.write_text("algorithm: ppo\nn_timesteps: 10\n")
    with pytest.raises(ConfigError, match="valid keys"):
        load_agent_config(path)


def test_igb_train_agent_command_writes_a_run(tmp_path: Path) -> None:
    import yaml

    from agents.cli import main
    from mtl_backends.config import to_dict

    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(to_dict(tiny_agent(reference_instances=0))))
    out = tmp_path / "run"
    code = main(["train-agent", str(config), "--out", str(out), "--timesteps", "20", "--seed", "3"])
    assert code == 0
    assert (out / "model.zip").is_file()
    assert load_agent_config(out / "config.yaml").seed == 3


def test_models_without_tensorboard_leave_no_logger_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SB3's default logger creates an empty SB3-<date> folder in the temporary directory on
    # every learn(); a model built without TensorBoard must not litter it.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    config = tiny_agent("ppo", hyperparameters={"n_steps": 8, "batch_size": 8, "n_epochs": 1})
    venv = make_vec_env(dataclasses.replace(config, n_envs=1, vec_env="dummy"))
    model = build_model(config, venv, tensorboard_log=None)
    model.learn(total_timesteps=8)
    venv.close()
    assert model.num_timesteps >= 8
    assert not list(tmp_path.glob("SB3-*"))


# -- set policies: env groups of T = 2 and T = 3 -------------------------------------------------
def test_set_policy_run_folder_is_complete(trained_set: Path) -> None:
    for name in ("config.yaml", "model.zip", "best_model.zip", "checkpoint.zip", "training.json"):
        assert (trained_set / name).is_file(), name
    config = load_agent_config(trained_set / "config.yaml")
    assert config.policy == "set" and [dict(g) for g in config.env_groups] == list(SET_GROUPS)
    assert load_env_config(dict(config.env)).to_dict() == dict(config.env)
    summary = json.loads((trained_set / "training.json").read_text())
    assert summary["timesteps"] == 120 and summary["task_names"] is None
    # The reference lines average the groups' EW and IGBv1 returns.
    per_group = [reference_returns(c, 1, config.seed) for c in group_env_configs(config)]
    assert summary["references"] == pytest.approx(
        {name: (per_group[0][name] + per_group[1][name]) / 2 for name in ("ew", "igbv1")}
    )
    model = load_model(trained_set)
    assert isinstance(model.policy, SetActorCriticPolicy)
    assert model.policy.layout.max_tasks == 3 and model.num_timesteps == 120
    # Held-out evaluations every 40 timesteps, each on both groups' two test instances.
    evaluations = np.load(trained_set / "eval" / "evaluations.npz")
    assert evaluations["timesteps"].tolist() == [40, 80, 120]
    assert evaluations["results"].shape == (3, 4)
    assert (evaluations["ep_lengths"] == 5).all()
    assert summary["best_mean_reward"] == pytest.approx(evaluations["results"].mean(1).max())


def test_set_policy_tensorboard_pools_the_tasks(trained_set: Path) -> None:
    (events,) = list((trained_set / "tb").glob("agent_*"))
    acc = EventAccumulator(str(events))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"mtl/weight_max", "mtl/weight_min", "mtl/gap_mean", "mtl/reward"} <= tags
    assert {"mtl/reward_T2", "mtl/reward_T3"} <= tags
    assert not any(t.startswith("mtl/t1_") for t in tags)
    for high, low in zip(acc.Scalars("mtl/weight_max"), acc.Scalars("mtl/weight_min"), strict=True):
        # The weights of a run of T tasks sum to T <= 3: the largest is in [1, 3], the smallest
        # in (0, 1].
        assert 1.0 <= high.value < 3.0 and 0.0 < low.value <= 1.0


def test_set_policy_eval_env_pads_and_walks_every_group_s_test_set() -> None:
    made = held_out_eval_env(tiny_set_agent(eval_every=40))
    assert made is not None
    venv, episodes = made
    inner = venv.unwrapped
    assert isinstance(inner, PaddedVecEnv) and episodes == 4  # 2 groups x 2 test instances
    assert inner.n_tasks == [2, 3] and [g.num_envs for g in inner.groups] == [1, 1]
    layout = inner.layout
    obs = np.asarray(venv.reset())
    assert obs.shape == (2, layout.obs_dim) and layout.max_tasks == 3
    assert obs[:, -3:].tolist() == [[1, 1, 0], [1, 1, 1]]
    seen: list[list[int]] = [[info["instance"]] for info in inner.reset_infos]
    for _ in range(3 * 5):  # three episodes of 5 decisions
        _, _, dones, _ = venv.step(np.zeros((2, layout.action_dim), dtype=np.float32))
        for i in np.flatnonzero(dones):
            seen[i].append(int(inner.groups[i].get_attr("instance")[0]))
    venv.close()
    # Each group walks its held-out instances round-robin: every one once per evaluation.
    assert seen == [[5000, 5001, 5000, 5001], [5000, 5001, 5000, 5001]]


def test_set_policy_eval_env_refusals() -> None:
    assert held_out_eval_env(tiny_set_agent(eval_every=None)) is None
    assert held_out_episodes(tiny_set_agent(eval_every=None)) is None
    assert held_out_episodes(tiny_set_agent(eval_every=40)) == 4
    uneven = tiny_set_agent(
        eval_every=40,
        env_groups=(
            {"benchmark": {"n_tasks": 2}},
            {"benchmark": {"n_tasks": 3}, "test_set": [5000]},
        ),
    )
    for check in (held_out_eval_env, held_out_episodes):
        with pytest.raises(ConfigError) as err:
            check(uneven)
        assert str(err.value) == "the env groups' test sets must have one size, got [1, 2]"


def test_reference_lines_under_a_log_transform_balancer_use_si_in_ew_s_place() -> None:
    """DB-MTL refuses EW's raw losses (a transform conflict), so an agent trained with it
    underneath has SI and IGBv1 as its reference lines, each the plain rollout's return."""
    assert reference_baselines(TINY_ENV) == ("ew", "igbv1")
    env = {**TINY_ENV, "balancer": "db_mtl"}
    assert reference_baselines(env) == ("si", "igbv1")
    returns = reference_returns(env, 1, seed=0)
    assert set(returns) == {"si", "igbv1"}
    train_set = load_env_config(env).train_instances
    instance = int(train_set[int(np.random.default_rng(0).integers(0, len(train_set), 1)[0])])
    expected = rollout_baseline(env, "si", instance).total_reward
    assert returns["si"] == pytest.approx(expected, rel=1e-12)
