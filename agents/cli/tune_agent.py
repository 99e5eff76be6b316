"""``igb tune-agent CONFIG``: search an agent's hyperparameters with Optuna (rl-zoo3 style).

TPE over the algorithm's search space (``agents.experiments.tune_agent.SEARCH_SPACES``), each
trial an agent run in ``OUT/trial-<n>`` scored by its best mean return on the env's held-out
``test_set``, median pruning after every evaluation, a resumable SQLite study (``--study``);
writes ``OUT/best.yaml`` (train it with ``igb train-agent OUT/best.yaml``) and ``OUT/trials.csv``.
Needs the ``tune`` extra.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from agents.cli.errors import flag_message

SEARCH_OPTIONS: dict[str, str] = {
    "trials": "--trials",
    "timesteps": "--timesteps",
    "eval_every": "--eval-every",
    "search_seed": "--search-seed",
    "startup_trials": "--startup-trials",
    "pruner": "--pruner",
    "prune_startup_trials": "--prune-startup-trials",
}
"""``AgentSearch`` field -> flag."""


def register(subparsers: Any) -> None:
    """Add the ``tune-agent`` subcommand."""
    p = subparsers.add_parser(
        "tune-agent",
        help="search an agent's hyperparameters (Optuna TPE, pruning on held-out returns)",
        description="Search the hyperparameters of an agent config the way rl-zoo3 does: "
        "Optuna's TPE sampler over the algorithm's search space, one agent run per trial "
        "(OUT/trial-<n>) scored by its best mean return on the env's held-out test_set, the "
        "median pruner after every evaluation, a resumable SQLite study (--study). Writes "
        "OUT/best.yaml (the config with the best hyperparameters) and OUT/trials.csv. Needs the "
        "tune extra.",
    )
    p.add_argument("config", help="agent config YAML (its env needs a test_set) or built-in name")
    p.add_argument("--out", required=True, help="folder of the trials, best.yaml and trials.csv")
    p.add_argument(
        "--study",
        help="SQLite file of a resumable study (its folder must exist); rerunning with the same "
        "file and --out continues it (default: in memory, nothing kept)",
    )
    p.add_argument(
        "--trials", type=int, help="trial budget: finished trials at the end (default 20)"
    )
    p.add_argument(
        "--timesteps",
        type=int,
        help="env steps per trial (default: the config's total_timesteps)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        metavar="STEPS",
        help="env steps between the held-out evaluations (default: the config's eval_every)",
    )
    p.add_argument("--search-seed", type=int, help="seed of the TPE sampler (default 0)")
    p.add_argument(
        "--startup-trials", type=int, help="random trials before TPE models them (default 5)"
    )
    p.add_argument(
        "--pruner",
        choices=("median", "none"),
        help="median: stop a trial whose latest held-out return is below the completed trials' "
        "median there; none: no pruning (default median)",
    )
    p.add_argument(
        "--prune-startup-trials",
        type=int,
        help="completed trials before the pruner may stop one (default 3)",
    )
    p.add_argument("--seed", type=int, help="override the config's agent seed (every trial's)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``igb tune-agent``."""
    from agents.build import check_hyperparameters
    from agents.config import load_agent_config
    from agents.experiments.tune_agent import AgentSearch, tune_agent
    from mtl_backends import studies
    from mtl_backends.packaged import resolve_config

    values = {
        name: getattr(args, name) for name in SEARCH_OPTIONS if getattr(args, name) is not None
    }
    try:
        search = AgentSearch(**values)
    except ValueError as err:
        # AgentSearch's messages start with the field; the user typed the flag.
        raise ValueError(flag_message(str(err), SEARCH_OPTIONS)) from None
    config = load_agent_config(resolve_config(args.config, "agents"))
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    check_hyperparameters(config)
    optuna = studies.import_optuna("igb tune-agent")
    # One line per trial comes from the search; optuna's INFO lines would repeat them.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"tune-agent: {config.algorithm} on {args.config}, {search.trials} trials of "
        f"{search.timesteps or config.total_timesteps} env steps, pruner {search.pruner}"
    )
    result = tune_agent(
        config, args.out, search, study=args.study, progress_bar=not args.no_progress
    )
    where = f"study {args.study}" if args.study else "in-memory study"
    print(
        f"  {where}: {len(result.trials)} trials ({result.n_pruned} pruned), {result.ran} run now"
    )
    ranked = sorted(
        (t for t in result.trials if t.state == "complete"), key=lambda t: (-t.score, t.number)
    )
    for rank, t in enumerate(ranked[:5], start=1):
        print(f"  {rank}. held-out return {t.score:.4f}  trial {t.number}")
    print(
        f"best config: {result.config_path}  (train it: igb train-agent {result.config_path} "
        "--out DIR)"
    )
    return 0
