"""``igb quickstart``: train, export and compare a learned weighting policy in minutes on a CPU."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``quickstart`` subcommand."""
    p = subparsers.add_parser(
        "quickstart",
        help="end to end on the synthetic benchmark: STL, agent, export, EW/SI/IGBv1/policy table",
    )
    p.add_argument("--out", help="output folder (default runs/quickstart-<time>)")
    p.add_argument("--tiny", action="store_true", help="seconds-scale version (smoke test)")
    p.add_argument("--seed", type=int, default=0, help="agent seed")
    p.add_argument(
        "--agent-budget",
        type=float,
        help="wall-clock seconds of agent training (default 300; 5 with --tiny)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars or lines")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``igb quickstart``."""
    from agents.experiments.quickstart import quickstart
    from mtl_backends.fileio import check_writable_dir

    out = Path(args.out) if args.out else None
    if out is not None:
        check_writable_dir(out, "--out")
    quickstart(
        out,
        tiny=args.tiny,
        seed=args.seed,
        time_budget_s=args.agent_budget,
        progress_bar=not args.no_progress,
    )
    return 0
