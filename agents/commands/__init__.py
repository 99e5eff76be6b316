"""Subcommands of the ``igb`` command line (one module each)."""
