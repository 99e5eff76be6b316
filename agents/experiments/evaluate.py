"""Evaluate a trained agent or an exported policy on held-out instances (``igb evaluate``).

Two views of the same policy, on the same instances (the env's ``test_set`` unless ``instances``
are given):

1. **Env rollouts**: the policy's episode return in the env it was trained in, beside the EW and
   IGBv1 rollouts of the same instances (``igb_env.rollout_baseline``: same trainer, decision
   points and reward), with paired differences against IGBv1.
2. **Plain MTL runs**: a generated experiment (``evaluation_experiment``) run by the comparison
   runner: ``PolicyWeighting`` in a plain ``MTLTrainer`` (no env, no SB3) beside EW, SI and IGBv1,
   under the env's balancer and every extra ``balancers`` entry, each instance seeding its
   benchmark as the env does; test Δm (%) against each instance's STL references, mean ± std over
   instances, and paired differences against IGBv1 and SI under the same balancer (mean, std,
   wins, 95% t-interval).

With other agent seeds of the same design (``agent_seeds``: their run or policy folders), every
seed's policy runs in the plain MTL runs as ``learned policy s0`` (``target``), ``s1``, ...; the
table adds the summary over agent seeds of ``agents.experiments.rliable_summary`` (IQM and mean of
Δm with stratified-bootstrap intervals, the strata being the instances and the runs within each
the agent seeds; the probability of a lower Δm than the reference, IGBv1 by default). The env
rollouts are those of ``target``.

A run folder is evaluated through its exported policy (``RUN/policy``, exported first when missing
or older than ``RUN/model.zip``; ``best=True`` uses ``RUN/best_model.zip`` and ``RUN/policy-best``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from agents.config import load_agent_config
from agents.experiments.backends import LocalBackend
from agents.experiments.cells import load_records
from agents.experiments.config import (
    BenchmarkEntry,
    ExperimentConfig,
    MethodEntry,
    PlotConfig,
    method_label,
)
from agents.experiments.grid import plan_grid
from agents.experiments.rliable_summary import summarise, summary_dicts, summary_notes
from agents.experiments.rliable_summary import summary_table as seeds_table
from agents.experiments.rows import Row, benchmark_rows
from agents.experiments.runner import compare
from agents.experiments.stats import mean_std, paired
from agents.experiments.summary import row_summaries, summary_table
from agents.export import export_model
from agents.train import load_model
from igb_env import make_env, rollout_baseline, rollout_policy
from igb_env.config import load_env_config
from igb_env.instances import BenchmarkCache
from mtl_backends.policy import SIDECAR_FILE, load_policy
from mtl_backends.policy.files import resolve_policy as resolve_policy_folder
from mtl_backends.progress import Progress

BASELINES: tuple[str, ...] = ("ew", "si", "igbv1")
PAIRED_AGAINST: tuple[tuple[str, str], ...] = (("igbv1", "IGBv1"), ("si", "SI"))
#: Label of the learned policy's rows (with agent seeds: ``learned policy s<i>``).
POLICY_LABEL = "learned policy"


def default_out(target: str | Path) -> Path:
    """Where ``igb evaluate TARGET`` writes without ``--out``: ``TARGET/evaluation.json``.

    Raises:
        ValueError: ``target`` names a shipped policy, whose folder is package data.
    """
    if resolve_policy_folder(target) != Path(target):
        raise ValueError(
            f"{str(target)!r} names a shipped policy, whose folder is package data; give --out, "
            "the JSON file to write (e.g. --out runs/eval-generalist/evaluation.json)"
        )
    return Path(target) / "evaluation.json"


def resolve_policy(target: str | Path, best: bool = False) -> tuple[Path, dict[str, Any]]:
    """The policy folder and env config of a run folder or an exported policy folder.

    Args:
        target: A run folder of ``igb train-agent``, a policy folder of ``igb export``, or the
            name of a shipped policy (``generalist``).
        best: For a run, use its best held-out model (``best_model.zip``) instead of the final one.

    Raises:
        FileNotFoundError: ``target`` is none of these.
    """
    target = resolve_policy_folder(target)
    if (target / SIDECAR_FILE).is_file():
        sidecar = json.loads((target / SIDECAR_FILE).read_text())
        if not isinstance(sidecar.get("env_config"), Mapping):
            raise ValueError(
                f"policy {str(target)!r} has no env_config in its sidecar; evaluate its run folder"
            )
        return target, dict(sidecar["env_config"])
    if (target / "config.yaml").is_file():
        env_config = dict(load_agent_config(target / "config.yaml").env)
        model_file = target / ("best_model.zip" if best else "model.zip")
        policy = target / ("policy-best" if best else "policy")
        if not model_file.is_file():
            raise FileNotFoundError(f"{str(model_file)!r} does not exist; did the run finish?")
        sidecar_file = policy / SIDECAR_FILE
        if not sidecar_file.is_file() or sidecar_file.stat().st_mtime < model_file.stat().st_mtime:
            export_model(load_model(target, best=best), env_config, policy)
        return policy, env_config
    raise FileNotFoundError(
        f"{str(target)!r} is neither an agent run folder (config.yaml) nor a policy folder "
        f"({SIDECAR_FILE})"
    )


def held_out_instances(env_config: Mapping[str, Any], instances: Sequence[int] | None) -> list[int]:
    """``instances`` when given, else the env's ``test_set``.

    Raises:
        ValueError: Neither is available.
    """
    if instances:
        return [int(i) for i in instances]
    held = load_env_config(dict(env_config)).test_instances
    if len(held) == 0:
        raise ValueError(
            "no held-out instances: the env config has no test_set; pass --instances SEED ..."
        )
    return [int(i) for i in held]


def evaluation_experiment(
    env_config: Mapping[str, Any],
    policy: str | Path,
    instances: Sequence[int],
    balancers: Sequence[str] = (),
    stl_cache: str | None = None,
    agent_seeds: Sequence[str | Path] = (),
) -> ExperimentConfig:
    """The plain MTL runs of ``igb evaluate`` as an experiment.

    The env's benchmark with every instance seeding it as the env does (and its variation when the
    env draws one), the env's training settings, EW / SI / IGBv1 / the policy under the env's
    balancer and every extra one. With ``agent_seeds`` (policy folders of other agent seeds of the
    same design) the policies are ``learned policy s0`` (``policy``), ``s1``, ... .
    """
    env = load_env_config(dict(env_config))
    names = [env.balancer.name, *[b for b in dict.fromkeys(balancers) if b != env.balancer.name]]
    return ExperimentConfig(
        benchmarks=(
            BenchmarkEntry(
                name=env.benchmark.name,
                kwargs=dict(env.benchmark.kwargs),
                train=env.train,
                instances=True,
                variation=env.variation,
            ),
        ),
        weightings=(
            *[MethodEntry(w) for w in BASELINES],
            *_policy_entries([policy, *agent_seeds]),
        ),
        balancers=tuple(
            MethodEntry(b, dict(env.balancer.kwargs) if b == env.balancer.name else {})
            for b in names
        ),
        seeds=tuple(int(i) for i in instances),
        stl_cache=stl_cache,
        plots=PlotConfig(delta_m_bars=False, trajectory_points=0),
    )


def _policy_entries(policies: Sequence[str | Path]) -> list[MethodEntry]:
    """One ``policy`` entry per agent seed: ``learned policy``, or ``learned policy s<i>``."""
    if len(policies) == 1:
        # No label: the entry's display name is the policy weighting's own label.
        return [MethodEntry("policy", {"path": str(policies[0])})]
    return [
        MethodEntry("policy", {"path": str(p)}, label=f"{POLICY_LABEL} s{i}")
        for i, p in enumerate(policies)
    ]


def _rollout_job(env_config: dict[str, Any], policy: str | None, seed: int) -> float:
    """Return of one env episode: the policy (``policy`` path) or a baseline name."""
    torch.set_num_threads(1)
    if policy is None or policy in BASELINES:
        return rollout_baseline(env_config, policy or "igbv1", seed).total_reward
    loaded = load_policy(policy)
    env = make_env(env_config)
    rewards, _ = rollout_policy(env, lambda obs: loaded.act(obs).numpy(), seed)
    return float(sum(rewards))


def _rollouts(
    backend: LocalBackend | None,
    env_config: dict[str, Any],
    policy: Path,
    seeds: Sequence[int],
    progress_bar: bool,
) -> dict[str, Any]:
    """Env returns of the policy, EW and IGBv1 on ``seeds``, and the policy's gain over IGBv1."""
    who = ("policy", "ew", "igbv1")
    jobs = [(env_config, str(policy) if w == "policy" else w, s) for w in who for s in seeds]
    done = (
        (_rollout_job(*job) for job in jobs)
        if backend is None
        else backend.executor.map(_rollout_job, *zip(*jobs, strict=True))
    )
    returns: list[float] = []
    with Progress(len(jobs), "env rollouts", "episode", disable=not progress_bar) as bar:
        for value in done:
            returns.append(value)
            bar.update(1)
    per = {w: returns[i * len(seeds) : (i + 1) * len(seeds)] for i, w in enumerate(who)}
    out: dict[str, Any] = {}
    for w, values in per.items():
        mean, std = mean_std(values)
        out[w] = {"mean": mean, "std": 0.0 if len(values) < 2 else std, "returns": values}
    # Higher return is better: a win is an instance where the policy's return is higher.
    gain = paired([p - b for p, b in zip(per["policy"], per["igbv1"], strict=True)])
    out["policy_vs_igbv1"] = {
        **asdict(gain),
        "wins": int(sum(p > b for p, b in zip(per["policy"], per["igbv1"], strict=True))),
    }
    return out


