"""Issue 6: cost of a PolicyWeighting run relative to EW (and IGBv1), interleaved, medians.

Each repetition trains EW, IGBv1 and the policy once each, in that order, on the same instance
(synthetic, T = 3, 1000 steps, one torch thread) and times ``MTLTrainer.fit`` in wall time
(``perf_counter``) and CPU time (``process_time``; less sensitive to other jobs on a loaded
machine). Reported: medians over the repetitions and their ratios to EW.

    python docs/experiments/scripts/issue6_timing.py /tmp/exp6/runs/res_s0/policy-best --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.config import TrainConfig
from mtl_backends.trainer import MTLTrainer
from mtl_backends.weightings import make_weighting
from mtl_backends.weightings.base import LossWeighting

TRAIN = TrainConfig(steps=1000, batch_size=100, lr=1e-3, base_window=(50, 100))


def time_fit(weighting: LossWeighting, seed: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``fit`` (no evaluation, no recording)."""
    bench = make_benchmark("synthetic", n_tasks=3, scales=[1.0, 10.0, 100.0], seed=seed)
    trainer = MTLTrainer(bench, weighting, make_balancer("sum"), TRAIN, seed=seed)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    trainer.fit(record=False)
    return time.perf_counter() - wall0, time.process_time() - cpu0


def main() -> None:
    """Time EW, IGBv1 and the policy, interleaved, and print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("policy", type=Path, help="exported policy folder")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = {
        "EW": lambda: make_weighting("ew"),
        "IGBv1": lambda: make_weighting("igbv1"),
        "policy": lambda: make_weighting("policy", path=str(args.policy)),
    }
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    time_fit(make_weighting("ew"), args.seed)  # warm-up, not timed
    for rep in range(args.reps):
        for name, build in methods.items():
            times[name].append(time_fit(build(), args.seed))
            print(f"rep {rep} {name}: wall {times[name][-1][0]:.2f}s cpu {times[name][-1][1]:.2f}s")
    ew_wall = statistics.median(w for w, _ in times["EW"])
    ew_cpu = statistics.median(c for _, c in times["EW"])
    for name, values in times.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(
            f"{name}: median wall {wall:.2f}s ({wall / ew_wall:.3f}x EW), "
            f"median CPU {cpu:.2f}s ({cpu / ew_cpu:.3f}x EW)"
        )


if __name__ == "__main__":
    main()
