"""Overhead ratios measured side by side in one process (``igb perf``).

Every ratio compares methods timed in the same process, at a stated torch thread count, with the
repeats interleaved (method A, method B, method A, ...) so that drifts of the machine's load hit
all methods alike, and reports the median over repeats. Keys (later issues add more):

* ``jacobian_batched_speedup``: ``"T=<n>" -> "threads=<k>" ->`` time of the sequential per-task
  gradients / time of the batched ones (``> 1``: batched is faster), on the ``synthetic`` model.
* ``balancer_cost_vs_ew``: ``"T=<n>" -> name ->`` training-step time / EW step time, for every
  registered balancer (with EW's weighting, or SI's where the balancer needs the log transform) and
  its flat variant ``f-<name>`` (Phan et al., ``ρ = 2``).
* ``ew_step_ms``: ``"T=<n>" ->`` the EW step time (ms) the ratios divide by.
* ``env_step_overhead``, ``val_reward_overhead``, ``policy_weighting_overhead``,
  ``igbv1_weighting_overhead``, ``agent_env_steps_per_second``, ``agent_subproc2_speedup``:
  the RL path's costs (``agent_overheads``); the overheads are medians of back-to-back ratios
  (``paired_ratios``) and ``agent_overhead_quartiles`` gives their spread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from mtl_backends.balancers import GRADIENT_BALANCERS, make_balancer
from mtl_backends.benchmarks import Synthetic
from mtl_backends.config import TrainConfig
from mtl_backends.jacobian import jacobian
from mtl_backends.trainer import MTLTrainer
from mtl_backends.weightings import make_weighting

TASK_COUNTS: tuple[int, ...] = (3, 10)
FLAT_RHO = 2.0


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _benchmark(n_tasks: int, tiny: bool) -> Synthetic:
    if tiny:
        return Synthetic(
            n_tasks=n_tasks,
            n_train=120,
            n_val=10,
            n_test=10,
            input_dim=16,
            output_dim=4,
            hidden=(12, 12),
        )
    return Synthetic(n_tasks=n_tasks, n_train=1000, n_val=10, n_test=10)


def _seconds(action: Callable[[], object], calls: int) -> float:
    """Wall seconds of ``calls`` calls of ``action``."""
    start = time.perf_counter()
    for _ in range(calls):
        action()
    return time.perf_counter() - start


def interleaved_medians(
    actions: dict[str, Callable[[], object]], repeats: int, calls: int
) -> dict[str, float]:
    """Median seconds per call of each action, timing ``calls`` calls per repeat, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            times[name].append(_seconds(action, calls) / calls)
    return {name: statistics.median(ts) for name, ts in times.items()}


def paired_ratios(
    actions: Mapping[str, Callable[[], object]], reference: str, repeats: int, calls: int
) -> dict[str, list[float]]:
    """Per-repeat time ratios of each action to ``reference``, timed back to back.

    Each repeat times every action once (``calls`` calls), in forward order on even repeats and
    in reverse order on odd ones, and divides each time by the reference's time of the same
    repeat. A ratio of neighbours cancels the load drifts that move both times, and the
    alternating order cancels the advantage of running first (or last) in a repeat; the median
    of the ratios is then a steadier estimate than a ratio of medians.

    Returns:
        ``name -> ratios`` (one per repeat) for every action except ``reference``.
    """
    if reference not in actions:
        raise ValueError(f"reference {reference!r} is not one of the actions {sorted(actions)}")
    names = list(actions)
    out: dict[str, list[float]] = {name: [] for name in names if name != reference}
    for r in range(repeats):
        order = names if r % 2 == 0 else reversed(names)
        seconds = {name: _seconds(actions[name], calls) for name in order}
        for name in out:
            out[name].append(seconds[name] / seconds[reference])
    return out


def _quartiles(values: Sequence[float]) -> list[float]:
    """``[q25, q75]`` of ``values`` (both the value itself for one value)."""
    if len(values) < 2:
        return [float(values[0])] * 2
    q = statistics.quantiles(values, n=4, method="inclusive")
    return [float(q[0]), float(q[2])]


