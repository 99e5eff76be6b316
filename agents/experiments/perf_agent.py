"""``igb perf``, the agent path: what the env, exported policies and agent training cost.

Keys (``AGENT_KEYS``) measured by ``agent_overheads``; the timing helpers (back-to-back ratios,
medians, quartiles) are ``agents.experiments.perf``'s.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.build import build_model
from agents.config import AgentConfig
from agents.experiments.timing import k_steps, num_threads, paired_ratios, quartiles
from agents.vec_env import make_vec_env
from igb_env import make_env
from igb_env.config import config_sidecar, load_env_config
from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.build import build_trainer
from mtl_backends.config import TrainConfig, from_dict
from mtl_backends.features import FeatureTable
from mtl_backends.policy import PolicyNetwork, save_policy
from mtl_backends.policy.action_maps import make_action_map
from mtl_backends.policy.network import SetPolicyNetwork
from mtl_backends.weightings import PolicyWeighting, make_weighting

AGENT_KEYS: tuple[str, ...] = (
    "env_step_overhead",
    "val_reward_overhead",
    "policy_weighting_overhead",
    "igbv1_weighting_overhead",
    "set_policy_weighting_overhead",
    "set_policy_weighting_overhead_t10",
    "agent_env_steps_per_second",
    "agent_subproc2_speedup",
)
#: ``key -> [q25, q75]`` of the back-to-back ratios of the overhead keys: the measurement's
#: spread, to read a median against a target's margin.
OVERHEAD_QUARTILES = "agent_overhead_quartiles"
#: Back-to-back ratios per ``repeats`` for the overhead keys, each of a single call (one env step
#: or K trainer steps, ~60 ms): a single ratio varies by ~±10% on a quiet 2-vCPU VM even between
#: two identical trainers, so the median needs dozens of them to resolve a few percent.
RATIOS_PER_REPEAT = 7


def _env_config(tiny: bool, reward: str, steps: int) -> dict[str, Any]:
    """An ``IGBEnv`` config on the synthetic benchmark with a long budget (no episode ends)."""
    bench: dict[str, Any] = {"name": "synthetic", "n_tasks": 3}
    if tiny:
        bench.update(n_train=120, n_val=50, n_test=10, input_dim=16, output_dim=4, hidden=[12, 12])
    return {
        "benchmark": bench,
        "train": {"steps": steps, "base_window": [0, 1], "batch_size": 20 if tiny else 100},
        "steps_per_action": 5 if tiny else 25,
        "val_batch_size": 50 if tiny else 1000,
        "reward": {"name": reward},
    }


def agent_overheads(threads: int, repeats: int, tiny: bool) -> dict[str, Any]:
    """Costs of the RL path relative to plain training, measured side by side.

    The overheads are medians of ``RATIOS_PER_REPEAT * repeats`` ratios of back-to-back timings
    of one call each (``paired_ratios``); their quartiles are reported under
    ``OVERHEAD_QUARTILES``.

    * ``env_step_overhead``: one ``IGBEnv.step`` with a training-loss reward
      (``min_gap_decrease``) / the same K bare ``MTLTrainer`` steps (IGBv1, which the env's
      residual action 0 equals).
    * ``val_reward_overhead``: the same with the validation reward (``val_log_improvement``, a
      validation pass per env step).
    * ``policy_weighting_overhead``: an MTL step with ``PolicyWeighting`` (a random policy of the
      env's sidecar format) / an EW step.
    * ``igbv1_weighting_overhead``: an MTL step with IGBv1 / an EW step, timed in the same
      rounds: the cost of the heuristic that residual policies build on (its log transform and
      gap tracking), to read the policy's figure against.
    * ``set_policy_weighting_overhead``, ``set_policy_weighting_overhead_t10``: an MTL step with
      ``PolicyWeighting`` of a random set policy in the generalist's format (feature table v2,
      the ``interp`` map, ``configs/agents/generalist.yaml``'s width; issue 14's target: at most
      1.05) / an EW step, at T = 3 (in the rounds above) and at T = 10 (rounds of their own).
    * ``agent_env_steps_per_second``: env steps per second while SB3 PPO learns on the env
      (rollouts, resets and updates included; two rollouts of 144 steps, i.e. 288 env steps
      of the default 1000-step episodes; the ``tiny`` preset and 10-step rollouts when ``tiny``).
    * ``agent_subproc2_speedup``: env steps per second of the same PPO learning on two envs in
      worker processes (``SubprocVecEnv``, one torch thread each, the same rollout size) / on one
      env in this process; about 2 on two idle cores, about 1 on one.

    Args:
        threads: Torch threads.
        repeats: Interleaved repeats (medians are reported); the overhead keys take
            ``RATIOS_PER_REPEAT`` ratios per repeat.
        tiny: Tiny model and episodes (for tests; the numbers are then not meaningful).

    Returns:
        The keys of ``AGENT_KEYS`` and ``OVERHEAD_QUARTILES``.
    """
    budget = 10**7  # never reached: no episode ends inside the measurements
    n_ratios = repeats if tiny else RATIOS_PER_REPEAT * repeats
    out: dict[str, Any] = {}
    with num_threads(threads):
        # Env steps (both reward kinds) vs the same K bare trainer steps, all interleaved.
        actions: dict[str, Callable[[], object]] = {}
        envs = []
        for key, reward in (
            ("env_step_overhead", "min_gap_decrease"),
            ("val_reward_overhead", "val_log_improvement"),
        ):
            cfg = _env_config(tiny, reward, budget)
            env = make_env(cfg)
            env.reset(seed=0, options={"instance": 0})
            envs.append(env)
            actions[key] = _env_stepper(env)
        k = int(cfg["steps_per_action"])
        bench = make_benchmark(**cfg["benchmark"])
        train = from_dict(TrainConfig, cfg["train"])
        bare = build_trainer(bench, make_weighting("igbv1"), make_balancer("sum"), train, seed=0)
        actions["bare"] = k_steps(bare, k)
        for action in actions.values():  # warm-up (past the base window)
            action()
        ratios = paired_ratios(actions, "bare", n_ratios, 1)
        # PolicyWeighting vs IGBv1 vs EW in plain trainers on the same benchmark, with a random
        # policy in the format of the training-loss env above.
        env = envs[0]
        obs_dim = int(np.prod(env.observation_space.shape or (0,)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = PolicyNetwork([obs_dim, 64, 64, env.n_tasks])
        sidecar = env.policy_sidecar("random")
        for env in envs:
            env.close()
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_policy(f"{tmp}/mlp", net, sidecar)
            set_folder = _random_set_policy(f"{tmp}/set", cfg)
            weightings = {
                "policy": PolicyWeighting(folder),
                "set_policy": PolicyWeighting(set_folder),
                "igbv1": make_weighting("igbv1"),
                "ew": make_weighting("ew"),
            }
            ratios.update(_weighting_ratios(bench, train, weightings, k, n_ratios))
            # The set policy at T = 10 (its per-task network runs once per task).
            bench10 = make_benchmark(**{**cfg["benchmark"], "n_tasks": 10})
            weightings = {"set_policy_t10": PolicyWeighting(set_folder), "ew": make_weighting("ew")}
            ratios.update(_weighting_ratios(bench10, train, weightings, k, n_ratios))
        ratios["policy_weighting_overhead"] = ratios.pop("policy")
        ratios["set_policy_weighting_overhead"] = ratios.pop("set_policy")
        ratios["set_policy_weighting_overhead_t10"] = ratios.pop("set_policy_t10")
        ratios["igbv1_weighting_overhead"] = ratios.pop("igbv1")
        for key, values in ratios.items():
            out[key] = statistics.median(values)
        out[OVERHEAD_QUARTILES] = {key: quartiles(values) for key, values in ratios.items()}
        # One env and two worker envs, alternated (medians of the rates).
        rates: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(1 if tiny else max(1, min(repeats, 3))):
            for n_envs in rates:
                rates[n_envs].append(agent_steps_per_second(tiny, n_envs=n_envs))
        one, two = (float(np.median(rates[n])) for n in (1, 2))
        out["agent_env_steps_per_second"] = one
        out["agent_subproc2_speedup"] = two / one
    return out


def _weighting_ratios(
    bench: Any, train: TrainConfig, weightings: dict[str, Any], k: int, n_ratios: int
) -> dict[str, list[float]]:
    """Back-to-back ratios of K trainer steps with each weighting / with ``weightings["ew"]``."""
    trainers = {
        name: build_trainer(bench, weighting, make_balancer("sum"), train, seed=0)
        for name, weighting in weightings.items()
    }
    for tr in trainers.values():  # one full hold period per call, after a warm-up one
        for _ in range(k):
            tr.step()
    return paired_ratios({name: k_steps(tr, k) for name, tr in trainers.items()}, "ew", n_ratios, 1)


def _random_set_policy(folder: str, env_config: dict[str, Any]) -> Path:
    """A random set policy in the generalist's format, for the env settings ``env_config``.

    Feature table v2, the ``interp`` map and the hidden width of
    ``configs/agents/generalist.yaml``; the weights are PyTorch's seeded initialisation, which
    is what the cost depends on (not on the values).
    """
    cfg = load_env_config({**env_config, "feature_table": "v2", "action_mode": "interp"})
    spec = cfg.feature_spec
    table = FeatureTable(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = SetPolicyNetwork(
            len(table.per_task),
            len(table.global_),
            make_action_map(cfg.action_mode, cfg.tau).action_dim(1) - 1,
            hidden=64,
        )
    sidecar = config_sidecar(cfg, "random")
    return save_policy(folder, net, sidecar)


def _env_stepper(env: Any) -> Callable[[], None]:
    """One env step with the zero action (residual mode: IGBv1's weights)."""
    action = np.zeros(env.n_tasks, dtype=np.float32)

    def run() -> None:
        env.step(action)

    return run


def agent_steps_per_second(tiny: bool, n_envs: int = 1, vec_env: str | None = None) -> float:
    """Env steps per second of SB3 PPO learning (rollouts, resets and updates).

    ``n_envs > 1`` runs the envs in worker processes (``SubprocVecEnv``, started before the clock
    starts) unless ``vec_env`` says otherwise (``batched``: one stacked process), with the same
    total rollout size, so the rates compare the same learning.
    """
    # The default design's PPO (144-step rollouts = 4 episodes of 36 actions, minibatch 64,
    # 10 epochs; ``AgentConfig``'s defaults) over two rollouts, so that resets and updates weigh as
    # in real training (a 32-step rollout with 2 epochs hid the workers' gain).
    rollout = 10 if tiny else 144
    n_envs = max(int(n_envs), 1)
    n_steps = max(rollout // n_envs, 1)
    base = AgentConfig(algorithm="ppo", seed=0)
    hyperparameters = (
        {"n_steps": n_steps, "batch_size": n_steps * n_envs, "n_epochs": 2}
        if tiny
        else {**base.hyperparameters, "n_steps": n_steps}
    )
    config = dataclasses.replace(
        base,
        env={"preset": "tiny"} if tiny else {},
        hyperparameters=hyperparameters,
        n_envs=n_envs,
        vec_env=vec_env or ("subproc" if n_envs > 1 else "dummy"),
    )
    venv = make_vec_env(config)
    model = build_model(config, venv, tensorboard_log=None)
    start = time.perf_counter()
    model.learn(total_timesteps=2 * n_steps * n_envs)
    rate = model.num_timesteps / (time.perf_counter() - start)
    venv.close()
    return float(rate)


__all__ = ["AGENT_KEYS", "OVERHEAD_QUARTILES", "agent_overheads", "agent_steps_per_second"]
