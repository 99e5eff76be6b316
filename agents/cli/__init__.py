"""The ``igb`` command line: one subcommand per module of this package.

Each command module exposes ``register(subparsers) -> None``, which adds its subparser and sets
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code. Adding a
command is one module and one line in ``COMMAND_MODULES``. Command modules import the library
inside their ``main`` (not at module level) so that building the parser, ``igb --help`` and argument
errors never pay for importing torch and Stable-Baselines3. Plain MTL commands (``train``, ``stl``,
``tune-static``) use ``mtl_backends`` only; the others use the RL core (``agents``) and the
experiment harness (``agents.experiments``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "agents.cli.train",
    "agents.cli.stl",
    "agents.cli.perf",
    "agents.cli.online",
    "agents.cli.tune_static",
    "agents.cli.train_agent",
    "agents.cli.compare",
    "agents.cli.export",
    "agents.cli.quickstart",
    "agents.cli.evaluate",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``igb`` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="igb",
        description="Improvable Gap Balancing for multi-task learning, as an RL problem.",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        metavar="N",
        help="torch intra-op threads of this process (default: torch's, one per core); on a "
        "machine shared with other jobs, 1 avoids oversubscription, which can slow small models "
        "by 10x (commands that start worker processes give each worker one thread anyway)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``igb`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.torch_threads is not None:
        if args.torch_threads < 1:
            parser.error(f"--torch-threads must be at least 1, got {args.torch_threads}")
        import torch

        torch.set_num_threads(args.torch_threads)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:
        # Configuration and input errors are the user's to fix: print the message, not a traceback.
        print(f"igb {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
