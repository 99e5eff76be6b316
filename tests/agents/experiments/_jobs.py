"""Picklable jobs for the backend tests (worker processes import them by module path)."""

from __future__ import annotations

import os

import torch


def square_or_fail(x: int) -> int:
    """``x * x``; a ``ValueError`` naming ``x`` for odd ``x``."""
    if x % 2:
        raise ValueError(f"odd input {x}")
    return x * x


def worker_facts(_: int) -> tuple[int, int]:
    """The worker's process id and torch thread count."""
    return os.getpid(), torch.get_num_threads()
