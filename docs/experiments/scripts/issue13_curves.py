"""Issue 13: the learning curves of the same agent trained on subprocess and batched sub-envs.

Reads the TensorBoard scalars of runs written by

    igb --torch-threads 1 train-agent docs/experiments/scripts/issue13_ppo_small.yaml \
        --out RUNS/subproc-sN --seed N
    igb --torch-threads 1 train-agent docs/experiments/scripts/issue13_ppo_small_batched.yaml \
        --out RUNS/batched-sN --seed N

and prints a Markdown table of ``rollout/ep_rew_mean`` at a few timesteps per seed and kind, the
largest difference between the two kinds along the whole curve, and each run's wall time and
throughput (``training.json``).

    python docs/experiments/scripts/issue13_curves.py RUNS
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

POINTS = (1440, 2880, 4320, 5760, 7200)


def curve(run: Path) -> dict[int, float]:
    """``rollout/ep_rew_mean`` by timestep (every event file of the run, resumed parts too)."""
    out: dict[int, float] = {}
    for events in sorted(run.glob("tb/**/events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if "rollout/ep_rew_mean" in acc.Tags()["scalars"]:
            out.update({e.step: e.value for e in acc.Scalars("rollout/ep_rew_mean")})
    return out


def main() -> None:
    """Print the curve table of the runs under the given folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="folder with subproc-sN and batched-sN runs")
    args = parser.parse_args()
    seeds = sorted({int(p.name.split("-s")[1]) for p in args.runs.glob("*-s*")})
    head = " | ".join(f"@{p}" for p in POINTS)
    print(f"| seed | vec_env | {head} | max abs diff | wall s | env steps/s |")
    print("|---|---|" + "---|" * len(POINTS) + "---|---|---|")
    for seed in seeds:
        curves = {k: curve(args.runs / f"{k}-s{seed}") for k in ("subproc", "batched")}
        common = sorted(set(curves["subproc"]) & set(curves["batched"]))
        diff = max(abs(curves["subproc"][s] - curves["batched"][s]) for s in common)
        for kind, values in curves.items():
            summary = json.loads((args.runs / f"{kind}-s{seed}" / "training.json").read_text())
            cells = " | ".join(f"{values[p]:.3f}" if p in values else "-" for p in POINTS)
            print(
                f"| {seed} | {kind} | {cells} | {diff:.4f} | {summary['wall_time_s']:.0f} | "
                f"{summary['env_steps_per_s']:.1f} |"
            )


if __name__ == "__main__":
    main()
