"""Issue 14: would a reward that stops paying past saturation rank the DB-MTL runs as Δm does?

The generalists are trained on ``val_log_improvement``, whose episode return is (up to the shared
start) ``R = mean_t log(V_base,t / V_end,t)`` with ``V = L_val − L*``: it pays for every halving
of a task's validation loss, also of a classifier whose cross-entropy is already near 0 and whose
accuracy no longer moves. Candidate returns, computed offline from ``igb compare`` cells:

* ``log``: the current return;
* ``floor ρ``: ``mean_t log(V_base,t / max(V_end,t, ρ V_base,t))``, a task stops paying once its
  validation gap is below ``ρ`` of its base (at most ``log(1/ρ)`` per task);
* ``linear``: ``mean_t (1 − V_end,t / V_base,t)``, the normalised gap closed (at most 1 per task);
* ``log metric``: ``mean_m ±log(M_val,m)`` over the benchmark's metrics (``+`` where higher is
  better: accuracy for a classifier, the loss for a regression), the log form of validation Δm;
  its base is shared by the rows of a run and cancels in the pairs.

For every pair of a row and the reference row on the same benchmark and seed (one balancer), it
prints how often each return's verdict agrees with test Δm's, per benchmark group. ``V_base`` is
the validation loss at the end of the base window, which every weighting of the same loss
transform shares (weights 1 until then; the script checks this for two rows of the first run).

    python docs/experiments/scripts/generalist_reward_floor.py \
        runs/kinds_dbmtl=docs/experiments/scripts/generalist_kinds_dbmtl.yaml \
        runs/generalist=configs/experiments/generalist.yaml --balancer DB-MTL --reference SI
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.experiments.config import load_experiment
from agents.experiments.grid import Cell, plan_grid
from mtl_backends.build import build_trainer
from mtl_backends.weightings import make_weighting

FLOORS = (0.3, 0.1, 0.03, 0.01)


def _base_val(cell: Cell) -> tuple[np.ndarray, np.ndarray]:
    """``(V_base − L*, L*)``: validation loss gap at the end of the cell's base window."""
    trainer = build_trainer(
        cell.benchmark.spec_for(cell.seed),
        cell.weighting.spec,
        cell.balancer.spec,
        cell.train,
        seed=cell.seed,
    )
    for _ in range(trainer.progress.base_window[1]):
        trainer.step()
    lower = trainer.progress.lower_bounds.numpy().copy()
    val = np.asarray(trainer.evaluate("val").losses, dtype=np.float64)
    return val - lower, lower


def _returns(v_base: np.ndarray, v_end: np.ndarray, rec: dict[str, Any]) -> dict[str, float]:
    tiny = 1e-30
    out = {"log": float(np.mean(np.log(v_base / np.maximum(v_end, tiny))))}
    for rho in FLOORS:
        out[f"floor {rho:g}"] = float(np.mean(np.log(v_base / np.maximum(v_end, rho * v_base))))
    out["linear"] = float(np.mean(1.0 - v_end / v_base))
    logs = []
    for spec in rec["metric_specs"]:
        value = math.log(max(float(rec["metrics"]["val"][spec["name"]]), 1e-12))
        logs.append(value if spec["higher_is_better"] else -value)
    out["log metric"] = float(np.mean(logs))
    return out


def _group(label: str) -> str:
    if label.startswith("synthetic-wide T=3 ccr"):
        return label.replace("synthetic-wide ", "")
    if label.startswith("synthetic-wide"):
        return "held-out synthetic (T = 2/4/6/10)"
    return label


def main() -> None:
    """Print the agreement of every candidate return with Δm, per benchmark group."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="RUN_DIR=EXPERIMENT_YAML pairs")
    parser.add_argument("--balancer", default="DB-MTL", help="balancer label of the cells")
    parser.add_argument("--reference", default="SI", help="weighting row to pair with")
    parser.add_argument("--rows", nargs="*", default=None, help="rows to compare (default all)")
    parser.add_argument("--cache", type=Path, default=None, help="JSON cache of the base windows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scores: dict[tuple[str, int], dict[str, tuple[float, dict[str, float]]]] = defaultdict(dict)
    checked = False
    cache: dict[str, list[list[float]]] = (
        json.loads(args.cache.read_text()) if args.cache and args.cache.exists() else {}
    )
    for pair in args.runs:
        folder, config = (Path(p) for p in pair.split("="))
        cells = [
            c
            for c in plan_grid(load_experiment(config)).cells
            if c.balancer.display == args.balancer
            and (not args.rows or c.weighting.display in (*args.rows, args.reference))
        ]
        bases: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]] = {}
        for cell in cells:
            path = folder / "cells" / f"{cell.key}.json"
            if not path.exists():
                continue
            rec = json.loads(path.read_text())
            if rec.get("status") != "ok" or rec.get("delta_m") is None:
                continue
            # Rows that train the base window alike share it: same run, same loss transform
            # (EW trains raw losses, the log-loss weightings log losses).
            transform = make_weighting(cell.weighting.name, **cell.weighting.kwargs).transform
            key = (cell.benchmark.display, cell.seed, transform)
            name = f"{args.balancer}|{key[0]}|{key[1]}|{key[2]}"  # the balancer trains it too
            cached = cache.get(name)
            if key not in bases and cached is not None:
                bases[key] = (np.asarray(cached[0]), np.asarray(cached[1]))
            if key not in bases:
                bases[key] = _base_val(cell)
                cache[name] = [b.tolist() for b in bases[key]]
            elif not checked:
                # Every log-transform row trains the base window alike (weights 1): V_base of a
                # second row of the same run must be the first's, bit for bit.
                assert np.array_equal(_base_val(cell)[0], bases[key][0]), "base windows differ"
                checked = True
            v_base, lower = bases[key]
            v_end = np.asarray(rec["losses"]["val"], dtype=np.float64) - lower
            scores[key[:2]][cell.weighting.display] = (
                float(rec["delta_m"]),
                _returns(v_base, v_end, rec),
            )
        print(f"{folder}: {len(bases)} base windows", flush=True)
    if args.cache is not None:
        args.cache.write_text(json.dumps(cache))
    table: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for (bench, _seed), rows in scores.items():
        if args.reference not in rows:
            continue
        dm0, r0 = rows[args.reference]
        for weighting, (dm, r) in rows.items():
            if weighting == args.reference:
                continue
            for name, value in r.items():
                table[_group(bench)][name].append((value - r0[name], dm - dm0))
    names = ["log", *(f"floor {rho:g}" for rho in FLOORS), "linear", "log metric"]
    print(f"\nAgreement of ΔR with −ΔΔm against {args.reference} ({args.balancer}), pairs:")
    print("| group | pairs | mean ΔΔm | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 3) + "|")
    for group, by_name in sorted(table.items()):
        n = len(by_name["log"])
        mean_ddm = float(np.mean([d for _, d in by_name["log"]]))
        cells_ = []
        for name in names:
            pairs = by_name[name]
            agree = np.mean([(dr > 0) == (ddm < 0) for dr, ddm in pairs])
            mean_dr = float(np.mean([dr for dr, _ in pairs]))
            cells_.append(f"{agree:.2f} ({mean_dr:+.3f})")
        print(f"| {group} | {n} | {mean_ddm:+.2f} | " + " | ".join(cells_) + " |")


if __name__ == "__main__":
    main()
