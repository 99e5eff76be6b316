"""The agent-side ``igb perf`` keys (issue 7) at a tiny size."""

from __future__ import annotations

import math

from agents.experiments.perf import format_table
from agents.experiments.perf_agent import AGENT_KEYS, OVERHEAD_QUARTILES, agent_overheads


def test_agent_overheads_tiny_every_key_finite_and_positive() -> None:
    result = agent_overheads(threads=1, repeats=2, tiny=True)
    quartiles = result.pop(OVERHEAD_QUARTILES)
    assert set(result) == set(AGENT_KEYS)
    assert all(math.isfinite(v) and v > 0 for v in result.values())
    # Each overhead's median lies within its reported quartiles.
    assert set(quartiles) == {
        "env_step_overhead",
        "val_reward_overhead",
        "policy_weighting_overhead",
        "igbv1_weighting_overhead",
        "set_policy_weighting_overhead",
        "set_policy_weighting_overhead_t10",
    }
    for key, (low, high) in quartiles.items():
        assert 0 < low <= result[key] <= high
    # The plain-text table lists the keys when they are present.
    table = format_table(
        {
            "torch": "x",
            "threads": 1,
            "repeats": 1,
            "tiny": True,
            "jacobian_batched_speedup": {"T=3": {"threads=1": 1.0}},
            "balancer_cost_vs_ew": {"T=3": {"db_mtl": 1.5}},
            "ew_step_ms": {"T=3": 1.0},
            **result,
            OVERHEAD_QUARTILES: quartiles,
        }
    )
    assert all(key in table for key in AGENT_KEYS)
    assert "quartiles" in table
