"""Generalist policy (issue 14): validation returns of a run's models beside EW, SI and IGBv1.

For every env group of an agent run (``RUN/config.yaml``) and every instance of the env's
``test_set`` (the validation instances that select the model; never the held-out benchmarks), it
rolls out the fixed weightings EW, SI and IGBv1 (``igb_env.rollout_baseline``: the env's trainer,
decision points and reward, cached in ``--cache``) and the run's models (deterministic actions on
the padded observation, as training evaluates them): ``model.zip``, ``best_model.zip`` and every
``checkpoint-N`` given with ``--checkpoints``. It prints the mean return per group and overall,
and the paired difference to IGBv1 with the number of wins.

    python docs/experiments/scripts/generalist_validation.py RUN [--checkpoints 14400 28800]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO

from agents.config import group_env_configs, load_agent_config
from agents.set_policy import SetActorCriticPolicy
from agents.train import load_model
from igb_env import make_env, rollout_baseline, rollout_policy
from igb_env.config import load_env_config
from mtl_backends.build import transform_conflict

BASELINES = ("ew", "si", "igbv1")


def baselines_for(balancer: str) -> tuple[str, ...]:
    """The baselines that can run under ``balancer`` (EW's raw losses conflict with DB-MTL)."""
    return tuple(name for name in BASELINES if transform_conflict(name, balancer) is None)


def baseline_returns(configs: list[dict[str, Any]], cache: Path) -> dict[str, dict[str, float]]:
    """``{f"{group}/{instance}": {baseline: return}}`` (cached: the baselines never change)."""
    done: dict[str, dict[str, float]] = json.loads(cache.read_text()) if cache.is_file() else {}
    for g, config in enumerate(configs):
        env = make_env(config)
        for instance in env.config.test_instances:
            key = f"{g}/{instance}"
            for name in baselines_for(env.config.balancer.name):
                if name not in done.setdefault(key, {}):
                    done[key][name] = rollout_baseline(config, name, instance).total_reward
                    cache.write_text(json.dumps(done, indent=1))
        env.close()
    return done


def model_returns(model: Any, configs: list[dict[str, Any]]) -> dict[str, float]:
    """Deterministic return of ``model`` on every group's validation instances."""
    policy = model.policy
    assert isinstance(policy, SetActorCriticPolicy)
    layout = policy.layout
    out = {}
    for g, config in enumerate(configs):
        env = make_env(config)
        t = env.n_tasks

        def act(obs: np.ndarray, t: int = t) -> np.ndarray:
            padded = layout.pad(obs[None], t)
            action, _ = model.predict(padded, deterministic=True)
            return layout.unpad_action(action, t)[0]

        for instance in env.config.test_instances:
            rewards, _ = rollout_policy(env, act, instance)
            out[f"{g}/{instance}"] = float(sum(rewards))
        env.close()
    return out


def main() -> None:
    """Print the validation table of a run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoints", type=int, nargs="*", default=[])
    parser.add_argument("--cache", type=Path, default=Path("/work/runs/gen/val_baselines.json"))
    parser.add_argument("--json", type=Path, help="write every return here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_agent_config(args.run / "config.yaml")
    configs = group_env_configs(config)
    base = baseline_returns(configs, args.cache)
    models = {}
    for name in ("model", "best_model"):
        if (args.run / f"{name}.zip").is_file():
            models[name] = load_model(args.run, best=name == "best_model")
    for step in args.checkpoints:
        models[f"ckpt{step}"] = PPO.load(
            args.run / f"checkpoint-{step:09d}" / "model.zip", device="cpu"
        )
    results: dict[str, dict[str, float]] = {
        key: dict(v) for key, v in base.items() if int(key.split("/")[0]) < len(configs)
    }
    for name, model in models.items():
        for key, value in model_returns(model, configs).items():
            results[key][name] = value
    balancer = load_env_config(dict(configs[0])).balancer.name
    names = [*baselines_for(balancer), *models]
    tasks = [configs[g]["benchmark"]["n_tasks"] for g in range(len(configs))]
    print("| group | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for g, t in enumerate(tasks):
        keys = [k for k in results if k.startswith(f"{g}/")]
        cells = [f"{np.mean([results[k][n] for k in keys]):.3f}" for n in names]
        print(f"| T={t} | " + " | ".join(cells) + " |")
    overall = [f"{np.mean([r[n] for r in results.values()]):.3f}" for n in names]
    print("| all | " + " | ".join(overall) + " |")
    print()
    for n in names:
        diff = np.array([r[n] - r["igbv1"] for r in results.values()])
        print(f"{n}: {diff.mean():+.3f} vs IGBv1 ({int((diff > 0).sum())}/{len(diff)} wins)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
