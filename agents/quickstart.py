"""``igb quickstart``: the whole idea end to end on the embedded synthetic benchmark, in minutes.

1. STL references and the EW, SI and IGBv1 runs on held-out instance seeds (never drawn in
   training), two processes in parallel.
2. The default agent (PPO, residual action, validation reward; ``AgentConfig()``) trained in two
   parallel env workers until a wall-clock budget or a timestep cap.
3. Its export (``agents.export``), then the learned policy (``PolicyWeighting`` in a plain
   ``MTLTrainer``, no env, no SB3) on the same held-out seeds.
4. One table (Δm mean ± std over seeds, per-task test losses, paired wins, wall time relative to
   EW), a PNG of the weight trajectories of the learned policy and IGBv1 on one held-out seed, and
   everything under one output folder.

The full run takes about 8 minutes on 2 CPU cores; ``tiny=True`` takes seconds (smoke test).
Wall-clock stopping makes the agent, and so the result, depend on the machine: the timesteps
actually trained are printed and saved.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agents.evaluate import init_worker, instance_spec, stl_job

METHODS: tuple[str, ...] = ("ew", "si", "igbv1", "policy")
LABELS: dict[str, str] = {"ew": "EW", "si": "SI", "igbv1": "IGBv1", "policy": "learned policy"}


@dataclass(frozen=True)
class QuickstartSize:
    """How big a quickstart run is.

    Attributes:
        env: Env config of training and evaluation (``igb_env.config.load_env_config``).
        time_budget_s: Wall-clock budget of agent training.
        total_timesteps: Timestep cap of agent training.
        hyperparameters: Overrides of the default agent's hyperparameters.
        held_out: Instance seeds of the evaluation (outside the env's training range).
        workers: Processes for the STL and evaluation runs (and env workers of the agent).
    """

    env: Mapping[str, Any]
    time_budget_s: float
    total_timesteps: int
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    held_out: tuple[int, ...] = (1000, 1001, 1002, 1003, 1004)
    workers: int = 2


# Training instances are drawn from [10_000, 1_000_000); the held-out seeds lie below that range.
FULL = QuickstartSize(
    env={"instances": [10_000, 1_000_000]}, time_budget_s=300.0, total_timesteps=40_000
)
# Seconds-scale: a small synthetic instance, 60-step runs with a 10-step base window, K = 10.
TINY = QuickstartSize(
    env={
        "benchmark": {
            "name": "synthetic",
            "n_train": 200,
            "n_val": 50,
            "n_test": 50,
            "input_dim": 20,
            "output_dim": 5,
            "hidden": [16, 16],
        },
        "train": {"steps": 60, "base_window": [5, 10], "batch_size": 20},
        "steps_per_action": 10,
        "val_batch_size": 50,
        "instances": [10_000, 1_000_000],
    },
    time_budget_s=5.0,
    total_timesteps=400,
    # 5 decisions per tiny episode: a rollout of 2 episodes per env.
    hyperparameters={"n_steps": 10, "batch_size": 20, "n_epochs": 4},
    held_out=(1000, 1001, 1002),
)


@dataclass(frozen=True)
class RunRecord:
    """One held-out run of one method.

    Attributes:
        method: ``ew``, ``si``, ``igbv1`` or ``policy``.
        seed: Instance seed.
        delta_m: Test Δm (%) against the seed's STL reference.
        test_losses: Per-task test losses.
        wall_time_s: Seconds of training steps.
        weights: Per-step weights (kept only for the plotted seed).
    """

    method: str
    seed: int
    delta_m: float
    test_losses: list[float]
    wall_time_s: float
    weights: list[list[float]] | None = None


def _method_job(
    env: Mapping[str, Any],
    method: str,
    seed: int,
    reference: Mapping[str, Mapping[str, float]],
    policy: str | None,
    keep_weights: bool,
) -> RunRecord:
    """Train one held-out instance with ``method`` as a plain MTL run (worker process).

    The trainer is the env's (same benchmark instance, training settings, seed and feature
    settings), with no env around it: the learned policy runs as ``PolicyWeighting``.
    """
    from igb_env.config import load_env_config
    from mtl_backends.balancers import make_balancer
    from mtl_backends.benchmarks import make_benchmark
    from mtl_backends.trainer import MTLTrainer
    from mtl_backends.weightings import make_weighting

    config = load_env_config(dict(env))
    spec = instance_spec(config, seed)
    weighting = (
        make_weighting("policy", path=policy) if method == "policy" else make_weighting(method)
    )
    trainer = MTLTrainer(
        make_benchmark(spec.name, **dict(spec.kwargs)),
        weighting,
        make_balancer(config.balancer.name, **dict(config.balancer.kwargs)),
        config.train,
        seed=seed,
        reference={k: dict(v) for k, v in reference.items()},
        features=config.feature_spec,
    )
    start = time.perf_counter()
    history = trainer.fit(record=keep_weights)
    wall = time.perf_counter() - start
    test = trainer.evaluate("test")
    assert test.delta_m is not None
    weights = history.weights if keep_weights else None
    return RunRecord(method, seed, test.delta_m, list(test.losses), wall, weights)


def _pool(workers: int) -> ProcessPoolExecutor:
    from agents.train import preload_workers

    preload_workers()
    context = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=init_worker)


def _evaluate(
    pool: ProcessPoolExecutor,
    env: Mapping[str, Any],
    methods: Sequence[str],
    references: Mapping[int, Mapping[str, Mapping[str, float]]],
    policy: str | None,
) -> list[RunRecord]:
    seeds = sorted(references)
    jobs = [(dict(env), m, s, references[s], policy, s == seeds[0]) for m in methods for s in seeds]
    return list(pool.map(_method_job, *zip(*jobs, strict=True)))


def summarize(records: Sequence[RunRecord]) -> dict[str, dict[str, Any]]:
    """Per-method summary of the held-out runs.

    Δm mean and std over seeds, mean per-task test losses, wall time relative to EW, and paired
    wins (seeds where the method's Δm is lower) against SI and IGBv1.
    """
    by_method: dict[str, dict[int, RunRecord]] = {}
    for r in records:
        by_method.setdefault(r.method, {})[r.seed] = r
    ew_time = (
        np.mean([r.wall_time_s for r in by_method["ew"].values()])
        if "ew" in by_method
        else float("nan")
    )
    out: dict[str, dict[str, Any]] = {}
    for method, runs in by_method.items():
        seeds = sorted(runs)
        dm = np.asarray([runs[s].delta_m for s in seeds])
        row: dict[str, Any] = {
            "delta_m_mean": float(dm.mean()),
            "delta_m_std": float(dm.std(ddof=1)) if len(dm) > 1 else 0.0,
            "test_losses": np.mean([runs[s].test_losses for s in seeds], axis=0).tolist(),
            "time_vs_ew": float(np.mean([runs[s].wall_time_s for s in seeds]) / ew_time),
            "seeds": seeds,
        }
        for base in ("si", "igbv1"):
            if base in by_method and base != method:
                diff = dm - np.asarray([by_method[base][s].delta_m for s in seeds])
                row[f"vs_{base}"] = {"mean_diff": float(diff.mean()), "wins": int((diff < 0).sum())}
        out[method] = row
    return out


def format_table(summary: Mapping[str, Mapping[str, Any]], task_names: Sequence[str]) -> str:
    """The quickstart's Markdown table."""
    n = len(next(iter(summary.values()))["seeds"])
    head = ["method", f"Δm % (test, {n} seeds)", *[f"{t} test MSE" for t in task_names]]
    head += ["vs SI (wins)", "vs IGBv1 (wins)", "time / EW"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in METHODS:
        if method not in summary:
            continue
        row = summary[method]
        cells = [LABELS[method], f"{row['delta_m_mean']:.2f} ± {row['delta_m_std']:.2f}"]
        cells += [f"{v:.4g}" for v in row["test_losses"]]
        for base in ("si", "igbv1"):
            vs = row.get(f"vs_{base}")
            cells.append("—" if vs is None else f"{vs['mean_diff']:+.2f} ({vs['wins']}/{n})")
        cells.append(f"{row['time_vs_ew']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_weights(records: Sequence[RunRecord], task_names: Sequence[str], path: Path) -> Path:
    """PNG of the per-step weights of the learned policy (solid) and IGBv1 (dashed) on one seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    seed = None
    for r, style in ((r, "-" if r.method == "policy" else "--") for r in records):
        if r.weights is None or r.method not in ("policy", "igbv1"):
            continue
        seed = r.seed
        w = np.asarray(r.weights)
        for t, name in enumerate(task_names):
            ax.plot(
                w[:, t],
                style,
                color=colors[t % len(colors)],
                lw=1.2,
                label=f"{LABELS[r.method]} {name}",
            )
    ax.set_xlabel("training step")
    ax.set_ylabel("task weight (sum = T)")
    ax.set_title(f"Weights on held-out instance {seed}: learned policy (solid) vs IGBv1 (dashed)")
    ax.legend(ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def quickstart(
    out_dir: str | Path | None = None,
    tiny: bool = False,
    seed: int = 0,
    time_budget_s: float | None = None,
) -> Path:
    """Run the quickstart and print its table; returns the output folder.

    Args:
        out_dir: Output folder (default ``runs/quickstart-<time>``).
        tiny: Seconds-scale version for smoke tests.
        seed: Seed of the agent.
        time_budget_s: Wall-clock budget of agent training (default 300 s; 5 s with ``tiny``).
    """
    from agents.export import export_run
    from agents.train import AgentConfig, train_agent

    size = TINY if tiny else FULL
    if time_budget_s is not None:
        size = replace(size, time_budget_s=time_budget_s)
    out = (
        Path(out_dir)
        if out_dir is not None
        else Path("runs") / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    seeds = list(size.held_out)

    # One pool for the STL and evaluation runs; its workers sleep while the agent trains.
    with _pool(size.workers) as pool:
        print(f"[1/4] STL references and EW / SI / IGBv1 on held-out seeds {seeds} ...", flush=True)
        n = len(seeds)
        stl = pool.map(stl_job, [dict(size.env)] * n, seeds, [str(out / "stl")] * n)
        references = dict(zip(seeds, stl, strict=True))
        baselines = _evaluate(pool, size.env, ("ew", "si", "igbv1"), references, None)

        print(
            f"[2/4] ({time.perf_counter() - start:.0f} s) training the default agent "
            f"(≤ {size.time_budget_s:.0f} s, ≤ {size.total_timesteps} env steps) ...",
            flush=True,
        )
        default = AgentConfig()
        agent = replace(
            default,
            env=dict(size.env),
            seed=seed,
            time_budget_s=size.time_budget_s,
            total_timesteps=size.total_timesteps,
            n_envs=size.workers,
            hyperparameters={**dict(default.hyperparameters), **dict(size.hyperparameters)},
        )
        run = train_agent(agent, out / "agent", progress_bar=not tiny, executor=pool)
        training = json.loads((run / "training.json").read_text())

        print(f"[3/4] ({time.perf_counter() - start:.0f} s) exporting the policy ...", flush=True)
        policy = export_run(run, out / "policy")

        print(
            f"[4/4] ({time.perf_counter() - start:.0f} s) the learned policy on the held-out "
            "seeds ...",
            flush=True,
        )
        learned = _evaluate(pool, size.env, ("policy",), references, str(policy))
    records = baselines + learned

    task_names = training["task_names"]
    summary = summarize(records)
    table = format_table(summary, task_names)
    plot = plot_weights(records, task_names, out / "weights.png")
    wall = time.perf_counter() - start
    results = {
        "summary": summary,
        "runs": [{k: v for k, v in r.__dict__.items() if k != "weights"} for r in records],
        "agent": training,
        "wall_time_s": wall,
        "held_out_seeds": seeds,
        "tiny": tiny,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "table.md").write_text(table + "\n")

    print()
    print(table)
    print()
    print(
        f"agent: {training['timesteps']} env steps in {training['wall_time_s']:.0f} s "
        f"({training['env_steps_per_s']:.1f} steps/s; stopped by "
        f"{'wall budget' if training['stopped_by_budget'] else 'timestep cap'})"
    )
    print(f"total wall time {wall:.0f} s; weights plot {plot}")
    print(f"everything is in {out}")
    return out
