"""``igb tune-static CONFIG``: search constant weights on training seeds, write a config snippet.

Two searches (``mtl_backends.tuning``): ``tpe`` (the default; Optuna's TPE over per-task logits
with a trial budget, pruning and a resumable SQLite study; the ``tune`` extra) and ``grid`` (a
seeded sample of a ``T · softmax(logits)`` grid, for a few tasks). Without ``--search`` the search
is the one whose options are given (``--candidates`` / ``--logits``: grid), else ``tpe``; options
of the other search are refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agents.cli.errors import flag_message

GRID_OPTIONS: dict[str, str] = {"candidates": "--candidates", "logits": "--logits"}
"""Options of ``--search grid`` (namespace attribute -> flag)."""
TPE_OPTIONS: dict[str, str] = {
    "trials": "--trials",
    "study": "--study",
    "logit_range": "--logit-range",
    "startup_trials": "--startup-trials",
    "pruner": "--pruner",
    "prune_startup_trials": "--prune-startup-trials",
    "eval_every": "--eval-every",
}
"""Options of ``--search tpe`` (namespace attribute -> flag)."""
SEARCHES: tuple[str, ...] = ("tpe", "grid")


def register(subparsers: Any) -> None:
    """Add the ``tune-static`` subcommand."""
    p = subparsers.add_parser(
        "tune-static",
        help="search constant loss weights (tuned_static) on training seeds by validation Δm",
        description="Search constant loss weights on training seeds by mean validation Δm and "
        "write a tuned_static config snippet. --search tpe (default): Optuna TPE over per-task "
        "logits (weights T * softmax(logits)), a trial budget, median pruning on intermediate "
        "validation Δm, a resumable SQLite study (--study). --search grid: a seeded sample of a "
        "logit grid (for a few tasks). Without --search, grid options select the grid.",
    )
    p.add_argument(
        "config", help="RunConfig YAML (benchmark, balancer, train, stl_cache) or a built-in name"
    )
    p.add_argument(
        "--search",
        choices=SEARCHES,
        help="tpe (Optuna; needs the tune extra) or grid; default: grid when --candidates or "
        "--logits is given, else tpe",
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
        "--search-seed", type=int, default=0, help="seed of the grid sample / the TPE sampler"
    )
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--out", default="tuned_static.yaml", help="YAML snippet to write")
    grid = p.add_argument_group("grid search")
    grid.add_argument(
        "--candidates",
        type=int,
        help="at most this many candidate weight vectors (equal weights + a seeded sample of the "
        "grid; default 32)",
    )
    grid.add_argument(
        "--logits",
        type=float,
        nargs="+",
        help="per-task logit grid; candidates are T * softmax(logits) (default -1 -0.5 0 0.5 1)",
    )
    tpe = p.add_argument_group("TPE search")
    tpe.add_argument(
        "--trials",
        type=int,
        help="trial budget: finished (complete or pruned) trials the study holds at the end; a "
        "resumed study runs the missing ones (default 50)",
    )
    tpe.add_argument(
        "--study",
        help="SQLite file of a resumable study (its folder must exist); rerunning with the same "
        "file continues it, a study of other settings is refused (default: in memory)",
    )
    tpe.add_argument(
        "--logit-range",
        type=float,
        help="per-task logits are searched in [-R, R]; weight ratios up to exp(2R) (default 1: "
        "ratios up to 7.4, the grid's span)",
    )
    tpe.add_argument(
        "--startup-trials",
        type=int,
        help="random trials before TPE models the results, equal weights included (default 10)",
    )
    tpe.add_argument(
        "--pruner",
        choices=("median", "none"),
        help="median: stop a trial whose mean validation Δm at an evaluation point is worse than "
        "the completed trials' median there; none: no pruning (default median)",
    )
    tpe.add_argument(
        "--prune-startup-trials",
        type=int,
        help="completed trials before the pruner may stop one (default 5)",
    )
    tpe.add_argument(
        "--eval-every",
        type=int,
        metavar="STEPS",
        help="steps between the validation evaluations the pruner sees (default: a fifth of "
        "train.steps)",
    )
    p.set_defaults(func=main)


def resolve_search(args: argparse.Namespace) -> str:
    """The search to run: ``--search``, else the one whose options are given, else ``tpe``.

    Raises:
        ValueError: Options of both searches, or of the search not chosen.
    """
    grid = [flag for name, flag in GRID_OPTIONS.items() if getattr(args, name) is not None]
    tpe = [flag for name, flag in TPE_OPTIONS.items() if getattr(args, name) is not None]
    search: str | None = args.search
    if search is None:
        if grid and tpe:
            raise ValueError(
                f"{', '.join(grid)} (grid search) and {', '.join(tpe)} (TPE search) cannot be "
                "combined; choose one search (--search grid or --search tpe)"
            )
        search = "grid" if grid else "tpe"
    wrong, other = (tpe, "tpe") if search == "grid" else (grid, "grid")
    if wrong:
        takes = ", ".join((GRID_OPTIONS if search == "grid" else TPE_OPTIONS).values())
        raise ValueError(
            f"{', '.join(wrong)}: only for --search {other}, and this is --search {search} "
            f"(whose options are {takes})"
        )
    return search


def snippet(result: Any, benchmark: str, detail: str | None = None) -> str:
    """The YAML snippet (``weighting: {name: tuned_static, weights: [...]}``) with a comment.

    Args:
        result: A ``TuneResult`` or ``TPEResult``.
        benchmark: Benchmark name for the comment.
        detail: What was searched (default: the grid's candidate count).
    """
    import yaml

    body = yaml.safe_dump(
        {"weighting": {"name": "tuned_static", "weights": [round(w, 6) for w in result.weights]}},
        sort_keys=False,
        default_flow_style=None,
    )
    detail = detail or f"{len(result.candidates)} candidates"
    header = (
        f"# tuned_static on {benchmark}: mean validation Δm {result.score:+.3f} % over training "
        f"seeds {result.seeds} ({detail})\n"
    )
    return header + body


def _weights(weights: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in weights)


def main(args: argparse.Namespace) -> int:
    """Run ``igb tune-static``."""
    import dataclasses
    import time

    from mtl_backends.config import RunConfig, check_seed, load_config
    from mtl_backends.fileio import check_writable_file
    from mtl_backends.packaged import resolve_config

    search = resolve_search(args)
    # Bad search settings fail before anything loads or trains.
    tpe_config = _tpe_config(args) if search == "tpe" else None
    if search == "grid" and args.candidates is not None and args.candidates < 1:
        raise ValueError(f"--candidates must be >= 1, got {args.candidates}")
    config = load_config(RunConfig, resolve_config(args.config, "runs"))
    if args.steps is not None:
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, steps=args.steps)
        )
    for seed in args.seeds:
        check_seed(seed, "--seeds")
    check_seed(args.search_seed, "--search-seed")
    # The snippet is written after the search: an unwritable path must fail before it.
    check_writable_file(args.out, "--out")
    print(
        f"benchmark={config.benchmark.name} balancer={config.balancer.name} seeds={args.seeds} "
        f"search={search}",
        flush=True,
    )
    start = time.monotonic()
    text = _grid(args, config) if tpe_config is None else _tpe(args, config, tpe_config)
    print(f"  wall time {time.monotonic() - start:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"  wrote {out}")
    return 0


def _grid(args: argparse.Namespace, config: Any) -> str:
    from mtl_backends.tuning import DEFAULT_LOGITS, tune_static_weights

    candidates = 32 if args.candidates is None else args.candidates
    result = tune_static_weights(
        config.benchmark,
        config.train,
        args.seeds,
        logits=DEFAULT_LOGITS if args.logits is None else args.logits,
        max_candidates=candidates,
        balancer=config.balancer,
        stl_cache=config.stl_cache,
        search_seed=args.search_seed,
        progress_bar=True,
    )
    order = sorted(range(len(result.scores)), key=lambda i: result.scores[i])
    for rank, i in enumerate(order[:5], start=1):
        print(
            f"  {rank}. val Δm = {result.scores[i]:+.3f} %  weights "
            f"[{_weights(result.candidates[i])}]"
        )
    return snippet(result, config.benchmark.name)


def _tpe_config(args: argparse.Namespace) -> Any:
    """The ``TPEConfig`` of the TPE flags (defaults for those not given)."""
    from mtl_backends.tuning import TPEConfig

    values = {
        name: getattr(args, name)
        for name in TPE_OPTIONS
        if name != "study" and getattr(args, name) is not None
    }
    try:
        return TPEConfig(**values, search_seed=args.search_seed)
    except ValueError as err:
        # TPEConfig's messages start with the field; the user typed the flag.
        flags = {**TPE_OPTIONS, "search_seed": "--search-seed"}
        raise ValueError(flag_message(str(err), flags)) from None


def _tpe(args: argparse.Namespace, config: Any, search: Any) -> str:
    from mtl_backends.tuning import import_optuna, tune_static_tpe

    optuna = import_optuna()

    # One line per trial comes from the search's own progress; optuna's INFO lines repeat them.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = tune_static_tpe(
        config.benchmark,
        config.train,
        args.seeds,
        search,
        balancer=config.balancer,
        stl_cache=config.stl_cache,
        study=args.study,
        progress_bar=True,
    )
    where = f"study {args.study}" if args.study else "in-memory study"
    print(
        f"  {where}: {len(result.trials)} trials ({result.n_pruned} pruned), {result.ran} run now"
    )
    if result.equal_score is not None:
        print(f"  equal weights: val Δm = {result.equal_score:+.3f} %")
    complete = sorted(
        (t for t in result.trials if t.state == "complete"), key=lambda t: (t.score, t.number)
    )
    for rank, t in enumerate(complete[:5], start=1):
        weights = _weights(t.weights)
        print(f"  {rank}. val Δm = {t.score:+.3f} %  trial {t.number}  weights [{weights}]")
    equal = "" if result.equal_score is None else f"; equal weights {result.equal_score:+.3f} %"
    detail = f"TPE: {len(result.trials)} trials, {result.n_pruned} pruned{equal}"
    return snippet(result, config.benchmark.name, detail)
