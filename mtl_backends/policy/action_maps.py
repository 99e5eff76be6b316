"""Versioned maps from a policy's action to task weights, shared by the env and exported policies.

The environment (``igb_env``), exported policies and ``PolicyWeighting`` all turn actions into
weights through one ``ActionMap``, so training and deployment cannot disagree. The maps live in
``mtl_backends`` because exported policies run without gymnasium.

Every map holds its formula: actions are validated (``check_action``), clipped to ``[-1, 1]`` and
scaled by the temperature ``τ`` once per decision (``prepare``), then turned into weights that sum
to ``T`` at every step (``weights``) from the gap tracker's current state. Before the base losses
exist the weights are 1 (the base window trains with unit weights on log losses); ``HeldAction``
applies that rule for every map.

Registered maps:

* ``absolute`` (v1): ``w = T · softmax(τ a)``; ``a = 0`` gives unit weights (SI on log losses) and
  the largest weight ratio is ``exp(2τ)``.
* ``residual`` (v1): ``w = T · softmax(g + τ a)`` where ``g`` is the current raw improvable gap
  ``(L - L*) / (L_base - L*)`` of the batch, i.e. IGBv1's logits; ``a = 0`` reproduces IGBv1
  (``mtl_backends.weightings.igbv1``) bit for bit.
* ``interp`` (v1): ``w = T · softmax(p log(L - L*) + q g + τ a)`` with two global entries ``p``,
  ``q`` after the T per-task ones: SI, IGBv1 (the zero action), EW's direction and what lies
  between, for any T (the action map of task-count-agnostic policies).

A new map is one class here with its entry in ``ACTION_MAPS`` (and a test). Any change of a map's
formula adds a new version; sidecars record ``{"mode", "version", "tau"}``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from mtl_backends.gaps import GapTracker
from mtl_backends.simplex import scaled_softmax

ActionLike = Tensor | np.ndarray | Sequence[float]


class GapState(Protocol):
    """What a map reads of the run's state (``[T]``, or ``[N, T]`` rows of N runs)."""

    @property
    def gaps(self) -> Tensor | None:
        """Raw gaps of the current batch (``None`` before the base window ends)."""

    @property
    def losses(self) -> Tensor | None:
        """Raw losses of the current batch (float64)."""

    @property
    def lower_bounds(self) -> Tensor:
        """Declared loss lower bounds ``L*`` (``[T]``, or ``[N, T]`` rows)."""

    @property
    def n_tasks(self) -> int:
        """Number of tasks ``T``."""


@dataclass(frozen=True)
class StackedGaps:
    """The state of N runs at once (``[N, T]``): a map then weights every row in one call.

    The batched env (``igb_env.batched``) maps the held actions of all its runs this way; each
    row's weights equal the single-run result bit for bit.
    """

    gaps: Tensor
    losses: Tensor
    lower_bounds: Tensor
    n_tasks: int


