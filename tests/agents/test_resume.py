"""Resumable agent training: a run killed with SIGKILL continues from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from agents.callbacks import TaskMetricsCallback
from agents.checkpoint import latest_checkpoint, load_rng_states, load_state
from agents.cli import main
from agents.set_policy import SetActorCriticPolicy
from agents.train import load_model, resume_agent, train_agent
from mtl_backends.config import to_dict
from tests.agents._configs import TINY_ENV, tiny_agent, tiny_set_agent

ROOT = Path(__file__).resolve().parents[2]
QUIET = ("--no-progress",)


def test_sigkilled_run_resumes_to_its_target(tmp_path: Path) -> None:
    target = 200
    config = tiny_agent(
        "ppo", total_timesteps=target, checkpoint_every=40, reference_instances=0, eval_every=None
    )
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "train-agent", str(path), "--out", str(run), *QUIET],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 45
        while not (run / "checkpoint.json").is_file():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 45 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    recorded = json.loads((run / "checkpoint.json").read_text())["timesteps"]
    assert 0 < recorded < target, "the run should have been killed mid-training"
    assert not (run / "training.json").exists()

    assert main(["train-agent", "--resume", str(run), "--no-progress"]) == 0
    summary = json.loads((run / "training.json").read_text())
    assert summary["timesteps"] == target
    assert summary["resumed_from"] >= recorded
    assert load_model(run).num_timesteps == target
    assert load_state(latest_checkpoint(run))["timesteps"] == target


def test_checkpoint_holds_buffer_cursors_and_rngs_and_resume_extends(tmp_path: Path) -> None:
    env = {**TINY_ENV, "instance_set": {"range": [10_000, 10_050]}, "instance_order": "round_robin"}
    config = tiny_agent("sac", total_timesteps=40, checkpoint_every=20, reference_instances=0)
    run = train_agent(config.__class__(**{**config.__dict__, "env": env}), tmp_path, False)
    folder = latest_checkpoint(run)
    assert {"model.zip", "replay_buffer.pkl", "rng.json", "episodes.json", "state.json"} <= {
        p.name for p in folder.iterdir()
    }
    state = load_state(folder)
    assert state["timesteps"] == 40 and len(state["instance_states"]) == 2
    cursors = [s["sampler"]["cursor"] for s in state["instance_states"]]
    assert all(0 <= c < 50 for c in cursors)
    rngs = load_rng_states(folder)
    assert isinstance(rngs["torch"], torch.Tensor) and rngs["numpy"][0] == "MT19937"
    # Extending a finished run continues its counter, buffer and cursors.
    resume_agent(run, progress_bar=False, total_timesteps=60)
    model = load_model(run)
    assert model.num_timesteps == 60
    assert np.isfinite(load_state(latest_checkpoint(run))["wall_time_s"])


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        resume_agent(tmp_path, progress_bar=False)
    assert main(["train-agent", "--resume", str(tmp_path), "cfg.yaml"]) == 2


def test_budget_stopped_run_resumes_with_a_new_budget(tmp_path: Path) -> None:
    config = tiny_agent(
        "sac",
        total_timesteps=100_000,
        time_budget_s=1.0,
        checkpoint_every=20,
        reference_instances=0,
    )
    run = train_agent(config, tmp_path, progress_bar=False)
    first = json.loads((run / "training.json").read_text())
    assert first["stopped_by_budget"] is True
    target = first["timesteps"] + 10
    argv = ["train-agent", "--resume", str(run), "--timesteps", str(target)]
    assert main([*argv, "--time-budget", "1000", *QUIET]) == 0
    summary = json.loads((run / "training.json").read_text())
    assert summary["timesteps"] == target and summary["resumed_from"] == first["timesteps"]
    assert summary["stopped_by_budget"] is False


class KilledError(Exception):
    """Stands in for a kill: training stops between two checkpoints, nothing more is written."""


@pytest.mark.parametrize("vec_env", ["batched", "dummy"])
def test_a_killed_set_policy_run_resumes_to_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vec_env: str
) -> None:
    target = 160  # four rollouts of 40 timesteps (2 groups x 2 sub-envs x 10 steps)
    step = TaskMetricsCallback._on_step

    def dies_after_two_rollouts(self: TaskMetricsCallback) -> bool:
        if self.num_timesteps > 80:
            raise KilledError
        return step(self)

    monkeypatch.setattr(TaskMetricsCallback, "_on_step", dies_after_two_rollouts)
    config = tiny_set_agent(total_timesteps=target, checkpoint_every=40, vec_env=vec_env)
    with pytest.raises(KilledError):
        train_agent(config, tmp_path / "run", progress_bar=False)
    monkeypatch.undo()
    run = tmp_path / "run"
    state = load_state(latest_checkpoint(run))
    assert state["timesteps"] == 80 and not (run / "training.json").exists()
    # Every sub-env of both groups has its place in its instance set saved.
    assert len(state["instance_states"]) == 4 and state["task_names"] is None

    resume_agent(run, progress_bar=False)
    summary = json.loads((run / "training.json").read_text())
    assert summary["timesteps"] == target and summary["resumed_from"] == 80
    assert summary["task_names"] is None
    # 20 steps of each of the 4 sub-envs before the kill and 20 after: 4 + 4 episodes each.
    assert state["episodes"] == 16 and summary["episodes"] == 32
    model = load_model(run)
    assert isinstance(model.policy, SetActorCriticPolicy) and model.num_timesteps == target
    assert load_state(latest_checkpoint(run))["timesteps"] == target


def test_a_resumed_run_keeps_its_earlier_held_out_evaluations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Evaluations every 40 timesteps, a checkpoint at 80, killed after the evaluation at 120.
    step = TaskMetricsCallback._on_step

    def dies_after_three_rollouts(self: TaskMetricsCallback) -> bool:
        if self.num_timesteps > 120:
            raise KilledError
        return step(self)

    monkeypatch.setattr(TaskMetricsCallback, "_on_step", dies_after_three_rollouts)
    config = tiny_agent(
        env={**TINY_ENV, "test_set": [5000, 5001]},
        eval_every=40,
        total_timesteps=160,
        checkpoint_every=80,
    )
    run = tmp_path / "run"
    with pytest.raises(KilledError):
        train_agent(config, run, progress_bar=False)
    monkeypatch.undo()
    with np.load(run / "eval" / "evaluations.npz") as before:
        assert before["timesteps"].tolist() == [40, 80, 120]
        results_before = before["results"].copy()
    resume_agent(run, progress_bar=False)
    with np.load(run / "eval" / "evaluations.npz") as after:
        # 40 and 80 kept as they were; 120 (after the checkpoint) made again; 160 added.
        assert after["timesteps"].tolist() == [40, 80, 120, 160]
        np.testing.assert_array_equal(after["results"][:2], results_before[:2])
        assert after["ep_lengths"].shape == after["results"].shape
