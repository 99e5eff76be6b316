"""Overhead ratios measured side by side in one process (``igb perf``).

Every ratio compares methods timed in the same process, at a stated torch thread count, with the
repeats interleaved (``agents.experiments.timing``), and reports the median over repeats. Keys:

* ``jacobian_batched_speedup``: ``"T=<n>" -> "threads=<k>" ->`` time of the sequential per-task
  gradients / time of the batched ones (``> 1``: batched is faster), on the ``synthetic`` model.
* ``balancer_cost_vs_ew``: ``"T=<n>" -> name ->`` training-step time / EW step time, for every
  registered balancer (with EW's weighting, or SI's where the balancer needs the log transform) and
  its flat variant ``f-<name>`` (Phan et al., ``ρ = 2``).
* ``ew_step_ms``: ``"T=<n>" ->`` the EW step time (ms) the ratios divide by.
* ``batched_env_steps_per_second``, ``batched_env_speedup``,
  ``agent_batched16_env_steps_per_second``: the batched env (``agents.experiments.perf_batched``).
* ``env_step_overhead``, ``val_reward_overhead``, ``policy_weighting_overhead``,
  ``igbv1_weighting_overhead``, ``agent_env_steps_per_second``, ``agent_subproc2_speedup``:
  the RL path's costs (``agent_overheads``); the overheads are medians of back-to-back ratios
  (``paired_ratios``) and ``agent_overhead_quartiles`` gives their spread.
"""

from __future__ import annotations

import functools
import math
import os
import platform
from collections.abc import Callable, Sequence
from typing import Any

import torch

from agents.experiments.cells import cpu_info
from agents.experiments.perf_agent import AGENT_KEYS, OVERHEAD_QUARTILES, agent_overheads
from agents.experiments.perf_batched import BATCHED_KEYS, batched_env_rates
from agents.experiments.timing import interleaved_medians, num_threads
from mtl_backends.balancers import GRADIENT_BALANCERS, make_balancer
from mtl_backends.benchmarks import Synthetic
from mtl_backends.build import build_trainer
from mtl_backends.config import TrainConfig
from mtl_backends.trainer import MTLTrainer
from mtl_backends.updates import jacobian
from mtl_backends.weightings import make_weighting

TASK_COUNTS: tuple[int, ...] = (3, 10)
FLAT_RHO = 2.0


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
        return build_trainer(bench, make_weighting(weighting), b, cfg, seed=0)

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
        ``repeats``, ``tiny``, ``torch`` and ``host`` (the machine the figures were taken on:
        architecture, logical CPUs, CPU model, SIMD flags and torch's kernel set; timings from
        different hosts are not comparable).
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
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), **cpu_info()},
        "jacobian_batched_speedup": jacobian_batched_speedup(task_counts, (1, 2), repeats, tiny),
        "balancer_cost_vs_ew": ratios,
        "ew_step_ms": ew_ms,
        **agent_overheads(n_threads, repeats, tiny),
        **batched_env_rates(n_threads, repeats, tiny),
    }


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of ``run_perf``'s result."""
    lines = [
        f"igb perf: torch {result['torch']}, {result['threads']} thread(s) for step costs, "
        f"median of {result['repeats']} interleaved repeats"
        + (" (tiny model: ratios not meaningful)" if result["tiny"] else ""),
        _host_line(result.get("host")),
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
    if "batched_env_steps_per_second" in result:
        lines += ["", "batched env (env steps per second; speedup: N = 16, 2 threads / 2 workers)"]
        for preset, row in result["batched_env_steps_per_second"].items():
            rates = "  ".join(f"{k}: {v:7.1f}" for k, v in row.items())
            speedup = result["batched_env_speedup"][preset]
            lines.append(f"  {preset:<13s} {rates}   speedup {speedup:5.2f}")
        lines.append(
            "  agent_batched16_env_steps_per_second"
            f"{result['agent_batched16_env_steps_per_second']:10.1f}"
        )
    return "\n".join(lines)


def _host_line(host: dict[str, Any] | None) -> str:
    """The ``host`` line of the table (results written before it existed lack the key)."""
    if not host:
        return "host: not recorded"
    simd = host.get("simd")
    return (
        f"host: {host.get('model') or 'unknown CPU'}, {host.get('cpus')} CPUs "
        f"({host.get('machine')}), torch kernels {host.get('torch_capability')}, SIMD "
        + (" ".join(simd) if simd else "unknown")
    )


def all_finite(obj: Any) -> bool:
    """Whether every number in a nested dict/list is finite."""
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(all_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


__all__ = ["AGENT_KEYS", "BATCHED_KEYS", "all_finite", "format_table", "run_perf"]
