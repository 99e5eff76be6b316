"""``agents.checkpoint``: the folder and pointer layout, errors and RNG states."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pickle
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC

from agents import checkpoint, rng_state
from agents.checkpoint import (
    LEGACY_MODEL,
    POINTER,
    ResumableCheckpointCallback,
    SaveBestCallback,
    latest_checkpoint,
    load_rng_states,
    load_state,
    restore_episode_buffers,
    save_checkpoint,
)
from agents.rng_state import rng_states, set_rng_states
from agents.sb3_files import load_sb3_model, serialized_entries
from mtl_backends.fileio import FileFormatError
from tests.agents._hostile import Payload, replace_serialized


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
    assert sorted(p.name for p in folder.iterdir()) == [
        "episodes.json",
        "model.zip",
        "rng.json",
        "state.json",
    ]
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

    def crash(states: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "rng_states_to_json", crash)
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
        "episodes.json",
        "model.zip",
        "replay_buffer.pkl",
        "rng.json",
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


# -- Hostile and damaged checkpoint files (issue 18) -----------------------------------------------


def test_rng_states_are_json_and_restore_the_draws(tmp_path: Path) -> None:
    saved = rng_states()
    data = json.loads(json.dumps(rng_state.rng_states_to_json(saved)))
    first = [_draws() for _ in range(3)]
    set_rng_states(rng_state.rng_states_from_json(data, "rng.json"))
    assert [_draws() for _ in range(3)] == first


def test_a_legacy_rng_pickle_still_resumes(ppo: PPO, tmp_path: Path) -> None:
    ppo.num_timesteps = 16
    folder = save_checkpoint(ppo, tmp_path, {})
    (folder / checkpoint.RNG_FILE).unlink()
    with (folder / checkpoint.LEGACY_RNG_FILE).open("wb") as fh:
        pickle.dump(rng_states(), fh)  # what checkpoints held before the JSON format
    after = _draws()
    _draws()
    set_rng_states(load_rng_states(folder))
    assert _draws() == after


def test_a_crafted_rng_pickle_runs_no_code(ppo: PPO, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Payload(control)))  # the payload is live when unpickled plainly
    assert control.exists()
    ppo.num_timesteps = 8
    (tmp_path / "run").mkdir()
    folder = save_checkpoint(ppo, tmp_path / "run", {})
    (folder / checkpoint.RNG_FILE).unlink()
    for payload in (Payload(marker), {"numpy": Payload(marker), "torch": 0, "random": 0}):
        (folder / checkpoint.LEGACY_RNG_FILE).write_bytes(pickle.dumps(payload))
        with pytest.raises(FileFormatError, match=r"cannot be read safely \(global posix\.system"):
            load_rng_states(folder)
        assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": "other"}, "format 'other'"),
        ({"numpy": {"bit_generator": "MT19937"}}, "missing entry 'key'"),
        ({"torch": "***not base64***"}, r"rng\.json' are malformed"),
        ({"random": None}, "malformed"),
    ],
)
def test_malformed_rng_json_names_the_file(
    ppo: PPO, tmp_path: Path, change: dict[str, Any], match: str
) -> None:
    ppo.num_timesteps = 8
    folder = save_checkpoint(ppo, tmp_path, {})
    data = json.loads((folder / checkpoint.RNG_FILE).read_text())
    (folder / checkpoint.RNG_FILE).write_text(json.dumps({**data, **change}))
    with pytest.raises(FileFormatError, match=match) as err:
        load_rng_states(folder)
    assert str(folder / checkpoint.RNG_FILE) in str(err.value)


@pytest.mark.parametrize(
    ("pointer", "error", "match"),
    [
        ('{"dir": "checkpoint-0000', FileFormatError, r"checkpoint pointer .* is not valid JSON"),
        ("[1]", FileFormatError, "must hold a JSON object, got a array"),
        ('{"dir": "../../etc"}', FileFormatError, "must name a checkpoint folder of the run"),
        ('{"dir": "/tmp"}', FileFormatError, "must name a checkpoint folder of the run"),
        ('{"timesteps": 3}', FileFormatError, "got None"),
    ],
)
def test_a_damaged_or_hostile_pointer_is_refused(
    tmp_path: Path, pointer: str, error: type[Exception], match: str
) -> None:
    (tmp_path / POINTER).write_text(pointer)
    with pytest.raises(error, match=match):
        latest_checkpoint(tmp_path)


def test_damaged_state_json_names_the_file(ppo: PPO, tmp_path: Path) -> None:
    ppo.num_timesteps = 8
    folder = save_checkpoint(ppo, tmp_path, {"episodes": 1})
    (folder / "state.json").write_text('{"episodes": 1, "times')
    with pytest.raises(
        FileFormatError, match=r"checkpoint state '.*state\.json' is not valid JSON"
    ):
        load_state(folder)


def _ppo_template() -> dict[str, Any]:
    env = gymnasium.make("Pendulum-v1")
    algo: Any = PPO  # `_init_setup_model` is not in BaseAlgorithm's signature
    template = algo(
        "MlpPolicy", None, n_steps=16, batch_size=16, seed=0, device="cpu", _init_setup_model=False
    )
    return {
        **vars(template),
        "observation_space": env.observation_space,
        "action_space": env.action_space,
    }


def test_an_sb3_archive_with_a_pickled_payload_runs_no_code(ppo: PPO, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ppo.save(tmp_path / "model.zip")
    hostile = replace_serialized(
        tmp_path / "model.zip",
        tmp_path / "hostile.zip",
        {"policy_class": Payload(marker), "lr_schedule": Payload(marker)},
    )
    assert "policy_class" in serialized_entries(hostile)
    loaded = load_sb3_model(PPO, hostile, _ppo_template(), device="cpu")
    assert not marker.exists()
    for name, tensor in ppo.policy.state_dict().items():
        assert loaded.policy.state_dict()[name].equal(tensor), name
    # An entry this loader has no trusted value for is refused, not unpickled.
    unknown = replace_serialized(hostile, tmp_path / "unknown.zip", {"evil": Payload(marker)})
    with pytest.raises(FileFormatError, match="holds a pickled entry 'evil'"):
        load_sb3_model(PPO, unknown, _ppo_template(), device="cpu")
    assert not marker.exists()
    # The control: SB3's own load runs the payload.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(Exception):
            PPO.load(hostile, device="cpu")
    assert marker.exists()


def test_a_file_that_is_not_an_sb3_archive_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.zip"
    path.write_bytes(b"not a zip")
    with pytest.raises(FileFormatError, match=r"SB3 model '.*model\.zip' is not a readable"):
        serialized_entries(path)


def test_episode_statistics_round_trip_with_their_dtypes(ppo: PPO, tmp_path: Path) -> None:
    ppo.ep_info_buffer = collections.deque(
        [{"r": np.float32(-1.25), "l": 5, "t": 0.5}, {"r": np.float32(2.0), "l": 6, "t": 0.75}],
        maxlen=100,
    )
    ppo.ep_success_buffer = collections.deque([np.bool_(True)], maxlen=100)
    ppo.num_timesteps = 24
    folder = save_checkpoint(ppo, tmp_path, {})
    fresh = PPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, seed=0, device="cpu")
    assert restore_episode_buffers(fresh, folder)
    assert list(fresh.ep_info_buffer) == list(ppo.ep_info_buffer)  # type: ignore[arg-type]
    assert type(fresh.ep_info_buffer[0]["r"]) is np.float32  # type: ignore[index]
    assert type(fresh.ep_success_buffer[0]) is np.bool_  # type: ignore[index]
    (folder / checkpoint.EPISODES_FILE).unlink()
    assert restore_episode_buffers(fresh, folder) is False