def evaluate(
    target: str | Path,
    instances: Sequence[int] | None = None,
    balancers: Sequence[str] = (),
    out: str | Path | None = None,
    workers: int = 1,
    stl_cache: str | None = ".igb-cache/stl",
    best: bool = False,
    variation: bool | None = None,
    progress_bar: bool = True,
    agent_seeds: Sequence[str | Path] = (),
    reference: str = PAIRED_AGAINST[0][0],
) -> dict[str, Any]:
    """Evaluate a run's policy (or an exported policy) on held-out instances; write JSON.

    Args:
        target: Agent run folder, exported policy folder or a shipped policy's name.
        instances: Held-out instance seeds (default: the env's ``test_set``).
        balancers: Extra balancers to run every method under (besides the env's own).
        out: JSON path (default ``TARGET/evaluation.json``; required for a shipped policy's
            name); the table goes beside it as ``.md``
            and the runs' cells and report into a folder named after it.
        workers: Processes for the runs.
        stl_cache: STL reference cache folder (``None``: no cache).
        best: For a run folder, evaluate ``best_model.zip``.
        variation: Draw each instance's benchmark arguments with the benchmark's
            ``sample_variation`` (``True``: e.g. new task scales, noise floors and label fractions
            for ``synthetic``), or not (``False``); ``None``: as the policy's env was configured.
        progress_bar: Show progress bars (stderr) over the rollouts, STL references and runs.
        agent_seeds: Run or policy folders of other agent seeds of ``target``'s design (trained
            for the same env): their policies join the plain MTL runs, and the table adds the
            summary over agent seeds.
        reference: Baseline (one of ``BASELINES``) of the summary's probability of improvement.

    Returns:
        The results (also written as JSON): ``rollouts``, ``summary`` (one entry per table row),
        ``table``, and ``instance_specs`` (the benchmark arguments of every instance); with
        ``agent_seeds`` also ``agent_seeds`` (the folders, ``target`` first) and
        ``agent_seed_summary`` (``rliable_summary.RunsSummary.to_dict`` by row).

    Raises:
        ValueError: ``reference`` is not a baseline, or an agent seed's policy was trained for
            another env than ``target``'s.
    """
    if reference not in BASELINES:
        raise ValueError(
            f"reference {reference!r} is not a baseline of igb evaluate; choose one of "
            f"{', '.join(BASELINES)}"
        )
    path = Path(out) if out is not None else default_out(target)
    policy, env_config = resolve_policy(target, best=best)
    others = [resolve_policy(t, best=best) for t in agent_seeds]
    for t, (_, other_env) in zip(agent_seeds, others, strict=True):
        if other_env != env_config:
            raise ValueError(
                f"agent seed {str(t)!r} was trained for another env than {str(target)!r}; the "
                "agent seeds of one evaluation must share the env config (only the seed differs)"
            )
    if variation is not None:
        env_config = {**env_config, "variation": bool(variation)}
    seeds = held_out_instances(env_config, instances)
    loaded = load_env_config(dict(env_config))
    cache = BenchmarkCache(loaded.benchmark, variation=loaded.variation)
    specs = {s: cache.kwargs_for(s) for s in seeds}
    experiment = evaluation_experiment(
        env_config, policy, seeds, balancers, stl_cache, agent_seeds=[p for p, _ in others]
    )
    grid_dir = path.with_suffix("")
    start = time.perf_counter()
    with LocalBackend(workers, start_method="forkserver") as backend:
        rollouts = _rollouts(backend, env_config, policy, seeds, progress_bar)
        compare(experiment, grid_dir, runner=backend, progress_bar=progress_bar)
    plan = plan_grid(experiment)
    rows = benchmark_rows(experiment.benchmarks[0], plan, load_records(plan, grid_dir))
    results: dict[str, Any] = {
        "target": str(target),
        "policy": str(policy),
        "instances": seeds,
        "variation": bool(loaded.variation),
        "instance_specs": {str(s): kw for s, kw in specs.items()},
        "balancers": [b.name for b in experiment.balancers],
        "rollouts": rollouts,
        "summary": row_summaries(rows, PAIRED_AGAINST),
        "cells": str(grid_dir),
        "wall_time_s": time.perf_counter() - start,
    }
    if agent_seeds:
        results["agent_seeds"] = [str(t) for t in (target, *agent_seeds)]
        results["reference"] = reference
        results["agent_seed_summary"] = summary_dicts(summarise(rows, reference, by_run_seed=True))
    results["table"] = format_table(results, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    path.with_suffix(".md").write_text(results["table"] + "\n")
    return results


def format_table(results: Mapping[str, Any], rows: Sequence[Row]) -> str:
    """Markdown: env rollouts, Δm of the plain MTL runs and the summary over agent seeds.

    The plain MTL runs are ``summary_table``'s; the summary over agent seeds
    (``rliable_summary``) is added when ``results`` names several (``agent_seeds``).
    """
    n = len(results["instances"])
    ro = results["rollouts"]
    lines = [
        f"Env rollouts on {n} held-out instances (return, higher is better)",
        "",
        "| method | return mean ± std |",
        "|---|---|",
    ]
    for w, label in (("policy", "learned policy"), ("igbv1", "IGBv1"), ("ew", "EW")):
        lines.append(f"| {label} | {ro[w]['mean']:.4f} ± {ro[w]['std']:.4f} |")
    d = ro["policy_vs_igbv1"]
    lines += [
        f"| policy − IGBv1 (paired) | {d['mean']:+.4f} ± {d['std']:.4f} "
        f"(95% CI {d['low']:+.4f} … {d['high']:+.4f}) |",
        "",
        f"Plain MTL runs (PolicyWeighting in MTLTrainer), test Δm % vs STL on {n} instances "
        "(lower is better); paired differences with their std and 95% t-interval",
        "",
        summary_table(rows, PAIRED_AGAINST, loss_header=None, intervals=True),
    ]
    if results.get("agent_seeds"):
        reference = str(results.get("reference", PAIRED_AGAINST[0][0]))
        title = method_label(reference)
        # The summary is recomputed from the rows: the same seed gives the numbers of the JSON.
        summaries = summarise(rows, reference, by_run_seed=True)
        lines += [
            "",
            f"Over {len(results['agent_seeds'])} agent seeds × {n} instances",
            "",
            summary_notes(title, by_run_seed=True),
            "",
            *seeds_table(summaries, title),
        ]
    return "\n".join(lines)


__all__ = [
    "default_out",
    "evaluate",
    "evaluation_experiment",
    "format_table",
    "held_out_instances",
    "resolve_policy",
]
