"""Generalist policy (issue 14): how much return do constant interp actions leave over IGBv1?

For every env group of an agent config and every validation instance of its ``test_set``, it rolls
out one constant interp action: zero per-task residuals and the global entries ``(a_p, a_q)``
(``p = clip(a_p, 0, 1)``, ``q = 1 + clip(a_q, -1, 1)``; ``(0, 0)`` is IGBv1). It prints the mean
return per action and writes every return to ``--out``: the headroom a policy that only moves
along the IGBv1 -> SI / EW directions could reach, with no per-task information.

    python docs/experiments/scripts/generalist_headroom.py \
        docs/experiments/scripts/generalist_wide.yaml 0,0 0,-0.5 0,0.5 0.5,-1 1,-1 0.3,0 \
        --out headroom.json
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np
import torch

from agents.config import group_env_configs, load_agent_config
from igb_env import make_env, rollout_policy


def _constant(action: np.ndarray, _obs: np.ndarray) -> np.ndarray:
    return action


def main() -> None:
    """Roll out every action on every validation instance; print and write the returns."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="agent config with env groups and a test_set")
    parser.add_argument("actions", nargs="+", help="a_p,a_q pairs, e.g. 0,0.5")
    parser.add_argument("--out", type=Path, default=Path("headroom.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    configs = group_env_configs(load_agent_config(args.config))
    results: dict[str, dict[str, float]] = {}
    for text in args.actions:
        a_p, a_q = (float(x) for x in text.split(","))
        returns: dict[str, float] = {}
        for group, config in enumerate(configs):
            env = make_env(config)
            action = np.array([0.0] * env.n_tasks + [a_p, a_q], dtype=np.float32)
            for instance in env.config.test_instances:
                rewards, _ = rollout_policy(env, functools.partial(_constant, action), instance)
                returns[f"{group}/{instance}"] = float(sum(rewards))
            env.close()
        results[text] = returns
        print(f"a_p={a_p:+.2f} a_q={a_q:+.2f}: mean return {np.mean(list(returns.values())):.4f}")
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
