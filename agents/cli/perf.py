"""``igb perf``: overhead ratios measured side by side in one process."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``perf`` subcommand."""
    p = subparsers.add_parser(
        "perf",
        help="measure per-task-gradient and balancer costs relative to EW (interleaved medians)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--threads", type=int, help="torch threads for the step costs (default: current)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="interleaved repeats (default 5; the agent overheads take 7 ratios per repeat)",
    )
    p.add_argument(
        "--tiny", action="store_true", help="tiny model, one call per repeat (smoke tests)"
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``igb perf``."""
    from agents.experiments.perf import format_table, run_perf

    result = run_perf(threads=args.threads, repeats=args.repeats, tiny=args.tiny)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
