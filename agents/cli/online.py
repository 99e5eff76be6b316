"""``igb online CONFIG``: one MTL run weighted by IGBv2 (SAC learning during the run)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``online`` subcommand."""
    p = subparsers.add_parser(
        "online",
        help="train one MTL run with IGBv2 online (SAC learns the weights during the run) and "
        "print final metrics and Δm",
    )
    p.add_argument(
        "config",
        help="RunConfig YAML; its weighting is replaced by igbv2 unless it already is igbv2 "
        "(then its arguments are kept)",
    )
    p.add_argument("--balancer", help="override the gradient balancer (registry name)")
    p.add_argument("--seed", type=int, help="override the seed")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--out", help="run folder (default runs/online-<time>)")
    p.add_argument("--no-stl", action="store_true", help="skip STL references (no Δm)")
    p.set_defaults(func=main)


def online_config(config: Any) -> Any:
    """``config`` with its weighting forced to ``igbv2`` (arguments kept if it already is)."""
    from mtl_backends.config import MethodSpec

    if config.weighting.name == "igbv2":
        return config
    return dataclasses.replace(config, weighting=MethodSpec("igbv2"))


def main(args: argparse.Namespace) -> int:
    """Run ``igb online``."""
    import agents.online  # noqa: F401  (registers igbv2)
    from agents.cli.train import apply_overrides, print_run
    from mtl_backends.config import RunConfig, load_config
    from mtl_backends.fileio import check_writable_dir
    from mtl_backends.packaged import resolve_config
    from mtl_backends.run import run

    overrides = argparse.Namespace(**{**vars(args), "weighting": None, "flat": None})
    loaded = load_config(RunConfig, resolve_config(args.config, "runs"))
    config = online_config(apply_overrides(loaded, overrides))
    out = Path(args.out) if args.out else Path("runs") / f"online-{time.strftime('%Y%m%d-%H%M%S')}"
    check_writable_dir(out, "--out")
    result = run(config, out, progress_bar=True)
    kwargs = ", ".join(f"{k}={v}" for k, v in config.weighting.kwargs.items())
    print_run(config, result, out, f"igbv2({kwargs})")
    return 0
