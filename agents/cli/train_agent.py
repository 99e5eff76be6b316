"""``igb train-agent CONFIG`` or ``--resume RUN``: train (or continue) an SB3 agent."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any


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
        "--time-budget set a new cap and a new total wall budget)",
    )
    p.add_argument("--out", help="run folder (default runs/agent-<time>)")
    p.add_argument("--seed", type=int, help="override the seed")
    p.add_argument("--timesteps", type=int, help="override total_timesteps (the timestep cap)")
    p.add_argument("--time-budget", type=float, help="override time_budget_s (wall-clock seconds)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``igb train-agent``."""
    # SB3 is imported here, not at module level, so `igb train` and `igb --help` stay light.
    from agents.build import check_hyperparameters
    from agents.config import load_agent_config
    from agents.train import resume_agent, train_agent
    from mtl_backends.fileio import check_writable_dir
    from mtl_backends.packaged import resolve_config

    if args.resume:
        if args.config or args.seed is not None or args.out:
            raise ValueError("--resume RUN takes no CONFIG, --out or --seed")
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
    run = train_agent(config, out, progress_bar=not args.no_progress)
    print(f"agent run folder: {run}  (export with `igb export {run}`)")
    return 0
