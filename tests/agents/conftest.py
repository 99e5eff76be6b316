"""Agent runs shared by the agent tests (trained once per session: a few seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.train import train_agent
from tests.agents._configs import tiny_agent, tiny_set_agent


@pytest.fixture(scope="session", params=["ppo", "sac"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a tiny PPO or SAC agent."""
    algorithm = str(request.param)
    return train_agent(
        tiny_agent(algorithm), tmp_path_factory.mktemp(algorithm), progress_bar=False
    )


@pytest.fixture(scope="session")
def trained_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a tiny set-policy agent on runs of T = 2 and T = 3 (120 timesteps in
    rollouts of 40, evaluated on the held-out instances every 40, one reference instance)."""
    config = tiny_set_agent(eval_every=40, reference_instances=1)
    return train_agent(config, tmp_path_factory.mktemp("set"), progress_bar=False)
