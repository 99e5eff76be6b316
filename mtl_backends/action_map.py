"""Versioned maps from a policy's action ``a ∈ [-1, 1]^T`` to task weights (DESIGN §4).

The environment (``igb_env``), exported policies and ``PolicyWeighting`` all turn actions into
weights through ``action_to_weights``, so training and deployment cannot disagree. The module lives
in ``mtl_backends`` because exported policies run without gymnasium.

Maps (weights sum to ``T``; actions are clipped to ``[-1, 1]`` first):

* ``absolute`` (v1): ``w = T · softmax(τ a)``; ``a = 0`` gives unit weights (SI on log losses) and
  the largest weight ratio is ``exp(2τ)``.
* ``residual`` (v1): ``w = T · softmax(g + τ a)`` where ``g`` is the current raw improvable gap
  ``(L - L*) / (L_base - L*)`` of the batch, i.e. IGBv1's logits; ``a = 0`` reproduces IGBv1
  (``mtl_backends.weightings.igbv1``) bit for bit.

Any change of a map's formula adds a new version; sidecars record ``{"mode", "version", "tau"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mtl_backends.progress import GapTracker
from mtl_backends.weightings.igbv1 import igbv1_weights


@dataclass(frozen=True)
class ActionMap:
    """One registered action map.

    Attributes:
        mode: Registry name.
        version: Version of the formula (bumped on any behaviour change).
        needs_gaps: Whether the map reads the current gaps (undefined before the base losses).
        formula: Human-readable formula.
    """

    mode: str
    version: int
    needs_gaps: bool
    formula: str


ACTION_MAPS: dict[str, ActionMap] = {
    "absolute": ActionMap("absolute", 1, False, "w = T * softmax(tau * a)"),
    "residual": ActionMap(
        "residual", 1, True, "w = T * softmax(g + tau * a), g = (L - L*) / (L_base - L*)"
    ),
}


def get_action_map(mode: str, version: int | None = None) -> ActionMap:
    """The registered map ``mode``, checking ``version`` when given.

    Raises:
        ValueError: Unknown mode, or a version this library does not implement.
    """
    if mode not in ACTION_MAPS:
        raise ValueError(
            f"unknown action mode {mode!r}; valid choices: {', '.join(sorted(ACTION_MAPS))}"
        )
    amap = ACTION_MAPS[mode]
    if version is not None and int(version) != amap.version:
        raise ValueError(
            f"action map {mode!r} version {version} is not supported; this library implements "
            f"version {amap.version}"
        )
    return amap


def check_action(action: Tensor | np.ndarray | Sequence[float], n_tasks: int) -> Tensor:
    """The action as a float64 tensor ``[T]``, validated (not clipped).

    Raises:
        ValueError: Wrong shape or a NaN / infinite entry.
    """
    if isinstance(action, Tensor):
        a = action.detach().to("cpu", torch.float64)
    else:
        try:
            a = torch.from_numpy(np.array(action, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"action must be a numeric vector of length {n_tasks}: {err}"
            ) from None
    if a.shape != (n_tasks,):
        raise ValueError(f"action must have shape ({n_tasks},), got {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"action must be finite (no NaN or inf), got {a.tolist()}")
    return a


def action_offset(
    action: Tensor | np.ndarray | Sequence[float], tau: float, n_tasks: int
) -> Tensor:
    """``τ · clip(a, -1, 1)`` (float64 ``[T]``): what every map adds to its logits.

    Raises:
        ValueError: Wrong shape or a NaN / infinite entry.
    """
    return float(tau) * check_action(action, n_tasks).clamp(-1.0, 1.0)


def offset_to_weights(offset: Tensor, mode: str, gaps: Tensor | None = None) -> Tensor:
    """Weights (float32, sum ``T``) of an ``action_offset`` under the map ``mode``.

    Raises:
        ValueError: Unknown mode, or ``residual`` without gaps.
    """
    amap = get_action_map(mode)
    if not amap.needs_gaps:
        return igbv1_weights(offset).to(torch.float32)
    if gaps is None:
        raise ValueError(
            f"action mode {mode!r} needs the current gaps, which exist only after the base window"
        )
    # The same ops and dtype as IGBv1 (float64 softmax, then float32), so a = 0 matches it exactly.
    return igbv1_weights(gaps.detach().to("cpu", torch.float64) + offset).to(torch.float32)


def action_to_weights(
    action: Tensor | np.ndarray | Sequence[float],
    mode: str,
    tau: float,
    gaps: Tensor | None = None,
) -> Tensor:
    """Map an action to task weights ``[T]`` (float32, sum ``T``).

    Args:
        action: Action ``[T]``; entries outside ``[-1, 1]`` are clipped.
        mode: ``absolute`` or ``residual`` (see the module docstring).
        tau: Temperature ``τ`` of the action.
        gaps: Current raw gaps ``[T]`` (``GapTracker.gaps``, float64); required by ``residual``.

    Returns:
        The weights, float32.

    Raises:
        ValueError: Unknown mode, wrong action shape, NaN/inf action, or missing/mismatched gaps.
    """
    get_action_map(mode)
    if gaps is not None:
        n_tasks = int(gaps.numel())
    else:
        shape = tuple(action.shape) if isinstance(action, Tensor) else np.shape(action)
        if len(shape) != 1:
            raise ValueError(f"action must be a vector [T], got shape {shape}")
        n_tasks = int(shape[0])
    return offset_to_weights(action_offset(action, tau, n_tasks), mode, gaps)


def held_action_weights(
    action: Tensor | np.ndarray | Sequence[float] | None,
    mode: str,
    tau: float,
    progress: GapTracker,
) -> Tensor:
    """Weights of the current step while ``action`` is held (``None``: no decision yet: ``a = 0``).

    Before the base losses exist the weights are 1 (the base window trains with unit weights on log
    losses); afterwards the action (or 0 before the first decision) goes through the map with the
    current gaps. ``HeldAction`` computes the same weights without re-validating the action at
    every step.
    """
    if not progress.has_base or progress.gaps is None:
        return torch.ones(progress.n_tasks)
    a = torch.zeros(progress.n_tasks, dtype=torch.float64) if action is None else action
    return action_to_weights(a, mode, tau, progress.gaps)


class HeldAction:
    """An action held for K steps, as the env and ``PolicyWeighting`` apply it.

    ``hold`` validates, clips and scales the action once; ``weights`` maps it with the current gaps
    at every step (equal, bit for bit, to ``held_action_weights`` with the same action). Holding
    nothing means ``a = 0``.

    Args:
        mode: Action map (``absolute`` or ``residual``).
        tau: Action temperature.
    """

    def __init__(self, mode: str, tau: float) -> None:
        get_action_map(mode)
        self.mode = mode
        self.tau = float(tau)
        self._action: Tensor | None = None
        self._offset: Tensor | None = None

    @property
    def action(self) -> Tensor | None:
        """The held action as given (validated, float64, not clipped), or ``None``."""
        return self._action

    def hold(self, action: Tensor | np.ndarray | Sequence[float] | None, n_tasks: int) -> None:
        """Hold ``action`` (``None``: release it, i.e. ``a = 0``).

        Raises:
            ValueError: Wrong shape or a NaN / infinite entry.
        """
        if action is None:
            self._action = self._offset = None
            return
        a = check_action(action, n_tasks)
        self._action = a
        self._offset = self.tau * a.clamp(-1.0, 1.0)

    def weights(self, progress: GapTracker) -> Tensor:
        """Weights of the current step (1 before the base losses exist)."""
        if not progress.has_base or progress.gaps is None:
            return torch.ones(progress.n_tasks)
        offset = self._offset
        if offset is None:
            offset = torch.zeros(progress.n_tasks, dtype=torch.float64)
        return offset_to_weights(offset, self.mode, progress.gaps)


__all__ = [
    "ACTION_MAPS",
    "ActionMap",
    "HeldAction",
    "action_offset",
    "action_to_weights",
    "check_action",
    "get_action_map",
    "held_action_weights",
    "offset_to_weights",
]
