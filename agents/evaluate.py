"""Evaluate a trained agent or an exported policy on held-out instances (``igb evaluate``).

Two views of the same policy, on the same instances (the env's ``test_set`` unless ``instances``
are given):

1. **Env rollouts**: the policy's episode return in the env it was trained in, beside the EW and
   IGBv1 rollouts of the same instances (``igb_env.rollout_baseline``: same trainer, decision
   points and reward), with paired differences against IGBv1.
2. **Plain MTL runs**: ``MTLTrainer`` with ``PolicyWeighting`` (no env, no SB3) and with EW, SI and
   IGBv1, under the env's balancer and under every extra ``balancers`` entry; test Δm (%) against
   the STL references of each instance (``mtl_backends.stl.stl_reference`` with the env's
   benchmark arguments for that instance, its training settings and the instance seed), mean ± std
   over instances, and paired differences against IGBv1 and SI under the same balancer (mean, std,
   wins, 95% t-interval).

A run folder is evaluated through its exported policy (``RUN/policy``, exported first when missing
or older than ``RUN/model.zip``; ``best=True`` uses ``RUN/best_model.zip`` and ``RUN/policy-best``).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

BASELINES: tuple[str, ...] = ("ew", "si", "igbv1")
PAIRED_AGAINST: tuple[str, ...] = ("igbv1", "si")


@dataclass(frozen=True)
class MTLRun:
    """One plain MTL run of one method on one held-out instance.

    Attributes:
        method: Label: the weighting (``policy``, ``ew``, ...), ``+balancer`` when not the env's.
        weighting: Weighting registry name.
        balancer: Balancer registry name.
        seed: Instance seed.
        delta_m: Test Δm (%) against the instance's STL reference.
        test_losses: Per-task test losses.
        wall_time_s: Seconds of training.
    """

    method: str
    weighting: str
    balancer: str
    seed: int
    delta_m: float
    test_losses: list[float]
    wall_time_s: float


def resolve_policy(target: str | Path, best: bool = False) -> tuple[Path, dict[str, Any]]:
    """The policy folder and env config of a run folder or an exported policy folder.

    Args:
        target: A run folder of ``igb train-agent`` or a policy folder of ``igb export``.
        best: For a run, use its best held-out model (``best_model.zip``) instead of the final one.

    Raises:
        FileNotFoundError: ``target`` is neither.
    """
    from agents.export import export_model
    from agents.train import load_agent_config, load_model
    from mtl_backends.weightings.policy import SIDECAR_FILE

    target = Path(target)
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
    from igb_env.config import load_env_config

    if instances:
        return [int(i) for i in instances]
    held = load_env_config(dict(env_config)).test_instances
    if len(held) == 0:
        raise ValueError(
            "no held-out instances: the env config has no test_set; pass --instances SEED ..."
        )
    return [int(i) for i in held]


def instance_spec(config: Any, seed: int) -> Any:
    """The benchmark spec of instance ``seed`` of an ``EnvConfig``, exactly as the env builds it."""
    from igb_env.env import BenchmarkCache

    return BenchmarkCache(config.benchmark, variation=config.variation).spec_for(seed)


def init_worker() -> None:
    """Process-pool initializer: one torch thread per worker."""
    import torch

    torch.set_num_threads(1)


def _rollout_job(env_config: dict[str, Any], policy: str | None, seed: int) -> float:
    """Return of one env episode: the policy (``policy`` path) or a baseline name."""
    from igb_env import make_env, rollout_baseline, rollout_policy
    from mtl_backends.weightings.policy import load_policy

    if policy is None or policy in BASELINES:
        return rollout_baseline(env_config, policy or "igbv1", seed).total_reward
    loaded = load_policy(policy)
    env = make_env(env_config)
    rewards, _ = rollout_policy(env, lambda obs: loaded.act(obs).numpy(), seed)
    return float(sum(rewards))


def stl_job(env_config: Mapping[str, Any], seed: int, cache_dir: str | None) -> dict[str, Any]:
    """STL reference of one instance of an env config (worker process)."""
    from igb_env.config import load_env_config
    from mtl_backends.stl import stl_reference

    config = load_env_config(dict(env_config))
    return stl_reference(instance_spec(config, seed), config.train, seed, cache_dir)


def _mtl_job(
    env_config: dict[str, Any],
    method: str,
    weighting: str,
    policy: str | None,
    balancer: str,
    seed: int,
    reference: Mapping[str, Mapping[str, float]],
) -> MTLRun:
    """Train one held-out instance as a plain MTL run (the env's trainer, no env around it)."""
    import warnings

    from igb_env.config import load_env_config
    from mtl_backends.balancers import make_balancer
    from mtl_backends.benchmarks import make_benchmark
    from mtl_backends.trainer import MTLTrainer
    from mtl_backends.weightings import make_weighting

    config = load_env_config(dict(env_config))
    spec = instance_spec(config, seed)
    kwargs = dict(config.balancer.kwargs) if balancer == config.balancer.name else {}
    with warnings.catch_warnings():
        # A policy under another balancer than its training one: the warning is the point of
        # the comparison, not news.
        warnings.filterwarnings("ignore", message=".*was trained with the .* balancer.*")
        trainer = MTLTrainer(
            make_benchmark(spec.name, **dict(spec.kwargs)),
            make_weighting("policy", path=policy)
            if weighting == "policy"
            else make_weighting(weighting),
            make_balancer(balancer, **kwargs),
            config.train,
            seed=seed,
            reference={k: dict(v) for k, v in reference.items()},
            features=config.feature_spec,
        )
        start = time.perf_counter()
        trainer.fit(record=False)
        wall = time.perf_counter() - start
    test = trainer.evaluate("test")
    delta = float("nan") if test.delta_m is None else float(test.delta_m)
    return MTLRun(method, weighting, balancer, seed, delta, [float(x) for x in test.losses], wall)


def _stats(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    x = np.asarray(values, dtype=float)
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return {"mean": float(x.mean()), "std": std, "n": len(x)}


def paired(diff: Sequence[float]) -> dict[str, Any]:
    """Mean, std, wins (negative differences) and the 95% t-interval of paired differences."""
    from scipy import stats

    x = np.asarray(diff, dtype=float)
    out = _stats(x)
    out["wins"] = int((x < 0).sum())
    if len(x) > 1:
        half = float(stats.t.ppf(0.975, len(x) - 1)) * out["std"] / math.sqrt(len(x))
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    else:
        out["ci95"] = [out["mean"], out["mean"]]
    return out


def _map(
    pool: ProcessPoolExecutor | None,
    fn: Any,
    jobs: list[tuple[Any, ...]],
    desc: str = "",
    progress_bar: bool = True,
) -> list[Any]:
    """``fn(*job)`` for every job, in order, in ``pool`` when given, with a progress bar."""
    from tqdm.auto import tqdm

    done = (fn(*job) for job in jobs) if pool is None else pool.map(fn, *zip(*jobs, strict=True))
    results = []
    with tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress_bar) as bar:
        for result in done:
            results.append(result)
            bar.update()
    return results


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
) -> dict[str, Any]:
    """Evaluate a run's policy (or an exported policy) on held-out instances; write JSON.

    Args:
        target: Agent run folder or exported policy folder.
        instances: Held-out instance seeds (default: the env's ``test_set``).
        balancers: Extra balancers to run every method under (besides the env's own).
        out: JSON path (default ``TARGET/evaluation.json``); the table goes beside it as ``.md``.
        workers: Processes for the runs (1: in this process).
        stl_cache: STL reference cache folder (``None``: no cache).
        best: For a run folder, evaluate ``best_model.zip``.
        variation: Draw each instance's benchmark arguments with the benchmark's
            ``sample_variation`` (``True``: e.g. new task scales, noise floors and label fractions
            for ``synthetic``), or not (``False``); ``None``: as the policy's env was configured.
        progress_bar: Show progress bars (stderr) over the rollouts, STL references and runs.

    Returns:
        The results (also written as JSON): ``rollouts``, ``runs``, ``summary``, ``table``, and
        ``instance_specs`` (the benchmark arguments of every instance).
    """
    policy, env_config = resolve_policy(target, best=best)
    if variation is not None:
        env_config = {**env_config, "variation": bool(variation)}
    from igb_env.config import load_env_config

    seeds = held_out_instances(env_config, instances)
    loaded_config = load_env_config(dict(env_config))
    env_balancer = loaded_config.balancer.name
    specs = {s: dict(instance_spec(loaded_config, s).kwargs) for s in seeds}
    all_balancers = [env_balancer, *[b for b in dict.fromkeys(balancers) if b != env_balancer]]
    from mtl_backends.balancers import make_balancer
    from mtl_backends.weightings import make_weighting

    # Every (weighting, balancer) pair that can run together (DB-MTL, e.g., needs log losses,
    # so EW is skipped under it); an unknown balancer fails here, before any run.
    pairs: list[tuple[str, str]] = []
    for b in all_balancers:
        required = make_balancer(b).requires_transform
        for w in (*BASELINES, "policy"):
            transform = "log" if w == "policy" else make_weighting(w).transform
            if required is None or required == transform:
                pairs.append((w, b))
    pool: ProcessPoolExecutor | None = None
    if workers > 1:
        from agents.train import preload_workers

        preload_workers()
        context = multiprocessing.get_context("forkserver")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker)
    start = time.perf_counter()
    try:
        # 1. Env rollouts: the policy, EW and IGBv1 on the same instances.
        who = ("policy", "ew", "igbv1")
        jobs = [(env_config, str(policy) if w == "policy" else w, s) for w in who for s in seeds]
        returns = _map(pool, _rollout_job, jobs, "env rollouts", progress_bar)
        per = {w: returns[i * len(seeds) : (i + 1) * len(seeds)] for i, w in enumerate(who)}
        rollouts: dict[str, Any] = {w: {**_stats(v), "returns": v} for w, v in per.items()}
        # Higher return is better: policy - IGBv1, wins = instances where it is positive.
        gain = paired([p - b for p, b in zip(per["policy"], per["igbv1"], strict=True)])
        gain["wins"] = int(sum(p > b for p, b in zip(per["policy"], per["igbv1"], strict=True)))
        rollouts["policy_vs_igbv1"] = gain

        # 2. STL references, then plain MTL runs of every method under every balancer.
        refs = _map(pool, stl_job, [(env_config, s, stl_cache) for s in seeds], "stl", progress_bar)
        references = dict(zip(seeds, refs, strict=True))
        mtl_jobs = []
        for w, b in pairs:
            label = w if b == env_balancer else f"{w}+{b}"
            for s in seeds:
                mtl_jobs.append((env_config, label, w, str(policy), b, s, references[s]))
        runs: list[MTLRun] = _map(pool, _mtl_job, mtl_jobs, "mtl runs", progress_bar)
    finally:
        if pool is not None:
            pool.shutdown()
    summary = summarize(runs, env_balancer)
    results: dict[str, Any] = {
        "target": str(target),
        "policy": str(policy),
        "instances": seeds,
        "variation": bool(loaded_config.variation),
        "instance_specs": {str(s): kw for s, kw in specs.items()},
        "balancers": all_balancers,
        "rollouts": rollouts,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
        "wall_time_s": time.perf_counter() - start,
    }
    results["table"] = format_table(results)
    path = Path(out) if out is not None else Path(target) / "evaluation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    path.with_suffix(".md").write_text(results["table"] + "\n")
    return results


