"""``igb train CONFIG``: one plain MTL run (no RL)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser("train", help="train one MTL run and print final metrics and Δm")
    p.add_argument(
        "config",
        help="RunConfig YAML, or the name of a built-in one (synthetic, ...: configs/runs/)",
    )
    p.add_argument("--weighting", help="override the loss weighting (registry name)")
    p.add_argument("--balancer", help="override the gradient balancer (registry name)")
    p.add_argument(
        "--flat",
        nargs="?",
        type=float,
        const=2.0,
        metavar="RHO",
        help="wrap the balancer in the sharpness-aware flat wrapper (F-MGDA, F-CAGrad, ...; "
        "Phan et al.) with radius RHO (default 2.0)",
    )
    p.add_argument("--seed", type=int, help="override the seed")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--out", help="run folder (default runs/train-<time>)")
    p.add_argument("--no-stl", action="store_true", help="skip STL references (no Δm)")
    p.set_defaults(func=main)


def apply_overrides(config: Any, args: argparse.Namespace) -> Any:
    """Apply the command-line overrides to a ``RunConfig``."""
    from mtl_backends.config import MethodSpec

    changes: dict[str, Any] = {}
    if args.weighting:
        changes["weighting"] = MethodSpec(args.weighting)
    if args.balancer:
        changes["balancer"] = MethodSpec(args.balancer)
    if args.seed is not None:
        changes["seed"] = args.seed
    train_changes: dict[str, Any] = {}
    if args.steps is not None:
        train_changes["steps"] = args.steps
    if getattr(args, "flat", None) is not None:
        train_changes["flat_rho"] = args.flat
    if train_changes:
        changes["train"] = dataclasses.replace(config.train, **train_changes)
    if getattr(args, "no_stl", False):
        changes["stl_cache"] = None
    return dataclasses.replace(config, **changes)


def main(args: argparse.Namespace) -> int:
    """Run ``igb train``."""
    import agents.online  # noqa: F401  (registers igbv2; light, SB3 loads on use)
    from mtl_backends.config import RunConfig, load_config
    from mtl_backends.fileio import check_writable_dir
    from mtl_backends.packaged import resolve_config
    from mtl_backends.run import run

    config = apply_overrides(load_config(RunConfig, resolve_config(args.config, "runs")), args)
    out = Path(args.out) if args.out else Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S')}"
    # The results are written after training: an unwritable folder must fail before it.
    check_writable_dir(out, "--out")
    result = run(config, out, progress_bar=True)
    print_run(config, result, out, config.weighting.name)
    return 0


def print_run(config: Any, result: Any, out: Path, weighting_label: str) -> None:
    """Print a finished run: its settings, per-task test metrics, Δm / Δp and speed."""
    print(
        f"benchmark={config.benchmark.name} weighting={weighting_label} "
        f"balancer={config.balancer.name} seed={config.seed} steps={config.train.steps}"
        + ("" if config.train.flat_rho is None else f" flat_rho={config.train.flat_rho}")
    )
    for name, value in result.test.metrics.items():
        print(f"  test {name:>16s} = {value:.6g}")
    if result.test.delta_m is not None:
        print(f"  test Δm = {result.test.delta_m:+.3f} %   Δp = {result.test.delta_p:+.3f} %")
    print(f"  {result.steps_per_second:.3g} steps/s; run folder: {out}")
