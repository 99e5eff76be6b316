"""``agents.checkpoint``: the folder and pointer layout, errors and RNG states."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC

from agents import checkpoint
from agents.checkpoint import (
    LEGACY_MODEL,
    POINTER,
    ResumableCheckpointCallback,
    SaveBestCallback,
    latest_checkpoint,
    load_rng_states,
    load_state,
    rng_states,
    save_checkpoint,
    set_rng_states,
)


@pytest.fixture(autouse=True)
def _keep_global_rngs() -> Iterator[None]:
    """These tests reseed the global generators; the rest of the session keeps its own."""
    states = np.random.get_state(), torch.get_rng_state(), random.getstate()
    yield
    np.random.set_state(states[0])
    torch.set_rng_state(states[1])
    random.setstate(states[2])


@pytest.fixture(scope="module")
def ppo() -> PPO:
    return PPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, seed=0, device="cpu")


def _draws() -> tuple[float, float, float]:
    return float(np.random.rand()), float(torch.rand(1)), random.random()


def test_checkpoint_layout_and_pointer(ppo: PPO, tmp_path: Path) -> None:
    ppo.num_timesteps = 80
    folder = save_checkpoint(ppo, tmp_path, {"episodes": 3, "wall_time_s": 1.5})
    assert folder == tmp_path / "checkpoint-000000080"
    assert json.loads((tmp_path / POINTER).read_text()) == {
        "dir": "checkpoint-000000080",
        "timesteps": 80,
    }
    assert sorted(p.name for p in folder.iterdir()) == ["model.zip", "rng.pkl", "state.json"]
    assert load_state(folder) == {"episodes": 3, "wall_time_s": 1.5, "timesteps": 80}
    # checkpoint.zip is a hard link to the latest model (the pre-resume layout).
    assert os.path.samefile(tmp_path / LEGACY_MODEL, folder / "model.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [POINTER, LEGACY_MODEL, folder.name]
    )
    assert latest_checkpoint(tmp_path) == folder
    assert PPO.load(folder / "model.zip", device="cpu").num_timesteps == 80


def test_a_newer_checkpoint_replaces_the_older_one(ppo: PPO, tmp_path: Path) -> None:
    ppo.num_timesteps = 40
    old = save_checkpoint(ppo, tmp_path, {"n": 1})
    (tmp_path / ".checkpoint-stale.tmp").mkdir()  # left by a killed save
    ppo.num_timesteps = 120
    new = save_checkpoint(ppo, tmp_path, {"n": 2})
    assert not old.exists() and not (tmp_path / ".checkpoint-stale.tmp").exists()
    assert latest_checkpoint(tmp_path) == new and load_state(new)["n"] == 2
    assert os.path.samefile(tmp_path / LEGACY_MODEL, new / "model.zip")
    again = save_checkpoint(ppo, tmp_path, {"n": 3})  # same timestep: replaced in place
    assert again == new and load_state(new) == {"n": 3, "timesteps": 120}
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-000000120"]


def test_a_failed_save_leaves_the_previous_checkpoint(
    ppo: PPO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ppo.num_timesteps = 40
    good = save_checkpoint(ppo, tmp_path, {"n": 1})

    def crash(obj: Any, fh: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.pickle, "dump", crash)
    ppo.num_timesteps = 80
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(ppo, tmp_path, {"n": 2})
    assert latest_checkpoint(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([POINTER, LEGACY_MODEL, good.name])


def test_off_policy_checkpoints_hold_the_replay_buffer(tmp_path: Path) -> None:
    sac = SAC("MlpPolicy", "Pendulum-v1", buffer_size=64, learning_starts=0, device="cpu", seed=0)
    sac.num_timesteps = 5
    folder = save_checkpoint(sac, tmp_path, {})
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.zip",
        "replay_buffer.pkl",
        "rng.pkl",
        "state.json",
    ]


def test_latest_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"has no checkpoint\.json: nothing to resume"):
        latest_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        latest_checkpoint(tmp_path / "no-such-run")
    (tmp_path / POINTER).write_text(json.dumps({"dir": "checkpoint-000000010", "timesteps": 10}))
    with pytest.raises(FileNotFoundError, match="checkpoint-000000010' is incomplete"):
        latest_checkpoint(tmp_path)
    (tmp_path / "checkpoint-000000010").mkdir()  # a folder without its state.json
    with pytest.raises(FileNotFoundError, match="is incomplete"):
        latest_checkpoint(tmp_path)


def test_rng_states_round_trip() -> None:
    saved = rng_states()
    first = [_draws() for _ in range(3)]
    set_rng_states(saved)
    assert [_draws() for _ in range(3)] == first


def test_checkpoint_rng_states_restore_the_draws_after_the_save(ppo: PPO, tmp_path: Path) -> None:
    np.random.seed(1)
    torch.manual_seed(2)
    random.seed(3)
    ppo.num_timesteps = 16
    folder = save_checkpoint(ppo, tmp_path, {})
    after = _draws()
    _draws()
    set_rng_states(load_rng_states(folder))
    assert _draws() == after


def test_resumable_callback_saves_at_rollout_boundaries(ppo: PPO, tmp_path: Path) -> None:
    calls: list[int] = []

    def state() -> dict[str, Any]:
        calls.append(ppo.num_timesteps)
        return {"call": len(calls)}

    cb = ResumableCheckpointCallback(tmp_path, every=40, state=state, start=100)
    cb.init_callback(ppo)
    for timesteps in (100, 130, 140, 150, 179, 180, 260):
        ppo.num_timesteps = timesteps
        cb.num_timesteps = timesteps  # SB3 sets it at every step
        cb.on_rollout_start()
    # Next checkpoint: start + every = 140, then 40 after each save.
    assert calls == [140, 180, 260] and cb.saved == 3
    assert json.loads((tmp_path / POINTER).read_text())["timesteps"] == 260
    assert load_state(latest_checkpoint(tmp_path)) == {"call": 3, "timesteps": 260}
    assert cb.on_step() is True


def test_resumable_callback_refuses_a_zero_interval(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint interval must be >= 1 timestep, got 0"):
        ResumableCheckpointCallback(tmp_path, every=0, state=dict)


def test_save_best_callback_writes_the_model(ppo: PPO, tmp_path: Path) -> None:
    cb = SaveBestCallback(tmp_path / "best_model.zip")
    cb.init_callback(ppo)
    assert cb.on_step() is True
    assert [p.name for p in tmp_path.iterdir()] == ["best_model.zip"]
    loaded = PPO.load(tmp_path / "best_model.zip", device="cpu")
    for name, tensor in ppo.policy.state_dict().items():
        assert loaded.policy.state_dict()[name].equal(tensor), name
