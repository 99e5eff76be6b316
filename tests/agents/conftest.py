"""Agent runs shared by the agent tests (trained once per session: a few seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.train import train_agent
from tests.agents._configs import tiny_agent


@pytest.fixture(scope="session", params=["ppo", "sac"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a tiny PPO or SAC agent."""
    algorithm = str(request.param)
    return train_agent(
        tiny_agent(algorithm), tmp_path_factory.mktemp(algorithm), progress_bar=False
    )
