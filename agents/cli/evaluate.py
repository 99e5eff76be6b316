"""``igb evaluate RUN_OR_POLICY``: a learned policy on held-out instances, rollouts and MTL runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate an agent run or exported policy on held-out instances (Δm vs STL)",
    )
    p.add_argument(
        "target",
        metavar="RUN_OR_POLICY",
        help="agent run folder, policy folder or shipped policy name",
    )
    p.add_argument(
        "--instances", type=int, nargs="+", help="held-out instance seeds (default: test_set)"
    )
    p.add_argument(
        "--balancer",
        action="append",
        default=[],
        metavar="NAME",
        help="also run every method under this balancer (repeatable)",
    )
    p.add_argument(
        "--out",
        help="JSON path (default RUN_OR_POLICY/evaluation.json; required for a shipped policy)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes for the runs (default 1)")
    p.add_argument("--stl-cache", default=".igb-cache/stl", help="STL reference cache folder")
    p.add_argument("--best", action="store_true", help="use the run's best held-out model")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--variation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw each instance's benchmark arguments with the benchmark's variation sampler "
        "(new task scales, noise, label fractions) or not (default: as the policy was trained)",
    )
    p.add_argument(
        "--agent-seed",
        action="append",
        default=[],
        metavar="RUN_OR_POLICY",
        help="another agent seed of the same design, trained for the same env (repeatable): its "
        "policy joins the runs, and the table adds IQM / mean with stratified-bootstrap intervals "
        "and the probability of improvement over --reference across (agent seed x instance)",
    )
    p.add_argument(
        "--reference",
        default="igbv1",
        help="baseline of the probability of improvement (default igbv1)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``igb evaluate``."""
    from agents.experiments.evaluate import default_out, evaluate
    from mtl_backends.fileio import check_writable_dir, check_writable_file

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    out = args.out or str(default_out(args.target))
    if args.out:
        check_writable_file(args.out, "--out")
    else:
        check_writable_dir(args.target, "RUN_OR_POLICY (evaluation.json is written there)")
    results = evaluate(
        args.target,
        instances=args.instances,
        balancers=args.balancer,
        out=Path(args.out) if args.out else None,
        workers=args.workers,
        stl_cache=args.stl_cache,
        best=args.best,
        variation=args.variation,
        progress_bar=not args.no_progress,
        agent_seeds=args.agent_seed,
        reference=args.reference,
    )
    print(results["table"])
    print(f"\nresults written to {out}")
    return 0
