"""``BatchedIGBEnv``: N sub-envs trained together equal N ``IGBEnv``s; autoreset; resume."""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from igb_env import make_env
from igb_env.batched import BatchedEpisodes
from igb_env.config import load_env_config
from igb_env.env import IGBEnv
from igb_env.episode import Episode, HeldActionWeighting
from igb_env.instances import BenchmarkCache
from igb_env.vector import BatchedIGBEnv
from mtl_backends.registry import ConfigError
from mtl_backends.weightings import make_weighting

# 60-step runs, a 10-step base window, K = 10: 5 env steps per episode; T = 3.
SMOKE: dict[str, Any] = {"preset": "smoke"}
# The same with drawn task scales, noise floors and label fractions (masked targets).
VARIED: dict[str, Any] = {"preset": "smoke", "variation": True}
# The interp map (T + 2 action entries) observing feature table v2; then on the wide family
# (classification tasks among them).
INTERP: dict[str, Any] = {"preset": "smoke", "action_mode": "interp", "feature_table": "v2"}
WIDE: dict[str, Any] = {**INTERP, "variation": "wide"}
# DB-MTL underneath: per-task gradients of every slot, each slot's own EMA state.
DBMTL: dict[str, Any] = {**INTERP, "balancer": "db_mtl"}
# The validation-metric reward on the wide family (accuracies of its classifiers, MSEs). An
# accuracy moves in steps of 1/rows: a borderline argmax that the stacked trainer's rounding
# flipped would move a reward far beyond REWARD_ATOL; these instances have none (deterministic).
METRIC: dict[str, Any] = {**WIDE, "reward": {"name": "val_log_metric_improvement"}}
INSTANCES = [1000, 1001, 1002, 1003]
# Rewards are differences of log validation losses (about 1e-2): the stacked trainer's float
# rounding (~1e-7 relative on losses) moves them by up to ~1e-6 absolute.
REWARD_ATOL = 2e-6
# Observations: the log-gap changes are 10 x a difference of log gaps, so that rounding shows as
# up to ~1e-6 absolute there, and up to ~1.5e-6 on the wide family's instances (scales up to
# 1000, cross-entropy), which get 3 x OBS_ATOL.
OBS_ATOL = 1e-6


def _actions(steps: int, n: int, dim: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (steps, n, dim)).astype(np.float32)


def _singles(config: dict[str, Any], instances: list[int]) -> tuple[list[IGBEnv], np.ndarray]:
    envs = [make_env(config) for _ in instances]
    obs = np.stack(
        [e.reset(options={"instance": i})[0] for e, i in zip(envs, instances, strict=True)]
    )
    return envs, obs


@pytest.mark.parametrize(
    ("config", "obs_atol"),
    [
        (SMOKE, OBS_ATOL),
        (VARIED, OBS_ATOL),
        (INTERP, OBS_ATOL),
        (WIDE, 3 * OBS_ATOL),
        (DBMTL, OBS_ATOL),
        (METRIC, 3 * OBS_ATOL),
    ],
    ids=["smoke", "varied", "interp", "interp_wide", "interp_db_mtl", "val_metric_reward"],
)
def test_equals_separate_envs_on_the_same_instances(
    config: dict[str, Any], obs_atol: float
) -> None:
    batched = BatchedIGBEnv(len(INSTANCES), config, adam="foreach")
    obs, info = batched.reset(options={"instances": INSTANCES})
    singles, single_obs = _singles(config, INSTANCES)
    np.testing.assert_allclose(obs, single_obs, rtol=1e-5, atol=obs_atol)
    assert list(info["instance"]) == INSTANCES
    assert batched.action_dim == singles[0].action_dim
    assert batched.observation_names == singles[0].observation_names
    if config.get("feature_table") == "v2":
        assert batched.observation_names[-3:] == ["n_tasks", "progress", "lr_ratio"]
    returns_b, returns_s = np.zeros(len(INSTANCES)), np.zeros(len(INSTANCES))
    for t, actions in enumerate(_actions(5, len(INSTANCES), dim=batched.action_dim)):
        obs, rewards, terminated, truncated, info = batched.step(actions)
        for i, env in enumerate(singles):
            o, r, term, trunc, inf = env.step(actions[i])
            if t < 3:
                np.testing.assert_allclose(obs[i], o, rtol=1e-5, atol=obs_atol)
                assert rewards[i] == pytest.approx(r, rel=1e-5, abs=REWARD_ATOL)
                np.testing.assert_allclose(info["weights"][i], inf["weights"], rtol=1e-5)
                np.testing.assert_allclose(info["val_losses"][i], inf["val_losses"], rtol=1e-5)
            assert bool(terminated[i]) == term and not truncated[i] and not trunc
            assert info["train_step"][i] == inf["train_step"]
            returns_b[i] += rewards[i]
            returns_s[i] += r
    assert terminated.all()
    np.testing.assert_allclose(returns_b, returns_s, rtol=0.01)


