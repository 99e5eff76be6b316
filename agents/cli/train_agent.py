"""``igb train-agent CONFIG`` or ``--resume RUN``: train (or continue) an SB3 agent.

With ``--seeds S1 S2 ...`` the config is trained once per seed, each seed a separate job in its own
run folder ``DIR/s<seed>`` (``agents.experiments.seed_jobs``): one after the other in this
process, in a local process pool (``--workers N``) or as Ray tasks (``--backend ray``). Rerunning
the command, or ``--resume DIR``, resumes unfinished seeds and skips finished ones; the exit code
is 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.experiments.seed_jobs import SeedsSummary


def register(subparsers: Any) -> None:
    """Add the ``train-agent`` subcommand."""
    p = subparsers.add_parser(
        "train-agent",
        help="train an RL agent (SB3 PPO, SAC, TD3, A2C; TQC with sb3-contrib) on the IGB env",
    )
    p.add_argument(
        "config", nargs="?", help="agent YAML, or the name of a built-in one (ppo, sac, ...)"
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue RUN from its last checkpoint up to its total_timesteps (--timesteps and "
        "--time-budget set a new cap and a new total wall budget); RUN may be a multi-seed "
        "folder of --seeds: its unfinished seeds are resumed, finished ones skipped",
    )
    p.add_argument(
        "--out",
        help="run folder, or with --seeds the multi-seed folder (default runs/agent-<time>)",
    )
    p.add_argument("--seed", type=int, help="override the seed")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="train one run per seed, each a separate job in OUT/s<SEED> with its own "
        "checkpoints; rerunning the same command resumes unfinished seeds and skips finished ones",
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        help="where --seeds run: local (one worker: one after the other in this process; more: a "
        'process pool) or ray (Ray tasks; needs `pip install -e ".[ray]"`); default local',
    )
    p.add_argument(
        "--workers",
        type=int,
        help="seeds trained at once (local processes or CPUs of a local Ray instance; default: "
        "as many as the cores hold, counting the env worker processes of vec_env: subproc)",
    )
    p.add_argument(
        "--ray-address", help="address of an existing Ray cluster (default: a local instance)"
    )
    p.add_argument("--timesteps", type=int, help="override total_timesteps (the timestep cap)")
    p.add_argument("--time-budget", type=float, help="override time_budget_s (wall-clock seconds)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=main)


MULTI_SEED_OPTIONS = ("--backend", "--workers", "--ray-address")


def _multi_seed_options(args: argparse.Namespace) -> list[str]:
    """The options of multi-seed runs given on this command line."""
    given = (args.backend, args.workers, args.ray_address)
    pairs = zip(MULTI_SEED_OPTIONS, given, strict=True)
    return [name for name, value in pairs if value is not None]


def _only_for_seeds(options: list[str]) -> str:
    """``"--backend is only for"`` or ``"--backend and --workers are only for"``."""
    if len(options) == 1:
        return f"{options[0]} is only for"
    return f"{', '.join(options[:-1])} and {options[-1]} are only for"


def _report(summary: SeedsSummary) -> int:
    """Print the outcome of a multi-seed call; 1 if any seed failed, else 0."""
    from agents.experiments.seed_jobs import STATUSES

    counts = ", ".join(f"{summary.count(status)} {status}" for status in STATUSES)
    print(
        f"{len(summary.results)} seeds in {summary.out_dir}: {counts} in "
        f"{summary.wall_time_s:.1f} s (export one with `igb export {summary.out_dir}/s<SEED>`)"
    )
    if not summary.failed:
        return 0
    failures = "; ".join(f"seed {r.seed} ({r.folder}): {r.error}" for r in summary.failed)
    print(
        f"igb train-agent: run failed: {len(summary.failed)} of {len(summary.results)} seeds "
        f"failed: {failures}; rerun the same command to retry them",
        file=sys.stderr,
    )
    return 1


def main(args: argparse.Namespace) -> int:
    """Run ``igb train-agent``; with ``--seeds``, exit code 1 if any seed failed."""
    # SB3 is imported here, not at module level, so `igb train` and `igb --help` stay light.
    from agents.build import check_hyperparameters
    from agents.checkpoint import POINTER
    from agents.config import load_agent_config
    from agents.experiments.seed_jobs import (
        MANIFEST,
        check_seeds,
        is_multi_seed_folder,
        resume_seeds,
        train_seeds,
    )
    from agents.train import resume_agent, train_agent
    from mtl_backends.fileio import check_writable_dir
    from mtl_backends.packaged import resolve_config

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.ray_address is not None and args.backend != "ray":
        raise ValueError("--ray-address needs --backend ray (it names the Ray cluster to use)")
    multi_options = _multi_seed_options(args)
    if args.resume:
        if args.config or args.seed is not None or args.out or args.seeds is not None:
            raise ValueError("--resume RUN takes no CONFIG, --out, --seed or --seeds")
        if is_multi_seed_folder(args.resume):
            if args.timesteps is not None or args.time_budget is not None:
                raise ValueError(
                    f"--resume of the multi-seed folder {args.resume!r} takes no --timesteps or "
                    "--time-budget (finished seeds are never trained again); to extend one seed, "
                    f"resume its folder: igb train-agent --resume {args.resume}/s<SEED> "
                    "--timesteps N"
                )
            summary = resume_seeds(
                args.resume,
                backend=args.backend or "local",
                workers=args.workers,
                ray_address=args.ray_address,
                progress_bar=not args.no_progress,
            )
            return _report(summary)
        if not (Path(args.resume) / POINTER).is_file():
            # The message of agents.checkpoint.latest_checkpoint, plus the multi-seed case.
            raise FileNotFoundError(
                f"{str(Path(args.resume))!r} has no {POINTER}: nothing to resume (was it started "
                "with checkpoint_every set, and did it reach its first checkpoint?), and it is "
                f"not a multi-seed folder either (no {MANIFEST}, written by `igb train-agent "
                "CONFIG --seeds ... --out DIR`)"
            )
        if multi_options:
            raise ValueError(
                f"{_only_for_seeds(multi_options)} multi-seed folders, and {args.resume!r} is not "
                f"one (it has no {MANIFEST}, written by `igb train-agent CONFIG --seeds ... --out "
                "DIR`); resume a single run with `igb train-agent --resume RUN` alone"
            )
        run = resume_agent(
            args.resume,
            not args.no_progress,
            total_timesteps=args.timesteps,
            time_budget_s=args.time_budget,
        )
        print(f"agent run folder: {run}  (resumed; export with `igb export {run}`)")
        return 0
    if not args.config:
        raise ValueError("give an agent CONFIG, or --resume RUN")
    if args.seeds is not None and args.seed is not None:
        raise ValueError(
            "give either --seed S (one run in --out) or --seeds S1 S2 ... (one run per seed in "
            "--out/s<SEED>), not both"
        )
    if args.seeds is None and multi_options:
        raise ValueError(
            f"{_only_for_seeds(multi_options)} multi-seed runs: add --seeds S1 S2 ... (one job "
            "per seed)"
        )
    seeds = None if args.seeds is None else check_seeds(args.seeds, "--seeds")
    config = load_agent_config(resolve_config(args.config, "agents"))
    changes: dict[str, Any] = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.timesteps is not None:
        changes["total_timesteps"] = args.timesteps
    if args.time_budget is not None:
        changes["time_budget_s"] = args.time_budget
    config = dataclasses.replace(config, **changes)
    check_hyperparameters(config)
    out = Path(args.out) if args.out else Path("runs") / f"agent-{time.strftime('%Y%m%d-%H%M%S')}"
    check_writable_dir(out, "--out")
    if seeds is not None:
        summary = train_seeds(
            config,
            seeds,
            out,
            backend=args.backend or "local",
            workers=args.workers,
            ray_address=args.ray_address,
            progress_bar=not args.no_progress,
        )
        return _report(summary)
    run = train_agent(config, out, progress_bar=not args.no_progress)
    print(f"agent run folder: {run}  (export with `igb export {run}`)")
    return 0
