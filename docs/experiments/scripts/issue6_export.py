"""Issue 6: export an agent run's model selected on the training-side validation instances.

``igb export RUN`` writes the final model; this writes ``RUN/best_model.zip`` (the best
``EvalCallback`` return on the config's ``test_set``, here validation instances 200..203, never
the held-out 1000..1007) when it exists, else the final model, as ``RUN/policy-best``.

    python docs/experiments/scripts/issue6_export.py /tmp/exp6/runs/res_s0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.config import load_agent_config
from agents.export import export_model
from agents.train import load_model


def main() -> None:
    """Export the selected model of one run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path, help="agent run folder")
    args = parser.parse_args()
    best = (args.run / "best_model.zip").is_file()
    config = load_agent_config(args.run / "config.yaml")
    out = export_model(load_model(args.run, best=best), dict(config.env), args.run / "policy-best")
    print(f"exported {'best_model' if best else 'model'}.zip of {args.run} to {out}")


if __name__ == "__main__":
    main()
