"""Private random streams: the global torch (and numpy) RNG swapped to a state a run owns.

Code that draws from the global generators (a model's dropout, SB3's action sampling and replay
indices) runs inside ``RngStream.active()``, so other code using the globals between calls cannot
change a run, and the run cannot change theirs. The trainer runs every step in its stream; IGBv2's
SAC agent runs in its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor


class RngStream:
    """The global torch CPU RNG (and optionally numpy's legacy RNG) in a state of its own.

    Args:
        seed: Seeds the torch state (``torch.Generator().manual_seed(seed)``) and, with
            ``numpy``, ``numpy.random.RandomState(seed)``.
        numpy: Also own a numpy legacy RNG state.
    """

    def __init__(self, seed: int, numpy: bool = False) -> None:
        self.torch_state: Tensor = torch.Generator().manual_seed(int(seed)).get_state()
        self.numpy_state: Any = np.random.RandomState(int(seed)).get_state() if numpy else None

    @contextlib.contextmanager
    def active(self, with_numpy: bool = True) -> Iterator[None]:
        """Run the block with this stream's states in the global RNGs, restoring the caller's.

        Args:
            with_numpy: Swap numpy's state too (when the stream owns one); skip it for blocks
                that draw from torch only (the numpy swap is the slower one).
        """
        outer_torch = torch.get_rng_state()
        swap_numpy = with_numpy and self.numpy_state is not None
        outer_np = np.random.get_state() if swap_numpy else None
        torch.set_rng_state(self.torch_state)
        if swap_numpy:
            np.random.set_state(self.numpy_state)
        try:
            yield
        finally:
            self.torch_state = torch.get_rng_state()
            torch.set_rng_state(outer_torch)
            if outer_np is not None:
                self.numpy_state = np.random.get_state()
                np.random.set_state(outer_np)


def numpy_state_to_dict(state: Any) -> dict[str, Any]:
    """A numpy legacy RNG state as tensors and primitives (``torch.load(weights_only=True)``)."""
    name, keys, pos, has_gauss, cached = state
    return {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def numpy_state_from_dict(state: dict[str, Any]) -> tuple[Any, ...]:
    """The numpy legacy RNG state that ``numpy_state_to_dict`` stored."""
    keys = state["keys"].numpy().astype(np.uint32)
    return (
        state["name"],
        keys,
        int(state["pos"]),
        int(state["has_gauss"]),
        float(state["cached_gaussian"]),
    )


def method_generator(method: Any) -> torch.Generator:
    """``method.generator``, the seeded generator the trainer gave the method at ``reset``.

    A method used on its own (no ``reset`` with a generator) gets a generator seeded with 0, kept
    on the method, so its draws are still reproducible and its state is saved with the run.
    """
    gen = getattr(method, "generator", None)
    if gen is None:
        gen = torch.Generator().manual_seed(0)
        method.generator = gen
    return gen


def generator_state(method: Any) -> Tensor | None:
    """The state of ``method.generator`` (a method's seeded ``torch.Generator``), if it has one."""
    gen = getattr(method, "generator", None)
    return gen.get_state() if isinstance(gen, torch.Generator) else None


def set_generator_state(method: Any, state: Tensor | None) -> None:
    """Restore ``generator_state(method)``."""
    gen = getattr(method, "generator", None)
    if state is not None and isinstance(gen, torch.Generator):
        gen.set_state(state)


__all__ = [
    "RngStream",
    "generator_state",
    "method_generator",
    "numpy_state_from_dict",
    "numpy_state_to_dict",
    "set_generator_state",
]
