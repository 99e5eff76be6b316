"""Issue 6: Δm of loss weightings on instances of `synthetic`, one plain MTLTrainer run each.

An *instance* seed fixes the data (the benchmark's ``seed``), the model initialisation and the
batch order, exactly as ``igb_env`` builds its instances (``BenchmarkCache.kwargs_for``), so an
exported policy meets held-out instances drawn the way its training instances were. (``igb
compare`` keeps the benchmark's data seed fixed and varies only the run seed, which is why it is
not used here.) Δm is on the test split against STL references trained with the same budget and
seed (``mtl_backends.stl.stl_reference``, cached under ``.igb-cache/stl``).

One JSON line per (method, instance) is appended to ``--out``; rows already there are skipped, so
the script resumes. Methods are ``label=name`` or ``label=name:key=value,...`` for the
weighting's arguments (``weights`` takes ``/``-separated floats), e.g.::

    python docs/experiments/scripts/issue6_heldout.py --out /tmp/exp6/heldout.jsonl \
        --seeds 1000 1001 1002 1003 1004 1005 1006 1007 \
        --methods EW=ew SI=si IGBv1=igbv1 IGBv2=igbv2 \
        "tuned static=tuned_static:weights=0.822206/1.355588/0.822206" \
        "policy s0=policy:path=/tmp/exp6/runs/res_s0/policy-best"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

import agents.online  # noqa: F401 - registers the igbv2 weighting
from mtl_backends.balancers import make_balancer
from mtl_backends.benchmarks import make_benchmark
from mtl_backends.config import MethodSpec, TrainConfig
from mtl_backends.stl import stl_reference
from mtl_backends.trainer import MTLTrainer
from mtl_backends.weightings import make_weighting

TRAIN = TrainConfig(steps=1000, batch_size=100, lr=1e-3, base_window=(50, 100))
STL_CACHE = ".igb-cache/stl"


def parse_method(text: str) -> tuple[str, str, dict[str, Any]]:
    """``label=name:key=value,...`` -> (label, registry name, weighting arguments)."""
    label, _, rest = text.partition("=")
    name, _, args = rest.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, args.split(",")):
        key, _, value = item.partition("=")
        kwargs[key] = [float(v) for v in value.split("/")] if key == "weights" else value
    return label, name, kwargs


def run_one(
    name: str, kwargs: dict[str, Any], balancer: str, seed: int, n_tasks: int
) -> dict[str, Any]:
    """Train one weighting on instance ``seed``; Δm on val and test, wall and CPU time."""
    spec = MethodSpec("synthetic", {"n_tasks": n_tasks, "seed": seed})
    reference = stl_reference(spec, TRAIN, seed, STL_CACHE)
    bench = make_benchmark("synthetic", **dict(spec.kwargs))
    trainer = MTLTrainer(
        bench,
        make_weighting(name, **kwargs),
        make_balancer(balancer),
        TRAIN,
        seed=seed,
        reference=reference,
    )
    wall0, cpu0 = time.perf_counter(), time.process_time()
    trainer.fit(record=False)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    val, test = trainer.evaluate("val"), trainer.evaluate("test")
    return {
        "delta_m": test.delta_m,
        "val_delta_m": val.delta_m,
        "test_losses": test.losses,
        "wall_s": wall,
        "cpu_s": cpu,
    }


def main() -> None:
    """Run every missing (method, instance) pair and append it to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines results file")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="instance seeds")
    parser.add_argument("--methods", nargs="+", required=True, help="label=name[:k=v,...]")
    parser.add_argument("--balancer", default="sum")
    parser.add_argument("--n-tasks", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    done: set[tuple[str, str, int]] = set()
    if args.out.is_file():
        for line in args.out.read_text().splitlines():
            row = json.loads(line)
            done.add((row["method"], row["balancer"], row["seed"]))
    for seed in args.seeds:
        for text in args.methods:
            label, name, kwargs = parse_method(text)
            if (label, args.balancer, seed) in done:
                continue
            result = run_one(name, kwargs, args.balancer, seed, args.n_tasks)
            row = {"method": label, "balancer": args.balancer, "seed": seed, **result}
            with args.out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{label} [{args.balancer}] seed {seed}: Δm {result['delta_m']:.3f}", flush=True)


if __name__ == "__main__":
    main()