def jacobian_batched_speedup(
    task_counts: Sequence[int], threads: Sequence[int], repeats: int, tiny: bool
) -> dict[str, dict[str, float]]:
    """Sequential / batched time of the per-task gradients of the synthetic model's shared part."""
    out: dict[str, dict[str, float]] = {}
    calls = 1 if tiny else 5
    for n_tasks in task_counts:
        bench = _benchmark(n_tasks, tiny)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = bench.build_model()
        data = bench.split("train")
        batch = min(100, len(data))
        losses = bench.losses(model(data.inputs[:batch]), data.targets[:batch])
        params = model.shared_parameters()
        row: dict[str, float] = {}
        for k in threads:
            with num_threads(k):
                for method in ("batched", "sequential"):  # warm-up
                    jacobian(losses, params, method=method)
                med = interleaved_medians(
                    {
                        "batched": functools.partial(jacobian, losses, params, "batched"),
                        "sequential": functools.partial(jacobian, losses, params, "sequential"),
                    },
                    repeats,
                    calls,
                )
            row[f"threads={k}"] = med["sequential"] / med["batched"]
        out[f"T={n_tasks}"] = row
    return out


def _method_trainers(n_tasks: int, tiny: bool) -> dict[str, MTLTrainer]:
    bench = _benchmark(n_tasks, tiny)
    batch = 20 if tiny else 100
    trainers: dict[str, MTLTrainer] = {}

    def build(balancer: str, flat: float | None) -> MTLTrainer:
        b = make_balancer(balancer)
        weighting = "si" if b.requires_transform == "log" else "ew"
        cfg = TrainConfig(steps=10**9, batch_size=batch, base_window=(0, 1), flat_rho=flat)
        return MTLTrainer(bench, make_weighting(weighting), b, cfg, seed=0)

    trainers["ew"] = build("sum", None)
    for name in sorted(GRADIENT_BALANCERS):
        trainers[name] = build(name, None)
    for name in sorted(GRADIENT_BALANCERS):
        trainers[f"f-{name}"] = build(name, FLAT_RHO)
    return trainers


