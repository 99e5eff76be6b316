"""``igb export RUN``: write a trained agent as a standalone policy (no SB3 needed to load it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser("export", help="export an agent run as a standalone policy folder")
    p.add_argument("run", help="agent run folder (from `igb train-agent`)")
    p.add_argument("--out", help="policy folder (default RUN/policy)")
    p.add_argument(
        "--best",
        action="store_true",
        help="export the best model on the held-out validation instances (RUN/best_model.zip)",
    )
    p.add_argument(
        "--onnx",
        action="store_true",
        help='also write policy.onnx (any T for set policies; needs pip install "igb-rl[onnx]")',
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``igb export``."""
    from agents.export import export_run
    from mtl_backends.fileio import check_writable_dir

    run = Path(args.run)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(
            f"RUN {str(run)!r} is not an agent run folder (no config.yaml); give the folder "
            "`igb train-agent --out` wrote"
        )
    out = check_writable_dir(Path(args.out) if args.out else run / "policy", "--out")
    out = export_run(run, out, best=args.best, onnx=args.onnx)
    print(f"policy written to {out}" + (" (with policy.onnx)" if args.onnx else ""))
    return 0