def check_action(action: ActionLike, size: int) -> Tensor:
    """The action as a float64 tensor ``[size]``, validated (not clipped).

    Raises:
        ValueError: Wrong shape or a NaN / infinite entry.
    """
    if isinstance(action, Tensor):
        a = action.detach().to("cpu", torch.float64)
    else:
        try:
            a = torch.from_numpy(np.array(action, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise ValueError(f"action must be a numeric vector of length {size}: {err}") from None
    if a.shape != (size,):
        raise ValueError(f"action must have shape ({size},), got {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"action must be finite (no NaN or inf), got {a.tolist()}")
    return a


class ActionMap(ABC):
    """Turns a prepared action into the current step's weights (float32, sum ``T``).

    Args:
        tau: Temperature ``τ`` of the action.

    Attributes:
        mode: Registry name.
        version: Version of the formula (bumped on any behaviour change).
        formula: Human-readable formula.
    """

    mode: ClassVar[str]
    version: ClassVar[int]
    formula: ClassVar[str]

    def __init__(self, tau: float = 1.0) -> None:
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.tau = float(tau)

    def action_dim(self, n_tasks: int) -> int:
        """Length of the action for ``n_tasks`` tasks (one entry per task)."""
        return n_tasks

    def prepare(self, action: Tensor) -> Tensor:
        """``τ · clip(a, -1, 1)`` of a validated float64 action: computed once per decision."""
        return self.tau * action.clamp(-1.0, 1.0)

    @abstractmethod
    def weights(self, prepared: Tensor | None, tracker: GapState) -> Tensor:
        """Weights ``[T]`` (float32, sum ``T``) once the base losses exist.

        Args:
            prepared: ``prepare(action)``, or ``None`` before the first decision (``a = 0``);
                ``[N, A]`` with ``StackedGaps``.
            tracker: The run's gap tracker, after the current batch was absorbed, or
                ``StackedGaps`` of N runs (weights ``[N, T]``).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tau={self.tau})"


class AbsoluteMap(ActionMap):
    """``w = T · softmax(τ a)``: the action alone sets the weights (``a = 0`` is SI)."""

    mode = "absolute"
    version = 1
    formula = "w = T * softmax(tau * a)"

    def weights(self, prepared: Tensor | None, tracker: GapState) -> Tensor:
        """``T · softmax(τ a)``."""
        if prepared is None:
            prepared = torch.zeros(tracker.n_tasks, dtype=torch.float64)
        return scaled_softmax(prepared).to(torch.float32)


class ResidualMap(ActionMap):
    """``w = T · softmax(g + τ a)``: the action corrects IGBv1's logits (``a = 0`` is IGBv1)."""

    mode = "residual"
    version = 1
    formula = "w = T * softmax(g + tau * a), g = (L - L*) / (L_base - L*)"

    def weights(self, prepared: Tensor | None, tracker: GapState) -> Tensor:
        """``T · softmax(g + τ a)`` with the current batch's raw gaps ``g``."""
        if tracker.gaps is None:
            raise ValueError(
                f"action map {self.mode!r} needs the current gaps, which exist only after the "
                "base window"
            )
        if prepared is None:
            prepared = torch.zeros_like(tracker.gaps, dtype=torch.float64)
        # The same ops and dtype as IGBv1 (float64 softmax, then float32), so a = 0 matches it.
        return scaled_softmax(tracker.gaps.detach().to("cpu", torch.float64) + prepared).to(
            torch.float32
        )


class InterpMap(ActionMap):
    """From SI through IGBv1 to EW's direction: ``w = T · softmax(p log(L - L*) + q g + τ a)``.

    The action has ``T + 2`` entries: a residual ``a_t`` per task, then two global entries mapped
    to ``p = clip(a_p, 0, 1)`` and ``q = 1 + clip(a_q, -1, 1) ∈ [0, 2]``. The zero action is IGBv1
    exactly (``p = 0``, ``q = 1``); ``q = 0`` is SI; ``p = 1, q = 0`` weights the log losses by
    ``L_t - L*_t`` (up to ``1e-8``), i.e. EW's direction on raw losses, which matters where the
    log transform over-serves tasks whose loss approaches its bound (cross-entropy). The weights
    that tasks' losses and gaps receive are the same functions for any T.
    """

    mode = "interp"
    version = 1
    formula = (
        "w = T * softmax(p * log(L - L* + 1e-8) + q * g + tau * a), "
        "p = clip(a_p, 0, 1), q = 1 + clip(a_q, -1, 1)"
    )

    def action_dim(self, n_tasks: int) -> int:
        """``T`` per-task entries, then ``a_p`` and ``a_q``."""
        return n_tasks + 2

    def prepare(self, action: Tensor) -> Tensor:
        """``[τ clip(a_1..a_T), p, q]`` (float64; the last dimension is the action's)."""
        clipped = action.clamp(-1.0, 1.0)
        return torch.cat(
            [
                self.tau * clipped[..., :-2],
                clipped[..., -2:-1].clamp_min(0.0),
                1.0 + clipped[..., -1:],
            ],
            dim=-1,
        )

    def weights(self, prepared: Tensor | None, tracker: GapState) -> Tensor:
        """``T · softmax(p log(L - L* + 1e-8) + q g + τ a)`` of the current batch."""
        if tracker.gaps is None or tracker.losses is None:
            raise ValueError(
                f"action map {self.mode!r} needs the current gaps, which exist only after the "
                "base window"
            )
        gaps = tracker.gaps.detach().to("cpu", torch.float64)
        if prepared is None:
            return scaled_softmax(gaps).to(torch.float32)  # the zero action: IGBv1
        # The elementwise arithmetic runs on numpy views (the same IEEE operations in the same
        # order, so bit for bit torch's result) without torch's per-op dispatch: this map runs at
        # every training step. The log and the softmax stay torch's (their kernels may round
        # differently from numpy's).
        losses = tracker.losses.detach().to("cpu", torch.float64).numpy()
        margin = losses - tracker.lower_bounds.detach().to("cpu", torch.float64).numpy()
        log_loss = torch.log(torch.from_numpy(np.maximum(margin, 0.0) + 1e-8)).numpy()
        a = prepared.detach().to("cpu", torch.float64).numpy()
        logits = a[..., -2:-1] * log_loss + a[..., -1:] * gaps.numpy() + a[..., :-2]
        return scaled_softmax(torch.from_numpy(logits)).to(torch.float32)


ACTION_MAPS: dict[str, type[ActionMap]] = {
    "absolute": AbsoluteMap,
    "residual": ResidualMap,
    "interp": InterpMap,
}


def get_action_map(mode: str, version: int | None = None) -> type[ActionMap]:
    """The registered map class ``mode``, checking ``version`` when given.

    Raises:
        ValueError: Unknown mode, or a version this library does not implement.
    """
    if mode not in ACTION_MAPS:
        raise ValueError(
            f"unknown action mode {mode!r}; valid choices: {', '.join(sorted(ACTION_MAPS))}"
        )
    cls = ACTION_MAPS[mode]
    if version is not None and int(version) != cls.version:
        raise ValueError(
            f"action map {mode!r} version {version} is not supported; this library implements "
            f"version {cls.version}"
        )
    return cls


def make_action_map(mode: str, tau: float) -> ActionMap:
    """An instance of the map ``mode`` with temperature ``tau``."""
    return get_action_map(mode)(tau)


class HeldAction:
    """An action held for K steps, as the env and ``PolicyWeighting`` apply it.

    ``hold`` validates and prepares the action once; ``weights`` maps it with the current state at
    every step. Holding nothing means ``a = 0``; before the base losses exist the weights are 1.

    Args:
        mode: Action map name.
        tau: Action temperature.
    """

    def __init__(self, mode: str, tau: float) -> None:
        self.map = make_action_map(mode, tau)
        self._action: Tensor | None = None
        self._prepared: Tensor | None = None

    @property
    def mode(self) -> str:
        """Action map name."""
        return self.map.mode

    @property
    def tau(self) -> float:
        """Action temperature."""
        return self.map.tau

    @property
    def action(self) -> Tensor | None:
        """The held action as given (validated, float64, not clipped), or ``None``."""
        return self._action

    @property
    def prepared(self) -> Tensor | None:
        """``map.prepare(action)`` of the held action, or ``None`` (``a = 0``)."""
        return self._prepared

    def hold(self, action: ActionLike | None, n_tasks: int) -> None:
        """Hold ``action`` (``None``: release it, i.e. ``a = 0``).

        Raises:
            ValueError: Wrong shape or a NaN / infinite entry.
        """
        if action is None:
            self._action = self._prepared = None
            return
        a = check_action(action, self.map.action_dim(n_tasks))
        self._action = a
        self._prepared = self.map.prepare(a)

    def weights(self, tracker: GapTracker) -> Tensor:
        """Weights of the current step (1 before the base losses exist)."""
        if not tracker.has_base or tracker.gaps is None:
            return torch.ones(tracker.n_tasks)
        return self.map.weights(self._prepared, tracker)


def action_to_weights(action: ActionLike, mode: str, tau: float, tracker: GapTracker) -> Tensor:
    """Weights ``[T]`` (float32, sum ``T``) of one action under the map ``mode``, at one moment.

    A convenience for tests and examples (``HeldAction`` is what the env and policies run): the
    action is validated, prepared and mapped with the tracker's current state.

    Args:
        action: Action; entries outside ``[-1, 1]`` are clipped.
        mode: Action map name.
        tau: Temperature ``τ``.
        tracker: The gap tracker, after the base window.

    Raises:
        ValueError: Unknown mode, wrong action shape, NaN/inf action, or no base losses yet.
    """
    if not tracker.has_base:
        raise ValueError("weights of an action exist only after the base window")
    amap = make_action_map(mode, tau)
    prepared = amap.prepare(check_action(action, amap.action_dim(tracker.n_tasks)))
    return amap.weights(prepared, tracker)


__all__ = [
    "ACTION_MAPS",
    "AbsoluteMap",
    "ActionMap",
    "GapState",
    "HeldAction",
    "InterpMap",
    "ResidualMap",
    "StackedGaps",
    "action_to_weights",
    "check_action",
    "get_action_map",
    "make_action_map",
]
