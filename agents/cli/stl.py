"""``igb stl CONFIG``: train (or load from the cache) the single-task references of a config."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``stl`` subcommand."""
    p = subparsers.add_parser("stl", help="train and cache single-task references for a RunConfig")
    p.add_argument("config", help="RunConfig YAML, or the name of a built-in one (configs/runs/)")
    p.add_argument("--seed", type=int, action="append", help="seed(s) (default: the config's)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``igb stl``."""
    from mtl_backends.config import RunConfig, load_config
    from mtl_backends.packaged import resolve_config
    from mtl_backends.stl import stl_reference

    config = load_config(RunConfig, resolve_config(args.config, "runs"))
    if config.stl_cache is None:
        raise ValueError("the config sets stl_cache: null; give a cache folder to store references")
    for seed in args.seed or [config.seed]:
        ref = stl_reference(
            config.benchmark, config.train, seed, config.stl_cache, progress_bar=True
        )
        print(f"seed {seed}:")
        for split, metrics in ref.items():
            print("  " + split + ": " + ", ".join(f"{k}={v:.6g}" for k, v in metrics.items()))
    return 0
