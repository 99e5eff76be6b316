"""Agent run folders with crafted or damaged files (issue 18).

Before, a crafted ``rng.pkl`` ran code on ``igb train-agent --resume`` (``pickle.load``) and a
crafted ``model.zip`` (a ``:serialized:`` cloudpickle entry) ran code on ``igb export``; a
misspelt SB3 hyperparameter failed after the run folder was created.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from agents import checkpoint
from agents.checkpoint import latest_checkpoint, load_rng_states
from agents.cli import main
from agents.train import load_model, train_agent
from mtl_backends.registry import ConfigError
from tests.agents._configs import tiny_agent
from tests.agents._hostile import Payload, tamper

QUIET = ["--no-progress"]


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def test_resume_with_a_crafted_rng_pickle_runs_no_code(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(trained, tmp_path / "run")
    folder = latest_checkpoint(run)
    (folder / checkpoint.RNG_FILE).unlink()
    marker = tmp_path / "pwned"
    (folder / checkpoint.LEGACY_RNG_FILE).write_bytes(pickle.dumps(Payload(marker)))
    code = main(["train-agent", "--resume", str(run), "--timesteps", "120", *QUIET])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert "Traceback" not in err
    assert f"RNG states {str(folder / 'rng.pkl')!r}" in err and "cannot be read safely" in err
    # Refused before anything trained: the run is where it was.
    assert json.loads((run / "training.json").read_text())["timesteps"] == 80


def test_resume_with_a_crafted_model_zip_runs_no_code(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    marker = tmp_path / "pwned"
    tamper(latest_checkpoint(run) / "model.zip", {"policy_class": Payload(marker)})
    assert main(["train-agent", "--resume", str(run), "--timesteps", "120", *QUIET]) == 0
    assert not marker.exists()
    assert load_model(run).num_timesteps == 120


def test_a_checkpoint_of_the_old_format_still_resumes(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    folder = latest_checkpoint(run)
    states = load_rng_states(folder)
    (folder / checkpoint.RNG_FILE).unlink()
    (folder / checkpoint.EPISODES_FILE).unlink()
    with (folder / checkpoint.LEGACY_RNG_FILE).open("wb") as fh:
        pickle.dump(states, fh)  # what every checkpoint held before the JSON format
    with pytest.warns(UserWarning, match=r"predates episodes\.json"):
        code = main(["train-agent", "--resume", str(run), "--timesteps", "120", *QUIET])
    assert code == 0
    assert load_model(run).num_timesteps == 120
    assert (latest_checkpoint(run) / checkpoint.RNG_FILE).is_file()  # rewritten as JSON


def test_export_of_a_crafted_model_zip_runs_no_code(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(trained, tmp_path / "run")
    marker = tmp_path / "pwned"
    clean = tmp_path / "clean"
    assert main(["export", str(run), "--out", str(clean)]) == 0
    tamper(run / "model.zip", {"policy_class": Payload(marker), "lr_schedule": Payload(marker)})
    assert main(["export", str(run), "--out", str(tmp_path / "p")]) == 0
    assert not marker.exists()
    # The payload entries were replaced by the run's own values: the same policy comes out.
    exported = torch.load(tmp_path / "p" / "policy.pt", weights_only=True)
    reference = torch.load(clean / "policy.pt", weights_only=True)
    assert exported.keys() == reference.keys()
    assert all(torch.equal(exported[k], reference[k]) for k in reference)
    # An entry igb-rl has no value of its own for is refused, still without running it.
    tamper(run / "model.zip", {"evil": Payload(marker)})
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and "holds a pickled entry 'evil'" in err


def test_a_misspelt_hyperparameter_fails_before_the_run_folder_exists(tmp_path: Path) -> None:
    config = tiny_agent("ppo", hyperparameters={"n_step": 20, "batch_size": 20})
    with pytest.raises(ConfigError, match=r"PPO does not take 'n_step' \(did you mean"):
        train_agent(config, tmp_path / "run", progress_bar=False)
    assert not (tmp_path / "run").exists()
    sac = tiny_agent("sac", hyperparameters={"learning_starts": 20, "clip_range": 0.2})
    with pytest.raises(ConfigError, match="SAC does not take 'clip_range'"):
        train_agent(sac, tmp_path / "sac", progress_bar=False)