def test_make_vec_builds_it_from_the_registry() -> None:
    envs = gym.make_vec(
        "igb_env/IGB-v0", num_envs=3, vectorization_mode="vector_entry_point", config=SMOKE
    )
    assert isinstance(envs, BatchedIGBEnv) and envs.num_envs == 3
    assert envs.single_observation_space == make_env(SMOKE).observation_space
    single = envs.single_observation_space.shape
    assert single is not None and envs.observation_space.shape == (3, single[0])
    assert envs.action_space.shape == (3, 3)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP


def test_same_seed_same_instances_as_separate_seeded_envs() -> None:
    """Sub-env i with seed child i draws the instances of an IGBEnv reset with that child."""
    batched = BatchedIGBEnv(3, SMOKE)
    children = [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(7).spawn(3)]
    _, info = batched.reset(seed=children)
    singles = [make_env(SMOKE) for _ in children]
    for i, (env, seed) in enumerate(zip(singles, children, strict=True)):
        _, single_info = env.reset(seed=seed)
        assert info["instance"][i] == single_info["instance"]
    again = BatchedIGBEnv(3, SMOKE)
    _, info2 = again.reset(seed=children)
    assert list(info2["instance"]) == list(info["instance"])


def _run_to_end(env: BatchedIGBEnv, actions: np.ndarray) -> list[tuple[Any, ...]]:
    return [env.step(a) for a in actions]


