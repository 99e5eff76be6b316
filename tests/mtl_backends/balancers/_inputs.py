"""Seeded Jacobian families for the balancer tests (float64 unless noted, CPU).

Every family is a function ``(n_tasks, dim, seed) -> J [T, P]``; ``FAMILIES`` maps names to them.
Degenerate families (zero rows, colinear, opposite) stress numerics; ``scaled`` multiplies a
generic Jacobian by ``scale``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Family = Callable[[int, int, int], Tensor]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def generic(n_tasks: int, dim: int, seed: int) -> Tensor:
    """Independent Gaussian rows with norms spread over two orders of magnitude."""
    g = _gen(seed)
    j = torch.randn(n_tasks, dim, generator=g, dtype=torch.float64)
    scales = torch.logspace(0, 2, n_tasks, dtype=torch.float64)
    return j * scales[torch.randperm(n_tasks, generator=g)][:, None]


def conflicting(n_tasks: int, dim: int, seed: int) -> Tensor:
    """A shared component plus strongly opposed task-specific parts (many negative dot products)."""
    g = _gen(seed)
    base = torch.randn(dim, generator=g, dtype=torch.float64)
    spec = torch.randn(n_tasks, dim, generator=g, dtype=torch.float64)
    return 0.3 * base + 3.0 * spec - 3.0 * spec.mean(dim=0, keepdim=True)


def zero_rows(n_tasks: int, dim: int, seed: int) -> Tensor:
    """A generic Jacobian whose first row is exactly zero."""
    j = generic(n_tasks, dim, seed)
    j[0] = 0.0
    return j


def all_zero(n_tasks: int, dim: int, seed: int) -> Tensor:
    """All gradients zero."""
    return torch.zeros(n_tasks, dim, dtype=torch.float64)


def colinear(n_tasks: int, dim: int, seed: int) -> Tensor:
    """Every row a positive multiple of one vector."""
    g = _gen(seed)
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    return torch.rand(n_tasks, 1, generator=g, dtype=torch.float64).add(0.1) * v


def opposite(n_tasks: int, dim: int, seed: int) -> Tensor:
    """Rows alternate between ``v`` and ``-v`` (exactly opposed gradients)."""
    g = _gen(seed)
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    signs = torch.tensor([1.0 if t % 2 == 0 else -1.0 for t in range(n_tasks)], dtype=torch.float64)
    return signs[:, None] * v


def scaled(scale: float) -> Family:
    """The generic family multiplied by ``scale``."""

    def family(n_tasks: int, dim: int, seed: int) -> Tensor:
        return scale * generic(n_tasks, dim, seed)

    return family


FAMILIES: dict[str, Family] = {
    "generic": generic,
    "conflicting": conflicting,
    "zero_rows": zero_rows,
    "all_zero": all_zero,
    "colinear": colinear,
    "opposite": opposite,
    "scale_1e-6": scaled(1e-6),
    "scale_1e6": scaled(1e6),
}

DEGENERATE: tuple[str, ...] = (
    "zero_rows",
    "all_zero",
    "colinear",
    "opposite",
    "scale_1e-6",
    "scale_1e6",
)


def losses_for(n_tasks: int, seed: int = 0) -> Tensor:
    """Positive raw losses ``[T]`` (MGDA's loss normalisations read them)."""
    return torch.rand(n_tasks, generator=_gen(seed + 1000), dtype=torch.float64) + 0.5
