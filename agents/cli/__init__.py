"""The ``igb`` command line: one subcommand per module of this package.

Each command module exposes ``register(subparsers) -> None``, which adds its subparser and sets
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code. Adding a
command is one module and one line in ``COMMAND_MODULES``. Command modules import the library
inside their ``main`` (not at module level) so that building the parser, ``igb --help`` and argument
errors never pay for importing torch and Stable-Baselines3. Plain MTL commands (``train``, ``stl``,
``tune-static``) use ``mtl_backends`` only; the others use the RL core (``agents``) and the
experiment harness (``agents.experiments``).

``main`` is the one error boundary (``agents.cli.errors``): an expected failure prints one line
``igb COMMAND: error: ...`` (bad input, exit code 2) or ``igb COMMAND: run failed: ...`` (exit
code 1) naming the file or setting and the fix; ``--debug`` (before or after the command) also
prints the traceback. Commands check their output paths before any work starts.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "agents.cli.train",
    "agents.cli.stl",
    "agents.cli.perf",
    "agents.cli.online",
    "agents.cli.tune_static",
    "agents.cli.train_agent",
    "agents.cli.tune_agent",
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
    debug_help = "print the traceback of a failure (default: one line naming the problem)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():
        # Also accepted after the command; SUPPRESS keeps a global --debug when it is absent here.
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``igb`` console script.

    Returns:
        The exit code: 0 on success, 2 for bad input, 1 for a failed run (or the command's own
        code, e.g. ``compare`` with failed cells).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.torch_threads is not None:
        if args.torch_threads < 1:
            parser.error(f"--torch-threads must be at least 1, got {args.torch_threads}")
        import torch

        torch.set_num_threads(args.torch_threads)
    try:
        return int(args.func(args))
    except (Exception, KeyboardInterrupt) as exc:
        from agents.cli.errors import describe

        code, message = describe(exc)
        if args.debug:
            traceback.print_exc()
        print(f"igb {args.command}: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
