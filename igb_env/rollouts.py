"""Fixed-weighting and fixed-policy episodes: the reference lines beside an agent's returns.

``rollout_baseline`` runs one instance with a registered weighting (EW, IGBv1, an exported
``policy``, ...) through the env's own engine (``igb_env.episode``: same trainer, decision points
and reward); ``rollout_policy`` runs one env episode with any ``act(obs) -> action``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from igb_env.config import EnvConfig, load_env_config
from igb_env.episode import Episode
from igb_env.instances import BenchmarkCache
from mtl_backends.config import MethodSpec
from mtl_backends.weightings import make_weighting

if TYPE_CHECKING:
    from igb_env.env import IGBEnv


@dataclass
class Rollout:
    """One episode run with a fixed weighting (a baseline reference).

    Attributes:
        weighting: Registry name of the weighting.
        instance: Instance seed.
        rewards: Reward of every env step.
        weights: Mean weights of every env step.
        diverged: Whether training diverged.
    """

    weighting: str
    instance: int
    rewards: list[float] = field(default_factory=list)
    weights: list[list[float]] = field(default_factory=list)
    diverged: bool = False

    @property
    def total_reward(self) -> float:
        """Undiscounted return (what ``Monitor`` reports for the agent)."""
        return float(sum(self.rewards))

    def discounted_return(self, gamma: float) -> float:
        """``sum_i gamma^i r_i``."""
        return float(sum(r * gamma**i for i, r in enumerate(self.rewards)))


def rollout_baseline(
    config: EnvConfig | Mapping[str, Any] | str | Path | None,
    weighting: str | MethodSpec | Mapping[str, Any],
    instance: int,
    benchmarks: BenchmarkCache | None = None,
) -> Rollout:
    """Run one instance with a fixed registered weighting and the env's step and reward definitions.

    The trainer, data, base window, decision points and reward are those of the env on the same
    instance, so the return is a reference line for the agent's (``igbv1`` equals the env with
    ``residual`` actions of 0, bit for bit; ``ew`` trains raw losses).

    Args:
        config: Env configuration.
        weighting: Registry name (``"ew"``, ``"igbv1"``, ...) or a ``{"name": ..., **kwargs}``
            mapping (e.g. ``{"name": "policy", "path": ...}``).
        instance: Instance seed.
        benchmarks: Cache of built benchmarks (default: a new one).

    Returns:
        The per-step rewards and weights.
    """
    cfg = load_env_config(config)
    spec = MethodSpec.parse(weighting, "weighting")
    cache = (
        benchmarks
        if benchmarks is not None
        else BenchmarkCache(cfg.benchmark, variation=cfg.variation)
    )
    episode = Episode(
        cfg, cache.get(instance), make_weighting(spec.name, **dict(spec.kwargs)), instance
    )
    episode.start()
    rollout = Rollout(weighting=spec.name, instance=int(instance))
    while not episode.over:
        outcome = episode.advance()
        rollout.rewards.append(float(outcome.reward))
        rollout.weights.append([float(w) for w in outcome.weights])
        rollout.diverged = outcome.diverged
    return rollout


def rollout_policy(
    env: IGBEnv, act: Callable[[np.ndarray], np.ndarray], instance: int
) -> tuple[list[float], list[np.ndarray]]:
    """Run one episode of ``env`` on ``instance`` with ``act(obs) -> action``.

    Returns:
        The rewards and the actions taken.
    """
    obs, _ = env.reset(options={"instance": int(instance)})
    rewards: list[float] = []
    actions: list[np.ndarray] = []
    terminated = truncated = False
    while not (terminated or truncated):
        action = np.asarray(act(obs))
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        actions.append(action)
    return rewards, actions


__all__ = ["Rollout", "rollout_baseline", "rollout_policy"]
