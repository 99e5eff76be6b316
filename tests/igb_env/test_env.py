"""IGBEnv: the Gymnasium and SB3 checkers, determinism, bad actions, divergence, baselines."""

from __future__ import annotations

import copy
import math
import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from igb_env import IGBEnv, make_env, rollout_baseline
from igb_env.config import load_env_config
from mtl_backends.features import FeatureTable
from mtl_backends.registry import ConfigError

# 60 steps, 10-step base window, K = 10: 5 env steps per episode.
SMALL = {
    "preset": "tiny",
    "benchmark": {"name": "synthetic", "n_train": 400, "n_val": 100, "n_test": 100, "seed": 3},
    "train": {"steps": 60, "base_window": [5, 10], "batch_size": 40},
    "steps_per_action": 10,
    "val_batch_size": 100,
}


def run_episode(env: IGBEnv, actions, **reset_kwargs):
    obs, info = env.reset(**reset_kwargs)
    trace: list[Any] = [(obs, info)]
    terminated = truncated = False
    i = 0
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(actions(i, obs))
        trace.append((obs, reward, terminated, truncated, info))
        i += 1
    return trace


def test_gymnasium_check_env():
    from gymnasium.utils.env_checker import check_env

    check_env(gym.make("igb_env/IGB-v0", config=SMALL).unwrapped)


def test_sb3_check_env():
    from stable_baselines3.common.env_checker import check_env

    check_env(make_env(SMALL), warn=True)


def test_spaces_and_types():
    env = make_env(SMALL)
    assert env.action_space == gym.spaces.Box(-1, 1, (3,), np.float32)
    assert env.observation_space.dtype == np.float32
    box = env.observation_space
    assert isinstance(box, gym.spaces.Box)
    assert np.isfinite(box.low).all() and np.isfinite(box.high).all()
    assert env.observation_space.shape == (len(env.observation_names),)
    assert env.observation_names[0] == "t1/log_gap" and env.observation_names[-1] == "lr_ratio"
    trace = run_episode(env, lambda i, o: env.action_space.sample(), seed=0)
    assert len(trace) - 1 == env.episode_length == 5
    for obs, reward, terminated, truncated, info in trace[1:]:
        assert obs.dtype == np.float32 and env.observation_space.contains(obs)
        assert type(reward) is float and np.isfinite(reward)
        assert type(terminated) is bool and truncated is False
        assert set(info) == set(trace[0][1])
        assert np.isclose(info["weights"].sum(), 3.0)
    assert trace[-1][2] is True
    assert trace[-1][4]["train_step"] == 60


def test_same_seed_same_episode_and_global_rng_independent():
    env = make_env(SMALL)
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, 3).astype(np.float32) for _ in range(5)]

    def act(i, obs):
        torch.rand(100)  # an agent using the global torch RNG must not change the run
        return actions[i]

    first = run_episode(env, act, seed=7)
    second = run_episode(make_env(SMALL), lambda i, o: actions[i], seed=7)
    assert first[0][1]["instance"] == second[0][1]["instance"]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:-1] == b[1:-1]  # reward, terminated, truncated (empty after reset)
        for key in a[-1]:
            np.testing.assert_array_equal(a[-1][key], b[-1][key])
    other = run_episode(make_env(SMALL), lambda i, o: actions[i], seed=8)
    assert other[0][1]["instance"] != first[0][1]["instance"]


def test_options_instance_and_rewards_telescope():
    env = make_env(SMALL)
    _obs, info = env.reset(options={"instance": 1234})
    assert info["instance"] == 1234 and env.instance == 1234
    v0 = info["val_losses"]
    total = 0.0
    terminated = False
    while not terminated:
        _, reward, terminated, _, info = env.step(np.zeros(3, np.float32))
        total += reward
    expected = 10.0 * np.mean(np.log(v0) - np.log(info["val_losses"]))
    assert total == pytest.approx(expected, rel=1e-9, abs=1e-9)
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"instanc": 3})


def test_bad_actions_rejected_env_unchanged():
    bad_actions: list[Any] = [
        np.array([0.0, np.nan, 0.0]),
        np.zeros(2),
        np.zeros((1, 3)),
        [0, 0, np.inf],
        "x",
    ]
    env = make_env(SMALL)
    env.reset(seed=1)
    assert env.episode is not None and env.episode.progress.gaps is not None
    trainer = env.episode.trainer
    before = copy.deepcopy(trainer.model.state_dict())
    step_before, gaps_before = trainer.step_count, env.episode.progress.gaps.clone()
    for bad in bad_actions:
        with pytest.raises(ValueError, match="action"):
            env.step(bad)
    assert trainer.step_count == step_before
    assert torch.equal(env.episode.progress.gaps, gaps_before)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key])
    # the env still works and matches a fresh env that never saw the bad actions
    obs, reward, *_ = env.step(np.zeros(3, np.float32))
    fresh = make_env(SMALL)
    fresh.reset(seed=1)
    obs2, reward2, *_ = fresh.step(np.zeros(3, np.float32))
    np.testing.assert_array_equal(obs, obs2)
    assert reward == reward2