def test_next_step_autoreset_order() -> None:
    """The step after an episode ends resets the sub-env: action ignored, reward 0, new obs."""
    env = BatchedIGBEnv(2, SMOKE, adam="foreach")
    env.reset(seed=3)
    steps = _run_to_end(env, _actions(5, 2))
    last_obs, _, terminated, _, last_info = steps[-1]
    assert terminated.all()
    finished = list(last_info["instance"])
    obs, rewards, terminated, truncated, info = env.step(_actions(1, 2, seed=9)[0])
    assert (rewards == 0.0).all() and not terminated.any() and not truncated.any()
    assert list(info["instance"]) != finished
    # The observation is the first one of the new episode on the new instance.
    for i, instance in enumerate(info["instance"]):
        fresh, _ = make_env(SMOKE).reset(options={"instance": int(instance)})
        np.testing.assert_allclose(obs[i], fresh, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(obs, last_obs)


def test_same_step_autoreset_returns_the_final_observation() -> None:
    env = BatchedIGBEnv(2, SMOKE, autoreset_mode="same_step", adam="foreach")
    env.reset(options={"instances": [1000, 1001]})
    singles, _ = _singles(SMOKE, [1000, 1001])
    actions = _actions(5, 2)
    for t, a in enumerate(actions):
        obs, rewards, terminated, _, info = env.step(a)
        single = [s.step(a[i]) for i, s in enumerate(singles)]
        if t < 4:
            assert "final_obs" not in info
            continue
        assert terminated.all() and info["_final_obs"].all()
        for i in range(2):
            np.testing.assert_allclose(info["final_obs"][i], single[i][0], rtol=1e-5, atol=1e-6)
            assert info["final_info"]["instance"][i] == [1000, 1001][i]
            assert rewards[i] == pytest.approx(single[i][1], rel=1e-5, abs=REWARD_ATOL)
        # ... and the returned observation is already the next episode's first one.
        assert list(info["instance"]) != [1000, 1001]
        assert not np.allclose(obs, np.stack(info["final_obs"]))


def _poison(env: BatchedIGBEnv, slot: int) -> None:
    """Make slot ``slot``'s parameters NaN (through a saved state), as in a diverged run."""
    state = env.state_dict()
    for p in state["engine"]["trainer"]["params"].values():
        p[slot] = float("nan")
    env.load_state_dict(state)


def test_a_diverging_sub_env_ends_alone() -> None:
    actions = _actions(5, 3)
    env = BatchedIGBEnv(3, SMOKE, adam="foreach")
    clean = BatchedIGBEnv(3, SMOKE, adam="foreach")
    for e in (env, clean):
        e.reset(options={"instances": [1000, 1001, 1002]})
    first = env.step(actions[0]), clean.step(actions[0])
    np.testing.assert_array_equal(first[0][0], first[1][0])
    _poison(env, 1)
    obs, rewards, terminated, _, info = env.step(actions[1])
    ref_obs, ref_rewards, _, _, _ = clean.step(actions[1])
    assert terminated.tolist() == [False, True, False]
    assert info["diverged"].tolist() == [False, True, False]
    assert rewards[1] == env.config.divergence_penalty
    np.testing.assert_array_equal(obs[1], first[0][0][1])  # the last observation is kept
    for i in (0, 2):  # the others are bit for bit the undisturbed run
        np.testing.assert_array_equal(obs[i], ref_obs[i])
        assert rewards[i] == ref_rewards[i]
    # next step: the diverged sub-env starts a new instance; the others go on unchanged.
    obs, rewards, terminated, _, info = env.step(actions[2])
    ref_obs, ref_rewards, _, _, _ = clean.step(actions[2])
    assert rewards[1] == 0.0 and not terminated[1] and info["instance"][1] != 1001
    for i in (0, 2):
        np.testing.assert_array_equal(obs[i], ref_obs[i])
        assert rewards[i] == ref_rewards[i]


def test_bad_actions_are_refused_before_anything_changes() -> None:
    env = BatchedIGBEnv(2, SMOKE)
    obs0, _ = env.reset(options={"instances": [1000, 1001]})
    state = copy.deepcopy(env.state_dict())
    bad = np.zeros((2, 3), dtype=np.float32)
    bad[1, 2] = np.nan
    for actions in (bad, np.zeros((2, 2)), np.zeros((3, 3))):
        with pytest.raises(ValueError, match="action"):
            env.step(actions)
    after = env.state_dict()
    assert torch.equal(
        after["engine"]["trainer"]["step_count"], state["engine"]["trainer"]["step_count"]
    )
    obs, *_ = env.step(np.zeros((2, 3), dtype=np.float32))
    assert obs.shape == obs0.shape


@pytest.mark.parametrize(
    "config", [SMOKE, DBMTL, METRIC], ids=["sum", "db_mtl", "val_metric_reward"]
)
def test_state_dict_resumes_bit_for_bit(config: dict[str, Any]) -> None:
    dim = make_env(config).action_dim
    actions = _actions(8, 2, dim=dim)
    full = BatchedIGBEnv(2, config)
    full.reset(seed=5)
    expected = _run_to_end(full, actions)
    first = BatchedIGBEnv(2, config)
    first.reset(seed=5)
    _run_to_end(first, actions[:3])
    state = copy.deepcopy(first.state_dict())
    if config is DBMTL:  # the balancers' EMA gradients are part of the state
        assert len(state["engine"]["trainer"]["balancers"]) == 2
    resumed = BatchedIGBEnv(2, config)
    resumed.load_state_dict(state)
    got = _run_to_end(resumed, actions[3:])
    for (o1, r1, t1, _, i1), (o2, r2, t2, _, i2) in zip(expected[3:], got, strict=True):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(i1["instance"], i2["instance"])


def test_training_settings_the_stacked_trainer_lacks_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"optimizer 'adam' only.*vec_env: subproc"):
        BatchedIGBEnv(2, {**SMOKE, "train": {"optimizer": "sgd"}})
    with pytest.raises(ValueError, match="autoreset_mode"):
        BatchedIGBEnv(2, SMOKE, autoreset_mode="whenever")