def summarize(runs: Sequence[MTLRun], env_balancer: str) -> dict[str, dict[str, Any]]:
    """Per-method Δm mean ± std and paired differences vs IGBv1 and SI under the same balancer."""
    by: dict[str, dict[int, MTLRun]] = {}
    for r in runs:
        by.setdefault(r.method, {})[r.seed] = r
    ew_time = np.mean([r.wall_time_s for r in by.get("ew", {}).values()] or [float("nan")])
    out: dict[str, dict[str, Any]] = {}
    for method, per in by.items():
        seeds = sorted(per)
        first = per[seeds[0]]
        dm = [per[s].delta_m for s in seeds]
        row: dict[str, Any] = {
            "weighting": first.weighting,
            "balancer": first.balancer,
            "delta_m": _stats(dm),
            "time_vs_ew": float(np.mean([per[s].wall_time_s for s in seeds]) / ew_time),
        }
        suffix = "" if first.balancer == env_balancer else f"+{first.balancer}"
        for base in PAIRED_AGAINST:
            other = by.get(base + suffix)
            if other is None or base == first.weighting:
                continue
            row[f"vs_{base}"] = paired([per[s].delta_m - other[s].delta_m for s in seeds])
        out[method] = row
    return out


def format_table(results: Mapping[str, Any]) -> str:
    """Markdown tables: env-rollout returns, then Δm of the plain MTL runs."""
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
        f"(95% CI {d['ci95'][0]:+.4f} … {d['ci95'][1]:+.4f}) |",
        "",
        f"Plain MTL runs (PolicyWeighting in MTLTrainer), test Δm % vs STL on {n} instances "
        "(lower is better)",
        "",
        "| method | Δm % mean ± std | vs IGBv1 (paired, wins, 95% CI) | vs SI (paired, wins) "
        "| time / EW |",
        "|---|---|---|---|---|",
    ]
    for method, row in results["summary"].items():
        dm = row["delta_m"]
        cells = [method, f"{dm['mean']:.2f} ± {dm['std']:.2f}"]
        vs = row.get("vs_igbv1")
        cells.append(
            "—"
            if vs is None
            else f"{vs['mean']:+.2f} ± {vs['std']:.2f} ({vs['wins']}/{n}; "
            f"{vs['ci95'][0]:+.2f} … {vs['ci95'][1]:+.2f})"
        )
        vs = row.get("vs_si")
        cells.append("—" if vs is None else f"{vs['mean']:+.2f} ({vs['wins']}/{n})")
        cells.append(f"{row['time_vs_ew']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "MTLRun",
    "evaluate",
    "format_table",
    "held_out_instances",
    "paired",
    "resolve_policy",
    "summarize",
]
