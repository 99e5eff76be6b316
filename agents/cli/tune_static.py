"""``igb tune-static CONFIG``: search constant weights on training seeds, write a config snippet."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``tune-static`` subcommand."""
    p = subparsers.add_parser(
        "tune-static",
        help="search constant loss weights (tuned_static) on training seeds by validation Δm",
    )
    p.add_argument(
        "config", help="RunConfig YAML (benchmark, balancer, train, stl_cache) or a built-in name"
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[100, 101, 102],
        help="training seeds (instances) to tune on; keep them disjoint from reported seeds "
        "(default 100 101 102)",
    )
    p.add_argument(
        "--candidates",
        type=int,
        default=32,
        help="at most this many candidate weight vectors (equal weights + a seeded sample of the "
        "grid; default 32)",
    )
    p.add_argument(
        "--logits",
        type=float,
        nargs="+",
        default=[-1.0, -0.5, 0.0, 0.5, 1.0],
        help="per-task logit grid; candidates are T * softmax(logits) (default -1 -0.5 0 0.5 1)",
    )
    p.add_argument("--search-seed", type=int, default=0, help="seed of the candidate sample")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--out", default="tuned_static.yaml", help="YAML snippet to write")
    p.set_defaults(func=main)


def snippet(result: Any, benchmark: str) -> str:
    """The YAML snippet (``weighting: {name: tuned_static, weights: [...]}``) with a comment."""
    import yaml

    body = yaml.safe_dump(
        {"weighting": {"name": "tuned_static", "weights": [round(w, 6) for w in result.weights]}},
        sort_keys=False,
        default_flow_style=None,
    )
    header = (
        f"# tuned_static on {benchmark}: mean validation Δm {result.score:+.3f} % over training "
        f"seeds {result.seeds} ({len(result.candidates)} candidates)\n"
    )
    return header + body


def main(args: argparse.Namespace) -> int:
    """Run ``igb tune-static``."""
    import dataclasses

    from mtl_backends.config import RunConfig, check_seed, load_config
    from mtl_backends.fileio import check_writable_file
    from mtl_backends.packaged import resolve_config
    from mtl_backends.tuning import tune_static_weights

    config = load_config(RunConfig, resolve_config(args.config, "runs"))
    if args.steps is not None:
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, steps=args.steps)
        )
    if args.candidates < 1:
        raise ValueError(f"--candidates must be >= 1, got {args.candidates}")
    for seed in args.seeds:
        check_seed(seed, "--seeds")
    # The snippet is written after the search: an unwritable path must fail before it.
    check_writable_file(args.out, "--out")
    result = tune_static_weights(
        config.benchmark,
        config.train,
        args.seeds,
        logits=args.logits,
        max_candidates=args.candidates,
        balancer=config.balancer,
        stl_cache=config.stl_cache,
        search_seed=args.search_seed,
        progress_bar=True,
    )
    order = sorted(range(len(result.scores)), key=lambda i: result.scores[i])
    print(f"benchmark={config.benchmark.name} balancer={config.balancer.name} seeds={args.seeds}")
    for rank, i in enumerate(order[:5], start=1):
        w = ", ".join(f"{v:.3f}" for v in result.candidates[i])
        print(f"  {rank}. val Δm = {result.scores[i]:+.3f} %  weights [{w}]")
    text = snippet(result, config.benchmark.name)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"  wrote {out}")
    return 0