def test_reset_options_are_checked() -> None:
    env = BatchedIGBEnv(2, SMOKE)
    with pytest.raises(ValueError, match="valid options: 'instances'"):
        env.reset(options={"instance": 3})
    with pytest.raises(ValueError, match="needs 2 seeds"):
        env.reset(options={"instances": [1, 2, 3]})
    with pytest.raises(RuntimeError, match="reset"):
        BatchedIGBEnv(2, SMOKE).step(np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("mode", "table"), [("absolute", "v1"), ("residual", "v1"), ("interp", "v1"), ("interp", "v2")]
)
def test_a_slot_without_a_held_action_maps_the_zero_action(mode: str, table: str) -> None:
    """Advanced before any action is held, each slot applies the map's zero action exactly as
    ``Episode`` (``HeldAction`` with nothing held) does: SI for ``absolute``, IGBv1 for
    ``residual`` and ``interp`` (whose prepared zero action is p = 0, q = 1, not q = 0)."""
    cfg = load_env_config({**SMOKE, "action_mode": mode, "feature_table": table})
    instances = [1000, 1001]
    cache = BenchmarkCache(cfg.benchmark, size=len(instances))
    engine = BatchedEpisodes(cfg, len(instances), cache, adam="foreach")
    engine.start(instances)
    assert all(h.prepared is None for h in engine.held)
    outcome = engine.advance()
    engine.absorb()
    reference = "si" if mode == "absolute" else "igbv1"
    for i, instance in enumerate(instances):
        bench = cache.get(instance)
        single = Episode(cfg, bench, HeldActionWeighting(mode, cfg.tau), instance)
        single.start()
        expected = single.advance()
        np.testing.assert_allclose(outcome.weights[i], expected.weights, rtol=1e-5)
        assert outcome.rewards[i] == pytest.approx(expected.reward, rel=1e-5, abs=REWARD_ATOL)
        np.testing.assert_allclose(
            engine.observations()[i], single.observation(), rtol=1e-5, atol=1e-6
        )
        # ... which is the registered weighting's run on the same instance.
        baseline = Episode(cfg, bench, make_weighting(reference), instance)
        baseline.start()
        np.testing.assert_allclose(outcome.weights[i], baseline.advance().weights, rtol=1e-5)
        if mode == "absolute":
            np.testing.assert_allclose(outcome.weights[i], 1.0, rtol=1e-6)
        else:  # IGBv1 is not SI here: the gaps differ across tasks
            assert np.abs(outcome.weights[i] - 1.0).max() > 1e-3


# -- per-instance step budgets ----------------------------------------------------------------
# Budgets of 30, 60 and 90 steps: 2, 5 and 8 decisions after the smoke base window (5, 10), K = 10.
BUDGETED: dict[str, Any] = {"preset": "smoke", "budgets": [30, 60, 90]}


def _decisions(config: dict[str, Any], instance: int) -> int:
    return math.ceil((load_env_config(config).train_for(instance).steps - 10) / 10)