def test_actions_outside_box_are_clipped():
    env = make_env(SMALL)
    env.reset(seed=2)
    _, r1, *_, i1 = env.step(np.array([5.0, -5.0, 0.0]))
    env.reset(seed=2)
    _, r2, *_, i2 = env.step(np.array([1.0, -1.0, 0.0]))
    assert r1 == r2
    np.testing.assert_array_equal(i1["weights"], i2["weights"])


def test_divergence_terminates_with_penalty():
    # The LR jumps by 1e12 after the base window: the next steps diverge.
    cfg = {
        **SMALL,
        "train": {
            "steps": 60,
            "base_window": [5, 10],
            "batch_size": 40,
            "optimizer": "sgd",
            "lr_schedule": "step",
            "lr_step_size": 10,
            "lr_gamma": 1e12,
        },
        "divergence_penalty": -7.0,
    }
    env = make_env(cfg)
    env.reset(seed=0)
    terminated, reward, info, obs = False, 0.0, dict[str, Any](), None
    steps = 0
    while not terminated:
        obs, reward, terminated, _truncated, info = env.step(np.zeros(3, np.float32))
        steps += 1
    assert info["diverged"] is True and reward == -7.0 and steps < env.episode_length
    assert type(reward) is float and env.observation_space.contains(obs)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(3, np.float32))
    env.reset(seed=0)  # usable again


def test_residual_zero_action_equals_igbv1_baseline():
    env = make_env(SMALL)
    trace = run_episode(env, lambda i, o: np.zeros(3, np.float32), options={"instance": 42})
    rewards = [t[1] for t in trace[1:]]
    weights = [t[4]["weights"].tolist() for t in trace[1:]]
    igb = rollout_baseline(SMALL, "igbv1", 42)
    assert igb.rewards == rewards and igb.weights == weights
    ew = env.rollout_baseline("ew", 42)
    assert len(ew.rewards) == len(rewards) and ew.total_reward != igb.total_reward
    assert ew.weights[0] == [1.0, 1.0, 1.0]


def test_other_rewards_and_absolute_mode():
    for reward in (
        "min_gap_decrease",
        "mean_log_gap_decrease",
        {"name": "min_gap_decrease", "lr_scale": True},
    ):
        env = make_env({**SMALL, "reward": reward, "action_mode": "absolute"})
        trace = run_episode(env, lambda i, o: np.ones(3, np.float32), seed=0)
        assert all(type(t[1]) is float and np.isfinite(t[1]) for t in trace[1:])
        assert "val_losses" not in trace[0][1]
        # absolute with a = 1 everywhere is unit weights
        np.testing.assert_allclose(trace[1][4]["weights"], 1.0, rtol=1e-6)


def test_config_errors_and_presets():
    with pytest.raises(ConfigError, match="valid keys"):
        make_env({"steps_per_actoin": 3})
    with pytest.raises(ConfigError, match="unknown preset"):
        make_env({"preset": "huge"})
    with pytest.raises(ConfigError, match="unknown reward"):
        make_env({"reward": "nope"})
    with pytest.raises(ConfigError, match="action_mode"):
        make_env({"action_mode": "nope"})
    default = load_env_config({})
    assert default.train.steps == 1000 and default.train.base_window == (50, 100)
    assert (
        default.steps_per_action == 25 and default.action_mode == "residual" and default.tau == 1.0
    )
    assert default.reward.name == "val_log_improvement" and default.reward_scale == 10.0
    assert load_env_config(default.to_dict()) == default
    tiny = load_env_config({"preset": "tiny", "train": {"steps": 200}})
    assert tiny.train.steps == 200 and tiny.train.base_window == (10, 20)


def test_make_env_picklable_and_registered():
    assert pickle.loads(pickle.dumps(make_env)) is make_env
    env = gym.make("igb_env/IGB-v0", config=SMALL, steps_per_action=5)
    assert isinstance(env.unwrapped, IGBEnv) and env.unwrapped.config.steps_per_action == 5
    assert isinstance(make_env({}), IGBEnv)


def test_docstring_table_generated_from_feature_table():
    doc = IGBEnv.__doc__ or ""
    for section in (
        "Description",
        "Action Space",
        "Observation Space",
        "Rewards",
        "Starting State",
        "Episode End",
        "Arguments",
        "Version History",
    ):
        assert f"## {section}" in doc
    table = FeatureTable(load_env_config({}).feature_spec)
    for feature in table.rows:
        assert f"`{feature.name}`" in doc and feature.description in doc
    assert table.markdown().splitlines()[2].strip() in doc


def test_yaml_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs" / "env"
    assert load_env_config(root / "synthetic.yaml") == load_env_config({})
    assert load_env_config(root / "tiny.yaml") == load_env_config({"preset": "tiny"})


