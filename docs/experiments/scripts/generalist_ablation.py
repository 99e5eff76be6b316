"""Generalist policy (issue 14): which features an exported set policy acts on (mean ablation).

For an exported policy folder with ``training_groups`` in its sidecar (``policies/generalist``,
``policies/generalist-dbmtl-s0``, ...), it rebuilds the env of every training group from the
sidecar (``env_config`` merged with the group, as ``agents.config.group_env_configs`` does) and
rolls the policy out on each group's validation instances (``test_set``: the runs that selected
the model; never a held-out benchmark):

1. unablated, recording every observation it sees, and IGBv1 (the zero action) beside it;
2. once per feature column, with that column replaced by its mean over the unablated
   observations of the same run (over its tasks and decision points: a per-task column is
   replaced for every task), so that the policy no longer sees how the feature varies between
   tasks or over time. A column that is constant within every run (``n_tasks``; ``lr_ratio``
   under a constant learning rate) is marked: its ablation cannot change an action.

It prints, per feature, the mean validation return, the paired change against the unablated
policy (mean over the runs, with a 95% t-interval), and how much of the policy's gain over IGBv1
is lost (``lost = (unablated - ablated) / (unablated - IGBv1)``). An inference-time ablation says
what the *trained* policy uses, not what training would do without the feature (that needs a
retrained policy per feature).

    python docs/experiments/scripts/generalist_ablation.py policies/generalist --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.config import deep_merge, resolve_env_config
from agents.experiments.stats import paired
from igb_env import make_env, rollout_baseline, rollout_policy
from mtl_backends.features import FeatureTable
from mtl_backends.policy import load_policy


def group_configs(sidecar: dict[str, Any]) -> list[dict[str, Any]]:
    """The resolved env config of every training group of an exported policy."""
    groups = sidecar.get("training_groups") or [{}]
    return [resolve_env_config(deep_merge(sidecar["env_config"], g)) for g in groups]


def columns(table: FeatureTable, n_tasks: int, name: str) -> list[int]:
    """Indices of the feature ``name`` in the flat observation (task-major, then globals)."""
    per_task = [f.name for f in table.per_task]
    if name in per_task:
        j = per_task.index(name)
        return [t * len(per_task) + j for t in range(n_tasks)]
    glob = [f.name for f in table.global_]
    return [n_tasks * len(per_task) + glob.index(name)]


def ablated_features(table: FeatureTable, name: str) -> list[str]:
    """The features one ablation replaces: ``name``, every per-task one (``per_task``) or all."""
    if name == "per_task":
        return [f.name for f in table.per_task]
    if name == "all":
        return [f.name for f in table.per_task] + [f.name for f in table.global_]
    return [name]


def mean_filler(
    table: FeatureTable, n_tasks: int, name: str, seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Columns of ablation ``name``, their fill values, and whether any varies within the run.

    Each feature's columns take that feature's mean over the run's observations ``seen``
    ``[steps, obs_dim]`` (over decision points and tasks alike).
    """
    cols: list[int] = []
    values: list[float] = []
    for feature in ablated_features(table, name):
        idx = columns(table, n_tasks, feature)
        cols += idx
        values += [float(seen[:, idx].mean())] * len(idx)
    varies = bool(np.ptp(seen[:, cols]) > 0)
    return np.array(cols), np.array(values), varies


def main() -> None:
    """Print the ablation table of a policy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", type=Path)
    parser.add_argument("--json", type=Path, help="write every return here")
    parser.add_argument(
        "--only",
        nargs="+",
        help="ablate only these features; 'per_task' ablates every per-task feature at once "
        "(the tasks become indistinguishable), 'all' every feature (one action per run)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = load_policy(args.policy)
    table = FeatureTable(policy.feature_spec)
    names = [f.name for f in table.per_task] + [f.name for f in table.global_]
    if args.only:
        unknown = sorted(set(args.only) - {*names, "per_task", "all"})
        if unknown:
            parser.error(f"unknown features {unknown}; valid: {', '.join(names)}, per_task, all")
        names = list(args.only)
    returns: dict[str, dict[str, float]] = {}
    varies = dict.fromkeys(names, False)  # does an ablated column differ within a run?
    start = time.perf_counter()
    for g, config in enumerate(group_configs(policy.sidecar)):
        env = make_env(config)
        t = env.n_tasks
        for instance in env.config.test_instances:
            key = f"{g}/{instance}"
            row = returns.setdefault(key, {})
            row["igbv1"] = rollout_baseline(config, "igbv1", instance).total_reward
            seen: list[np.ndarray] = []

            def record(obs: np.ndarray, seen: list[np.ndarray] = seen) -> np.ndarray:
                seen.append(np.asarray(obs, dtype=np.float64))
                return policy.act(obs).numpy()

            rewards, _ = rollout_policy(env, record, instance)
            row["policy"] = float(sum(rewards))
            for name in names:
                cols, values, moves = mean_filler(table, t, name, np.asarray(seen))
                varies[name] |= moves

                def ablated(
                    obs: np.ndarray, cols: np.ndarray = cols, values: np.ndarray = values
                ) -> np.ndarray:
                    x = np.array(obs, dtype=np.float64)
                    x[cols] = values
                    return policy.act(x).numpy()

                rewards, _ = rollout_policy(env, ablated, instance)
                row[name] = float(sum(rewards))
            print(f"{key} (T={t}) done after {time.perf_counter() - start:.0f} s", flush=True)
        env.close()
    runs = list(returns.values())
    ref = np.array([r["policy"] for r in runs])
    gain = float((ref - np.array([r["igbv1"] for r in runs])).mean())
    print(
        f"\n{len(runs)} validation runs; policy {ref.mean():.3f}, IGBv1 "
        f"{np.mean([r['igbv1'] for r in runs]):.3f} (gain {gain:+.3f})\n"
    )
    print("| feature ablated | return | change vs unablated [95% CI] | share of gain lost |")
    print("|---|---|---|---|")
    for name in names:
        values = np.array([r[name] for r in runs])
        diff = paired((values - ref).tolist())
        lost = -diff.mean / gain if gain else float("nan")
        if not varies[name]:
            name += " (the same in every step and task of a run: nothing to ablate)"
        print(
            f"| {name} | {values.mean():.3f} | {diff.mean:+.4f} [{diff.low:+.4f}, "
            f"{diff.high:+.4f}] | {lost:+.0%} |"
        )
    if args.json:
        args.json.write_text(json.dumps(returns, indent=1))


if __name__ == "__main__":
    main()