def test_budgeted_slots_equal_separate_envs_and_end_at_their_own_budgets() -> None:
    instances = [1002, 1014, 1000]
    assert [_decisions(BUDGETED, i) for i in instances] == [2, 5, 8]
    batched = BatchedIGBEnv(len(instances), BUDGETED, adam="foreach")
    obs, _ = batched.reset(options={"instances": instances})
    singles, single_obs = _singles(BUDGETED, instances)
    np.testing.assert_allclose(obs, single_obs, rtol=1e-5, atol=OBS_ATOL)
    ended_at: list[int | None] = [None] * len(instances)
    for t, actions in enumerate(_actions(9, len(instances))):
        obs, rewards, terminated, truncated, info = batched.step(actions)
        assert not truncated.any()
        for i, env in enumerate(singles):
            ended = ended_at[i]
            if ended is None:
                o, r, term, _, inf = env.step(actions[i])
                np.testing.assert_allclose(obs[i], o, rtol=1e-5, atol=OBS_ATOL)
                assert rewards[i] == pytest.approx(r, rel=1e-5, abs=REWARD_ATOL)
                np.testing.assert_allclose(info["weights"][i], inf["weights"], rtol=1e-5)
                assert info["train_step"][i] == inf["train_step"]
                assert bool(terminated[i]) == term
                if term:
                    ended_at[i] = t
                    assert (
                        inf["train_step"] == load_env_config(BUDGETED).train_for(instances[i]).steps
                    )
            elif t == ended + 1:  # next_step autoreset: a new episode, reward 0
                new = int(info["instance"][i])
                assert rewards[i] == 0.0 and not terminated[i] and new != instances[i]
                fresh, _ = make_env(BUDGETED).reset(options={"instance": new})
                np.testing.assert_allclose(obs[i], fresh, rtol=1e-5, atol=OBS_ATOL)
    # The slots ended at different steps, each after its own number of decisions.
    assert ended_at == [1, 4, 7]


def test_budgeted_slots_autoreset_into_episodes_of_their_new_budgets() -> None:
    env = BatchedIGBEnv(3, BUDGETED, adam="foreach")
    _, info = env.reset(seed=4)
    current = [int(i) for i in info["instance"]]
    decided = [0, 0, 0]
    restarting = np.zeros(3, dtype=bool)
    finished: list[tuple[int, int, int]] = []
    for actions in _actions(24, 3, seed=2):
        _, rewards, terminated, _, info = env.step(actions)
        for i in range(3):
            if restarting[i]:
                assert rewards[i] == 0.0 and not terminated[i]
                current[i], decided[i] = int(info["instance"][i]), 0
                continue
            assert int(info["instance"][i]) == current[i]
            decided[i] += 1
            if terminated[i]:
                assert decided[i] == _decisions(BUDGETED, current[i]), (i, current[i])
                finished.append((i, current[i], decided[i]))
        restarting = terminated.copy()
    # Episodes of different lengths ended, and every slot restarted at least once.
    assert len({n for _, _, n in finished}) >= 2 and {i for i, _, _ in finished} == {0, 1, 2}
    assert len(finished) >= 5


@pytest.mark.parametrize("steps", [0, 2], ids=["right_after_reset", "mid_episode"])
def test_reset_again_starts_the_episodes_over(steps: int) -> None:
    """Gymnasium's reset() may come at any time: it starts every sub-env's episode afresh."""
    env = BatchedIGBEnv(2, SMOKE, adam="foreach")
    first, _ = env.reset(options={"instances": [1000, 1001]})
    for actions in _actions(steps, 2):
        env.step(actions)
    again, info = env.reset(options={"instances": [1000, 1001]})
    assert list(info["instance"]) == [1000, 1001]
    np.testing.assert_allclose(again, first, rtol=1e-5, atol=1e-6)
    _, _, terminated, _, info = env.step(_actions(1, 2)[0])
    assert not terminated.any() and list(info["train_step"]) == [20, 20]
