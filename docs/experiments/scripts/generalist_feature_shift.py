r"""Issue 14: what a generalist sees and does on multi_digits against its own kind of training run.

The DB-MTL-trained generalist loses to SI + DB-MTL on multi_digits (two 10-class digit
classifiers and a digit-sum regression) while it beats it on held-out synthetic runs. This runs
the policy with DB-MTL underneath on

* multi_digits (``configs/experiments/generalist.yaml``'s cell, never trained on), and
* the synthetic runs of ``generalist_kinds.yaml`` with two classifiers and one regression, with
  2 classes (the ``wide2`` regime closest to multi_digits) and with 16,

and prints, per task kind (a task is a classifier when its test metric is an accuracy), the mean
of every per-task feature and of the policy's action over the second half of the decisions, and
the mean weight: do multi_digits' classifiers look like the training classifiers, and does the
policy treat them alike?

    python docs/experiments/scripts/generalist_feature_shift.py --seeds 0 1 \
        --policy "generalist-dbmtl s1" --out docs/results/generalist_feature_shift

Test metrics are the final model's (the grid selects multi_digits' by validation Δm, which needs
STL references; the features do not depend on selection). The features are read after each
decision step's update (``GapTracker.features()``), so the ``weight`` column holds the weights of
the decision step itself; every other column is what the
policy saw.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.experiments.config import load_experiment
from agents.experiments.grid import Cell, plan_grid
from mtl_backends.build import build_trainer
from mtl_backends.gaps import is_decision_step
from mtl_backends.run import train_and_evaluate
from mtl_backends.trainer import MTLTrainer, StepResult
from mtl_backends.weightings import PolicyWeighting

GENERALIST = Path("configs/experiments/generalist.yaml")
KINDS = Path("docs/experiments/scripts/generalist_kinds.yaml")
SETTINGS = {
    "multi_digits": ("multi_digits", GENERALIST),
    "synthetic ccr, 2 classes": ("synthetic-wide T=3 ccr c2", KINDS),
    "synthetic ccr, 16 classes": ("synthetic-wide T=3 ccr", KINDS),
}


def _cell(path: Path, bench: str, row: str, seed: int) -> Cell:
    for cell in plan_grid(load_experiment(path)).cells:
        if cell.benchmark.display == bench and cell.row == row and cell.seed == seed:
            return cell
    raise SystemExit(f"no cell {bench!r} / {row!r} / seed {seed} in {path}")


def _run(cell: Cell) -> dict[str, Any]:
    """Train the cell, recording features, held actions and weights at every decision."""
    trainer = build_trainer(
        cell.benchmark.spec_for(cell.seed),
        cell.weighting.spec,
        cell.balancer.spec,
        cell.train,
        seed=cell.seed,
    )
    weighting = trainer.weighting
    assert isinstance(weighting, PolicyWeighting)
    names = trainer.progress.table.names(trainer.benchmark.task_names)
    classifier = [False] * trainer.n_tasks
    for spec in trainer.benchmark.metric_specs:
        if "acc" in spec.name:
            classifier[spec.task] = True
    records: list[dict[str, Any]] = []

    def observe(tr: MTLTrainer, result: StepResult) -> None:
        base_end = tr.progress.base_window[1]
        if not tr.progress.has_base or not is_decision_step(
            result.step, base_end, weighting.steps_per_action
        ):
            return
        action = weighting._held.action
        records.append(
            {
                "step": result.step,
                "features": tr.progress.features().tolist(),
                "action": None if action is None else action.tolist(),
                "weights": [float(w) for w in result.weights],
            }
        )

    outcome = train_and_evaluate(trainer, cell.selection, cell.eval_every, [observe])
    return {
        "cell": cell.row,
        "benchmark": cell.benchmark.display,
        "seed": cell.seed,
        "names": names,
        "n_tasks": trainer.n_tasks,
        "per_task": len(trainer.progress.table.per_task),
        "task_features": [f.name for f in trainer.progress.table.per_task],
        "classifier": classifier,
        "test_metrics": outcome.test.metrics,
        "records": records,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``kind -> column -> mean`` over the second half of every run's decisions."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        recs = run["records"][len(run["records"]) // 2 :]
        n, f = run["n_tasks"], run["per_task"]
        for rec in recs:
            feats = np.asarray(rec["features"][: n * f]).reshape(n, f)
            action = rec["action"]
            for t in range(n):
                kind = "classifier" if run["classifier"][t] else "regression"
                for j, name in enumerate(run["task_features"]):
                    sums[kind][name].append(float(feats[t, j]))
                sums[kind]["weight applied"].append(rec["weights"][t])
                if action is not None:
                    sums[kind]["action a_t"].append(float(np.clip(action[t], -1, 1)))
            if action is not None:
                sums["run"]["p = clip(a_p, 0, 1)"].append(float(np.clip(action[n], 0, 1)))
                sums["run"]["q = 1 + clip(a_q)"].append(1.0 + float(np.clip(action[n + 1], -1, 1)))
    return {k: {c: float(np.mean(v)) for c, v in cols.items()} for k, cols in sums.items()}


def main() -> None:
    """Run the settings and print the tables (and write the records with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--policy", default="generalist-dbmtl s1", help="generalist.yaml row")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON records")
    parser.add_argument("--only", nargs="*", default=None, help="settings to run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy_cell = _cell(GENERALIST, "multi_digits", f"{args.policy} + DB-MTL", args.seeds[0])
    table: dict[str, dict[str, dict[str, float]]] = {}
    for setting, (bench, path) in SETTINGS.items():
        if args.only and setting not in args.only:
            continue
        runs = []
        for seed in args.seeds:
            cell = _cell(path, bench, "IGBv1" if path == KINDS else policy_cell.row, seed)
            # The final model: the features do not depend on model selection, and best_val
            # would need the STL references.
            cell = dataclasses.replace(
                cell,
                weighting=policy_cell.weighting,
                balancer=policy_cell.balancer,
                selection="final",
                eval_every=None,
            )
            run = _run(cell)
            runs.append(run)
            print(
                f"{setting} seed {seed}: {len(run['records'])} decisions, "
                f"test {run['test_metrics']}",
                flush=True,
            )
            if args.out is not None:
                args.out.mkdir(parents=True, exist_ok=True)
                name = f"{bench.replace(' ', '_').replace('=', '')}-s{seed}.json"
                (args.out / name).write_text(json.dumps(run))
        table[setting] = _summary(runs)
    columns = [(s, k) for s in table for k in ("classifier", "regression")]
    rows = sorted({c for s in table.values() for k, v in s.items() if k != "run" for c in v})
    print(
        "\n| feature / action (2nd half mean) | "
        + " | ".join(f"{s}: {k}" for s, k in columns)
        + " |"
    )
    print("|---" * (len(columns) + 1) + "|")
    for row in rows:
        cells = [table[s].get(k, {}).get(row) for s, k in columns]
        print(f"| {row} | " + " | ".join("—" if v is None else f"{v:+.3f}" for v in cells) + " |")
    for s in table:
        run = table[s].get("run", {})
        print(f"{s}: " + ", ".join(f"{k} {v:.3f}" for k, v in run.items()))


if __name__ == "__main__":
    main()