def balancer_cost_vs_ew(
    task_counts: Sequence[int], threads: int, repeats: int, tiny: bool
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Step time of every balancer (and flat variant) / EW step time, and the EW step time (ms)."""
    ratios: dict[str, dict[str, float]] = {}
    ew_ms: dict[str, float] = {}
    calls = 1 if tiny else 3
    with num_threads(threads):
        for n_tasks in task_counts:
            trainers = _method_trainers(n_tasks, tiny)
            for trainer in trainers.values():  # warm-up
                trainer.step()
            med = interleaved_medians(
                {name: _stepper(trainer) for name, trainer in trainers.items()}, repeats, calls
            )
            key = f"T={n_tasks}"
            ew_ms[key] = 1e3 * med["ew"]
            ratios[key] = {name: med[name] / med["ew"] for name in trainers if name != "ew"}
    return ratios, ew_ms


def _stepper(trainer: MTLTrainer) -> Callable[[], None]:
    def step() -> None:
        trainer.step()

    return step


def run_perf(
    threads: int | None = None,
    repeats: int = 5,
    tiny: bool = False,
    task_counts: Sequence[int] = TASK_COUNTS,
) -> dict[str, Any]:
    """Measure every ``igb perf`` key.

    Args:
        threads: Torch threads for the balancer costs (default: the current count). The Jacobian
            speedup is always measured at 1 and 2 threads.
        repeats: Interleaved repeats (medians are reported).
        tiny: A tiny model and one call per repeat (for tests; ratios are then not meaningful).
        task_counts: Numbers of tasks of the synthetic benchmark.

    Returns:
        A JSON-ready dict of the keys listed in the module docstring plus ``threads``,
        ``repeats``, ``tiny`` and ``torch``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n_threads = torch.get_num_threads() if threads is None else int(threads)
    if n_threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    ratios, ew_ms = balancer_cost_vs_ew(task_counts, n_threads, repeats, tiny)
    return {
        "threads": n_threads,
        "repeats": repeats,
        "tiny": tiny,
        "torch": torch.__version__,
        "jacobian_batched_speedup": jacobian_batched_speedup(task_counts, (1, 2), repeats, tiny),
        "balancer_cost_vs_ew": ratios,
        "ew_step_ms": ew_ms,
        **agent_overheads(n_threads, repeats, tiny),
    }


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of ``run_perf``'s result."""
    lines = [
        f"igb perf: torch {result['torch']}, {result['threads']} thread(s) for step costs, "
        f"median of {result['repeats']} interleaved repeats"
        + (" (tiny model: ratios not meaningful)" if result["tiny"] else ""),
        "",
        "jacobian_batched_speedup (sequential time / batched time; > 1: batched faster)",
    ]
    for key, row in result["jacobian_batched_speedup"].items():
        lines.append(f"  {key:<6s} " + "  ".join(f"{k}: {v:5.2f}" for k, v in row.items()))
    costs = result["balancer_cost_vs_ew"]
    keys = list(costs)
    lines += ["", "balancer_cost_vs_ew (step time / EW step time)"]
    lines.append(f"  {'method':<14s}" + "".join(f"{k:>10s}" for k in keys))
    lines.append(
        f"  {'EW step (ms)':<14s}" + "".join(f"{result['ew_step_ms'][k]:10.2f}" for k in keys)
    )
    for name in costs[keys[0]]:
        lines.append(f"  {name:<14s}" + "".join(f"{costs[k][name]:10.2f}" for k in keys))
    lines += ["", "agent path (ratios: RL path time / plain training time)"]
    quartiles = result.get(OVERHEAD_QUARTILES, {})
    for key in AGENT_KEYS:
        if key in result:
            spread = quartiles.get(key)
            note = f"   (quartiles {spread[0]:.3f}-{spread[1]:.3f})" if spread else ""
            lines.append(f"  {key:<28s}{result[key]:10.3f}{note}")
    return "\n".join(lines)


def all_finite(obj: Any) -> bool:
    """Whether every number in a nested dict/list is finite."""
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(all_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


# -- agent-side overheads (issue 7) ----------------------------------------------------------------
AGENT_KEYS: tuple[str, ...] = (
    "env_step_overhead",
    "val_reward_overhead",
    "policy_weighting_overhead",
    "igbv1_weighting_overhead",
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
    import tempfile

    import numpy as np

    from igb_env import make_env
    from mtl_backends.benchmarks import make_benchmark
    from mtl_backends.config import from_dict
    from mtl_backends.weightings.policy import PolicyNetwork, PolicyWeighting, save_policy

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
        bare = MTLTrainer(bench, make_weighting("igbv1"), make_balancer("sum"), train, seed=0)
        actions["bare"] = _k_steps(bare, k)
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
            folder = save_policy(tmp, net, sidecar)
            trainers = {
                "policy": MTLTrainer(
                    bench, PolicyWeighting(folder), make_balancer("sum"), train, seed=0
                ),
                "igbv1": MTLTrainer(
                    bench, make_weighting("igbv1"), make_balancer("sum"), train, seed=0
                ),
                "ew": MTLTrainer(bench, make_weighting("ew"), make_balancer("sum"), train, seed=0),
            }
            for tr in trainers.values():  # one full hold period per call, after a warm-up one
                for _ in range(k):
                    tr.step()
            ratios.update(
                paired_ratios(
                    {name: _k_steps(tr, k) for name, tr in trainers.items()},
                    "ew",
                    n_ratios,
                    1,
                )
            )
        ratios["policy_weighting_overhead"] = ratios.pop("policy")
        ratios["igbv1_weighting_overhead"] = ratios.pop("igbv1")
        for key, values in ratios.items():
            out[key] = statistics.median(values)
        out[OVERHEAD_QUARTILES] = {key: _quartiles(values) for key, values in ratios.items()}
        # One env and two worker envs, alternated (medians of the rates).
        rates: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(1 if tiny else max(1, min(repeats, 3))):
            for n_envs in rates:
                rates[n_envs].append(_agent_steps_per_second(tiny, n_envs=n_envs))
        one, two = (float(np.median(rates[n])) for n in (1, 2))
        out["agent_env_steps_per_second"] = one
        out["agent_subproc2_speedup"] = two / one
    return out


def _env_stepper(env: Any) -> Callable[[], None]:
    """One env step with the zero action (residual mode: IGBv1's weights)."""
    import numpy as np

    action = np.zeros(env.n_tasks, dtype=np.float32)

    def run() -> None:
        env.step(action)

    return run


def _k_steps(trainer: MTLTrainer, k: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(k):
            trainer.step()

    return run


def _agent_steps_per_second(tiny: bool, n_envs: int = 1) -> float:
    """Env steps per second of SB3 PPO learning (rollouts, resets and updates).

    ``n_envs > 1`` runs the envs in worker processes (``SubprocVecEnv``, started before the clock
    starts) with the same total rollout size, so the two rates compare the same learning.
    """
    from agents.train import AgentConfig, build_model, make_vec_env

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
        vec_env="subproc" if n_envs > 1 else "dummy",
    )
    venv = make_vec_env(config)
    model = build_model(config, venv, tensorboard_log=None)
    start = time.perf_counter()
    model.learn(total_timesteps=2 * n_steps * n_envs)
    rate = model.num_timesteps / (time.perf_counter() - start)
    venv.close()
    return float(rate)