def test_variation_instances():
    cfg = {**SMALL, "benchmark": {"name": "synthetic", "n_train": 400, "n_val": 100, "n_test": 100}}
    env = make_env({**cfg, "variation": True})
    env.reset(options={"instance": 3})
    assert env.episode is not None
    first = env.episode.benchmark.config()
    env.reset(options={"instance": 4})
    assert env.episode is not None
    second = env.episode.benchmark.config()
    assert first["scales"] != second["scales"] and first["n_train"] == second["n_train"] == 400
    env.reset(options={"instance": 3})
    assert env.episode is not None and env.episode.benchmark.config() == first
    fixed = make_env(cfg)
    fixed.reset(options={"instance": 3})
    assert fixed.episode is not None and fixed.episode.benchmark.config()["scales"] == [
        1.0,
        10.0,
        100.0,
    ]
    assert rollout_baseline({**cfg, "variation": True}, "si", 3).rewards


@pytest.mark.parametrize(
    ("reward", "return_", "weights_step3"),
    [
        (
            "val_log_improvement",
            0.16059304710093944,
            [1.5421504259109498, 1.2180865287780762, 0.23976305723190308],
        ),
        ("min_gap_decrease", -0.16708085579972626, None),
    ],
)
def test_pinned_episode_regression(
    reward: str, return_: float, weights_step3: list[float] | None
) -> None:
    # Values recorded before the env accumulated its K steps' losses and weights in one
    # conversion per env step (797b957); any change to the MDP's numbers shows up here.
    env = make_env({"preset": "tiny", "reward": {"name": reward}})
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    rewards, infos = [], []
    done = False
    while not done:
        action = rng.uniform(-1, 1, env.n_tasks).astype(np.float32)
        _, r, term, trunc, info = env.step(action)
        rewards.append(float(r))
        infos.append(info)
        done = term or trunc
    assert len(rewards) == 20
    # Same machine, same run: bit for bit (test_same_seed_same_episode_...). Across CPUs
    # torch's kernels may round differently (other SIMD paths), and min_gap_decrease's rewards are
    # differences of nearly equal gaps, which turn last-bit changes into ~2e-7 relative on its
    # return (measured: -0.16708089 on an AVX-512 machine against the recorded -0.16708086); a
    # change to the MDP moves the return by far more than 1e-6.
    assert sum(rewards) == pytest.approx(return_, rel=1e-6, abs=1e-12)
    if weights_step3 is not None:
        np.testing.assert_allclose(infos[3]["weights"], weights_step3, rtol=1e-9)


# -- per-instance step budgets ----------------------------------------------------------------
# The smoke preset: base window (5, 10), K = 10, so a budget of B steps gives ceil((B - 10) / 10)
# decisions: 30 -> 2, 60 -> 5, 90 -> 8.
BUDGETED = {"preset": "smoke", "budgets": [30, 60, 90]}


def test_each_instance_trains_for_its_drawn_budget():
    env = make_env(BUDGETED)
    with pytest.raises(RuntimeError) as err:
        env.episode_length  # noqa: B018 - the property raises
    assert str(err.value) == "the budget is drawn per instance: call reset() to know it"
    cfg = load_env_config(BUDGETED)
    instances = [1002, 1014, 1000]
    budgets = [cfg.train_for(i).steps for i in instances]
    assert budgets == [30, 60, 90]  # one instance per budget
    zero = np.zeros(3, dtype=np.float32)
    for instance, budget in zip(instances, budgets, strict=True):
        trace = run_episode(env, lambda i, obs: zero, options={"instance": instance})
        assert trace[0][1]["instance"] == instance
        assert env.episode_length == math.ceil((budget - 10) / 10) == len(trace) - 1
        assert trace[-1][2] is True and not any(t[2] for t in trace[1:-1])
        assert [t[4]["train_step"] for t in trace[1:]] == [
            min(20 + 10 * k, budget) for k in range(len(trace) - 1)
        ]
        # The progress feature reaches 1 exactly at the instance's own budget.
        assert trace[-1][0][-2] == pytest.approx(1.0) and trace[-2][0][-2] < 1.0


def test_seeded_episodes_follow_the_budget_of_the_instance_they_draw():
    env = make_env({**BUDGETED, "budgets": [20, 40]})  # 1 or 3 decisions
    cfg = load_env_config({**BUDGETED, "budgets": [20, 40]})
    env.reset(seed=11)
    lengths = {}
    for _ in range(8):
        trace = run_episode(env, lambda i, obs: np.full(3, 0.5, dtype=np.float32))
        instance = trace[0][1]["instance"]
        lengths[instance] = len(trace) - 1
        assert env.episode_length == len(trace) - 1
    assert lengths == {i: (1 if cfg.train_for(i).steps == 20 else 3) for i in lengths}
    assert set(lengths.values()) == {1, 3}  # both budgets were drawn
