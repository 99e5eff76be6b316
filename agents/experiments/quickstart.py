"""``igb quickstart``: the whole idea end to end on the embedded synthetic benchmark, in minutes.

1. STL references and the EW, SI and IGBv1 runs on held-out instance seeds (never drawn in
   training): a generated experiment (``quickstart_experiment``) run by the comparison runner.
2. The default agent (PPO, residual action, validation reward; ``AgentConfig()``) trained in two
   parallel env workers until a wall-clock budget or a timestep cap.
3. Its export (``agents.export``), then the learned policy (``PolicyWeighting`` in a plain
   ``MTLTrainer``, no env, no SB3) on the same held-out seeds: the same experiment with one more
   weighting (the baseline cells are reused from disk), and one more again when the package
   ships a pretrained policy (``mtl_backends.policy.files.DEFAULT_SHIPPED``): what a user gets
   without training anything.
4. One table (``agents.experiments.report.summary_table``: Δm mean ± std over seeds, per-task test
   losses, paired wins against SI and IGBv1, wall time relative to EW), a PNG of the weight
   trajectories of the learned policy and IGBv1 on one held-out seed, and everything under one
   output folder (the comparison report too).

The sizes are ``quickstart.yaml`` beside this module. The full run takes about 6 minutes on 2 CPU
cores; ``tiny=True`` takes seconds (smoke test). Wall-clock stopping makes the agent, and so the
result, depend on the machine: the timesteps actually trained are printed and saved.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agents.config import AgentConfig
from agents.experiments.backends import LocalBackend
from agents.experiments.cells import load_records
from agents.experiments.config import BenchmarkEntry, ExperimentConfig, MethodEntry, PlotConfig
from agents.experiments.grid import GridPlan, plan_grid
from agents.experiments.rows import benchmark_rows
from agents.experiments.runner import compare
from agents.experiments.summary import row_summaries, summary_table
from agents.export import export_run
from agents.train import train_agent
from igb_env.config import load_env_config
from mtl_backends.config import from_dict, load_yaml
from mtl_backends.policy.files import DEFAULT_SHIPPED, shipped_policies, shipped_policy

SIZES_FILE = Path(__file__).with_name("quickstart.yaml")
BASELINES: tuple[str, ...] = ("ew", "si", "igbv1")


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


def load_sizes(path: str | Path = SIZES_FILE) -> dict[str, QuickstartSize]:
    """The named sizes of ``quickstart.yaml`` (``full`` and ``tiny``)."""
    data = load_yaml(path)
    return {
        name: from_dict(QuickstartSize, value, f"{path}:{name}") for name, value in data.items()
    }


SIZES = load_sizes()
FULL, TINY = SIZES["full"], SIZES["tiny"]


def quickstart_experiment(
    size: QuickstartSize,
    stl_cache: str | None,
    policy: str | Path | None = None,
    shipped: Path | None = None,
) -> ExperimentConfig:
    """The comparison the quickstart runs: EW, SI, IGBv1 (and the policies) on the held-out seeds.

    Each seed is an instance of the env's benchmark (data, initialisation and batch order, as the
    env would draw it), trained with the env's training settings and balancer.

    Args:
        size: The quickstart's size.
        stl_cache: Folder of the STL references.
        policy: The policy just trained and exported (a row ``Policy``).
        shipped: Folder of a policy shipped in the package (a row ``shipped <folder name>``),
            which was never trained on these instances.
    """
    env = load_env_config(dict(size.env))
    bench = BenchmarkEntry(
        name=env.benchmark.name,
        kwargs=dict(env.benchmark.kwargs),
        train=env.train,
        instances=True,
        variation=env.variation,
    )
    weightings = [MethodEntry(name) for name in BASELINES]
    if policy is not None:
        weightings.append(MethodEntry("policy", {"path": str(policy)}))
    if shipped is not None:
        weightings.append(
            MethodEntry("policy", {"path": str(shipped)}, label=f"shipped {shipped.name}")
        )
    return ExperimentConfig(
        benchmarks=(bench,),
        weightings=tuple(weightings),
        balancers=(MethodEntry(env.balancer.name, dict(env.balancer.kwargs)),),
        seeds=tuple(size.held_out),
        stl_cache=stl_cache,
        # Every step's weights of IGBv1 and the policy on the first seed, for weights.png.
        plots=PlotConfig(delta_m_bars=False, trajectory_points=env.train.steps),
    )


def plot_weights(plan: GridPlan, records: Mapping[str, dict[str, Any]], path: Path) -> Path:
    """PNG of the per-step weights of the learned policy (solid) and IGBv1 (dashed) on one seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    seed = plan.cells[0].seed
    for cell in plan.cells:
        rec = records.get(cell.key, {})
        if (
            cell.seed != seed
            or cell.weighting.name not in ("policy", "igbv1")
            or cell.weighting.label is not None  # only the policy trained here, against IGBv1
            or "trajectories" not in rec
        ):
            continue
        style = "-" if cell.weighting.name == "policy" else "--"
        w = np.asarray(rec["trajectories"]["weights"])
        for t, name in enumerate(rec["task_names"]):
            ax.plot(
                rec["trajectories"]["steps"],
                w[:, t],
                style,
                color=colors[t % len(colors)],
                lw=1.2,
                label=f"{cell.weighting.display} {name}",
            )
    ax.set_xlabel("training step")
    ax.set_ylabel("task weight (sum = T)")
    ax.set_title(f"Weights on held-out instance {seed}: learned policy (solid) vs IGBv1 (dashed)")
    ax.legend(ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


PAIRED_AGAINST: tuple[tuple[str, str], ...] = (("si", "SI"), ("igbv1", "IGBv1"))


def quickstart(
    out_dir: str | Path | None = None,
    tiny: bool = False,
    seed: int = 0,
    time_budget_s: float | None = None,
    progress_bar: bool = True,
) -> Path:
    """Run the quickstart and print its table; returns the output folder.

    Args:
        out_dir: Output folder (default ``runs/quickstart-<time>``).
        tiny: Seconds-scale version for smoke tests.
        seed: Seed of the agent.
        time_budget_s: Wall-clock budget of agent training (default 300 s; 5 s with ``tiny``).
        progress_bar: Show progress (bars on a terminal, a plain line per ~10 s or 5% in a log).
    """
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
    stl_cache = str(out / "stl")

    # One pool for the STL and evaluation runs and the agent's reference rollouts; its workers
    # sleep while the agent trains.
    with LocalBackend(size.workers, start_method="forkserver") as backend:
        print(f"[1/4] STL references and EW / SI / IGBv1 on held-out seeds {seeds} ...", flush=True)
        compare(
            quickstart_experiment(size, stl_cache), out, runner=backend, progress_bar=progress_bar
        )

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
        run = train_agent(
            agent, out / "agent", progress_bar=progress_bar, executor=backend.executor
        )
        training = json.loads((run / "training.json").read_text())

        print(f"[3/4] ({time.perf_counter() - start:.0f} s) exporting the policy ...", flush=True)
        policy = export_run(run, out / "policy")

        print(
            f"[4/4] ({time.perf_counter() - start:.0f} s) the learned policy on the held-out "
            "seeds ...",
            flush=True,
        )
        # The shipped policy (if this install has one) beside the one just trained: what a user
        # gets with no training at all. Resolved to a folder here, so the workers load the same one.
        shipped = shipped_policy() if DEFAULT_SHIPPED in shipped_policies() else None
        experiment = quickstart_experiment(size, stl_cache, policy, shipped)
        compare(experiment, out, runner=backend, progress_bar=progress_bar)

    plan = plan_grid(experiment)
    records = load_records(plan, out)
    rows = benchmark_rows(plan.cells[0].benchmark, plan, records)
    table = summary_table(rows, PAIRED_AGAINST, loss_header="{task} test MSE")
    plot = plot_weights(plan, records, out / "weights.png")
    wall = time.perf_counter() - start
    results = {
        "summary": row_summaries(rows, PAIRED_AGAINST),
        "runs": [
            {
                "method": c.weighting.display,
                "seed": c.seed,
                "delta_m": records[c.key].get("delta_m"),
                "test_losses": records[c.key].get("losses", {}).get("test"),
                "wall_time_s": records[c.key].get("train_wall_time_s"),
            }
            for c in plan.cells
            if c.key in records
        ],
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


__all__ = ["FULL", "SIZES", "TINY", "QuickstartSize", "quickstart", "quickstart_experiment"]
